"""fstat(2), fstatfs(2) and readlink(2) (fs/stat.c, fs/statfs.c, fs/proc/fd.c).

* ``vfs_fstat`` → ``generic_fillattr``: what the inode says.  A dma-buf's inode
  comes from ``alloc_anon_inode``: mode ``S_IRUSR|S_IWUSR`` and **no file type**
  (st_mode 0600, "historically anonymous inodes don't have a type at all"),
  ``i_size`` and ``i_blocks`` the buffer's size (``dma_buf_getfile``), one link,
  the dmabuf filesystem's anonymous device.  A memfd is a regular shmem file
  (0777, 0666 when ``MFD_NOEXEC_SEAL``), its blocks the pages it holds.
  ``st_blksize`` is the superblock's block size: ``PAGE_SIZE`` for all of them.
* ``vfs_statfs``: ``f_type`` is the superblock's magic — ``DMA_BUF_MAGIC``
  (``"DMAB"``) for a dma-buf, ``TMPFS_MAGIC`` for a memfd or a device node on
  devtmpfs, ``ANON_INODE_FS_MAGIC`` for the shared anon inode of the 3.x specs.
* ``do_readlinkat`` of ``/proc/<pid>/fd/N``: the file's path as ``d_path``
  builds it (``/dmabuf:<name>``, ``anon_inode:dmabuf``, ``/memfd:x (deleted)``,
  ``/dev/udmabuf``); ``ENOENT`` for an fd that is not open or a path that does
  not exist, ``EINVAL`` for a path that is not a symlink.

Simplified: uid/gid are root's, timestamps 0, ``st_rdev`` 0; ``f_fsid`` is 0;
only ``/proc/<pid>/fd/N`` and the device nodes exist as paths.
"""

from __future__ import annotations

import errno
import os
import re
from typing import TYPE_CHECKING

from attrs import frozen

from .fs_file import fdget
from .trace import kernel_function

if TYPE_CHECKING:
    from .fs import File, Inode
    from .process import Process

__all__ = ["KStatfs", "do_readlinkat", "generic_fillattr", "vfs_fstat", "vfs_statfs"]

NAME_MAX = 255
ST_VALID = 0x0020  # f_flags: "f_flags support is implemented"
_PROC_FD_LINK = re.compile(r"^/proc/(self|\d+)/fd/(\d+)$")


@kernel_function("generic_fillattr", file="fs/stat.c")
def generic_fillattr(inode: Inode) -> os.stat_result:
    """The ``struct kstat`` of ``inode``, as the :class:`os.stat_result` userspace sees."""
    kernel = inode.kernel
    sb = kernel.superblocks.get(inode.i_sb)
    blksize = sb.s_blocksize if sb is not None else 4096
    dev = sb.s_dev if sb is not None else 0  # MKDEV(0, minor) == minor
    if inode.i_sb == "shmem":
        blocks = len(inode.i_mapping.pages) * (4096 // 512)
    elif inode.i_sb == "dmabuf":
        blocks = inode.i_size >> 9  # inode_set_bytes(inode, dmabuf->size)
    else:
        blocks = 0
    return os.stat_result(
        (inode.i_mode, inode.i_ino, dev, 1, 0, 0, inode.i_size, 0, 0, 0),
        {"st_blksize": blksize, "st_blocks": blocks, "st_rdev": 0},
    )


@kernel_function("vfs_fstat", file="fs/stat.c")
def vfs_fstat(proc: Process, fd: int) -> os.stat_result | int:
    """``fstat(fd)``: ``EBADF`` for a closed fd, else ``vfs_getattr`` of its inode."""
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    return generic_fillattr(file.f_inode)


@frozen
class KStatfs:
    """``struct statfs`` as ``fstatfs(2)`` fills it (no ``os`` counterpart exists)."""

    f_type: int
    f_bsize: int
    f_blocks: int = 0
    f_bfree: int = 0
    f_bavail: int = 0
    f_files: int = 0
    f_ffree: int = 0
    f_fsid: int = 0
    f_namelen: int = NAME_MAX
    f_frsize: int = 0
    f_flags: int = ST_VALID


@kernel_function("vfs_statfs", file="fs/statfs.c")
def vfs_statfs(file: File) -> KStatfs:
    """``simple_statfs`` (pseudo filesystems) or ``shmem_statfs`` (no size limit on the
    kernel's internal tmpfs mount): magic, ``PAGE_SIZE`` blocks, ``NAME_MAX``."""
    sb = file.kernel.superblocks.get(file.f_inode.i_sb)
    magic = sb.s_magic if sb is not None else 0
    bsize = sb.s_blocksize if sb is not None else 4096
    # statfs_by_dentry: "if (buf->f_frsize == 0) buf->f_frsize = buf->f_bsize;"
    return KStatfs(f_type=magic, f_bsize=bsize, f_frsize=bsize)


@kernel_function("fd_statfs", file="fs/statfs.c")
def fd_statfs(proc: Process, fd: int) -> KStatfs | int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    return vfs_statfs(file)


@kernel_function("do_readlinkat", file="fs/stat.c")
def do_readlinkat(proc: Process, path: str) -> str | int:
    """``readlink(path)``: the target of ``/proc/<pid>/fd/N`` (``proc_fd_link``)."""
    kernel = proc.kernel
    m = _PROC_FD_LINK.match(path)
    if m is not None:
        target = proc if m.group(1) == "self" else kernel.processes.get(int(m.group(1)))
        if target is None:
            return -errno.ENOENT
        file = target.files.fds.get(int(m.group(2)))
        if file is None:
            return -errno.ENOENT
        return file.path()  # d_path: d_dname for pseudo files
    if path == "/proc/self":
        return str(proc.pid)  # proc_self_get_link
    if path in kernel.chrdevs:
        return -errno.EINVAL  # not a symlink
    if re.match(r"^/proc/(self|\d+)(/fd)?/?$", path) or path in ("/", "/dev", "/proc"):
        return -errno.EINVAL  # a directory
    return -errno.ENOENT
