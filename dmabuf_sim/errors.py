"""Errors, the two faces of them, and signals.

The simulator has two faces and each keeps its own error contract:

* **Kernel side.** Functions that return ``int`` in C return ``0`` (or a
  positive value) on success and ``-errno`` on failure, exactly as in C.
  Functions that return a pointer in C (``dma_buf_export``, ``dma_buf_get``,
  ``dma_buf_attach`` ...) either return the object or *raise*
  :class:`KernelError`, which carries the errno of the ``ERR_PTR``.  Use
  :func:`PTR_ERR` / :func:`IS_ERR` style helpers only at the boundary.

* **Userspace side.** :class:`~dmabuf_sim.process.Process` behaves like
  Python's :mod:`os` and :mod:`mmap`: failures raise :class:`OSError` whose
  ``errno`` is the one Linux returns (tests compare ``.errno``, never the
  message).  A bad memory access raises a :class:`Signal` subclass
  (:class:`SIGSEGV`, :class:`SIGBUS`) carrying ``signo``, ``si_code`` and
  ``addr``, as the kernel's ``force_sig_fault`` would deliver.

Misuse of the *Python* API (wrong types, impossible arguments) raises
:class:`TypeError` or :class:`ValueError` with a message that says what to do.
Anything the simulator does not model raises :class:`NotImplementedError`
naming the kernel feature, never a made-up errno.
"""

from __future__ import annotations

import errno as _errno
import os
import signal as _signal

from attrs import define

__all__ = [
    "SIGBUS",
    "SIGKILL",
    "SIGSEGV",
    "BadUsage",
    "DmaBufSimError",
    "KernelError",
    "KernelOops",
    "OutOfMemory",
    "Signal",
    "TaskHung",
    "UsageError",
    "errname",
    "os_error",
]

# si_code values (include/uapi/asm-generic/siginfo.h)
SEGV_MAPERR = 1
SEGV_ACCERR = 2
BUS_ADRALN = 1
BUS_ADRERR = 2
SI_KERNEL = 0x80

# Kernel-internal errnos (include/linux/errno.h); never seen by userspace.
ERESTARTSYS = 512
ERESTARTNOHAND = 514
ENOIOCTLCMD = 515
ERESTART_RESTARTBLOCK = 516


def errname(err: int) -> str:
    """Return the symbolic name of an errno value (positive or negative): ``-22`` → ``EINVAL``."""
    return _errno.errorcode.get(abs(err), f"E{abs(err)}")


def os_error(err: int, *, filename: object = None) -> OSError:
    """Build the OSError a syscall failing with ``err`` (positive or ``-errno``) raises.

    This is the one helper every userspace failure goes through, so the
    message format is the one Python's :mod:`os` uses.
    """
    e = abs(err)
    if filename is None:
        return OSError(e, os.strerror(e))
    return OSError(e, os.strerror(e), filename)


class DmaBufSimError(Exception):
    """Base class of every exception the simulator defines (except OSError)."""


class UsageError(DmaBufSimError, ValueError):
    """The Python API was used in a way no kernel call corresponds to (the message says what to
    do instead): the one usage-error class of the simulator and its conformance kit."""


BadUsage = UsageError  # the earlier name


@define(eq=False, auto_exc=True)
class KernelError(DmaBufSimError):
    """An ``ERR_PTR(-errno)`` returned by a pointer-returning kernel function.

    ``err`` is the positive errno; ``-err`` is what the C function would have
    encoded in the pointer.
    """

    err: int
    func: str = ""

    def __str__(self) -> str:
        where = f"{self.func}: " if self.func else ""
        return f"{where}ERR_PTR(-{errname(self.err)})"

    @property
    def errno(self) -> int:
        return self.err


@define(eq=False, auto_exc=True)
class KernelOops(DmaBufSimError):
    """The simulated kernel did something whose outcome C leaves undefined.

    Raised, for example, under spec ``rfc-2012`` where the RFC as posted reads
    ``dmabuf->size`` through an uninitialised pointer (rule R61).  It is never
    converted into an errno: real hardware might oops, return garbage, or
    appear to work.
    """

    func: str
    reason: str
    rule: str = ""

    def __str__(self) -> str:
        rule = f" [{self.rule}]" if self.rule else ""
        return f"oops in {self.func}: {self.reason}{rule}"


class TaskHung(KernelOops):
    """A task went to sleep on something no pending event can ever bring about.

    On a real machine the task would sleep for ever (``hung_task`` reports an
    uninterruptible one after 120 s; an interruptible one waits for a signal that
    nothing will send).  The simulator has run every pending event in time order
    first, so the report is only made when the wait truly cannot end; ``reason``
    names what is awaited and who waits.
    """

    __slots__ = ()


@define(eq=False, auto_exc=True)
class OutOfMemory(KernelOops):
    """A simulated allocation found no free memory: the C function returned NULL.

    The page allocator raises it where ``alloc_pages``/``cma_alloc`` return
    NULL.  Kernel code is expected to check for NULL: every reference
    exporter and mm path catches it and answers as the kernel does
    (``-ENOMEM``, ``ERR_PTR(-ENOMEM)``, ``VM_FAULT_OOM``).  When one escapes,
    the caller used the NULL pointer, so it is a :class:`KernelOops`.

    Deliberately *not* the interpreter's :class:`MemoryError`: the host has
    plenty of memory, the simulated machine does not.
    """

    def __str__(self) -> str:
        return (
            f"oops in {self.func}: {self.reason}: the caller used the NULL it returned"
            " (catch dmabuf_sim.errors.OutOfMemory and return -ENOMEM)"
        )


@define(eq=False, auto_exc=True)
class Signal(DmaBufSimError):
    """A synchronous signal delivered to the faulting task (``force_sig_fault``)."""

    signo: int
    si_code: int
    addr: int
    pid: int = 0

    def __str__(self) -> str:
        name = _signal.Signals(self.signo).name
        return f"{name} (si_code={self.si_code}) at {self.addr:#x} in pid {self.pid}"


class SIGSEGV(Signal):
    """Segmentation fault: no vma (``SEGV_MAPERR``) or access not allowed (``SEGV_ACCERR``)."""

    __slots__ = ()

    def __init__(self, si_code: int, addr: int, pid: int = 0) -> None:
        super().__init__(int(_signal.SIGSEGV), si_code, addr, pid)


class SIGBUS(Signal):
    """Bus error: the fault handler returned ``VM_FAULT_SIGBUS`` (``BUS_ADRERR``)."""

    __slots__ = ()

    def __init__(self, si_code: int, addr: int, pid: int = 0) -> None:
        super().__init__(int(_signal.SIGBUS), si_code, addr, pid)


class SIGKILL(Signal):
    """The task was killed (``SI_KERNEL``): the OOM killer chose it.

    ``addr`` is the address whose fault ran out of memory
    (``pagefault_out_of_memory``); the process has exited by the time this
    is raised, as a killed task never returns to userspace.
    """

    __slots__ = ()

    def __init__(self, addr: int = 0, pid: int = 0) -> None:
        super().__init__(int(_signal.SIGKILL), SI_KERNEL, addr, pid)
