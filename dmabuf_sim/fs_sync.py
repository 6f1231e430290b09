"""fsync(2) and fdatasync(2) (fs/sync.c).

``do_fsync``: ``EBADF`` for a bad fd, then ``vfs_fsync_range`` over the whole
file: ``EINVAL`` when the file has no ``->fsync`` (dma-bufs, device nodes),
else the filesystem's answer (shmem's ``noop_fsync``: 0).  ``msync(MS_SYNC)``
goes through the same ``vfs_fsync_range``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .fs_file import fdget
from .trace import kernel_function

if TYPE_CHECKING:
    from .fs import File
    from .process import Process

__all__ = ["LLONG_MAX", "do_fsync", "noop_fsync", "vfs_fsync", "vfs_fsync_range"]

LLONG_MAX = (1 << 63) - 1


def noop_fsync(file: File, start: int, end: int, datasync: int) -> int:
    """``noop_fsync`` (fs/libfs.c): shmem has nothing to write back."""
    return 0


@kernel_function("vfs_fsync_range", file="fs/sync.c")
def vfs_fsync_range(file: File, start: int, end: int, datasync: int) -> int:
    if file.f_op.fsync is None:
        return -errno.EINVAL
    return file.f_op.fsync(file, start, end, datasync)


def vfs_fsync(file: File, datasync: int) -> int:
    """``vfs_fsync``: the whole file."""
    return vfs_fsync_range(file, 0, LLONG_MAX, datasync)


@kernel_function("do_fsync", file="fs/sync.c")
def do_fsync(proc: Process, fd: int, datasync: int) -> int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    return vfs_fsync(file, datasync)
