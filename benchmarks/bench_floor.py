"""The hot operations beside a CPython floor: how far the simulator is from what Python allows.

Run ``python benchmarks/bench_floor.py`` (about 15 s on a 2-core machine) or ``--quick``.
Each hot operation is timed twice in the same run: through the simulator, and through a
*floor* this script implements itself — the smallest pure-Python program that does the
same logical work, written the way a performance-minded Python programmer would.  The
ratio of the two, not the absolute time, is the figure to read: it says how much the
simulator spends beyond the work itself, and it travels between machines.

The floors (see :class:`FloorMachine`):

* **first-touch write fault**: one API call per access (``write(addr, data)`` with its
  argument checks), a PTE dict lookup that misses, a fault function (vma lookup by
  bisect, permission check, the page offset), the exporter's handler (bounds check,
  the pfn from its page list; vgem takes and drops its resv lock), one PTE insert,
  then the store itself: into a 64-byte cache line (filled from DRAM, marked dirty,
  LRU order kept) for udmabuf's cached mapping, straight into the page for vgem's
  write-combined one.
* **eager mmap**: one ``mmap`` call that makes a vma and calls the exporter's mmap,
  which walks its sg list and calls a remap function — once per page, as the system
  heap does up to 6.18, or once per chunk since 6.19 — that checks alignment and bounds
  and inserts the PTEs (a per-chunk insert is one ``dict.update``).
* **read through a present PTE**: one API call, argument checks, the PTE lookup and
  permission test, the physical address, and a cache hit (LRU touch, slice).

Timings are CPU time (``time.process_time``: the machine is shared, and time spent
waiting for a core is nobody's cost), the best of ``RUNS`` runs, with the cyclic GC
off while the clock runs; set-up is never timed.  Nothing here asserts on time: it is
a report.  Goals (issue 12): fault <= 2x, eager mmap <= 3x, present read <= 3x the floor.
"""

from __future__ import annotations

import gc
import mmap
import os
import sys
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from dmabuf_sim import Kernel, Process
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.page_alloc import PAGE_SIZE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
from _report import Row, Section, best, format_row, page_addrs, run_benchmarks

__all__ = [
    "GOALS",
    "PRESETS",
    "RUNS",
    "FloorMachine",
    "Row",
    "Section",
    "bench_floor",
    "format_row",
    "main",
    "sim_machine",
    "timed",
]

RUNS = 5
"""Timings report the best of this many runs."""
PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE
GOALS = {"fault": 2.0, "eager": 3.0, "read": 3.0}
"""The issue's goals: at most this many times the floor."""


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds ``fn()`` takes, with the cyclic GC off (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    finally:
        if was_enabled:
            gc.enable()


# -- the floor: a minimal MMU, cache and exporter in plain Python ---------------------------------

_SHIFT = 12
_OFF = PAGE_SIZE - 1
_LINE = 64
_PRESENT, _RW, _USER = 1, 2, 4
_SIGBUS, _NOPAGE = 0x2, 0x100
_VM_READ, _VM_WRITE = 1, 2


class FloorVma:
    __slots__ = ("end", "fault", "flags", "pgoff", "priv", "start")

    def __init__(self, start: int, end: int, pgoff: int, flags: int) -> None:
        self.start, self.end, self.pgoff, self.flags = start, end, pgoff, flags
        self.fault: Callable[[FloorVma, int, int], int] | None = None
        self.priv: object = None


class FloorResv:
    __slots__ = ("holder",)

    def __init__(self) -> None:
        self.holder: object = None


class FloorMachine:
    """The floor: page table, vmas, a write-back cache and DRAM, with nothing else."""

    def __init__(self, *, cached: bool = True, capacity: int = 4096) -> None:
        self.ptes: dict[int, int] = {}
        self.starts: list[int] = []
        self.vmas: list[FloorVma] = []
        self.lines: OrderedDict[int, bytearray] = OrderedDict()
        self.dirty: set[int] = set()
        self.capacity = capacity
        self.data: dict[int, bytearray] = {}
        self.cached = cached
        self.top = 0x7F00_0000_0000

    # -- the API: one call per access
    def write(self, addr: int, data: bytes) -> None:
        if not isinstance(addr, int) or not isinstance(data, bytes):
            raise TypeError("addr must be an int and data bytes")
        pte = self.ptes.get(addr >> _SHIFT)
        if pte is None or not pte & _RW:
            pte = self.fault(addr, True)
        pa = (pte >> _SHIFT << _SHIFT) | (addr & _OFF)
        if self.cached:
            base = pa & ~(_LINE - 1)
            line = self.lines.get(base)
            if line is None:
                line = self._fill(base)
            else:
                self.lines.move_to_end(base)
            off = pa - base
            line[off : off + len(data)] = data
            self.dirty.add(base)
        else:
            page = self.data.get(pa >> _SHIFT)
            if page is None:
                page = self.data[pa >> _SHIFT] = bytearray(PAGE_SIZE)
            off = pa & _OFF
            page[off : off + len(data)] = data

    def read(self, addr: int, n: int) -> bytes:
        if not isinstance(addr, int) or not isinstance(n, int):
            raise TypeError("addr and n must be ints")
        pte = self.ptes.get(addr >> _SHIFT)
        if pte is None or not pte & _USER:
            pte = self.fault(addr, False)
        pa = (pte >> _SHIFT << _SHIFT) | (addr & _OFF)
        base = pa & ~(_LINE - 1)
        line = self.lines.get(base)
        if line is None:
            line = self._fill(base)
        else:
            self.lines.move_to_end(base)
        off = pa - base
        return bytes(line[off : off + n])

    def _fill(self, base: int) -> bytearray:
        if len(self.lines) >= self.capacity:
            victim, old = self.lines.popitem(last=False)
            if victim in self.dirty:
                self.dirty.discard(victim)
                self.data.setdefault(victim >> _SHIFT, bytearray(PAGE_SIZE))[
                    victim & _OFF : (victim & _OFF) + _LINE
                ] = old
        page = self.data.get(base >> _SHIFT)
        off = base & _OFF
        line = bytearray(page[off : off + _LINE]) if page is not None else bytearray(_LINE)
        self.lines[base] = line
        return line

    # -- the fault function
    def fault(self, addr: int, write: bool) -> int:
        i = bisect_right(self.starts, addr) - 1
        if i < 0 or addr >= self.vmas[i].end:
            raise MemoryError("SIGSEGV")
        vma = self.vmas[i]
        if write and not vma.flags & _VM_WRITE:
            raise MemoryError("SIGSEGV")
        if vma.fault is None:
            raise MemoryError("SIGBUS")
        ret = vma.fault(vma, addr & ~_OFF, ((addr - vma.start) >> _SHIFT) + vma.pgoff)
        if ret & _SIGBUS:
            raise MemoryError("SIGBUS")
        return self.ptes[addr >> _SHIFT]

    def insert_pfn(self, vma: FloorVma, addr: int, pfn: int) -> int:
        vpn = addr >> _SHIFT
        if vpn not in self.ptes:
            self.ptes[vpn] = (pfn << _SHIFT) | _PRESENT | _RW | _USER
        return _NOPAGE

    def remap(self, vma: FloorVma, addr: int, pfn: int, size: int) -> int:
        end = addr + size
        if addr & _OFF or addr < vma.start or end > vma.end:
            return -22
        vpn = addr >> _SHIFT
        pte = (pfn << _SHIFT) | _PRESENT | _RW | _USER
        n = size >> _SHIFT
        if n == 1:
            self.ptes[vpn] = pte
            return 0
        ptes = range(pte, pte + (n << _SHIFT), PAGE_SIZE)
        self.ptes.update(zip(range(vpn, vpn + n), ptes, strict=True))
        return 0

    # -- mmap: a vma and the exporter's ->mmap
    def mmap(self, length: int, mmap_op: Callable[[FloorVma], int]) -> int:
        self.top -= length
        vma = FloorVma(self.top, self.top + length, 0, _VM_READ | _VM_WRITE)
        i = bisect_right(self.starts, vma.start)
        self.starts.insert(i, vma.start)
        self.vmas.insert(i, vma)
        if mmap_op(vma):
            raise OSError("mmap failed")
        return vma.start


def floor_udmabuf(fm: FloorMachine, pfns: list[int]) -> Callable[[FloorVma], int]:
    """udmabuf's ``->mmap``: its fault handler inserts the pfn of page ``pgoff``."""

    def fault(vma: FloorVma, addr: int, pgoff: int) -> int:
        if pgoff >= len(pfns):
            return _SIGBUS
        return fm.insert_pfn(vma, addr, pfns[pgoff])

    def mmap_op(vma: FloorVma) -> int:
        vma.fault = fault
        return 0

    return mmap_op


def floor_vgem(fm: FloorMachine, pfns: list[int]) -> Callable[[FloorVma], int]:
    """drm_gem_shmem's fault handler: page offset from vm_start, under the resv lock."""
    resv = FloorResv()

    def fault(vma: FloorVma, addr: int, pgoff: int) -> int:
        resv.holder = fault
        try:
            offset = (addr - vma.start) >> _SHIFT
            if offset >= len(pfns):
                return _SIGBUS
            return fm.insert_pfn(vma, addr, pfns[offset])
        finally:
            resv.holder = None

    def mmap_op(vma: FloorVma) -> int:
        vma.fault = fault
        return 0

    return mmap_op


def floor_system_heap(
    fm: FloorMachine, chunks: list[tuple[int, int]], *, per_chunk: bool
) -> Callable[[FloorVma], int]:
    """The system heap's ``->mmap``: remap its sg list page by page, or chunk by chunk."""

    def mmap_op(vma: FloorVma) -> int:
        addr = vma.start
        for first, n in chunks:
            if per_chunk:
                npages = min(n, (vma.end - addr) >> _SHIFT)
                ret = fm.remap(vma, addr, first, npages << _SHIFT)
                if ret:
                    return ret
                addr += npages << _SHIFT
            else:
                for i in range(n):
                    ret = fm.remap(vma, addr, first + i, PAGE_SIZE)
                    if ret:
                        return ret
                    addr += PAGE_SIZE
            if addr >= vma.end:
                return 0
        return 0

    return mmap_op


# -- the simulator's side -------------------------------------------------------------------------


def sim_machine(exporter: str, spec: str, npages: int) -> tuple[Kernel, Process, int]:
    """A fresh kernel of ``spec`` with one process and a buffer of ``npages`` from ``exporter``."""
    kernel = Kernel(spec, ram_pages=max(1 << 24, 4 * npages))
    proc = kernel.spawn("bench")
    fd = EXPORTERS[exporter].make_fd(proc, npages * PAGE_SIZE, os.O_RDWR)
    return kernel, proc, fd


def _sim_map(proc: Process, fd: int, npages: int) -> int:
    return proc.mmap(0, npages * PAGE_SIZE, PROT_RW, mmap.MAP_SHARED, fd, 0)


def _touch_write(write: Callable[[int, bytes], object], addrs: Sequence[int]) -> None:
    for a in addrs:
        write(a, b"\x01")


def _touch_read(read: Callable[[int, int], object], addrs: Sequence[int]) -> None:
    for a in addrs:
        read(a, 1)


def _chunks_of(kernel: Kernel, proc: Process, fd: int) -> list[tuple[int, int]]:
    """The sg list of a system-heap buffer (the floor maps the same pfns)."""
    entries: list[tuple[int, int]] = proc.file(fd).private_data.priv.sg_table.entries
    return list(entries)


# -- the benchmark -----------------------------------------------------------------------------


def bench_floor(*, npages: int = 4096, runs: int = RUNS) -> Section:
    """Per-page cost of each hot operation, through the simulator and through its floor."""
    sec = Section(f"Hot operations beside a CPython floor ({npages:,} pages, per page)")
    counts: dict[str, int] = {}

    def fault_sim(exporter: str) -> float:
        _, proc, fd = sim_machine(exporter, "v6.12", npages)
        addrs = page_addrs(_sim_map(proc, fd, npages), npages)
        t = timed(lambda: _touch_write(proc.write_memory, addrs))
        counts[f"ptes[{exporter}]"] = len(proc.mm.pgtable)
        return t

    def fault_floor(exporter: str) -> float:
        fm = FloorMachine(cached=exporter == "udmabuf")
        pfns = list(range(0x100000, 0x100000 + npages))
        make = floor_udmabuf if exporter == "udmabuf" else floor_vgem
        addrs = page_addrs(fm.mmap(npages * PAGE_SIZE, make(fm, pfns)), npages)
        t = timed(lambda: _touch_write(fm.write, addrs))
        counts[f"floor_ptes[{exporter}]"] = len(fm.ptes)
        return t

    def eager_sim(spec: str) -> float:
        _, proc, fd = sim_machine("system_heap", spec, npages)
        box: list[int] = []
        t = timed(lambda: box.append(_sim_map(proc, fd, npages)))
        counts[f"ptes[system_heap-{spec}]"] = len(proc.mm.pgtable)
        return t

    def eager_floor(spec: str) -> float:
        kernel, proc, fd = sim_machine("system_heap", spec, npages)
        chunks = _chunks_of(kernel, proc, fd)  # the same sg list, outside the clock
        fm = FloorMachine()
        op = floor_system_heap(fm, chunks, per_chunk=spec != "v6.12")
        t = timed(lambda: fm.mmap(npages * PAGE_SIZE, op))
        counts[f"floor_ptes[system_heap-{spec}]"] = len(fm.ptes)
        return t

    def read_sim() -> float:
        _, proc, fd = sim_machine("system_heap", "v6.12", npages)
        addrs = page_addrs(_sim_map(proc, fd, npages), npages)
        _touch_read(proc.read_memory, addrs)  # untimed: every line cached
        return timed(lambda: _touch_read(proc.read_memory, addrs))

    def read_floor() -> float:
        kernel, proc, fd = sim_machine("system_heap", "v6.12", npages)
        fm = FloorMachine()
        op = floor_system_heap(fm, _chunks_of(kernel, proc, fd), per_chunk=False)
        addrs = page_addrs(fm.mmap(npages * PAGE_SIZE, op), npages)
        _touch_read(fm.read, addrs)
        return timed(lambda: _touch_read(fm.read, addrs))

    cases: list[tuple[str, str, str, Callable[[], float], Callable[[], float]]] = [
        (
            "fault-udmabuf",
            "first-touch write fault, udmabuf v6.12",
            "fault",
            lambda: fault_sim("udmabuf"),
            lambda: fault_floor("udmabuf"),
        ),
        (
            "fault-vgem",
            "first-touch write fault, vgem v6.12",
            "fault",
            lambda: fault_sim("vgem"),
            lambda: fault_floor("vgem"),
        ),
        (
            "eager-system_heap-v6.12",
            "eager mmap, system heap v6.12 (page by page)",
            "eager",
            lambda: eager_sim("v6.12"),
            lambda: eager_floor("v6.12"),
        ),
        (
            "eager-system_heap-latest",
            "eager mmap, system heap latest (per chunk)",
            "eager",
            lambda: eager_sim("latest"),
            lambda: eager_floor("latest"),
        ),
        (
            "read-present",
            "read through a present PTE (cache hit)",
            "read",
            read_sim,
            read_floor,
        ),
    ]
    for key, label, goal, sim, floor in cases:
        t_sim = best(sim, runs) / npages
        t_floor = best(floor, runs) / npages
        ratio = t_sim / t_floor
        sec.add(f"sim_us[{key}]", label, t_sim * 1e6, "µs", "through the simulator, per page")
        sec.add(f"floor_us[{key}]", "  CPython floor", t_floor * 1e6, "µs", "FloorMachine")
        verdict = "meets" if ratio <= GOALS[goal] else "misses"
        sec.add(
            f"ratio[{key}]",
            "  simulator / floor",
            ratio,
            "x",
            f"goal <= {GOALS[goal]:g}x: {verdict} it",
        )
    for key, value in counts.items():
        sec.add(key, f"  {key}", value, "PTEs", "PTEs present after the last run")
    return sec


PRESETS: dict[str, dict[str, dict[str, object]]] = {
    "full": {"floor": {"npages": 4096}},
    "quick": {"floor": {"npages": 1024, "runs": 3}},
}


def main(argv: Sequence[str] | None = None) -> int:
    def benches(mode: str) -> list[tuple[Callable[..., Section], dict[str, object]]]:
        return [(bench_floor, PRESETS[mode]["floor"])]

    return run_benchmarks(
        argv,
        description=__doc__.splitlines()[0],
        title="hot paths beside a CPython floor",
        spec="v6.12",
        runs=RUNS,
        benches=benches,
    )


if __name__ == "__main__":
    sys.exit(main())
