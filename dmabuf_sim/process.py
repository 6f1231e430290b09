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
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from attrs import define, field

from . import syscalls as sc
from .abi import bytes_like as _bytes_like
from .abi import c_int as _int
from .abi import count as _count
from .abi import ioctl_arg as _ioctl_arg
from .abi import text as _text
from .abi import ulong as _ulong
from .errors import ERESTARTSYS, SIGKILL, os_error
from .fs import File, fput
from .mm.memory import user_access
from .mm.mmap import MmStruct
from .mm.page_alloc import PAGE_SHIFT
from .mm.vma import VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["FilesStruct", "Process"]

_U64 = 1 << 64
_SB_DEV = {"anon_inodefs": 0x0E, "dmabuf": 0x0C, "shmem": 0x01, "devtmpfs": 0x05}


def _check(ret: int) -> int:
    if ret < 0:
        if ret == -ERESTARTSYS:
            ret = -errno.EINTR  # the signal is delivered; no SA_RESTART is modelled
        raise os_error(ret)
    return ret


@define(eq=False, slots=True)
class FilesStruct:
    """``struct files_struct``: fd → file, plus the close-on-exec set."""

    fds: dict[int, File] = field(factory=dict)
    cloexec: set[int] = field(factory=set)
    reserved: dict[int, bool] = field(factory=dict)


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

    def _enter(self) -> Any:
        if not self.alive:
            raise ValueError(f"process {self.pid} has exited; spawn or fork a live one")
        return self._syscall()

    @contextmanager
    def _syscall(self) -> Iterator[None]:
        """Run kernel code for this task; a fatal signal (the OOM killer's SIGKILL)
        ends the task on its way back to userspace, as ``exit_to_user_mode`` does."""
        with self.kernel.running(self):
            try:
                yield
            except SIGKILL:
                sc.do_group_exit(self)
                raise

    # -- files -------------------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
        """``open(2)``: device nodes (``/dev/...``) and ``/proc/<pid>/fd/N``."""
        path = _text("path", path)
        flags = _int("flags", flags)
        mode = _int("mode", mode)
        with self._enter():
            return _check(sc.sys_open(self, path, flags, mode))

    def close(self, fd: int) -> None:
        fd = _int("fd", fd)
        with self._enter():
            _check(sc.sys_close(self, fd))

    def dup(self, fd: int) -> int:
        fd = _int("fd", fd)
        with self._enter():
            return _check(sc.sys_dup(self, fd))

    def lseek(self, fd: int, pos: int, how: int) -> int:
        fd = _int("fd", fd)
        pos = _ulong("pos", pos)
        pos = pos - _U64 if pos >= 1 << 63 else pos  # loff_t is signed
        how = _int("how", how)
        with self._enter():
            return _check(sc.sys_lseek(self, fd, pos, how))

    def read(self, fd: int, n: int) -> bytes:
        fd = _int("fd", fd)
        n = _count("n", n)
        with self._enter():
            ret = sc.sys_read(self, fd, n)
        if isinstance(ret, int):
            _check(ret)
            return b""
        return ret

    def write(self, fd: int, data: bytes) -> int:
        fd = _int("fd", fd)
        data = _bytes_like("data", data)
        with self._enter():
            return _check(sc.sys_write(self, fd, data))

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> int:
        """``ioctl(2)``; struct arguments get their output fields written back."""
        fd = _int("fd", fd)
        request = _ulong("request", request)
        arg = _ioctl_arg(arg)
        with self._enter():
            return _check(sc.sys_ioctl(self, fd, request, arg))

    def poll(self, fd: int, events: int) -> int:
        """``poll`` of one fd with a zero timeout; returns ``revents``."""
        fd = _int("fd", fd)
        with self._enter():
            return sc.sys_poll(self, fd, events)

    def fcntl(self, fd: int, cmd: int, arg: int = 0) -> int:
        fd = _int("fd", fd)
        with self._enter():
            return _check(sc.sys_fcntl(self, fd, _int("cmd", cmd), _int("arg", arg)))

    def memfd_create(self, name: str, flags: int = 0) -> int:
        from .mm.shmem import MFD_CLOEXEC, memfd_create

        name = _text("name", name)
        flags = _int("flags", flags)
        with self._enter():
            fd = _check(sc.get_unused_fd_flags(self, os.O_CLOEXEC if flags & MFD_CLOEXEC else 0))
            file = memfd_create(self.kernel, name, flags)
            if isinstance(file, int):
                sc.put_unused_fd(self, fd)
                raise os_error(file)
            sc.fd_install(self, fd, file)
            return fd

    def ftruncate(self, fd: int, length: int) -> None:
        import errno

        from .fs import FMODE_WRITE
        from .mm.shmem import is_shmem_file, shmem_truncate

        fd = _int("fd", fd)
        length = _ulong("length", length)
        with self._enter():
            if length >= 1 << 63:
                raise os_error(-errno.EINVAL)  # do_sys_ftruncate: length < 0 before fdget
            file = sc.fdget(self, fd)
            if file is None:
                raise os_error(-errno.EBADF)
            if not file.f_inode.is_reg() or not file.f_mode & FMODE_WRITE:
                raise os_error(-errno.EINVAL)
            if not is_shmem_file(file):
                raise NotImplementedError("ftruncate of non-shmem regular files")
            _check(shmem_truncate(file, length))

    # -- memory mappings -------------------------------------------------------------
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

    def munmap(self, addr: int, length: int) -> None:
        a, n = _ulong("addr", addr), _ulong("length", length)
        with self._enter():
            _check(sc.sys_munmap(self, a, n))

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        a, n, p = _ulong("addr", addr), _ulong("length", length), _ulong("prot", prot)
        with self._enter():
            _check(sc.sys_mprotect(self, a, n, p))

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
        addr = _ulong("addr", addr)
        n = _count("n", n)
        with self._enter():
            return user_access(self.mm, addr, n, write=False)

    def write_memory(self, addr: int, data: bytes) -> None:
        """Store ``data`` at ``addr`` as the CPU would (may raise SIGSEGV/SIGBUS)."""
        addr = _ulong("addr", addr)
        data = _bytes_like("data", data)
        with self._enter():
            user_access(self.mm, addr, len(data), write=True, data=data)

    # -- processes -------------------------------------------------------------------
    def fork(self) -> Process:
        """``fork(2)``: the child shares open files and copies the address space."""
        with self._enter():
            return sc.sys_fork(self)

    def exit(self) -> None:
        """Exit: close every fd and tear down the address space."""
        with self._enter():
            sc.sys_exit(self)
        self.alive = False
        self.kernel.processes.pop(self.pid, None)

    # -- procfs ----------------------------------------------------------------------
    def file(self, fd: int) -> File:
        """The kernel ``struct file`` behind ``fd`` (for inspection; no reference taken)."""
        f = sc.fdget(self, _int("fd", fd))
        if f is None:
            raise os_error(-9)
        return f

    def maps(self) -> str:
        """``/proc/<pid>/maps``."""
        lines = []
        for vma in self.mm.vmas:
            flags = vma.vm_flags
            perms = (
                ("r" if flags & VM_READ else "-")
                + ("w" if flags & VM_WRITE else "-")
                + ("x" if flags & VM_EXEC else "-")
                + ("s" if flags & VM_MAYSHARE else "p")
            )
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
            file = sc.fget(self, fd)  # procfs holds a reference while it prints
            if file is None:
                raise os_error(-2)
            try:
                flags = file.f_flags | (os.O_CLOEXEC if fd in self.files.cloexec else 0)
                mnt_id = _SB_DEV.get(file.f_inode.i_sb, 0)
                text = (
                    f"pos:\t{file.f_pos}\nflags:\t0{flags:o}\nmnt_id:\t{mnt_id}\n"
                    f"ino:\t{file.f_inode.i_ino}\n"
                )
                if file.f_op.show_fdinfo is not None:
                    text += file.f_op.show_fdinfo(file)
                return text
            finally:
                fput(file)
