"""Kernel-side syscall entry points and the generic VFS layer.

Every function here takes the calling :class:`~dmabuf_sim.process.Process`
and returns what the syscall returns in C — a value, or ``-errno`` — so the
userspace face only has to turn negatives into :class:`OSError`.  The order
of checks is the kernel's (fs/open.c, fs/read_write.c, fs/ioctl.c,
fs/fcntl.c, fs/select.c, mm/mmap.c, arch/x86/kernel/sys_x86_64.c).

The fd table and its helpers (``fd_install``, ``fget``, ``get_unused_fd_flags``,
``close_fd``, ``ksys_dup``) live in :mod:`dmabuf_sim.fs_file`, as in fs/file.c;
they are re-exported here under the names callers used before.

Simplified: one thread per process; no permissions, namespaces, or
``O_PATH``; ``/proc/<pid>/fd/N`` is the only procfs path that can be opened.
"""

from __future__ import annotations

import errno
import os
import re
from typing import TYPE_CHECKING, Any

from .errors import ENOIOCTLCMD, ERESTART_RESTARTBLOCK
from .fs import (
    FMODE_LSEEK,
    FMODE_PREAD,
    FMODE_PWRITE,
    FMODE_READ,
    FMODE_WRITE,
    OPEN_FMODE,
    File,
    fput,
    get_file,
)
from .fs_file import (
    NR_OPEN_DEFAULT,
    close_fd,
    fd_install,
    fdget,
    fget,
    get_unused_fd_flags,
    ksys_dup,
    put_unused_fd,
)
from .lockdep import held
from .mm.fork import dup_mmap
from .mm.gup import mm_populate
from .mm.mmap import (
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_NONBLOCK,
    MAP_POPULATE,
    do_mmap,
    do_munmap,
    exit_mmap,
)
from .mm.mprotect import do_mprotect_pkey
from .mm.mremap import do_mremap
from .mm.page_alloc import PAGE_MASK, PAGE_SHIFT
from .mm.shmem import memfd_fcntl
from .module import module_put, try_module_get
from .trace import kernel_function
from .uaccess import get_user_int
from .uapi import (
    DEFAULT_POLLMASK,
    F_ADD_SEALS,
    F_DUPFD,
    F_DUPFD_CLOEXEC,
    F_GET_SEALS,
    F_GETFD,
    F_GETFL,
    F_SETFD,
    F_SETFL,
    FD_CLOEXEC,
    FIOCLEX,
    FIONBIO,
    FIONCLEX,
    POLLERR,
    POLLHUP,
    POLLNVAL,
)
from .wait import WaitStatus, wait_event

if TYPE_CHECKING:
    from collections.abc import Callable

    from .kernel import Kernel
    from .process import Process

__all__ = [
    "NR_OPEN_DEFAULT",
    "do_sys_poll",
    "fd_install",
    "fdget",
    "fget",
    "get_unused_fd_flags",
    "mm_populate",
    "put_unused_fd",
    "sys_close",
    "sys_dup",
    "sys_fcntl",
    "sys_ioctl",
    "sys_lseek",
    "sys_mmap",
    "sys_open",
    "sys_poll",
    "sys_read",
    "sys_write",
]

_PROC_FD = re.compile(r"^/proc/(self|\d+)/fd/(\d+)$")


# -- open / close / dup -------------------------------------------------------------
@kernel_function("do_sys_open", file="fs/open.c")
def sys_open(proc: Process, path: str, flags: int, mode: int) -> int:
    kernel = proc.kernel
    m = _PROC_FD.match(path)
    if m:
        return _reopen_proc_fd(proc, m, flags)
    dev = kernel.chrdevs.get(path)
    if dev is None:
        return -errno.ENOENT
    fd = get_unused_fd_flags(proc, flags)
    if fd < 0:
        return fd
    file = File(
        kernel,
        dev.inode,
        dev.fops,
        OPEN_FMODE(flags) | FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE,  # do_dentry_open
        _open_f_flags(flags),
        path,
    )
    ret = _do_dentry_open(file)
    if ret:
        put_unused_fd(proc, fd)
        return ret
    fd_install(proc, fd, file)
    return fd


O_LARGEFILE = 0o100000  # x86-64's kernel value (userspace headers define it as 0)


def _open_f_flags(flags: int) -> int:
    """``f_flags`` of a file opened with ``flags``: O_CLOEXEC lives in the fd table
    (build_open_flags strips it) and 64-bit kernels force O_LARGEFILE
    (force_o_largefile), so F_GETFL of an O_RDWR open reads 0100002."""
    return (flags & ~os.O_CLOEXEC) | O_LARGEFILE


def _reopen_proc_fd(proc: Process, m: re.Match[str], flags: int) -> int:
    """Open ``/proc/<pid>/fd/N``: a new file on the same inode, through its ``i_fop``."""
    kernel = proc.kernel
    target = proc if m.group(1) == "self" else kernel.processes.get(int(m.group(1)))
    if target is None:
        return -errno.ENOENT
    old = fdget(target, int(m.group(2)))
    if old is None:
        return -errno.ENOENT
    inode = old.f_inode
    fops = inode.i_fop
    if fops is None:
        return -errno.ENXIO
    fd = get_unused_fd_flags(proc, flags)  # do_sys_openat2: the fd first, then the open
    if fd < 0:
        return fd
    file = File(
        kernel,
        inode,
        fops,
        OPEN_FMODE(flags) | FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE,  # do_dentry_open
        _open_f_flags(flags),
        old.name,
        private_data=old.private_data,  # what an ->open sets replaces it (drm_open)
        d_dname=old.d_dname,
    )
    # ->open runs on the new file: a char device gives it state of its own (a DRM fd
    # its own drm_file); no_open refuses pseudo inodes (dma-buf, anon inodes) with ENXIO
    ret = _do_dentry_open(file)
    if ret:
        put_unused_fd(proc, fd)
        return ret
    fd_install(proc, fd, file)
    return fd


def _do_dentry_open(file: File) -> int:
    if not try_module_get(file.f_op.module):  # fops_get: the driver is going away
        file.f_count = 0
        file.released = True
        return -errno.ENODEV
    if file.f_op.open is not None:
        ret = file.f_op.open(file.f_inode, file)
        if ret:
            file.f_count = 0
            file.released = True
            module_put(file.f_op.module)
            return ret
    return 0


sys_close = close_fd  # the fd half of close(2) (fs/file.c)
sys_dup = ksys_dup  # dup(2), F_DUPFD (fs/file.c)


# -- mmap family --------------------------------------------------------------------
@kernel_function("__x64_sys_mmap", file="arch/x86/kernel/sys_x86_64.c")
def sys_mmap(
    proc: Process, addr: int, length: int, prot: int, flags: int, fd: int, off: int
) -> int:
    """x86-64 ``mmap``: the byte offset must be page aligned before anything else (R3)."""
    if off & ~PAGE_MASK:
        return -errno.EINVAL
    return ksys_mmap_pgoff(proc, addr, length, prot, flags, fd, off >> PAGE_SHIFT)


@kernel_function("ksys_mmap_pgoff", file="mm/mmap.c")
def ksys_mmap_pgoff(
    proc: Process, addr: int, length: int, prot: int, flags: int, fd: int, pgoff: int
) -> int:
    file = None
    if not flags & MAP_ANONYMOUS:
        file = fget(proc, fd if fd < 1 << 31 else -1)
        if file is None:
            return -errno.EBADF  # R4: before the length is looked at
        if flags & MAP_HUGETLB:
            fput(file)
            return -errno.EINVAL  # not a hugetlbfs file
    elif flags & MAP_HUGETLB:
        raise NotImplementedError("MAP_HUGETLB (hugetlbfs) is not modelled")
    try:
        return vm_mmap_pgoff(proc, file, addr, length, prot, flags, pgoff)
    finally:
        if file is not None:
            fput(file)


@kernel_function("vm_mmap_pgoff", file="mm/util.c")
def vm_mmap_pgoff(
    proc: Process, file: File | None, addr: int, length: int, prot: int, flags: int, pgoff: int
) -> int:
    with held(proc.kernel, "mmap_lock"):  # mmap_write_lock_killable
        ret = do_mmap(proc.mm, file, addr, length, prot, flags, pgoff)
    # do_mmap's *populate: VM_LOCKED (from MAP_LOCKED) or MAP_POPULATE without NONBLOCK
    if ret >= 0 and (flags & MAP_LOCKED or (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE):
        mm_populate(proc, ret, length)
    return ret


# -- generic file syscalls ----------------------------------------------------------
@kernel_function("ksys_lseek", file="fs/read_write.c")
def sys_lseek(proc: Process, fd: int, offset: int, whence: int) -> int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    if whence > os.SEEK_END + 2 or whence < 0:  # SEEK_MAX = SEEK_HOLE
        return -errno.EINVAL
    return vfs_llseek(file, offset, whence)


@kernel_function("vfs_llseek", file="fs/read_write.c")
def vfs_llseek(file: File, offset: int, whence: int) -> int:
    if not file.f_mode & FMODE_LSEEK or file.f_op.llseek is None:
        return -errno.ESPIPE  # R42, R62: anon files of the old specs
    return file.f_op.llseek(file, offset, whence)


@kernel_function("vfs_read", file="fs/read_write.c")
def vfs_read(file: File, count: int, pos: int) -> bytes | int:
    if not file.f_mode & FMODE_READ:
        return -errno.EBADF
    if file.f_op.read is None:
        return -errno.EINVAL  # no FMODE_CAN_READ
    if pos < 0:
        return -errno.EINVAL  # rw_verify_area
    return file.f_op.read(file, count, pos)


@kernel_function("vfs_write", file="fs/read_write.c")
def vfs_write(file: File, data: bytes, pos: int) -> int:
    if not file.f_mode & FMODE_WRITE:
        return -errno.EBADF
    if file.f_op.write is None:
        return -errno.EINVAL  # no FMODE_CAN_WRITE
    if pos < 0:
        return -errno.EINVAL  # rw_verify_area
    return file.f_op.write(file, data, pos)


@kernel_function("ksys_read", file="fs/read_write.c")
def sys_read(proc: Process, fd: int, count: int) -> bytes | int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    ret = vfs_read(file, count, file.f_pos)
    if not isinstance(ret, int):
        file.f_pos += len(ret)
    return ret


@kernel_function("ksys_write", file="fs/read_write.c")
def sys_write(proc: Process, fd: int, data: bytes) -> int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    ret = vfs_write(file, data, file.f_pos)
    if ret > 0:
        file.f_pos += ret
    return ret


@kernel_function("ksys_pread64", file="fs/read_write.c")
def sys_pread64(proc: Process, fd: int, count: int, pos: int) -> bytes | int:
    """``pread``: ``EINVAL`` for a negative offset (before the fd), ``ESPIPE`` for files
    opened without ``FMODE_PREAD`` (dma-bufs and other pseudo files), else
    ``vfs_read`` at ``pos``; ``f_pos`` does not move."""
    if pos < 0:
        return -errno.EINVAL
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    if not file.f_mode & FMODE_PREAD:
        return -errno.ESPIPE
    return vfs_read(file, count, pos)


@kernel_function("ksys_pwrite64", file="fs/read_write.c")
def sys_pwrite64(proc: Process, fd: int, data: bytes, pos: int) -> int:
    """``pwrite``: like :func:`sys_pread64` with ``FMODE_PWRITE`` and ``vfs_write``."""
    if pos < 0:
        return -errno.EINVAL
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    if not file.f_mode & FMODE_PWRITE:
        return -errno.ESPIPE
    return vfs_write(file, data, pos)


@kernel_function("__x64_sys_ioctl", file="fs/ioctl.c")
def sys_ioctl(proc: Process, fd: int, cmd: int, arg: Any) -> int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    cmd &= 0xFFFFFFFF  # the kernel takes an unsigned int
    # do_vfs_ioctl: the generic commands every file understands
    if cmd == FIOCLEX:
        proc.files.cloexec.add(fd)
        return 0
    if cmd == FIONCLEX:
        proc.files.cloexec.discard(fd)
        return 0
    if cmd == FIONBIO:
        # ioctl_fionbio: get_user(on, (int __user *)argp) — the argument is a pointer

        on = get_user_int(proc.kernel, arg)
        if on is None:
            return -errno.EFAULT
        file.f_flags = file.f_flags | os.O_NONBLOCK if on else file.f_flags & ~os.O_NONBLOCK
        return 0
    return vfs_ioctl(file, cmd, arg)


@kernel_function("vfs_ioctl", file="fs/ioctl.c")
def vfs_ioctl(file: File, cmd: int, arg: Any) -> int:
    if file.f_op.unlocked_ioctl is None:
        return -errno.ENOTTY  # R47, R62
    ret = file.f_op.unlocked_ioctl(file, cmd, arg)
    if ret == -ENOIOCTLCMD:
        return -errno.ENOTTY
    return ret


def do_pollfd(proc: Process, fd: int, events: int) -> int:
    """``do_pollfd``: one entry's revents (0 for a negative fd, POLLNVAL for a closed one)."""
    if fd < 0:
        return 0
    file = fdget(proc, fd)
    if file is None:
        return POLLNVAL
    filter_ = events | POLLERR | POLLHUP
    mask = DEFAULT_POLLMASK if file.f_op.poll is None else file.f_op.poll(file, events)
    return mask & filter_


@kernel_function("do_sys_poll", file="fs/select.c")
def do_sys_poll(proc: Process, ufds: list[list[int]], end_time: int | None) -> int:
    """``poll(ufds, nfds, timeout)``: ``ufds`` are ``[fd, events, revents]`` entries whose
    revents are written back; ``end_time`` is the virtual deadline (None: wait for ever).

    Returns how many entries have revents, 0 on timeout, ``-EINVAL`` for more entries than
    RLIMIT_NOFILE, ``-ERESTART_RESTARTBLOCK`` when a signal is pending and nothing is ready
    (userspace sees EINTR).  Like ``do_poll``: scan every fd (``f_op->poll`` may arm fence
    callbacks); if one is ready, or the time is up, stop; a pending signal ends the call;
    otherwise sleep until the next event (a fence signalling, a timer) or the deadline,
    then scan again.  A zero timeout scans once.  Simplified: no poll slack.
    """
    if len(ufds) > NR_OPEN_DEFAULT:
        return -errno.EINVAL  # nfds > rlimit(RLIMIT_NOFILE)
    kernel = proc.kernel
    kernel.advance_clock_to(kernel.clock)  # events already due have happened
    timed_out = end_time is not None and end_time <= kernel.clock
    while True:
        count = 0
        for entry in ufds:
            entry[2] = do_pollfd(proc, entry[0], entry[1])
            if entry[2]:
                count += 1
        if count:
            return count
        if proc.signal_pending:
            return -ERESTART_RESTARTBLOCK  # -ERESTARTNOHAND, turned into a restart block
        if timed_out:
            return 0
        # poll_schedule_timeout: sleep until something happens or the deadline passes
        status = wait_event(
            kernel,
            _woken_after(kernel, kernel.events_run),
            deadline=end_time,
            intr=True,
            func="do_sys_poll",
            what=lambda: "fds " + ", ".join(f"{e[0]} (events {e[1]:#x})" for e in ufds),
        )
        timed_out = status is WaitStatus.TIMED_OUT


def _woken_after(kernel: Kernel, seen: int) -> Callable[[], bool]:
    """A sleeper's wake-up test: any event ran since ``seen`` (every wake-up rescans)."""
    return lambda: kernel.events_run > seen


def sys_poll(proc: Process, fd: int, events: int) -> int:
    """``poll`` on one fd with timeout 0: the revents mask."""
    entry = [fd, events, 0]
    ret = do_sys_poll(proc, [entry], proc.kernel.clock)
    return entry[2] if ret >= 0 else 0


@kernel_function("do_fcntl", file="fs/fcntl.c")
def sys_fcntl(proc: Process, fd: int, cmd: int, arg: int) -> int:
    file = fdget(proc, fd)
    if file is None:
        return -errno.EBADF
    if cmd == F_GETFL:
        return file.f_flags
    if cmd == F_SETFL:
        settable = os.O_APPEND | os.O_NONBLOCK | os.O_ASYNC | os.O_DIRECT | os.O_NOATIME
        file.f_flags = (file.f_flags & ~settable) | (arg & settable)
        return 0
    if cmd == F_GETFD:
        return FD_CLOEXEC if fd in proc.files.cloexec else 0
    if cmd == F_SETFD:
        if arg & FD_CLOEXEC:
            proc.files.cloexec.add(fd)
        else:
            proc.files.cloexec.discard(fd)
        return 0
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        if arg < 0 or arg >= NR_OPEN_DEFAULT:
            return -errno.EINVAL
        return ksys_dup(proc, fd, arg, cmd != F_DUPFD)
    if cmd in (F_ADD_SEALS, F_GET_SEALS):
        return memfd_fcntl(file, cmd, arg)
    return -errno.EINVAL


@kernel_function("__vm_munmap", file="mm/mmap.c")
def sys_munmap(proc: Process, addr: int, length: int) -> int:
    return do_munmap(proc.mm, addr, length)


@kernel_function("__x64_sys_mprotect", file="mm/mprotect.c")
def sys_mprotect(proc: Process, addr: int, length: int, prot: int) -> int:
    return do_mprotect_pkey(proc.mm, addr, length, prot)


@kernel_function("__x64_sys_mremap", file="mm/mremap.c")
def sys_mremap(
    proc: Process, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    return do_mremap(proc.mm, addr, old_len, new_len, flags, new_addr)


@kernel_function("kernel_clone", file="kernel/fork.c")
def sys_fork(proc: Process) -> Process:
    """``fork``: copy the fd table (a reference per file) and the address space."""
    from .process import Process as _Process  # noqa: PLC0415  # cycle: process.py calls these syscalls; fork makes a Process

    kernel = proc.kernel
    child = _Process(kernel, kernel._new_pid(), proc.comm)
    for fd, file in proc.files.fds.items():
        child.files.fds[fd] = get_file(file)
    child.files.cloexec = set(proc.files.cloexec)
    dup_mmap(child.mm, proc.mm)
    kernel.processes[child.pid] = child
    return child


@kernel_function("do_exit", file="kernel/exit.c")
def sys_exit(proc: Process) -> int:
    for fd in sorted(proc.files.fds):
        fput(proc.files.fds.pop(fd))
    proc.files.cloexec.clear()
    exit_mmap(proc.mm)
    return 0


@kernel_function("do_group_exit", file="kernel/exit.c")
def do_group_exit(proc: Process) -> None:
    """A fatal signal (SIGKILL from the OOM killer) ends the task: ``get_signal`` →
    ``do_group_exit`` → ``do_exit``; every fd and mapping goes, and the task is reaped."""
    sys_exit(proc)
    proc.alive = False
    proc.kernel.processes.pop(proc.pid, None)
