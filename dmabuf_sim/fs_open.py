"""fallocate(2) (fs/open.c: ``vfs_fallocate``).

The checks, in order: ``offset < 0`` or ``len <= 0`` → ``EINVAL``; the mode
(6.12+: one ``switch`` on the mode bits, ``EOPNOTSUPP`` for every unknown or
mixed mode; before: bit tests, ``EINVAL`` for collapse/insert/unshare mixed
with other bits); no ``FMODE_WRITE`` → ``EBADF``; append-only/immutable →
``EPERM``; a FIFO ``ESPIPE``; a directory ``EISDIR``; anything but a regular
file or block device → ``ENODEV`` — a dma-buf's inode has no file type at all
(``alloc_anon_inode``: mode 0600), a device node is a character device; past
``s_maxbytes`` → ``EFBIG``; no ``->fallocate`` → ``EOPNOTSUPP``.  Then the
filesystem: :func:`~dmabuf_sim.mm.shmem.shmem_fallocate` for memfds.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .fs import FMODE_WRITE, S_IFMT, S_IFREG
from .fs_file import fdget
from .trace import kernel_function

if TYPE_CHECKING:
    from .fs import File
    from .process import Process

__all__ = [
    "FALLOC_FL_COLLAPSE_RANGE",
    "FALLOC_FL_INSERT_RANGE",
    "FALLOC_FL_KEEP_SIZE",
    "FALLOC_FL_NO_HIDE_STALE",
    "FALLOC_FL_PUNCH_HOLE",
    "FALLOC_FL_UNSHARE_RANGE",
    "FALLOC_FL_WRITE_ZEROES",
    "FALLOC_FL_ZERO_RANGE",
    "ksys_fallocate",
    "vfs_fallocate",
]

# include/uapi/linux/falloc.h
FALLOC_FL_ALLOCATE_RANGE = 0x00
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_NO_HIDE_STALE = 0x04
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_FL_UNSHARE_RANGE = 0x40
FALLOC_FL_WRITE_ZEROES = 0x80  # 6.17
_S_IFIFO = 0o010000
_S_IFDIR = 0o040000
_S_IFBLK = 0o060000


def _check_mode_bits(mode: int) -> int:
    """The mode checks before 6.12 (5.10, 6.1): bit tests, some of them ``EINVAL``."""
    supported = (
        FALLOC_FL_KEEP_SIZE
        | FALLOC_FL_PUNCH_HOLE
        | FALLOC_FL_COLLAPSE_RANGE
        | FALLOC_FL_ZERO_RANGE
        | FALLOC_FL_INSERT_RANGE
        | FALLOC_FL_UNSHARE_RANGE
    )
    if mode & ~supported:
        return -errno.EOPNOTSUPP
    if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) == (
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE
    ):
        return -errno.EOPNOTSUPP  # "Punch hole and zero range are mutually exclusive"
    if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
        return -errno.EOPNOTSUPP  # "Punch hole must have keep size set"
    if mode & FALLOC_FL_COLLAPSE_RANGE and mode & ~FALLOC_FL_COLLAPSE_RANGE:
        return -errno.EINVAL
    if mode & FALLOC_FL_INSERT_RANGE and mode & ~FALLOC_FL_INSERT_RANGE:
        return -errno.EINVAL
    if mode & FALLOC_FL_UNSHARE_RANGE and mode & ~(FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE):
        return -errno.EINVAL
    return 0


def _check_mode_switch(mode: int, write_zeroes: bool) -> int:
    """6.12+: "Modes are exclusive" — one switch on the mode bits."""
    mode_mask = (
        FALLOC_FL_PUNCH_HOLE
        | FALLOC_FL_COLLAPSE_RANGE
        | FALLOC_FL_ZERO_RANGE
        | FALLOC_FL_INSERT_RANGE
        | FALLOC_FL_UNSHARE_RANGE
        | (FALLOC_FL_WRITE_ZEROES if write_zeroes else 0)
    )
    if mode & ~(mode_mask | FALLOC_FL_KEEP_SIZE):
        return -errno.EOPNOTSUPP
    kind = mode & mode_mask
    if kind in (FALLOC_FL_ALLOCATE_RANGE, FALLOC_FL_UNSHARE_RANGE, FALLOC_FL_ZERO_RANGE):
        return 0
    if kind == FALLOC_FL_PUNCH_HOLE:
        return 0 if mode & FALLOC_FL_KEEP_SIZE else -errno.EOPNOTSUPP
    if kind in (FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE) or (
        write_zeroes and kind == FALLOC_FL_WRITE_ZEROES
    ):
        return -errno.EOPNOTSUPP if mode & FALLOC_FL_KEEP_SIZE else 0
    return -errno.EOPNOTSUPP


@kernel_function("vfs_fallocate", file="fs/open.c")
def vfs_fallocate(file: File, mode: int, offset: int, length: int) -> int:
    inode = file.f_inode
    spec = file.kernel.spec

    if offset < 0 or length <= 0:
        return -errno.EINVAL
    if spec.fallocate_mode_switch:
        ret = _check_mode_switch(mode, spec.falloc_write_zeroes)
    else:
        ret = _check_mode_bits(mode)
    if ret:
        return ret
    if not file.f_mode & FMODE_WRITE:
        return -errno.EBADF
    if mode & ~FALLOC_FL_KEEP_SIZE and inode.append_only:
        return -errno.EPERM  # "We can only allow pure fallocate on append only files"
    fmt = inode.i_mode & S_IFMT
    if fmt == _S_IFIFO:
        return -errno.ESPIPE
    if fmt == _S_IFDIR:
        return -errno.EISDIR
    if fmt not in (S_IFREG, _S_IFBLK):
        return -errno.ENODEV
    sb = file.kernel.superblocks.get(inode.i_sb)
    maxbytes = sb.s_maxbytes if sb is not None else (1 << 63) - 1
    if offset + length > maxbytes or offset + length >= 1 << 63:  # "wrap through zero too"
        return -errno.EFBIG
    if file.f_op.fallocate is None:
        return -errno.EOPNOTSUPP
    return file.f_op.fallocate(file, mode, offset, length)


@kernel_function("ksys_fallocate", file="fs/open.c")
def ksys_fallocate(proc: Process, fd: int, mode: int, offset: int, length: int) -> int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    return vfs_fallocate(file, mode, offset, length)
