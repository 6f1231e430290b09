"""The userspace face: a process with an fd table, syscalls and memory access.

:class:`Process` mirrors the Linux syscalls by name, argument order and
errno, the way Python's :mod:`os` and :mod:`mmap` do: a failing call raises
:class:`OSError` whose ``errno`` is the kernel's.  Integer arguments are
passed as the C ABI would — a negative length or offset becomes its 64-bit
two's complement, so ``mmap(..., offset=-4096)`` asks for offset
``0xFFFFFFFFFFFFF000`` and gets ``EOVERFLOW``, as on a real machine.

Misuse of the Python API (a ``str`` where an int belongs, a number that does
not fit in 64 bits) raises :class:`TypeError`/:class:`ValueError` naming the
argument; nothing in the kernel changes.

Memory is touched with :meth:`Process.read_memory` / :meth:`Process.write_memory`,
which go through the page tables, the fault path and the CPU cache; a bad
access raises :class:`~dmabuf_sim.errors.SIGSEGV` or
:class:`~dmabuf_sim.errors.SIGBUS`.

While the kernel's tracer is on, every call here is also recorded the way
strace sees it (a ``syscall`` or ``access`` record ahead of the kernel's own
events, see :mod:`dmabuf_sim.strace`), and observers hear of it through
``on_user_call_entry(record)`` / ``on_user_call_exit(record)``.  With tracing
off a call pays one test of the tracer's ``enabled``.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from attrs import define, field

from . import strace
from . import syscalls as sc
from .abi import bytes_like as _bytes_like
from .abi import c_int as _int
from .abi import count as _count
from .abi import ioctl_arg as _ioctl_arg
from .abi import text as _text
from .abi import ulong as _ulong
from .errors import (
    ERESTART_RESTARTBLOCK,
    ERESTARTSYS,
    SIGKILL,
    KernelOops,
    Signal,
    errname,
    os_error,
)
from .fs import FMODE_WRITE, File, fput
from .fs_file import (
    FilesStruct,
    close_fd,
    fd_install,
    fdget,
    fget,
    get_unused_fd_flags,
    ksys_dup,
    put_unused_fd,
)
from .fs_open import ksys_fallocate
from .fs_stat import do_readlinkat, fd_statfs, vfs_fstat
from .fs_sync import do_fsync
from .mm.madvise import do_madvise
from .mm.memory import user_access
from .mm.mmap import MmStruct
from .mm.msync import sys_msync
from .mm.page_alloc import PAGE_SHIFT
from .mm.shmem import MFD_CLOEXEC, is_shmem_file, memfd_create, shmem_truncate
from .mm.vma import vma_perms
from .module import delete_module

if TYPE_CHECKING:
    from .fs_stat import KStatfs
    from .kernel import Kernel

__all__ = ["FilesStruct", "Process"]

_U64 = 1 << 64
_SB_DEV = {"anon_inodefs": 0x0E, "dmabuf": 0x0C, "shmem": 0x01, "devtmpfs": 0x05}


def _pollfds(fd: object, events: object) -> tuple[list[list[int]], bool]:
    """Validate poll's arguments: ``[fd, events, revents]`` entries and whether one fd."""
    if isinstance(fd, (list, tuple)):
        if events is not None:
            raise TypeError(
                "with a list of (fd, events) pairs the events come with each pair; pass the"
                f" timeout by keyword: poll(pairs, timeout_ms={events!r})"
            )
        entries = []
        for i, pair in enumerate(fd):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise TypeError(f"poll entry {i} must be an (fd, events) pair, not {pair!r}")
            entries.append([_int(f"fd of entry {i}", pair[0]), _events(pair[1]), 0])
        return entries, False
    if events is None:
        raise TypeError(
            "poll(fd, events): events must be an int mask (POLLIN, POLLOUT, ...);"
            " or pass a list of (fd, events) pairs"
        )
    return [[_int("fd", fd), _events(events), 0]], True


def _events(value: object) -> int:
    """``struct pollfd.events`` is a ``short``: any 16-bit mask."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"events must be an int mask (POLLIN, ...), not {type(value).__name__}")
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"events={value:#x} does not fit in struct pollfd's 16-bit events")
    return value


def _check(ret: int) -> int:
    if ret < 0:
        if ret == -ERESTARTSYS:
            ret = -errno.EINTR  # the signal is delivered; no SA_RESTART is modelled
        raise os_error(ret)
    return ret


F = TypeVar("F", bound=Callable[..., Any])


def _record_call(
    proc: Process, kind: str, name: str, args: tuple[Any, ...], call: Callable[[], Any]
) -> Any:
    """Run ``call`` with a strace record around it (the tracer is on)."""
    kernel = proc.kernel
    record = kernel.tracer.user_call(kind, name)
    record.pid, record.comm = proc.pid, proc.comm  # the caller, before it enters the kernel
    kernel.observers.emit("user_call_entry", record)
    result: Any = None
    try:
        result = call()
    except OSError as exc:
        record.ret = -(exc.errno or 0)
        record.note = errname(record.ret)
        raise
    except Signal as sig:
        record.note = strace.signal_note(sig)
        raise
    except KernelOops as oops:
        record.note = f"oops in {oops.func}"
        raise
    except BaseException as exc:
        record.note = f"raised {type(exc).__name__}"
        raise
    else:
        record.ret = strace.format_result(name, result)
        if record.ret is None and kind == "syscall" and name != "exit_group":
            record.ret = 0  # the C call returns 0 where the Python method returns None
        if name == "poll" and result:
            if isinstance(result, list):
                record.note = ", ".join(strace.poll_revents(fd, rev) for fd, rev in result)
            else:
                record.note = strace.poll_revents(args[0], result)
        return result
    finally:
        record.args = strace.format_args(name, args, result)
        kernel.observers.emit("user_call_exit", record)


def _syscall(name: str) -> Callable[[F], F]:
    """A system call of the userspace face: recorded as ``name(args) = ret`` when traced."""

    def deco(method: F) -> F:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(self: Process, *args: Any, **kwargs: Any) -> Any:
            if not self.kernel.tracer.enabled:
                return method(self, *args, **kwargs)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            shown = tuple(bound.arguments.values())[1:]
            return _record_call(self, "syscall", name, shown, lambda: method(self, *args, **kwargs))

        return cast(F, wrapper)

    return deco


@define(eq=False, slots=True)
class Process:
    """A simulated userspace process (made by :meth:`Kernel.spawn` or :meth:`fork`)."""

    kernel: Kernel = field(repr=False)
    pid: int
    comm: str
    mm: MmStruct = field(init=False, repr=False)
    files: FilesStruct = field(factory=FilesStruct, repr=False)
    alive: bool = True
    signal_pending: bool = False
    fatal_signal_pending: bool = False
    """SIGKILL is queued: long allocations give up with -EINTR."""
    """A signal is queued: interruptible waits in the kernel return -ERESTARTSYS (EINTR)."""

    def __attrs_post_init__(self) -> None:
        self.mm = MmStruct(self.kernel, owner=self)

    def trace_name(self) -> str:
        return f"{self.comm}-{self.pid}"

    def _repr_svg_(self) -> str:
        """What this process reaches (vmas, files, pages), drawn; Jupyter shows it."""
        from .picture import snapshot_graph, to_svg_fallback  # noqa: PLC0415  # cycle: the pictures (layer 8) draw processes

        return to_svg_fallback(snapshot_graph(self.kernel, processes=[self]))

    def _enter(self) -> Any:
        if not self.alive:
            raise ValueError(f"process {self.pid} has exited; spawn or fork a live one")
        return self._in_kernel()

    @contextmanager
    def _in_kernel(self) -> Iterator[None]:
        """Run kernel code for this task; a fatal signal (the OOM killer's SIGKILL)
        ends the task on its way back to userspace, as ``exit_to_user_mode`` does."""
        with self.kernel.running(self):
            try:
                yield
            except SIGKILL:
                sc.do_group_exit(self)
                raise

    # -- files -------------------------------------------------------------------
    @_syscall("open")
    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
        """``open(2)``: device nodes (``/dev/...``) and ``/proc/<pid>/fd/N``."""
        path = _text("path", path)
        flags = _int("flags", flags)
        mode = _int("mode", mode)
        with self._enter():
            return _check(sc.sys_open(self, path, flags, mode))

    @_syscall("close")
    def close(self, fd: int) -> None:
        fd = _int("fd", fd)
        with self._enter():
            _check(close_fd(self, fd))

    @_syscall("dup")
    def dup(self, fd: int) -> int:
        fd = _int("fd", fd)
        with self._enter():
            return _check(ksys_dup(self, fd))

    @_syscall("lseek")
    def lseek(self, fd: int, pos: int, how: int) -> int:
        fd = _int("fd", fd)
        pos = _ulong("pos", pos)
        pos = pos - _U64 if pos >= 1 << 63 else pos  # loff_t is signed
        how = _int("how", how)
        with self._enter():
            return _check(sc.sys_lseek(self, fd, pos, how))

    @_syscall("read")
    def read(self, fd: int, n: int) -> bytes:
        fd = _int("fd", fd)
        n = _count("n", n)
        with self._enter():
            ret = sc.sys_read(self, fd, n)
        if isinstance(ret, int):
            _check(ret)
            return b""
        return ret

    @_syscall("write")
    def write(self, fd: int, data: bytes) -> int:
        fd = _int("fd", fd)
        data = _bytes_like("data", data)
        with self._enter():
            return _check(sc.sys_write(self, fd, data))

    @_syscall("ioctl")
    def ioctl(self, fd: int, request: int, arg: Any = 0) -> int:
        """``ioctl(2)``; struct arguments get their output fields written back."""
        fd = _int("fd", fd)
        request = _ulong("request", request)
        arg = _ioctl_arg(arg)
        with self._enter():
            return _check(sc.sys_ioctl(self, fd, request, arg))

    @overload
    def poll(self, fd: int, events: int, timeout_ms: int | None = 0) -> int: ...

    @overload
    def poll(
        self, fd: Sequence[tuple[int, int]], events: None = None, timeout_ms: int | None = 0
    ) -> list[tuple[int, int]]: ...

    @_syscall("poll")
    def poll(
        self,
        fd: int | Sequence[tuple[int, int]],
        events: int | None = None,
        timeout_ms: int | None = 0,
    ) -> int | list[tuple[int, int]]:
        """``poll(2)`` on the virtual clock.

        * ``poll(fd, events, timeout_ms=0)`` polls one fd and returns its ``revents``
          (0 when the timeout expires first; ``POLLNVAL`` for a closed fd).
        * ``poll([(fd, events), ...], timeout_ms=0)`` polls several and returns the
          ``(fd, revents)`` pairs whose revents are non-zero, in the order given — what
          ``select.poll().poll()`` returns (an empty list on timeout).  Negative fds are
          ignored, as poll(2) ignores them; an empty list just sleeps.

        ``timeout_ms`` is in milliseconds of virtual time: 0 checks once; a positive
        value sleeps at most that long, letting pending events (device jobs, fences,
        timers) run in time order and returning as soon as an fd is ready; a negative
        value (-1) or None waits for ever (:class:`~dmabuf_sim.errors.TaskHung` if nothing
        pending can ever make an fd ready).  Raises ``OSError(EINTR)`` when a signal is
        pending (``signal_pending``) and nothing is ready, ``OSError(EINVAL)`` for more
        than RLIMIT_NOFILE (1024) entries.
        """
        entries, single = _pollfds(fd, events)
        if timeout_ms is None:
            timeout = -1
        else:
            timeout = _int("timeout_ms", timeout_ms)
            if timeout >= 1 << 31:
                raise ValueError(f"timeout_ms={timeout_ms} does not fit in a C int")
        with self._enter():
            kernel = self.kernel
            end_time = None if timeout < 0 else kernel.clock + timeout * 1_000_000
            ret = sc.do_sys_poll(self, entries, end_time)
        if ret < 0:
            if ret == -ERESTART_RESTARTBLOCK:
                ret = -errno.EINTR  # the handler runs; poll is not restarted
            raise os_error(ret)
        if single:
            return entries[0][2]
        return [(e[0], e[2]) for e in entries if e[2]]

    @_syscall("fcntl")
    def fcntl(self, fd: int, cmd: int, arg: int = 0) -> int:
        fd = _int("fd", fd)
        with self._enter():
            return _check(sc.sys_fcntl(self, fd, _int("cmd", cmd), _int("arg", arg)))

    @_syscall("memfd_create")
    def memfd_create(self, name: str, flags: int = 0) -> int:
        name = _text("name", name)
        flags = _int("flags", flags)
        with self._enter():
            fd = _check(get_unused_fd_flags(self, os.O_CLOEXEC if flags & MFD_CLOEXEC else 0))
            file = memfd_create(self.kernel, name, flags)
            if isinstance(file, int):
                put_unused_fd(self, fd)
                raise os_error(file)
            fd_install(self, fd, file)
            return fd

    @_syscall("ftruncate")
    def ftruncate(self, fd: int, length: int) -> None:
        fd = _int("fd", fd)
        length = _ulong("length", length)
        with self._enter():
            if length >= 1 << 63:
                raise os_error(-errno.EINVAL)  # do_sys_ftruncate: length < 0 before fdget
            file = fdget(self, fd)
            if file is None:
                raise os_error(-errno.EBADF)
            if not file.f_inode.is_reg() or not file.f_mode & FMODE_WRITE:
                raise os_error(-errno.EINVAL)
            if not is_shmem_file(file):
                raise NotImplementedError("ftruncate of non-shmem regular files")
            _check(shmem_truncate(file, length))

    # -- memory mappings -------------------------------------------------------------
    @_syscall("mmap")
    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> int:
        """``mmap(2)``: returns the address of the new mapping."""
        args = (
            _ulong("addr", addr),
            _ulong("length", length),
            _ulong("prot", prot),
            _ulong("flags", flags),
            _int("fd", fd),
            _ulong("offset", offset),
        )
        with self._enter():
            return _check(sc.sys_mmap(self, *args))

    @_syscall("munmap")
    def munmap(self, addr: int, length: int) -> None:
        a, n = _ulong("addr", addr), _ulong("length", length)
        with self._enter():
            _check(sc.sys_munmap(self, a, n))

    @_syscall("mprotect")
    def mprotect(self, addr: int, length: int, prot: int) -> None:
        a, n, p = _ulong("addr", addr), _ulong("length", length), _ulong("prot", prot)
        with self._enter():
            _check(sc.sys_mprotect(self, a, n, p))

    @_syscall("mremap")
    def mremap(
        self,
        old_address: int,
        old_size: int,
        new_size: int,
        flags: int = 0,
        new_address: int = 0,
    ) -> int:
        args = (
            _ulong("old_address", old_address),
            _ulong("old_size", old_size),
            _ulong("new_size", new_size),
            _ulong("flags", flags),
            _ulong("new_address", new_address),
        )
        with self._enter():
            return _check(sc.sys_mremap(self, *args))

    def read_memory(self, addr: int, n: int) -> bytes:
        """Load ``n`` bytes at ``addr`` as the CPU would (may raise SIGSEGV/SIGBUS)."""
        # A plain int in range is what _ulong and _count return unchanged: test that inline
        if type(addr) is not int or not 0 <= addr < _U64:
            addr = _ulong("addr", addr)
        if type(n) is not int or not 0 <= n < _U64:
            n = _count("n", n)
        if self.kernel.tracer.enabled:
            return cast(
                bytes,
                _record_call(
                    self, "access", "read_memory", (addr, n), lambda: self._access(addr, n, None)
                ),
            )
        return self._access(addr, n, None)

    def write_memory(self, addr: int, data: bytes) -> None:
        """Store ``data`` at ``addr`` as the CPU would (may raise SIGSEGV/SIGBUS)."""
        if type(addr) is not int or not 0 <= addr < _U64:
            addr = _ulong("addr", addr)
        if type(data) is not bytes:
            data = _bytes_like("data", data)
        if self.kernel.tracer.enabled:
            _record_call(
                self,
                "access",
                "write_memory",
                (addr, data),
                lambda: self._access(addr, len(data), data),
            )
            return
        self._access(addr, len(data), data)

    def _access(self, addr: int, n: int, data: bytes | None) -> bytes:
        """A load (``data`` None) or store by this task.

        What :meth:`_enter` does for a syscall, without its context managers (this is
        the load/store path): the kernel runs with ``current`` set to this task, and a
        fatal signal (the OOM killer's SIGKILL) ends the task on its way back.
        """
        if not self.alive:
            raise ValueError(f"process {self.pid} has exited; spawn or fork a live one")
        kernel = self.kernel
        prev = kernel.current
        kernel.current = self
        try:
            return user_access(self.mm, addr, n, write=data is not None, data=data)
        except SIGKILL:
            sc.do_group_exit(self)
            raise
        finally:
            kernel.current = prev

    # -- processes -------------------------------------------------------------------
    @_syscall("fork")
    def fork(self) -> Process:
        """``fork(2)``: the child shares open files and copies the address space."""
        with self._enter():
            return sc.sys_fork(self)

    @_syscall("exit_group")
    def exit(self) -> None:
        """Exit: close every fd and tear down the address space."""
        with self._enter():
            sc.sys_exit(self)
        self.alive = False
        self.kernel.processes.pop(self.pid, None)

    # -- modules -------------------------------------------------------------------------
    def delete_module(self, name: str, flags: int = os.O_NONBLOCK) -> int:
        """``delete_module(2)``, as kmod's ``rmmod`` calls it (``O_NONBLOCK``): returns 0
        once the module is unloaded.

        ``OSError``: ``ENOENT`` — no such module loaded (built-in drivers such as udmabuf
        and the dma-heaps have none); ``EWOULDBLOCK`` — still in use (an open device fd, or a
        dma-buf it exported is alive: any fd, mapping, attachment or kernel reference);
        ``EBUSY`` — being removed, or it cannot be removed.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str (the module name), not {type(name).__name__}")
        flags = _int("flags", flags)
        with self._enter():
            return _check(delete_module(self.kernel, name, flags & 0xFFFFFFFF))

    # -- procfs ----------------------------------------------------------------------
    def file(self, fd: int) -> File:
        """The kernel ``struct file`` behind ``fd`` (for inspection; no reference taken)."""
        f = fdget(self, _int("fd", fd))
        if f is None:
            raise os_error(-errno.EBADF)
        return f

    def maps(self) -> str:
        """``/proc/<pid>/maps``."""
        lines = []
        for vma in self.mm.vmas:
            perms = vma_perms(vma.vm_flags)
            file = vma.vm_file
            if file is not None:
                dev = _SB_DEV.get(file.f_inode.i_sb, 0)
                ino = file.f_inode.i_ino
                name = file.path()
                off = vma.vm_pgoff << PAGE_SHIFT
            else:
                dev, ino, name, off = 0, 0, "", 0
            # show_vma_header_prefix ends with a space; seq_pad pads named lines to 72
            head = f"{vma.vm_start:08x}-{vma.vm_end:08x} {perms} {off:08x} 00:{dev:02x} {ino} "
            lines.append(f"{head.ljust(72)} {name}" if name else head)
        return "\n".join(lines) + ("\n" if lines else "")

    def fdinfo(self, fd: int) -> str:
        """``/proc/<pid>/fdinfo/<fd>``."""
        fd = _int("fd", fd)
        with self._enter():
            file = fget(self, fd)  # procfs holds a reference while it prints
            if file is None:
                raise os_error(-errno.ENOENT)
            try:
                flags = file.f_flags | (os.O_CLOEXEC if fd in self.files.cloexec else 0)
                mnt_id = _SB_DEV.get(file.f_inode.i_sb, 0)
                text = f"pos:\t{file.f_pos}\nflags:\t0{flags:o}\n"
                if self.kernel.spec.proc_fdinfo_mnt_id:  # seq_show's mnt_id: line, 3.15+
                    text += f"mnt_id:\t{mnt_id}\n"
                if self.kernel.spec.proc_fdinfo_ino:  # seq_show's ino: line, 5.14+
                    text += f"ino:\t{file.f_inode.i_ino}\n"
                if file.f_op.show_fdinfo is not None:
                    text += file.f_op.show_fdinfo(file)
                return text
            finally:
                fput(file)

    # -- file and memory syscalls: madvise .. readlink --------------------------------
    # Kernel side: mm/madvise.py, mm/msync.py, fs_sync.py (fs/sync.c), fs_open.py
    # (fs/open.c: fallocate), fs_stat.py (fs/stat.c, fs/statfs.c), syscalls.py (pread).
    def madvise(self, addr: int, length: int, advice: int) -> None:
        """``madvise(2)`` (``mmap.mmap.madvise`` is its Python face); advice ``MADV_*``."""
        a, n = _ulong("addr", addr), _ulong("length", length)
        advice = _int("advice", advice)
        with self._enter():
            _check(do_madvise(self.mm, a, n, advice))

    def msync(self, addr: int, length: int, flags: int) -> None:
        """``msync(2)``; flags ``MS_ASYNC``/``MS_SYNC``/``MS_INVALIDATE``."""
        a, n = _ulong("addr", addr), _ulong("length", length)
        flags = _int("flags", flags)
        with self._enter():
            _check(sys_msync(self.mm, a, n, flags))

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        """``os.pread``: ``n`` bytes at ``offset`` without moving the file position."""
        fd = _int("fd", fd)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, not {n!r}")
        pos = _loff("offset", offset)
        with self._enter():
            ret = sc.sys_pread64(self, fd, n, pos)
        if isinstance(ret, int):
            _check(ret)
            return b""
        return ret

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """``os.pwrite``: write ``data`` at ``offset``; returns the bytes written."""
        fd = _int("fd", fd)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        pos = _loff("offset", offset)
        with self._enter():
            return _check(sc.sys_pwrite64(self, fd, bytes(data), pos))

    def fstat(self, fd: int) -> os.stat_result:
        """``os.fstat``: ``st_mode``, ``st_ino``, ``st_dev``, ``st_size``, ``st_blksize``, ..."""
        fd = _int("fd", fd)
        with self._enter():
            ret = vfs_fstat(self, fd)
        if isinstance(ret, int):
            raise os_error(ret)
        return ret

    def fstatfs(self, fd: int) -> KStatfs:
        """``fstatfs(2)``: the filesystem's ``struct statfs`` (``f_type`` its magic)."""
        fd = _int("fd", fd)
        with self._enter():
            ret = fd_statfs(self, fd)
        if isinstance(ret, int):
            raise os_error(ret)
        return ret

    def fsync(self, fd: int) -> None:
        """``os.fsync``: ``EINVAL`` for files without ``->fsync`` (a dma-buf)."""
        fd = _int("fd", fd)
        with self._enter():
            _check(do_fsync(self, fd, 0))

    def fdatasync(self, fd: int) -> None:
        """``os.fdatasync``."""
        fd = _int("fd", fd)
        with self._enter():
            _check(do_fsync(self, fd, 1))

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        """``fallocate(2)`` (``FALLOC_FL_*`` modes; ``os.posix_fallocate`` is mode 0)."""
        fd = _int("fd", fd)
        mode = _int("mode", mode)
        off, n = _loff("offset", offset), _loff("length", length)
        with self._enter():
            _check(ksys_fallocate(self, fd, mode, off, n))

    def readlink(self, path: str) -> str:
        """``os.readlink``: the target of ``/proc/self/fd/N`` (or ``/proc/<pid>/fd/N``)."""
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, not {type(path).__name__}")
        with self._enter():
            ret = do_readlinkat(self, path)
        if isinstance(ret, int):
            raise os_error(ret)
        return ret


def _loff(name: str, value: object) -> int:
    """A syscall argument of C type ``loff_t`` (signed 64 bits; unsigned inputs wrap)."""
    v = _ulong(name, value)
    return v - _U64 if v >= 1 << 63 else v
