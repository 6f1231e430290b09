"""A scenario or story as a syscall script (``dmabuf-sim scenarios run NAME --script``).

The run is recorded at the userspace face: every :class:`~dmabuf_sim.process.Process`
call of the run's kernel (open, ioctl, mmap, loads and stores, fork...) becomes
one script line, with fds, mappings, children and GEM handles named
(``$fd1``, ``$map1``, ``$child1``, ``$handle1``) so the script means the same
on any machine.  What a real kernel cannot be asked from userspace stays a
comment: kernel-side steps (a device's DMA, ``dma_buf_end_cpu_access`` called
in the kernel) and buffers exported kernel-side.  A kernel-side buffer gets a
stand-in made through a real exporter's uapi (``dmabuf(system_heap, ...)`` by
default), so the script still runs, on the simulator and on a real kernel.

Recording wraps Process's methods for the duration of the run, for one kernel
only; the wrappers are removed when the run ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from attrs import define, field

from .. import uapi
from ..conformance.scenarios import SCENARIOS, Harness, Skip
from ..dma_buf.core import DmaBuf
from ..exporters.registry import exporter as exporter_info
from ..kernel import Kernel
from ..process import Process
from ..stories import STORIES
from ..uapi import UapiStruct
from .abi import CONSTANTS, IOCTL_STRUCTS
from .outcome import cstring
from .script import digest

__all__ = ["export_named", "export_run", "recording"]

RECORDED = (
    "open",
    "close",
    "dup",
    "lseek",
    "read",
    "write",
    "ioctl",
    "poll",
    "fcntl",
    "memfd_create",
    "ftruncate",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "read_memory",
    "write_memory",
    "fork",
    "exit",
    "fdinfo",
)

_FCNTL_NAMES = {
    getattr(uapi, name): name
    for name in (
        "F_DUPFD",
        "F_GETFD",
        "F_SETFD",
        "F_GETFL",
        "F_SETFL",
        "F_DUPFD_CLOEXEC",
        "F_ADD_SEALS",
        "F_GET_SEALS",
    )
}


@define
class Recorded:
    """One Process call as it happened."""

    pid: int
    name: str
    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None
    kernel_side: list[str] = field(factory=list)
    """Kernel functions called directly (not by a syscall) since the previous call."""
    new_fds: list[tuple[int, Any]] = field(factory=list)
    """fds that appeared in the process kernel-side since its previous call."""


@contextmanager
def recording(kernel: Kernel) -> Iterator[list[Recorded]]:
    """Record the outermost Process calls made on ``kernel`` while the block runs."""
    calls: list[Recorded] = []
    depth = [0]
    known: dict[int, set[int]] = {}
    tracer = kernel.tracer
    was_enabled = tracer.enabled
    tracer.enabled = True
    mark = [len(tracer.events)]
    originals = {name: getattr(Process, name) for name in RECORDED}

    def pending(proc: Process) -> tuple[list[str], list[tuple[int, Any]]]:
        events = tracer.events[mark[0] :]
        funcs = [e.func for e in events if e.kind == "entry" and e.depth == 0]
        seen = known.setdefault(proc.pid, set())
        fresh = [(fd, f) for fd, f in sorted(proc.files.fds.items()) if fd not in seen]
        return list(dict.fromkeys(funcs)), fresh

    def settle(*procs: Process) -> None:
        for p in procs:
            known[p.pid] = set(p.files.fds)
        mark[0] = len(tracer.events)

    def wrap(name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Process, *args: Any, **kw: Any) -> Any:
            if self.kernel is not kernel or depth[0]:
                return orig(self, *args, **kw)
            funcs, fresh = pending(self)
            call = Recorded(
                self.pid, name, args + tuple(kw.values()), kernel_side=funcs, new_fds=fresh
            )
            depth[0] += 1
            try:
                call.result = orig(self, *args, **kw)
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                depth[0] -= 1
                calls.append(call)
                children = [call.result] if isinstance(call.result, Process) else []
                settle(self, *children)
            return call.result

        return wrapper

    for name, orig in originals.items():
        setattr(Process, name, wrap(name, orig))
    try:
        yield calls
    finally:
        for name, orig in originals.items():
            setattr(Process, name, orig)
        tracer.enabled = was_enabled


# -- writing the script -------------------------------------------------------------------
_FLAG_GROUPS = {
    "open": ("O_",),
    "prot": ("PROT_",),
    "map": ("MAP_",),
    "mremap": ("MREMAP_",),
    "sync": ("DMA_BUF_SYNC_",),
    "poll": ("POLL",),
    "memfd": ("MFD_",),
    "seal": ("F_SEAL_",),
}
_SKIP = {"O_ACCMODE", "MAP_SHARED_VALIDATE", "DMA_BUF_SYNC_RW", "DMA_BUF_SYNC_VALID_FLAGS_MASK"}


def _flags(value: int, group: str) -> str:
    """``value`` as ``A|B`` from one family of constants (numbers where none fits)."""
    names = [
        (n, v)
        for n, v in CONSTANTS.items()
        if n.startswith(_FLAG_GROUPS[group]) and n not in _SKIP and v and v & (v - 1) == 0
    ]
    parts, rest = [], value
    if group == "open":
        acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(value & 3)
        parts.append(acc or str(value & 3))
        rest &= ~3
    elif group == "map":
        kind = {1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}.get(value & 0xF)
        if kind:
            parts.append(kind)
            rest &= ~0xF
    elif group == "sync":
        parts.append("DMA_BUF_SYNC_END" if value & 4 else "DMA_BUF_SYNC_START")
        rest &= ~4
        if rest & 3 == 3:
            parts.append("DMA_BUF_SYNC_RW")
            rest &= ~3
    for n, v in sorted(names, key=lambda x: x[1]):
        if rest & v and n not in parts:
            parts.append(n)
            rest &= ~v
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or ("PROT_NONE" if group == "prot" else "0")


def _request_name(request: int) -> str:
    for name in IOCTL_STRUCTS:
        if CONSTANTS[name] == request:
            return name
    for name, value in CONSTANTS.items():
        if value == request and ("IOCTL" in name or name.startswith(("FIO", "DMA_BUF_SET"))):
            return name
    return hex(request)


def _bytes_expr(data: bytes) -> str:
    d = digest(data)
    kind, _, body = d.partition(":")
    if kind == "runs":
        return " + ".join(
            f"fill(0x{b}, {n})" for b, n in (run.split("*") for run in body.split(","))
        )
    if kind == "ramp":
        start, step, count = body.split(":")
        return f"ramp(0x{start}, {int(step, 16)}, {count})"
    return cstring(data)


@define
class _Writer:
    stand_in: str
    lines: list[str] = field(factory=list)
    procs: dict[int, str] = field(factory=dict)
    fds: dict[tuple[int, int], str] = field(factory=dict)
    maps: dict[int, list[tuple[str, int, int]]] = field(factory=dict)
    handles: dict[int, str] = field(factory=dict)
    counters: dict[str, int] = field(factory=dict)

    def new(self, kind: str) -> str:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return f"${kind}{self.counters[kind]}"

    def fd(self, pid: int, fd: int) -> str:
        return self.fds.get((pid, fd), str(fd))

    def addr(self, pid: int, addr: int) -> str:
        if addr == 0:
            return "NULL"
        for name, start, length in reversed(self.maps.get(pid, [])):
            if start <= addr <= start + length:
                off = addr - start
                return name if off == 0 else f"{name}+{off:#x}"
        return hex(addr)

    def emit(self, pid: int, text: str) -> None:
        prefix = "" if self.procs.get(pid) == "$main" else f"[{self.procs[pid]}] "
        self.lines.append(prefix + text)

    def struct(self, pid: int, request: str, obj: UapiStruct) -> tuple[str, list[tuple[str, str]]]:
        """The input fields as ``{name=value}`` (zeros left out) and the output fields."""
        layout = IOCTL_STRUCTS[request]
        parts, outs = [], []
        for f in layout.fields:
            value = getattr(obj, f.name)
            if f.out:
                outs.append((f.name, f.kind))
                continue
            if not value and f.kind != "fd":
                continue
            if f.kind == "fd":
                text = self.fd(pid, int(value))
            elif f.kind == "handle":
                text = self.handles.get(int(value), str(value))
            elif f.name in ("fd_flags",) or (
                request.startswith("DRM_IOCTL_PRIME") and f.name == "flags"
            ):
                text = _flags(int(value), "open")
            elif request == "UDMABUF_CREATE" and f.name == "flags":
                text = "UDMABUF_FLAGS_CLOEXEC" if value == 1 else str(value)
            elif request.startswith("DMA_BUF") and f.name == "flags":
                text = _flags(int(value), "sync")
            else:
                text = str(value)
            parts.append(f"{f.name}={text}")
        return "{" + ", ".join(parts) + "}", outs

    def call(self, c: Recorded) -> None:
        pid = c.pid
        if c.kernel_side:
            names = c.kernel_side
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            self.lines.append(f"# kernel side (not in this script): {shown}")
        for fd, file in c.new_fds:
            self.stand_in_buffer(pid, fd, file)
        ok = c.error is None
        a = c.args
        name = c.name
        bind = ""
        text = ""
        if name == "open":
            flags = _flags(a[1] if len(a) > 1 else 0, "open")
            text = f"open({cstring(a[0].encode())}, {flags})"
            bind = self.bind_fd(pid, c.result) if ok else ""
        elif name in ("close", "dup", "fdinfo"):
            text = f"{name}({self.fd(pid, a[0])})"
            if name == "dup" and ok:
                bind = self.bind_fd(pid, c.result)
        elif name == "lseek":
            whence = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
            text = f"lseek({self.fd(pid, a[0])}, {a[1]}, {whence.get(a[2], a[2])})"
        elif name == "read":
            text = f"read({self.fd(pid, a[0])}, {a[1]})"
        elif name == "write":
            text = f"write({self.fd(pid, a[0])}, {_bytes_expr(bytes(a[1]))})"
        elif name == "poll":
            text = f"poll({self.fd(pid, a[0])}, {_flags(a[1], 'poll')})"
        elif name == "fcntl":
            cmd = _FCNTL_NAMES.get(a[1], str(a[1]))
            arg = a[2] if len(a) > 2 else 0
            arg_text = _flags(arg, "seal") if a[1] == uapi.F_ADD_SEALS else str(arg)
            text = f"fcntl({self.fd(pid, a[0])}, {cmd}, {arg_text})"
            if a[1] in (uapi.F_DUPFD, uapi.F_DUPFD_CLOEXEC) and ok:
                bind = self.bind_fd(pid, c.result)
        elif name == "memfd_create":
            flags = _flags(a[1] if len(a) > 1 else 0, "memfd")
            text = f"memfd_create({cstring(a[0].encode())}, {flags})"
            bind = self.bind_fd(pid, c.result) if ok else ""
        elif name == "ftruncate":
            text = f"ftruncate({self.fd(pid, a[0])}, {a[1]})"
        elif name == "ioctl":
            text, bind = self.ioctl(c)
        elif name == "mmap":
            addr, length, prot, flags = a[0], a[1], a[2], a[3]
            fd = a[4] if len(a) > 4 else -1
            off = a[5] if len(a) > 5 else 0
            text = (
                f"mmap({self.addr(pid, addr)}, {length}, {_flags(prot, 'prot')},"
                f" {_flags(flags, 'map')}, {self.fd(pid, fd) if fd >= 0 else -1}, {off})"
            )
            if ok:
                bind = self.bind_map(pid, c.result, length)
        elif name == "munmap":
            text = f"munmap({self.addr(pid, a[0])}, {a[1]})"
        elif name == "mprotect":
            text = f"mprotect({self.addr(pid, a[0])}, {a[1]}, {_flags(a[2], 'prot')})"
        elif name == "mremap":
            rest = "".join(f", {x}" for x in a[4:])
            flags = _flags(a[3], "mremap") if len(a) > 3 else "0"
            text = f"mremap({self.addr(pid, a[0])}, {a[1]}, {a[2]}, {flags}{rest})"
            if ok:
                bind = self.bind_map(pid, c.result, a[2])
        elif name == "read_memory":
            text = f"load({self.addr(pid, a[0])}, {a[1]})"
        elif name == "write_memory":
            text = f"store({self.addr(pid, a[0])}, {_bytes_expr(bytes(a[1]))})"
        elif name == "fork":
            text = "fork()"
            if ok:
                child = c.result
                bind = self.new("child")
                self.procs[child.pid] = bind
                for (p, fd), n in list(self.fds.items()):
                    if p == pid:
                        self.fds[(child.pid, fd)] = n
                self.maps[child.pid] = list(self.maps.get(pid, []))
        elif name == "exit":
            text = "exit()"
        self.emit(pid, text + (f" = {bind}" if bind else ""))

    def ioctl(self, c: Recorded) -> tuple[str, str]:
        pid, (fd, request, arg) = c.pid, c.args[:3]
        req = _request_name(request)
        bind = ""
        if isinstance(arg, UapiStruct) and req in IOCTL_STRUCTS:
            arg_text, outs = self.struct(pid, req, arg)
            if c.error is None:
                binds = []
                for fname, kind in outs:
                    value = int(getattr(arg, fname))
                    if kind == "fd":
                        binds.append(f"{fname}={self.bind_fd(pid, value)}")
                    elif kind == "handle":
                        name = self.new("handle")
                        self.handles[value] = name
                        binds.append(f"{fname}={name}")
                    elif kind == "opaque":
                        binds.append(f"{fname}={self.new('cookie')}")
                if IOCTL_STRUCTS[req].returns_fd:
                    bind = self.bind_fd(pid, int(c.result))
                elif binds:
                    bind = f"{c.result} {{{', '.join(binds)}}}"
        elif isinstance(arg, str):
            arg_text = cstring(arg.encode())
        elif isinstance(arg, (bytes, bytearray)):
            arg_text = f"0  # (a packed struct of {len(arg)} bytes: not expressible)"
        else:
            arg_text = str(arg) if isinstance(arg, int) else "0"
        return f"ioctl({self.fd(pid, fd)}, {req}, {arg_text})", bind

    def bind_fd(self, pid: int, fd: int) -> str:
        name = self.new("fd")
        self.fds[(pid, fd)] = name
        return name

    def bind_map(self, pid: int, addr: int, length: int) -> str:
        name = self.new("map")
        self.maps.setdefault(pid, []).append((name, addr, length))
        return name

    def stand_in_buffer(self, pid: int, fd: int, file: Any) -> None:
        dmabuf = getattr(file, "private_data", None)
        if not isinstance(dmabuf, DmaBuf):
            self.lines.append(f"# fd {fd} was opened kernel-side: not reproducible from userspace")
            return
        flags = file.f_flags & os.O_ACCMODE
        acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}[flags]
        exp = getattr(dmabuf, "exp_name", "") or "an exporter"
        self.lines.append(
            f"# buffer exported kernel-side by {exp} (no uapi): {self.stand_in} stands in for it"
        )
        name = self.bind_fd(pid, fd)
        self.emit(pid, f"dmabuf({self.stand_in}, {dmabuf.size}, {acc}|O_CLOEXEC) = {name}")


def export_run(calls: list[Recorded], title: str, *, stand_in: str = "system_heap") -> str:
    """The recorded calls as a script (the first process seen is ``$main``)."""
    w = _Writer(stand_in)
    w.lines.append(f"# {title}")
    w.lines.append(
        "# Exported by dmabuf-sim: userspace calls only; kernel-side steps are comments."
    )
    for c in calls:
        if not w.procs:
            w.procs[c.pid] = "$main"
        if c.pid not in w.procs:
            w.lines.append(f"# a call of process {c.pid} (spawned kernel-side) is left out")
            continue
        w.call(c)
    return "\n".join(w.lines) + "\n"


def export_named(name: str, spec: str, exporter: str = "system_heap") -> str:
    """``dmabuf-sim scenarios run NAME --script``: a scenario or story as a script."""
    stand_in = exporter if exporter in ("system_heap", "udmabuf", "vgem") else "system_heap"
    if name in STORIES:
        kernel = Kernel(spec)
        with recording(kernel) as calls:
            STORIES[name].run(kernel)
        title = f"story {name} ({STORIES[name].summary}), spec {spec}"
        return export_run(calls, title, stand_in=stand_in)
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (see 'dmabuf-sim scenarios list')")
    info = exporter_info(exporter)
    why = info.available(Kernel(spec, load_drivers=False).spec)
    if why:
        raise ValueError(f"{name} [{info.name}, {spec}]: skipped ({why})")
    h = Harness.create(info, spec)
    with recording(h.kernel) as calls:
        try:
            SCENARIOS[name](h)
        except Skip as skip:
            raise ValueError(f"{name} [{info.name}, {spec}]: skipped ({skip})") from None
    title = f"scenario {name} [{info.name}], spec {spec}"
    return export_run(calls, title, stand_in=stand_in)
