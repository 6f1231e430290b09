"""Replay cases recorded on a real kernel through the simulator's userspace face.

The recordings (tests/data/kernel-results/, from Debian kernels booted under
QEMU: 5.10, 6.12, 6.19 and 7.3) are JSON lines; each names what a C probe did
and what the kernel answered.  This
module re-does each probe step with :class:`~dmabuf_sim.process.Process`,
exactly as the probe's README describes, and reports the simulator's answer
in the same vocabulary (``"ok"``, an errno name, ``"match"``, ...), so a test
compares the two and a mismatch reads as one line.

Buffers are made the way the probe made them:

* ``system_heap``: ``open("/dev/dma_heap/system", O_RDONLY)`` then
  ``DMA_HEAP_IOCTL_ALLOC`` with ``fd_flags = O_RDWR|O_CLOEXEC`` (``O_RDONLY``
  for the read-only cases);
* ``udmabuf``: ``memfd_create`` with ``MFD_ALLOW_SEALING``, ``ftruncate``,
  ``F_ADD_SEALS F_SEAL_SHRINK``, then ``UDMABUF_CREATE`` with
  ``UDMABUF_FLAGS_CLOEXEC``; the memfd is closed right after;
* ``vgem``: ``open("/dev/dri/card0")``, ``DRM_IOCTL_MODE_CREATE_DUMB`` (``height =
  pages``, ``width = 1024``, ``bpp = 32``), then ``DRM_IOCTL_PRIME_HANDLE_TO_FD``
  with ``DRM_CLOEXEC | DRM_RDWR`` (``DRM_CLOEXEC`` alone for read-only).  The
  card and the handle stay open, so the export cache and the handle's PRIME
  entry each hold a dma-buf reference (fdinfo's count shows them).

Each recording names its kernel; :func:`spec_for_recording` gives the spec that
models it (``linux-6.19-udmabuf.jsonl`` → ``v6.19``) through
:meth:`~dmabuf_sim.spec.SpecTable.for_release`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import re
import signal as _signal
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from attrs import frozen

from .errors import Signal
from .kernel import Kernel
from .mm.shmem import F_SEAL_SHRINK, MFD_ALLOW_SEALING, MFD_CLOEXEC
from .process import Process
from .spec import SPECS, Spec
from .uapi import (
    _IO,
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SET_NAME,
    DMA_HEAP_IOCTL_ALLOC,
    DRM_CLOEXEC,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_PRIME_HANDLE_TO_FD,
    DRM_RDWR,
    F_ADD_SEALS,
    POLLIN,
    POLLOUT,
    UDMABUF_CREATE,
    UDMABUF_FLAGS_CLOEXEC,
    DmaBufSync,
    DmaHeapAllocationData,
    DrmModeCreateDumb,
    DrmPrimeHandle,
    UdmabufCreate,
)

__all__ = ["Case", "CaseResult", "load_cases", "make_buffer", "replay", "spec_for_recording"]

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
BAD_POINTER = 8  # an address nothing maps: copy_from_user fails with EFAULT


@frozen
class Case:
    """One recorded case: its fields as recorded, and its position in the file."""

    source: str
    line: int
    fields: dict[str, Any]

    @property
    def expected(self) -> Any:
        f = self.fields
        if f["t"] == "fdinfo":
            return normalise_fdinfo(f["text"])
        return (f["r"], f["v"]) if "v" in f else f["r"]

    def label(self) -> str:
        f = self.fields
        keys = [k for k in ("t", "case", "pages", "len", "off", "prot", "flags") if k in f]
        return f"{f['exp']}:" + ",".join(f"{k}={f[k]}" for k in keys)


@frozen
class CaseResult:
    case: Case
    got: Any

    @property
    def ok(self) -> bool:
        return bool(self.got == self.case.expected)

    def describe(self, spec: str) -> str:
        return f"{self.case.label()} [{spec}]: kernel {self.case.expected!r}, sim {self.got!r}"


def load_cases(path: str | Path) -> list[Case]:
    path = Path(path)
    with path.open() as fh:
        return [
            Case(path.name, i, json.loads(line)) for i, line in enumerate(fh, 1) if line.strip()
        ]


_RECORDING = re.compile(r"^linux-(\d+\.\d+)-[\w]+\.jsonl$")


def spec_for_recording(path: str | Path) -> Spec:
    """The spec that models the kernel a recording file names (``linux-7.3-vgem.jsonl``)."""
    name = Path(path).name
    m = _RECORDING.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not named linux-<major.minor>-<exporter>.jsonl")
    return SPECS.for_release(m.group(1))


def normalise_fdinfo(text: str) -> str:
    """Drop the lines that vary between boots (``ino``, ``mnt_id``)."""
    return "".join(
        line + "\n" for line in text.splitlines() if not line.startswith(("ino:", "mnt_id:"))
    )


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _attempt(fn: Callable[[], Any]) -> Any:
    """``"ok"`` (or ``("ok", value)``) on success, the errno name on OSError."""
    try:
        value = fn()
    except OSError as exc:
        return _errname(exc)
    return "ok" if value is None else ("ok", value)


# -- buffers ---------------------------------------------------------------------------
def make_buffer(proc: Process, exp: str, pages: int, *, rdonly: bool = False) -> int:
    """A dma-buf fd of ``pages`` pages made the way the probe made it."""
    size = pages * PAGE
    if exp == "system_heap":
        heap = proc.open("/dev/dma_heap/system", os.O_RDONLY | os.O_CLOEXEC)
        acc = os.O_RDONLY if rdonly else os.O_RDWR
        data = DmaHeapAllocationData(len=size, fd_flags=acc | os.O_CLOEXEC)
        proc.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
        proc.close(heap)
        return int(data.fd)
    if exp == "udmabuf":
        memfd = proc.memfd_create("oracle", MFD_ALLOW_SEALING | MFD_CLOEXEC)
        proc.ftruncate(memfd, size)
        proc.fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK)
        dev = proc.open("/dev/udmabuf", os.O_RDWR | os.O_CLOEXEC)
        create = UdmabufCreate(memfd=memfd, flags=UDMABUF_FLAGS_CLOEXEC, offset=0, size=size)
        fd = proc.ioctl(dev, UDMABUF_CREATE, create)
        proc.close(dev)
        proc.close(memfd)
        return fd
    if exp == "vgem":
        card = proc.open("/dev/dri/card0", os.O_RDWR | os.O_CLOEXEC)
        dumb = DrmModeCreateDumb(height=pages, width=1024, bpp=32)
        proc.ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, dumb)
        flags = DRM_CLOEXEC if rdonly else DRM_CLOEXEC | DRM_RDWR
        prime = DrmPrimeHandle(handle=dumb.handle, flags=flags)
        proc.ioctl(card, DRM_IOCTL_PRIME_HANDLE_TO_FD, prime)
        return int(prime.fd)  # the card (and so the handle) stays open
    raise ValueError(f"unknown exporter {exp!r}: expected 'system_heap', 'udmabuf' or 'vgem'")


def _discard(fn: Callable[[], Any]) -> Callable[[], None]:
    """Run ``fn`` for its effect; the probe records only "ok" or the errno."""

    def run() -> None:
        fn()

    return run


def _pattern(n: int, seed: int = 0) -> bytes:
    """Bytes that differ from page to page (so a mapping that starts at the wrong page,
    R60's drm_gem_shmem exception, reads something else)."""
    return bytes((i * 131 + (i // PAGE) * 37 + seed * 7 + 17) & 0xFF for i in range(n))


# -- the probe's steps -------------------------------------------------------------------
def _run_mmap(k: Kernel, f: dict[str, Any]) -> Any:
    p = k.spawn("probe")
    fd = make_buffer(p, f["exp"], f["pages"])
    flags = mmap.MAP_SHARED if f["flags"] == "shared" else mmap.MAP_PRIVATE
    try:
        addr = p.mmap(0, f["len"], f["prot"], flags, fd, f["off"])
    except OSError as exc:
        return _errname(exc)
    p.munmap(addr, f["len"])
    return "ok"


def _data_cases(k: Kernel, exp: str) -> dict[str, Any]:
    """The ``data`` sequence, in the recorded order, on one 3-page buffer."""
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 3)
    a = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    pattern = _pattern(3 * PAGE)
    p.write_memory(a, pattern)
    out: dict[str, Any] = {}

    b = p.mmap(0, 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, PAGE)
    out["second_map_at_page1_sees_writes"] = (
        "match" if p.read_memory(b, 2 * PAGE) == pattern[PAGE:] else "mismatch"
    )
    p.munmap(b, 2 * PAGE)

    child = p.fork()
    out["fork_child_sees_parent_data"] = (
        "match" if child.read_memory(a, 3 * PAGE) == pattern else "mismatch"
    )
    child.write_memory(a + 5, b"\xa5")
    child.exit()
    out["parent_sees_child_write"] = "match" if p.read_memory(a + 5, 1) == b"\xa5" else "mismatch"
    expected = pattern[:5] + b"\xa5" + pattern[6:]

    try:
        c = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE, fd, 0)
    except OSError as exc:
        out["private_write_isolated"] = _errname(exc)
    else:
        p.write_memory(c, b"\x5a" * 16)
        same = p.read_memory(a, 16) == expected[:16]
        out["private_write_isolated"] = "isolated" if same else "leaked"
        p.munmap(c, PAGE)

    p.close(fd)
    out["mapping_survives_close"] = (
        "match" if p.read_memory(a, 3 * PAGE) == expected else "mismatch"
    )

    p.munmap(a + PAGE, PAGE)
    child = p.fork()
    try:
        child.read_memory(a + PAGE, 1)
        out["touch_unmapped_middle"] = "no signal"
    except Signal as sig:
        out["touch_unmapped_middle"] = _signal.Signals(sig.signo).name
    child.exit()
    ends = p.read_memory(a, PAGE) + p.read_memory(a + 2 * PAGE, PAGE)
    out["ends_survive_partial_munmap"] = (
        "match" if ends == expected[:PAGE] + expected[2 * PAGE :] else "mismatch"
    )
    p.exit()
    return out


def _lseek_cases(k: Kernel, exp: str) -> dict[str, Any]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 3)
    calls = {
        "end0": (0, os.SEEK_END),
        "set0": (0, os.SEEK_SET),
        "cur0": (0, os.SEEK_CUR),
        "end1": (1, os.SEEK_END),
        "set5": (5, os.SEEK_SET),
        "endm1": (-1, os.SEEK_END),
        "data0": (0, os.SEEK_DATA),
        "hole0": (0, os.SEEK_HOLE),
    }
    return {name: _attempt(partial(p.lseek, fd, *args)) for name, args in calls.items()}


def _rw_cases(k: Kernel, exp: str) -> dict[str, Any]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 3)
    return {
        "read1": _attempt(lambda: (p.read(fd, 1), None)[1]),
        "write1": _attempt(lambda: (p.write(fd, b"x"), None)[1]),
    }


def _poll_cases(k: Kernel, exp: str) -> dict[str, Any]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 3)
    return {"in_out": ("ok", p.poll(fd, POLLIN | POLLOUT))}


def _grow_cases(k: Kernel, exp: str) -> dict[str, Any]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 2)
    a = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    out = {
        "mremap_grow_past_end": _attempt(
            lambda: (p.mremap(a, 2 * PAGE, 3 * PAGE, 1), None)[1]  # MREMAP_MAYMOVE
        ),
        "mremap_shrink": _attempt(lambda: (p.mremap(a, 2 * PAGE, PAGE, 0), None)[1]),
    }

    def adjacent() -> None:
        base = p.mmap(0, 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        p.munmap(base, 2 * PAGE)
        fixed = mmap.MAP_SHARED | 0x10  # MAP_FIXED
        p.mmap(base, PAGE, mmap.PROT_READ, fixed, fd, 0)
        p.mmap(base + PAGE, PAGE, mmap.PROT_READ, fixed, fd, PAGE)

    out["adjacent_maps"] = _attempt(adjacent)
    return out


def _rofd_cases(k: Kernel, exp: str) -> dict[str, Any]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 2, rdonly=True)
    out: dict[str, Any] = {"accmode": ("ok", p.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE)}
    shared_r: list[int] = []

    def map_shared_r() -> None:
        shared_r.append(p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0))

    out["shared_r"] = _attempt(map_shared_r)
    if shared_r:
        out["mprotect_add_write"] = _attempt(lambda: p.mprotect(shared_r[0], PAGE, RW))
    for name, prot, flags in (
        ("shared_rw", RW, mmap.MAP_SHARED),
        ("private_rw", RW, mmap.MAP_PRIVATE),
        ("private_r", mmap.PROT_READ, mmap.MAP_PRIVATE),
    ):
        out[name] = _attempt(_discard(partial(p.mmap, 0, PAGE, prot, flags, fd, 0)))
    rw_fd = make_buffer(p, exp, 2)
    out["reopen_proc_fd_rdonly"] = _attempt(
        lambda: (p.open(f"/proc/self/fd/{rw_fd}", os.O_RDONLY), None)[1]
    )
    return out


def _sync_cases(k: Kernel, exp: str) -> Iterator[tuple[tuple[str, Any], Any]]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 1)

    def sync(flags: int) -> Any:
        return _attempt(lambda: (p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags)), None)[1])

    yield ("end_before_start", 7), sync(7)
    for flags in (1, 2, 3, 5, 6, 7, 0, 4, 8, 9, 16, 15, 1 << 63):
        yield ("flags", flags), sync(flags)
    yield (
        ("bad_pointer", None),
        _attempt(lambda: (p.ioctl(fd, DMA_BUF_IOCTL_SYNC, BAD_POINTER), None)[1]),
    )


def _setname_cases(k: Kernel, exp: str) -> dict[str, Any]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 1)

    def setname(arg: Any) -> Any:
        return _attempt(lambda: (p.ioctl(fd, DMA_BUF_SET_NAME, arg), None)[1])

    return {
        "len5": setname("a" * 5),
        "len31": setname("b" * 31),
        "len40": setname("c" * 40),
        "bad_pointer": setname(BAD_POINTER),
    }


def _named_mapping(k: Kernel, exp: str) -> tuple[Process, int, int]:
    p = k.spawn("probe")
    fd = make_buffer(p, exp, 1)
    p.ioctl(fd, DMA_BUF_SET_NAME, "oracle")
    addr = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    return p, fd, addr


def _fdinfo(k: Kernel, exp: str) -> str:
    p, fd, _addr = _named_mapping(k, exp)
    return normalise_fdinfo(p.fdinfo(fd))


def _maps(k: Kernel, exp: str) -> Any:
    p, _fd, addr = _named_mapping(k, exp)
    for line in p.maps().splitlines():
        if line.startswith(f"{addr:08x}-"):
            return ("ok", line.split()[-1])
    return "no mapping"


_GROUPS: dict[str, Callable[[Kernel, str], dict[str, Any]]] = {
    "data": _data_cases,
    "lseek": _lseek_cases,
    "rw": _rw_cases,
    "poll": _poll_cases,
    "grow": _grow_cases,
    "rofd": _rofd_cases,
    "setname": _setname_cases,
}


def replay(cases: Iterable[Case], spec: str | Spec) -> list[CaseResult]:
    """Run every case on fresh simulated kernels of ``spec``; one result per case."""
    results: list[CaseResult] = []
    cache: dict[tuple[str, str], Any] = {}
    for case in cases:
        f = case.fields
        t, exp = f["t"], f["exp"]
        if t == "mmap":
            got = _run_mmap(Kernel(spec), f)
        elif t in _GROUPS:
            key = (t, exp)
            if key not in cache:
                cache[key] = _GROUPS[t](Kernel(spec), exp)
            got = cache[key].get(f["case"], "not run")
        elif t == "sync":
            key = ("sync", exp)
            if key not in cache:
                cache[key] = list(_sync_cases(Kernel(spec), exp))
            pending = cache[key]
            want = (f["case"], f.get("flags") if f["case"] != "bad_pointer" else None)
            got = next((r for c, r in pending if c == want), "not run")
        elif t == "ioctl":
            p = Kernel(spec).spawn("probe")
            fd = make_buffer(p, exp, 1)
            got = _attempt(_discard(partial(p.ioctl, fd, _IO("b", 0x77))))
        elif t == "fdinfo":
            got = _fdinfo(Kernel(spec), exp)
        elif t == "maps":
            got = _maps(Kernel(spec), exp)
        else:
            raise ValueError(f"{case.label()}: unknown case type {t!r}")
        results.append(CaseResult(case, got))
    return results
