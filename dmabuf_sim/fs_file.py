"""File descriptor tables (fs/file.c).

The fd table of a task (:class:`FilesStruct`, ``struct files_struct``) and the
functions the kernel keeps beside it: reserve a slot
(:func:`get_unused_fd_flags`, :func:`put_unused_fd`), publish a file in it
(:func:`fd_install`, which takes over the caller's reference), look one up
(:func:`fdget` borrows, :func:`fget` takes a reference), and the fd half of
``close`` and ``dup`` (:func:`close_fd`, :func:`ksys_dup`).

Simplified: one thread per task, so ``fdget`` never needs a reference and
there is no RCU; the table is a dict, not an array that grows; ``RLIMIT_NOFILE``
is fixed at :data:`NR_OPEN_DEFAULT`.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from attrs import define, field

from .fs import File, fput, get_file
from .trace import kernel_function

if TYPE_CHECKING:
    from .process import Process

__all__ = [
    "NR_OPEN_DEFAULT",
    "FilesStruct",
    "close_fd",
    "fd_install",
    "fdget",
    "fget",
    "get_unused_fd_flags",
    "ksys_dup",
    "put_unused_fd",
]

NR_OPEN_DEFAULT = 1024  # RLIMIT_NOFILE soft limit


@define(eq=False, slots=True)
class FilesStruct:
    """``struct files_struct``: fd → file, plus the close-on-exec set."""

    fds: dict[int, File] = field(factory=dict)
    cloexec: set[int] = field(factory=set)
    reserved: dict[int, bool] = field(factory=dict)
    """Slots handed out by :func:`get_unused_fd_flags` and not yet installed, with
    whether each is to be close-on-exec."""


@kernel_function("get_unused_fd_flags", file="fs/file.c")
def get_unused_fd_flags(proc: Process, flags: int) -> int:
    """Reserve the lowest free fd (``-EMFILE`` past RLIMIT_NOFILE)."""
    fd = 0
    fds = proc.files.fds
    while fd in fds or fd in proc.files.reserved:
        fd += 1
    if fd >= NR_OPEN_DEFAULT:
        return -errno.EMFILE
    proc.files.reserved[fd] = bool(flags & os.O_CLOEXEC)
    return fd


def put_unused_fd(proc: Process, fd: int) -> None:
    """Give back a slot reserved by :func:`get_unused_fd_flags` and never installed."""
    proc.files.reserved.pop(fd, None)


@kernel_function("fd_install", file="fs/file.c")
def fd_install(proc: Process, fd: int, file: File) -> None:
    """Install ``file`` at a reserved fd; the caller's reference moves to the table."""
    cloexec = proc.files.reserved.pop(fd)
    proc.files.fds[fd] = file
    if cloexec:
        proc.files.cloexec.add(fd)
    else:
        proc.files.cloexec.discard(fd)


def fdget(proc: Process, fd: int) -> File | None:
    """The file at ``fd`` without a new reference (single-threaded ``fdget``)."""
    if not isinstance(fd, int) or fd < 0:
        return None
    return proc.files.fds.get(fd)


@kernel_function("fget", file="fs/file.c")
def fget(proc: Process, fd: int) -> File | None:
    """The file at ``fd`` with a reference taken (None: no such fd)."""
    file = fdget(proc, fd)
    if file is not None:
        get_file(file)
    return file


@kernel_function("close_fd", file="fs/file.c")
def close_fd(proc: Process, fd: int) -> int:
    """``close(fd)``: take the file out of the table and drop the table's reference."""
    file = proc.files.fds.pop(fd, None) if isinstance(fd, int) else None
    if file is None:
        return -errno.EBADF
    proc.files.cloexec.discard(fd)
    fput(file)
    return 0


@kernel_function("ksys_dup", file="fs/file.c")
def ksys_dup(proc: Process, oldfd: int, minfd: int = 0, cloexec: bool = False) -> int:
    """``dup``/``F_DUPFD``: the lowest free fd at or above ``minfd`` gets a new reference."""
    file = fdget(proc, oldfd)
    if file is None:
        return -errno.EBADF
    fd = minfd
    while fd in proc.files.fds or fd in proc.files.reserved:
        fd += 1
    if fd >= NR_OPEN_DEFAULT:
        return -errno.EMFILE
    proc.files.reserved[fd] = cloexec
    fd_install(proc, fd, get_file(file))
    return fd
