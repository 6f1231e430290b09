"""Userspace calls as ``strace`` prints them: symbolic flags, ioctl names, errno names.

The userspace face (:class:`~dmabuf_sim.process.Process`) records one
``syscall`` trace record per call while a tracer is on (and one ``access``
record per :meth:`~dmabuf_sim.process.Process.read_memory` /
:meth:`~dmabuf_sim.process.Process.write_memory`); this module turns the
arguments into the text ``strace`` would show::

    mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 1, 0) = 0x7effffffe000
    ioctl(1, DMA_BUF_IOCTL_SYNC, {flags=DMA_BUF_SYNC_START|DMA_BUF_SYNC_RW}) = 0
    mmap(NULL, 12288, PROT_READ|PROT_WRITE, MAP_SHARED, 1, 0) = -1 EINVAL (Invalid argument)

Struct arguments are printed after the call, with what the kernel wrote back
(``strace -e verbose``).  Formatting happens only when a tracer is on; with
tracing off nothing here runs.

Simplified: ``open`` is printed as ``open`` (not ``openat(AT_FDCWD, ...)``),
``exit`` as ``exit_group``; loads and stores, which strace cannot see, are
printed as ``read_memory``/``write_memory`` lines in the same style.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from . import uapi
from .mm import mmap as _mm
from .mm import mremap as _mremap
from .mm import shmem as _shmem
from .trace import TraceEvent, strace_line

__all__ = [
    "ACCESS_CALLS",
    "decode_flags",
    "format_args",
    "format_result",
    "format_strace",
    "ioctl_name",
    "poll_revents",
    "signal_note",
    "strace_line",
]

ACCESS_CALLS = frozenset({"read_memory", "write_memory"})
"""Userspace loads and stores: recorded with kind ``access``, not ``syscall``."""

_STR_MAX = 32


def decode_flags(value: int, names: Sequence[tuple[int, str]], zero: str = "0") -> str:
    """``value`` as ``A|B|0x40``: each named bit once, unknown bits in hex, ``zero`` for 0."""
    if value == 0:
        return zero
    parts: list[str] = []
    rest = value
    for bit, name in names:
        if bit and rest & bit == bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


_PROT = (
    (_mm.PROT_READ, "PROT_READ"),
    (_mm.PROT_WRITE, "PROT_WRITE"),
    (_mm.PROT_EXEC, "PROT_EXEC"),
    (_mm.PROT_SEM, "PROT_SEM"),
    (_mm.PROT_GROWSDOWN, "PROT_GROWSDOWN"),
    (_mm.PROT_GROWSUP, "PROT_GROWSUP"),
)
_MAP_TYPES = {
    _mm.MAP_SHARED: "MAP_SHARED",
    _mm.MAP_PRIVATE: "MAP_PRIVATE",
    _mm.MAP_SHARED_VALIDATE: "MAP_SHARED_VALIDATE",
}
_MAP = (
    (_mm.MAP_FIXED, "MAP_FIXED"),
    (_mm.MAP_ANONYMOUS, "MAP_ANONYMOUS"),
    (_mm.MAP_GROWSDOWN, "MAP_GROWSDOWN"),
    (_mm.MAP_DENYWRITE, "MAP_DENYWRITE"),
    (_mm.MAP_EXECUTABLE, "MAP_EXECUTABLE"),
    (_mm.MAP_LOCKED, "MAP_LOCKED"),
    (_mm.MAP_NORESERVE, "MAP_NORESERVE"),
    (_mm.MAP_POPULATE, "MAP_POPULATE"),
    (_mm.MAP_NONBLOCK, "MAP_NONBLOCK"),
    (_mm.MAP_STACK, "MAP_STACK"),
    (_mm.MAP_HUGETLB, "MAP_HUGETLB"),
    (_mm.MAP_SYNC, "MAP_SYNC"),
    (_mm.MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"),
    (_mm.MAP_UNINITIALIZED, "MAP_UNINITIALIZED"),
)
_OPEN = (
    (os.O_CREAT, "O_CREAT"),
    (os.O_EXCL, "O_EXCL"),
    (os.O_NOCTTY, "O_NOCTTY"),
    (os.O_TRUNC, "O_TRUNC"),
    (os.O_APPEND, "O_APPEND"),
    (os.O_NONBLOCK, "O_NONBLOCK"),
    (os.O_DSYNC, "O_DSYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
)
_ACCMODE = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
_SYNC = ((uapi.DMA_BUF_SYNC_READ, "READ"), (uapi.DMA_BUF_SYNC_WRITE, "WRITE"))
_POLL = (
    (uapi.POLLIN, "POLLIN"),
    (uapi.POLLPRI, "POLLPRI"),
    (uapi.POLLOUT, "POLLOUT"),
    (uapi.POLLERR, "POLLERR"),
    (uapi.POLLHUP, "POLLHUP"),
    (uapi.POLLNVAL, "POLLNVAL"),
    (uapi.POLLRDNORM, "POLLRDNORM"),
    (uapi.POLLWRNORM, "POLLWRNORM"),
)
_SEEK = {os.SEEK_SET: "SEEK_SET", os.SEEK_CUR: "SEEK_CUR", os.SEEK_END: "SEEK_END", 3: "SEEK_DATA"}
_SEEK[4] = "SEEK_HOLE"
_MREMAP = (
    (_mremap.MREMAP_MAYMOVE, "MREMAP_MAYMOVE"),
    (_mremap.MREMAP_FIXED, "MREMAP_FIXED"),
    (_mremap.MREMAP_DONTUNMAP, "MREMAP_DONTUNMAP"),
)
_MFD = (
    (_shmem.MFD_CLOEXEC, "MFD_CLOEXEC"),
    (_shmem.MFD_ALLOW_SEALING, "MFD_ALLOW_SEALING"),
    (_shmem.MFD_HUGETLB, "MFD_HUGETLB"),
    (_shmem.MFD_NOEXEC_SEAL, "MFD_NOEXEC_SEAL"),
    (_shmem.MFD_EXEC, "MFD_EXEC"),
)
_SEALS = (
    (_shmem.F_SEAL_SEAL, "F_SEAL_SEAL"),
    (_shmem.F_SEAL_SHRINK, "F_SEAL_SHRINK"),
    (_shmem.F_SEAL_GROW, "F_SEAL_GROW"),
    (_shmem.F_SEAL_WRITE, "F_SEAL_WRITE"),
    (_shmem.F_SEAL_FUTURE_WRITE, "F_SEAL_FUTURE_WRITE"),
    (_shmem.F_SEAL_EXEC, "F_SEAL_EXEC"),
)
_FCNTL = {
    uapi.F_DUPFD: "F_DUPFD",
    uapi.F_GETFD: "F_GETFD",
    uapi.F_SETFD: "F_SETFD",
    uapi.F_GETFL: "F_GETFL",
    uapi.F_SETFL: "F_SETFL",
    uapi.F_DUPFD_CLOEXEC: "F_DUPFD_CLOEXEC",
    uapi.F_ADD_SEALS: "F_ADD_SEALS",
    uapi.F_GET_SEALS: "F_GET_SEALS",
}
_DRM_PRIME = ((0o2000000, "DRM_CLOEXEC"), (0o2, "DRM_RDWR"))

# ioctl request -> name; DMA_BUF_SET_NAME is the _B form on 64-bit, as strace prints it
_IOCTLS: dict[int, str] = {}
for _name in (
    "DMA_BUF_IOCTL_SYNC",
    "DMA_BUF_SET_NAME_A",
    "DMA_BUF_SET_NAME_B",
    "DMA_BUF_IOCTL_EXPORT_SYNC_FILE",
    "DMA_BUF_IOCTL_IMPORT_SYNC_FILE",
    "DMA_HEAP_IOCTL_ALLOC",
    "UDMABUF_CREATE",
    "UDMABUF_CREATE_LIST",
    "DRM_IOCTL_GEM_CLOSE",
    "DRM_IOCTL_PRIME_HANDLE_TO_FD",
    "DRM_IOCTL_PRIME_FD_TO_HANDLE",
    "DRM_IOCTL_MODE_CREATE_DUMB",
    "DRM_IOCTL_MODE_MAP_DUMB",
    "DRM_IOCTL_VGEM_FENCE_ATTACH",
    "DRM_IOCTL_VGEM_FENCE_SIGNAL",
    "FIOCLEX",
    "FIONCLEX",
    "FIONBIO",
):
    _IOCTLS.setdefault(getattr(uapi, _name), _name)


def ioctl_name(request: int) -> str:
    """``DMA_BUF_IOCTL_SYNC``, or ``_IOC(_IOC_WRITE, 0x62, 0x7, 0x8)`` for unknown requests."""
    name = _IOCTLS.get(request)
    if name is not None:
        return name
    direction = (request >> 30) & 3
    dirs = {0: "_IOC_NONE", 1: "_IOC_WRITE", 2: "_IOC_READ", 3: "_IOC_READ|_IOC_WRITE"}
    return (
        f"_IOC({dirs[direction]}, {uapi._IOC_TYPE(request):#x}, {uapi._IOC_NR(request):#x},"
        f" {uapi._IOC_SIZE(request):#x})"
    )


def _open_flags(flags: int) -> str:
    mode = _ACCMODE.get(flags & 3, hex(flags & 3))
    rest = decode_flags(flags & ~3, _OPEN, zero="")
    return f"{mode}|{rest}" if rest else mode


def _sync_flags(flags: int) -> str:
    """``DMA_BUF_SYNC_START|DMA_BUF_SYNC_RW``: START is 0, so it is named explicitly."""
    known = uapi.DMA_BUF_SYNC_VALID_FLAGS_MASK
    phase = "DMA_BUF_SYNC_END" if flags & uapi.DMA_BUF_SYNC_END else "DMA_BUF_SYNC_START"
    rw = flags & uapi.DMA_BUF_SYNC_RW
    parts = [phase]
    if rw == uapi.DMA_BUF_SYNC_RW:
        parts.append("DMA_BUF_SYNC_RW")
    elif rw:
        parts.append("DMA_BUF_SYNC_" + dict(_SYNC)[rw])
    if flags & ~known:
        parts.append(hex(flags & ~known))
    return "|".join(parts)


def _quote(data: bytes | str) -> str:
    """A C string literal as strace prints one, cut after 32 bytes with ``...``."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    out = []
    for b in raw[:_STR_MAX]:
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append({9: "\\t", 10: "\\n", 0: "\\0"}.get(b, f"\\x{b:02x}"))
    return '"' + "".join(out) + '"' + ("..." if len(raw) > _STR_MAX else "")


_FIELD_FLAGS: dict[tuple[str, str], Callable[[int], str]] = {
    ("DmaBufSync", "flags"): _sync_flags,
    ("DmaHeapAllocationData", "fd_flags"): _open_flags,
    ("DrmPrimeHandle", "flags"): lambda v: decode_flags(v, _DRM_PRIME),
    ("DmaBufExportSyncFile", "flags"): lambda v: decode_flags(
        v, ((1, "DMA_BUF_SYNC_READ"), (2, "DMA_BUF_SYNC_WRITE"))
    ),
    ("DmaBufImportSyncFile", "flags"): lambda v: decode_flags(
        v, ((1, "DMA_BUF_SYNC_READ"), (2, "DMA_BUF_SYNC_WRITE"))
    ),
    ("UdmabufCreate", "flags"): lambda v: decode_flags(v, ((1, "UDMABUF_FLAGS_CLOEXEC"),)),
}


def _struct(obj: Any) -> str:
    """``{field=value, ...}`` of a uapi struct, flag fields decoded, pad fields left out."""
    kind = type(obj).__name__
    parts = []
    for f in attrs.fields(type(obj)):
        if f.name == "pad":
            continue
        value = getattr(obj, f.name)
        decode = _FIELD_FLAGS.get((kind, f.name))
        text = decode(value) if decode else (hex(value) if value >= 1 << 16 else str(value))
        parts.append(f"{f.name}={text}")
    return "{" + ", ".join(parts) + "}"


def _ioctl_arg(request: int, arg: Any) -> str:
    if isinstance(arg, uapi.UapiStruct) and attrs.has(type(arg)):
        return _struct(arg)
    if isinstance(arg, str):
        return _quote(arg)
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return _quote(bytes(arg))
    if isinstance(arg, int) and not isinstance(arg, bool):
        if request in (uapi.FIONBIO,):
            return f"[{arg}]"
        return "NULL" if arg == 0 else hex(arg)
    return f"<{type(arg).__name__}>"


_U64 = 1 << 64


def _addr(value: int) -> str:
    return "NULL" if value == 0 else hex(value % _U64)


def _off(value: int) -> str:
    """An ``off_t``/``unsigned long`` offset as the C ABI passes it (negative wraps)."""
    return hex(value % _U64) if value else "0"


def _ulong(value: int) -> int:
    return value % _U64


def format_args(name: str, args: Sequence[Any], result: Any = None) -> str:
    """The argument list of one userspace call, as strace prints it (after the call)."""
    a = list(args)
    if name == "mmap":
        addr, length, prot, flags, fd, off = a
        kind = _MAP_TYPES.get(flags & _mm.MAP_TYPE, hex(flags & _mm.MAP_TYPE))
        rest = decode_flags(flags & ~_mm.MAP_TYPE, _MAP, zero="")
        mflags = f"{kind}|{rest}" if rest else kind
        prot_s = decode_flags(prot, _PROT, zero="PROT_NONE")
        return f"{_addr(addr)}, {_ulong(length)}, {prot_s}, {mflags}, {fd}, {_off(off)}"
    if name == "munmap":
        return f"{_addr(a[0])}, {_ulong(a[1])}"
    if name == "mprotect":
        return f"{_addr(a[0])}, {_ulong(a[1])}, {decode_flags(a[2], _PROT, zero='PROT_NONE')}"
    if name == "mremap":
        old, old_size, new_size, flags, new = a
        sizes = f"{_ulong(old_size)}, {_ulong(new_size)}"
        text = f"{_addr(old)}, {sizes}, {decode_flags(flags, _MREMAP)}"
        return text + (f", {_addr(new)}" if flags & _mremap.MREMAP_FIXED else "")
    if name == "open":
        path, flags = a[0], a[1]
        text = f"{_quote(path)}, {_open_flags(flags)}"
        return text + (f", {a[2]:#o}" if flags & os.O_CREAT and len(a) > 2 else "")
    if name == "exit_group":
        return "0"  # Process.exit() is exit(0)
    if name in ("close", "dup", "fork"):
        return ", ".join(str(x) for x in a)
    if name == "lseek":
        return f"{a[0]}, {a[1]}, {_SEEK.get(a[2], str(a[2]))}"
    if name == "read":
        data = result if isinstance(result, bytes) else b""
        return f"{a[0]}, {_quote(data)}, {a[1]}"
    if name == "write":
        return f"{a[0]}, {_quote(bytes(a[1]))}, {len(a[1])}"
    if name == "ioctl":
        return f"{a[0]}, {ioctl_name(a[1])}, {_ioctl_arg(a[1], a[2])}"
    if name == "poll":
        timeout = -1 if len(a) < 3 or a[2] is None else a[2]
        if isinstance(a[0], int):
            return f"[{{fd={a[0]}, events={decode_flags(a[1], _POLL)}}}], 1, {timeout}"
        fds = ", ".join(f"{{fd={fd}, events={decode_flags(ev, _POLL)}}}" for fd, ev in a[0])
        return f"[{fds}], {len(a[0])}, {timeout}"
    if name == "fcntl":
        cmd = _FCNTL.get(a[1], str(a[1]))
        if a[1] == uapi.F_ADD_SEALS:
            return f"{a[0]}, {cmd}, {decode_flags(a[2], _SEALS)}"
        if a[1] in (uapi.F_GETFD, uapi.F_GETFL, uapi.F_GET_SEALS):
            return f"{a[0]}, {cmd}"
        return f"{a[0]}, {cmd}, {a[2]}"
    if name == "memfd_create":
        return f"{_quote(a[0])}, {decode_flags(a[1], _MFD)}"
    if name == "ftruncate":
        return f"{a[0]}, {a[1]}"
    if name == "read_memory":
        return f"{_addr(a[0])}, {a[1]}"
    if name == "write_memory":
        return f"{_addr(a[0])}, {_quote(bytes(a[1]))}, {len(a[1])}"
    return ", ".join(repr(x) for x in a)


def format_result(name: str, result: Any) -> Any:
    """The value a record keeps as its return: an int (``-errno`` on failure) or text."""
    if name == "read" and isinstance(result, bytes):
        return len(result)
    if name == "read_memory" and isinstance(result, bytes):
        return _quote(result)
    if name == "poll" and isinstance(result, int):
        return 1 if result else 0
    if name == "poll" and isinstance(result, list):
        return len(result)
    if name == "fork" and hasattr(result, "pid"):
        return int(result.pid)
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return None


def poll_revents(fd: int, revents: int) -> str:
    """``[{fd=3, revents=POLLIN|POLLOUT}]``: what strace appends to a ready poll."""
    return f"[{{fd={fd}, revents={decode_flags(revents, _POLL)}}}]"


def signal_note(sig: Any) -> str:
    """``SIGBUS {si_code=BUS_ADRERR, si_addr=0x7f...}`` for a delivered signal."""
    name = signal.Signals(sig.signo).name
    codes = {
        "SIGSEGV": {1: "SEGV_MAPERR", 2: "SEGV_ACCERR"},
        "SIGBUS": {1: "BUS_ADRALN", 2: "BUS_ADRERR"},
    }
    code = codes.get(name, {}).get(sig.si_code, str(sig.si_code))
    return f"{name} {{si_code={code}, si_addr={sig.addr:#x}}}"


def format_strace(events: Sequence[TraceEvent], *, show_task: bool = True) -> str:
    """Only the userspace calls, one line each, as ``strace -f`` would show them."""
    lines = []
    for ev in events:
        if ev.kind in ("syscall", "access"):
            prefix = f"[{ev.comm}-{ev.pid}] " if show_task else ""
            lines.append(prefix + strace_line(ev))
    return "\n".join(lines) + ("\n" if lines else "")
