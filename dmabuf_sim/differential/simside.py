"""Run a syscall script on the simulator, through :class:`~dmabuf_sim.process.Process`.

Every statement becomes the Process call of the same name, on a fresh
:class:`~dmabuf_sim.kernel.Kernel` of the chosen spec; what the call does is
recorded as an :class:`~.outcome.Outcome`, exactly as the C interpreter
records it on a real kernel: ``OSError`` is an errno, :class:`~dmabuf_sim.errors.Signal`
a signal with its ``si_code`` and address, :class:`~dmabuf_sim.errors.KernelOops`
an oops (the process is gone afterwards, as a real kernel kills the task).

``dmabuf(EXPORTER, len, flags)`` makes a buffer through the exporter's uapi
with the same syscalls, in the same order, as ``c/interp.c`` (see
:func:`make_dmabuf`).  ``absent_devices`` removes device nodes a real
kernel's configuration lacks (Debian's 6.1 has no dma-heaps, for example),
so the simulator answers ``ENOENT`` where that kernel does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..errors import KernelOops, Signal
from ..kernel import Kernel
from ..process import Process
from ..spec import Spec
from ..uapi import (
    DMA_HEAP_IOCTL_ALLOC,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_PRIME_HANDLE_TO_FD,
    UDMABUF_CREATE,
    DmaHeapAllocationData,
    DrmModeCreateDumb,
    DrmPrimeHandle,
    UdmabufCreate,
)
from .abi import CONSTANTS, IOCTL_STRUCTS, struct_class
from .outcome import Outcome
from .script import (
    DEVICE_OF,
    MAX_LOAD,
    Ident,
    Node,
    Script,
    Statement,
    Str,
    StructLit,
    Unbound,
    digest,
    eval_bytes,
    eval_int,
    eval_str,
)

__all__ = ["DmabufStepError", "make_dmabuf", "run_on_simulator"]

_C = CONSTANTS
PAGE = 4096


class DmabufStepError(OSError):
    """A step of ``dmabuf(...)`` failed; ``step`` names it as the C side does."""

    def __init__(self, err: OSError, step: str) -> None:
        super().__init__(err.errno, err.strerror)
        self.step = step


def _step(step: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError as exc:
        raise DmabufStepError(exc, step) from None


def make_dmabuf(proc: Process, exporter: str, length: int, flags: int) -> int:
    """A dma-buf fd made through the exporter's uapi, step by step as ``interp.c`` does.

    * heaps: ``open("/dev/dma_heap/<heap>", O_RDONLY|O_CLOEXEC)``,
      ``DMA_HEAP_IOCTL_ALLOC {len, fd_flags = flags}``, ``close``;
    * udmabuf: ``memfd_create("udmabuf", MFD_ALLOW_SEALING|MFD_CLOEXEC)``,
      ``ftruncate(len)``, ``F_ADD_SEALS F_SEAL_SHRINK``, ``open("/dev/udmabuf",
      O_RDWR|O_CLOEXEC)``, ``UDMABUF_CREATE {memfd, UDMABUF_FLAGS_CLOEXEC if
      flags has O_CLOEXEC, 0, len}``, then both helper fds closed;
    * vgem: ``open("/dev/dri/card0", O_RDWR|O_CLOEXEC)``,
      ``DRM_IOCTL_MODE_CREATE_DUMB {height = pages, width = 1024, bpp = 32}``,
      ``DRM_IOCTL_PRIME_HANDLE_TO_FD {handle, flags & (O_CLOEXEC|O_ACCMODE)}``, ``close``.
    """
    cloexec = _C["O_CLOEXEC"]
    if exporter in ("system_heap", "cma_heap"):
        path = DEVICE_OF[exporter]
        heap = _step("open " + path, proc.open, path, cloexec)
        try:
            data = DmaHeapAllocationData(len=length, fd_flags=flags)
            _step("DMA_HEAP_IOCTL_ALLOC", proc.ioctl, heap, DMA_HEAP_IOCTL_ALLOC, data)
        finally:
            proc.close(heap)
        return int(data.fd)
    if exporter == "udmabuf":
        memfd = _step(
            "memfd_create",
            proc.memfd_create,
            "udmabuf",
            _C["MFD_ALLOW_SEALING"] | _C["MFD_CLOEXEC"],
        )
        dev = -1
        try:
            _step("ftruncate", proc.ftruncate, memfd, length)
            _step("F_ADD_SEALS", proc.fcntl, memfd, _C["F_ADD_SEALS"], _C["F_SEAL_SHRINK"])
            dev = _step("open /dev/udmabuf", proc.open, "/dev/udmabuf", _C["O_RDWR"] | cloexec)
            create = UdmabufCreate(
                memfd=memfd,
                flags=_C["UDMABUF_FLAGS_CLOEXEC"] if flags & cloexec else 0,
                offset=0,
                size=length,
            )
            return int(_step("UDMABUF_CREATE", proc.ioctl, dev, UDMABUF_CREATE, create))
        finally:
            if dev >= 0:
                proc.close(dev)
            proc.close(memfd)
    if exporter == "vgem":
        card = _step("open /dev/dri/card0", proc.open, "/dev/dri/card0", _C["O_RDWR"] | cloexec)
        try:
            dumb = DrmModeCreateDumb(height=-(-length // PAGE), width=1024, bpp=32)
            _step("DRM_IOCTL_MODE_CREATE_DUMB", proc.ioctl, card, DRM_IOCTL_MODE_CREATE_DUMB, dumb)
            prime = DrmPrimeHandle(handle=dumb.handle, flags=flags & (cloexec | _C["O_ACCMODE"]))
            _step(
                "DRM_IOCTL_PRIME_HANDLE_TO_FD",
                proc.ioctl,
                card,
                DRM_IOCTL_PRIME_HANDLE_TO_FD,
                prime,
            )
            return int(prime.fd)
        finally:
            proc.close(card)
    raise ValueError(f"unknown exporter {exporter!r}")


def _ioctl_arg(st: Statement, env: Mapping[str, int]) -> tuple[Any, Any]:
    """(the argument to pass, the struct object to read outputs from or None)."""
    node = st.args[2]
    if isinstance(node, Str):
        return eval_str(node, env).decode("latin-1"), None
    if isinstance(node, StructLit):
        req = st.args[1]
        assert isinstance(req, Ident)
        obj = struct_class(req.name)()
        for name, value in node.fields:
            setattr(obj, name, eval_int(value, env))
        return obj, obj
    return eval_int(node, env), None


def _outs(st: Statement, obj: Any) -> tuple[tuple[str, int], ...]:
    if obj is None:
        return ()
    req = st.args[1]
    assert isinstance(req, Ident)
    layout = IOCTL_STRUCTS[req.name]
    return tuple((f.name, int(getattr(obj, f.name))) for f in layout.fields if f.out)


def _int_args(args: tuple[Node, ...], env: Mapping[str, int]) -> list[int]:
    return [eval_int(a, env) for a in args]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fd(v: int) -> int:
    """An ``int`` syscall argument from a 64-bit value, as the C ABI truncates it."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


class _TooLarge(Exception):
    """More bytes in one line than either side moves (``MAX_LOAD``)."""


def _size_checked(n: int) -> int:
    if n > MAX_LOAD:
        raise _TooLarge
    return n


def _run(st: Statement, proc: Process, env: Mapping[str, int]) -> tuple[int, str, tuple[Any, ...]]:
    """Do the statement; returns (value, data, outs)."""
    op, a = st.op, st.args
    if op == "dmabuf":
        exp = a[0]
        assert isinstance(exp, Ident)
        length, flags = _int_args(a[1:], env)
        return make_dmabuf(proc, exp.name, length, _fd(flags)), "", ()
    if op == "open":
        assert isinstance(a[0], Str)
        path = eval_str(a[0], env).decode("latin-1")
        rest = _int_args(a[1:], env)
        return proc.open(path, *(_fd(x) for x in rest)), "", ()
    if op == "memfd_create":
        assert isinstance(a[0], Str)
        return (
            proc.memfd_create(eval_str(a[0], env).decode("latin-1"), _fd(eval_int(a[1], env))),
            "",
            (),
        )
    if op in ("write", "store"):
        target = eval_int(a[0], env)
        data = eval_bytes(a[1], env)
        _size_checked(len(data))
        if op == "write":
            return proc.write(_fd(target), data), "", ()
        proc.write_memory(target, data)
        return 0, "", ()
    if op == "ioctl":
        fd, req = _fd(eval_int(a[0], env)), eval_int(a[1], env)
        arg, obj = _ioctl_arg(st, env)
        ret = proc.ioctl(fd, req, arg)
        return ret, "", _outs(st, obj)
    vals = _int_args(a, env)
    if op == "close":
        proc.close(_fd(vals[0]))
        return 0, "", ()
    if op == "dup":
        return proc.dup(_fd(vals[0])), "", ()
    if op == "lseek":
        return proc.lseek(_fd(vals[0]), _signed(vals[1]), _fd(vals[2])), "", ()
    if op == "read":
        return 0, digest(proc.read(_fd(vals[0]), _size_checked(vals[1]))), ()
    if op == "poll":
        return proc.poll(_fd(vals[0]), vals[1] & 0xFFFF), "", ()
    if op == "fcntl":
        arg = _fd(vals[2]) if len(vals) > 2 else 0
        return proc.fcntl(_fd(vals[0]), _fd(vals[1]), arg), "", ()
    if op == "ftruncate":
        proc.ftruncate(_fd(vals[0]), _signed(vals[1]))
        return 0, "", ()
    if op == "mmap":
        addr, length, prot, flags, fd, off = vals
        return proc.mmap(addr, length, prot, flags, _fd(fd), off), "", ()
    if op == "munmap":
        proc.munmap(vals[0], vals[1])
        return 0, "", ()
    if op == "mprotect":
        proc.mprotect(vals[0], vals[1], vals[2])
        return 0, "", ()
    if op == "mremap":
        return proc.mremap(*vals), "", ()
    if op == "load":
        return 0, digest(proc.read_memory(vals[0], _size_checked(vals[1]))), ()
    if op == "maps":
        addr = vals[0]
        for line in proc.maps().splitlines():
            lo, _, tail = line.partition("-")
            hi = tail.split(" ", 1)[0]
            if int(lo, 16) <= addr < int(hi, 16):
                return 0, line, ()
        return 0, "", ()
    if op == "fdinfo":
        return 0, proc.fdinfo(_fd(vals[0])), ()
    raise AssertionError(f"unhandled op {op}")


def run_on_simulator(
    script: Script,
    spec: str | Spec,
    *,
    absent_devices: Collection[str] = (),
) -> list[Outcome]:
    """Run every statement of ``script`` on a fresh simulated kernel; one outcome each."""
    kernel = Kernel(spec)
    for path in absent_devices:
        kernel.chrdevs.pop(path, None)  # the real kernel was built without this driver
    procs: dict[str, Process] = {"$main": kernel.spawn("main")}
    gone: dict[str, str] = {}
    env: dict[str, int] = {}
    outcomes: list[Outcome] = []
    for st in script.statements:
        outcomes.append(_one(st, procs, gone, env))
    return outcomes


def _one(
    st: Statement, procs: dict[str, Process], gone: dict[str, str], env: dict[str, int]
) -> Outcome:
    if st.proc in gone:
        return Outcome("skipped", note=f"{st.proc} {gone[st.proc]}")
    if st.proc not in procs:
        return Outcome("skipped", note=f"{st.proc} unbound")
    proc = procs[st.proc]
    try:
        if st.op == "fork":
            child = proc.fork()
            assert st.bind is not None
            procs[st.bind] = child
            outcome = Outcome("ok", value=child.pid)
        elif st.op == "exit":
            proc.exit()
            gone[st.proc] = "has exited"
            outcome = Outcome("ok")
        else:
            value, data, outs = _run(st, proc, env)
            outcome = Outcome("ok", value=value % (1 << 64), data=data, outs=outs)
    except Unbound as exc:
        return Outcome("skipped", note=f"{exc.name} unbound")
    except DmabufStepError as exc:
        return Outcome("errno", value=exc.errno or 0, note=exc.step)
    except OSError as exc:
        return Outcome("errno", value=exc.errno or 0)
    except Signal as sig:
        return Outcome("signal", value=sig.signo, code=sig.si_code, addr=sig.addr)
    except KernelOops as oops:
        gone[st.proc] = "died in an oops"
        return Outcome("oops", note=str(oops))
    except NotImplementedError as exc:
        return Outcome("unsupported", note=str(exc) or "not modelled")
    except _TooLarge:
        return Outcome("unsupported", note=f"more than {MAX_LOAD} bytes in one line")
    if st.bind is not None:
        env[st.bind] = outcome.value
    values = dict(outcome.outs)
    for fname, name in st.outs:
        env[name] = values[fname]
    return outcome
