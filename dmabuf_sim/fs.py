"""Inodes, address spaces, files (fs/, include/linux/fs.h, fs/anon_inodes.c).

What dma-buf needs from the VFS, and no more:

* :class:`Inode` with its :class:`AddressSpace` (``i_mapping``), whose
  ``i_mmap`` indexes every vma mapping the inode by file-page interval — the
  structure ``unmap_mapping_range`` walks;
* :class:`File` with ``f_count``, ``f_mode``, ``f_flags``, ``f_op``,
  ``private_data``, ``f_mapping`` and ``f_inode``; :func:`get_file` and
  :func:`fput` (release on the last put);
* :func:`anon_inode_getfile`, whose files all share **one** inode and
  therefore one address_space (the root of rule R26), and
  :func:`alloc_anon_inode` / :func:`alloc_file_pseudo` for pseudo filesystems
  that give each file its own inode (dma-buf since 5.3);
* :class:`SuperBlock`: each filesystem the simulator mounts at boot
  (:func:`mount_builtin_filesystems`), with its magic (``fstatfs``), its
  anonymous device number (``st_dev``, ``/proc/PID/maps``) and ``s_iflags``
  (``SB_I_NOEXEC``: :func:`path_noexec`).  An inode names its superblock in
  ``i_sb``.

Simplified: ``fput`` releases immediately rather than from task work at the
return to userspace; there are no dentries beyond a name and an optional
``d_dname``/``d_release``; no mounts (so no ``MNT_NOEXEC``), permissions or locks.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import define, field

from .errors import KernelOops
from .mm.interval_tree import IntervalTree
from .module import Module, module_put
from .trace import kernel_function

if TYPE_CHECKING:
    from .kernel import Kernel
    from .mm.vma import VmAreaStruct

__all__ = [
    "ANON_INODE_FS_MAGIC",
    "DMA_BUF_MAGIC",
    "DRM_MAGIC",
    "FMODE_LSEEK",
    "FMODE_READ",
    "FMODE_WRITE",
    "OPEN_FMODE",
    "O_ACCMODE",
    "SB_I_NODEV",
    "SB_I_NOEXEC",
    "TMPFS_MAGIC",
    "AddressSpace",
    "File",
    "FileOperations",
    "Inode",
    "SuperBlock",
    "alloc_anon_inode",
    "alloc_file_pseudo",
    "anon_inode_getfile",
    "fput",
    "get_file",
    "init_pseudo",
    "mount_builtin_filesystems",
    "no_open",
    "path_noexec",
]

FMODE_READ = 0x1
FMODE_WRITE = 0x2
FMODE_LSEEK = 0x4
FMODE_PREAD = 0x8
FMODE_PWRITE = 0x10

O_ACCMODE = os.O_ACCMODE
O_NONBLOCK = os.O_NONBLOCK
O_CLOEXEC = os.O_CLOEXEC

S_IFREG = 0o100000
S_IFCHR = 0o020000
S_IFMT = 0o170000
S_IRUSR = 0o400
S_IWUSR = 0o200

# include/linux/fs.h: sb->s_iflags
SB_I_NOEXEC = 0x00000002
SB_I_NODEV = 0x00000004
# include/uapi/linux/magic.h
ANON_INODE_FS_MAGIC = 0x09041934
DMA_BUF_MAGIC = 0x444D4142  # "DMAB"
TMPFS_MAGIC = 0x01021994
DRM_MAGIC = 0x010203FF  # drm_fs_init_fs_context
MAX_LFS_FILESIZE = (1 << 63) - 1


@define(eq=False, slots=True)
class SuperBlock:
    """``struct super_block``: what ``fstat``, ``fstatfs`` and ``path_noexec`` read.

    Simplified: one superblock per filesystem type, mounted once at boot; ``s_dev``
    is the minor of the anonymous ``dev_t`` (major 0) ``get_anon_bdev`` handed out.
    """

    s_id: str
    """The name inodes carry in ``i_sb``: ``dmabuf``, ``shmem``, ``devtmpfs``, ..."""
    s_magic: int
    s_dev: int
    s_iflags: int = 0
    s_blocksize: int = 4096
    s_maxbytes: int = MAX_LFS_FILESIZE


def OPEN_FMODE(flags: int) -> int:
    """``OPEN_FMODE``: O_RDONLY→FMODE_READ, O_WRONLY→FMODE_WRITE, O_RDWR→both."""
    return ((flags + 1) & O_ACCMODE) & (FMODE_READ | FMODE_WRITE)


@define(eq=False, slots=True)
class FileOperations:
    """``struct file_operations``; ``None`` is a NULL method.

    Signatures (kernel side, returning ``-errno`` on failure):
    ``open(inode, file) -> int``, ``release(inode, file) -> int``,
    ``mmap(file, vma) -> int``, ``llseek(file, offset, whence) -> int``,
    ``unlocked_ioctl(file, cmd, arg) -> int``, ``poll(file, events) -> int``,
    ``read(file, count, pos) -> bytes | int``, ``write(file, data, pos) -> int``
    (at ``pos``; the VFS moves ``f_pos`` for read(2)/write(2), not for pread/pwrite),
    ``fsync(file, start, end, datasync) -> int``,
    ``fallocate(file, mode, offset, len) -> int``, ``show_fdinfo(file) -> str``.
    """

    owner: str = ""
    """A label for pictures and traces; the module itself is ``module``."""
    open: Callable[[Inode, File], int] | None = None
    release: Callable[[Inode, File], int] | None = None
    mmap: Callable[[File, VmAreaStruct], int] | None = None
    llseek: Callable[[File, int, int], int] | None = None
    unlocked_ioctl: Callable[[File, int, Any], int] | None = None
    poll: Callable[[File, int], int] | None = None
    read: Callable[[File, int, int], bytes | int] | None = None
    write: Callable[[File, bytes, int], int] | None = None
    show_fdinfo: Callable[[File], str] | None = None
    fsync: Callable[[File, int, int, int], int] | None = None
    fallocate: Callable[[File, int, int, int], int] | None = None
    module: Module | None = field(default=None, repr=False)
    """``fops->owner``: the module whose code these are (None: built in).  An open file
    holds a reference on it (``fops_get``), dropped at the last ``fput``."""


def no_open(inode: Inode, file: File) -> int:
    """``no_open``: the i_fop of pseudo inodes; reopening via /proc/self/fd fails ENXIO."""
    return -errno.ENXIO


@define(eq=False, slots=True)
class AddressSpace:
    """``struct address_space``: the page cache and the ``i_mmap`` tree of an inode."""

    host: Inode = field(repr=False)
    i_mmap: IntervalTree[VmAreaStruct] = field(factory=IntervalTree, repr=False)
    pages: dict[int, int] = field(factory=dict, repr=False)
    """Page cache: file page index → pfn (shmem/memfd only)."""

    @property
    def kernel(self) -> Kernel:
        return self.host.kernel

    def trace_name(self) -> str:
        return f"mapping(ino={self.host.i_ino})"

    def mapped_vmas(self) -> list[VmAreaStruct]:
        return list(self.i_mmap)


@define(eq=False, slots=True)
class Inode:
    """``struct inode`` (only the fields dma-buf and mmap look at)."""

    kernel: Kernel = field(repr=False)
    i_ino: int
    i_mode: int
    i_sb: str
    """Name of the superblock/filesystem: ``anon_inodefs``, ``dmabuf``, ``shmem``, ``devtmpfs``."""
    i_size: int = 0
    i_fop: FileOperations | None = field(default=None, repr=False)
    i_private: Any = field(default=None, repr=False)
    i_mapping: AddressSpace = field(init=False, repr=False)
    append_only: bool = False

    def __attrs_post_init__(self) -> None:
        self.i_mapping = AddressSpace(self)

    def is_reg(self) -> bool:
        return (self.i_mode & 0o170000) == S_IFREG


@define(eq=False, slots=True)
class File:
    """``struct file``."""

    kernel: Kernel = field(repr=False)
    f_inode: Inode = field(repr=False)
    f_op: FileOperations = field(repr=False)
    f_mode: int
    f_flags: int
    name: str
    """Dentry name, e.g. ``dmabuf`` or ``/dev/udmabuf``."""
    private_data: Any = field(default=None, repr=False)
    f_count: int = 1
    f_pos: int = 0
    f_mapping: AddressSpace = field(init=False, repr=False)
    d_dname: Callable[[File], str] | None = field(default=None, repr=False)
    """Builds the path shown in /proc/PID/maps (``anon_inode:dmabuf``, ``/dmabuf:name``)."""
    d_release: Callable[[File], None] | None = field(default=None, repr=False)
    """Called after ``f_op->release`` when the last reference goes (the dentry's release)."""
    released: bool = False

    def __attrs_post_init__(self) -> None:
        self.f_mapping = self.f_inode.i_mapping

    def trace_name(self) -> str:
        return f"file({self.path()})"

    def path(self) -> str:
        return self.d_dname(self) if self.d_dname is not None else self.name


@kernel_function("get_file", file="include/linux/fs.h")
def get_file(file: File) -> File:
    """Take a reference on ``file`` and return it."""
    if file.f_count <= 0:
        # KASAN would report a use-after-free here; refcount_t would saturate and WARN.
        raise KernelOops(
            "get_file", f"{file.path()} was already released (use after free)", rule="SAN-REFCOUNT"
        )
    file.f_count += 1
    return file


@kernel_function("fput", file="fs/file_table.c")
def fput(file: File) -> None:
    """Drop a reference; the last one calls ``f_op->release`` then the dentry release."""
    if file.f_count <= 0:
        raise KernelOops(
            "fput", f"{file.path()} was already released (refcount underflow)", rule="SAN-REFCOUNT"
        )
    file.f_count -= 1
    if file.f_count == 0:
        _fput_final(file)


@kernel_function("__fput", file="fs/file_table.c")
def _fput_final(file: File) -> None:
    file.released = True
    if file.f_op.release is not None:
        file.f_op.release(file.f_inode, file)
    if file.d_release is not None:
        file.d_release(file)
    module_put(file.f_op.module)  # fops_put


@kernel_function("init_pseudo", file="fs/libfs.c")
def init_pseudo(kernel: Kernel, name: str, magic: int, dev: int) -> SuperBlock:
    """A pseudo filesystem's superblock (``init_pseudo`` + ``kern_mount``).

    Since 6de2aeffabaa (7.2; 7.1.4 and 6.18.y stable) ``init_pseudo`` raises
    ``SB_I_NOEXEC | SB_I_NODEV`` for every pseudo filesystem — dma-buf's among them —
    so an executable mapping of such a file fails in ``do_mmap`` (``path_noexec``).
    """
    iflags = SB_I_NOEXEC | SB_I_NODEV if kernel.spec.pseudo_fs_noexec else 0
    return SuperBlock(name, magic, dev, iflags)


def mount_builtin_filesystems(kernel: Kernel) -> dict[str, SuperBlock]:
    """The filesystems the simulated machine has mounted by the time userspace runs.

    ``shmem`` is the kernel's internal tmpfs mount (memfds, shmem files of GEM
    objects and ``MAP_SHARED|MAP_ANONYMOUS``); ``devtmpfs`` holds the device nodes.
    Anonymous device minors follow the order a Debian initramfs boot hands them out.
    """
    sbs = [
        SuperBlock("shmem", TMPFS_MAGIC, 0x01),
        SuperBlock("devtmpfs", TMPFS_MAGIC, 0x05),
        init_pseudo(kernel, "dmabuf", DMA_BUF_MAGIC, 0x0C),
        init_pseudo(kernel, "drm", DRM_MAGIC, 0x0D),
        init_pseudo(kernel, "anon_inodefs", ANON_INODE_FS_MAGIC, 0x0E),
    ]
    return {sb.s_id: sb for sb in sbs}


def path_noexec(file: File) -> bool:
    """``path_noexec``: the file's mount is ``MNT_NOEXEC`` or its superblock ``SB_I_NOEXEC``.

    Simplified: mount flags are not modelled, only the superblock's.
    """
    sb = file.kernel.superblocks.get(file.f_inode.i_sb)
    return sb is not None and bool(sb.s_iflags & SB_I_NOEXEC)


def alloc_anon_inode(kernel: Kernel, sb: str, *, mode: int = S_IRUSR | S_IWUSR) -> Inode:
    """``alloc_anon_inode``: a fresh inode on a pseudo filesystem (i_fop = no_open)."""
    return Inode(kernel, kernel.next_ino(), mode, sb, i_fop=FileOperations(open=no_open))


def alloc_file_pseudo(
    inode: Inode, name: str, flags: int, fops: FileOperations, *, private_data: Any = None
) -> File:
    """``alloc_file_pseudo``: a file on its own inode, f_mode from the open flags."""
    return File(
        inode.kernel,
        inode,
        fops,
        OPEN_FMODE(flags),
        flags & (O_ACCMODE | O_NONBLOCK),
        name,
        private_data=private_data,
    )


@kernel_function("anon_inode_getfile", file="fs/anon_inodes.c")
def anon_inode_getfile(
    kernel: Kernel, name: str, fops: FileOperations, priv: Any, flags: int
) -> File:
    """A file on the single shared anon inode; /proc maps shows ``anon_inode:<name>``.

    Every file made here shares ``kernel.anon_inode`` and hence one
    ``address_space`` — which is why a shoot-down through one dma-buf's
    ``f_mapping`` under the old specs reaches every dma-buf (R26).
    """
    file = File(
        kernel,
        kernel.anon_inode,
        fops,
        OPEN_FMODE(flags),
        flags & (O_ACCMODE | O_NONBLOCK),
        name,
        private_data=priv,
        d_dname=lambda f: f"anon_inode:{f.name}",
    )
    return file
