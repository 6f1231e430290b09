"""Benchmarks of the simulated mm: faults, mapping cost, memory, vma count, shoot-downs.

Run ``python benchmarks/bench_mm.py`` (about 10 s on a 2-core machine) or
``--quick`` (about 2 s).  Only the standard library and :mod:`dmabuf_sim` are
used.  ``benchmarks/README.md`` says what each section shows.

Every timing is the best (minimum) of ``RUNS`` runs of a fixed number of
repetitions, with the cyclic garbage collector off while the clock runs (as
:mod:`timeit` does); set-up and tear-down are never timed.  ``tracemalloc``
runs only inside the memory measurements, never around a timing.  Nothing
here asserts on time: this is a report.  The ``bench_*`` functions return
:class:`Section` objects whose rows carry a stable ``key``, so a test can check
the structural figures (PTE counts, page counts) without looking at times.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dmabuf_sim import Kernel, Process
from dmabuf_sim.fs import File, FileOperations
from dmabuf_sim.mm.memory import get_page, remap_pfn_range, unmap_mapping_range
from dmabuf_sim.mm.mmap import MAP_FIXED
from dmabuf_sim.mm.page_alloc import PAGE_SIZE
from dmabuf_sim.mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
    vma_pages,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
from _report import (
    Row,
    Section,
    best,
    format_row,
    npages_label,
    page_addrs,
    run_benchmarks,
    timed,
    touch_read,
    touch_write,
)

__all__ = [
    "HUGE_PAGES",
    "PRESETS",
    "RUNS",
    "BenchDriver",
    "Machine",
    "Row",
    "Section",
    "bench_faults",
    "bench_faults_vs_vmas",
    "bench_mapping_cost",
    "bench_unmap_mapping_range",
    "bench_untouched_memory",
    "format_row",
    "main",
    "page_addrs",
    "zap_cost",
]

SPEC = "latest"
RUNS = 3
"""Timings report the best of this many runs."""
HUGE_PAGES = 1 << 28
"""A 1 TiB mapping (2**28 pages): the "huge" size of sections 2 and 5."""
PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE

# -- the test driver ----------------------------------------------------------------


class BenchDriver:
    """A char driver over one ``alloc_contig`` range of ``npages`` pages.

    Lazy (default): ``mmap`` only bounds-checks and sets ``vm_ops``; the fault
    handler returns ``pfn_to_page(base + pgoff)`` after ``get_page``, like
    ``/dev/simmem``.  Eager: ``mmap`` calls ``remap_pfn_range`` for the whole
    vma, so later loads never fault (there is no fault handler at all).
    """

    def __init__(
        self,
        kernel: Kernel,
        path: str,
        npages: int,
        *,
        eager: bool = False,
        base: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.npages = npages
        self.base = kernel.mem.alloc_contig(npages) if base is None else base
        self.faults = 0
        self.vm_ops = VmOperationsStruct(fault=self.fault, owner="bench")
        fops = FileOperations(owner="bench", mmap=self.mmap_eager if eager else self.mmap_lazy)
        kernel.register_chrdev(path, fops, self)

    def _check(self, vma: VmAreaStruct) -> int:
        if vma.vm_pgoff + vma_pages(vma) > self.npages:
            return -errno.EINVAL
        vma.vm_flags |= VM_DONTEXPAND | VM_DONTDUMP
        return 0

    def mmap_lazy(self, file: File, vma: VmAreaStruct) -> int:
        err = self._check(vma)
        if err:
            return err
        vma.vm_ops = self.vm_ops
        return 0

    def mmap_eager(self, file: File, vma: VmAreaStruct) -> int:
        err = self._check(vma)
        if err:
            return err
        size = vma.vm_end - vma.vm_start
        return remap_pfn_range(vma, vma.vm_start, self.base + vma.vm_pgoff, size, vma.vm_page_prot)

    def fault(self, vmf: VmFault) -> int:
        if vmf.pgoff >= self.npages:
            return VM_FAULT_SIGBUS
        self.faults += 1
        page = self.kernel.mem.pfn_to_page(self.base + vmf.pgoff)
        get_page(page)
        vmf.page = page
        return 0


@dataclass
class Machine:
    """A fresh kernel, one process, and the bench driver opened O_RDWR."""

    kernel: Kernel
    proc: Process
    drv: BenchDriver
    fd: int

    @classmethod
    def new(cls, npages: int, *, eager: bool = False) -> Machine:
        # The CMA region is the top quarter of RAM; RAM is lazy, so a 2**30-page
        # machine costs no more than a small one.
        kernel = Kernel(SPEC, ram_pages=max(1 << 24, 4 * npages))
        drv = BenchDriver(kernel, "/dev/bench", npages, eager=eager)
        proc = kernel.spawn("bench")
        fd = proc.open("/dev/bench", os.O_RDWR)
        return cls(kernel, proc, drv, fd)

    @property
    def file(self) -> File:
        return self.proc.file(self.fd)

    def map(self, npages: int, *, pgoff: int = 0, addr: int = 0, flags: int = 0) -> int:
        return self.proc.mmap(
            addr, npages * PAGE_SIZE, PROT_RW, mmap.MAP_SHARED | flags, self.fd, pgoff * PAGE_SIZE
        )

    @property
    def ptes(self) -> int:
        return len(self.proc.mm.pgtable)


# -- 1. fault throughput ----------------------------------------------------------------


def bench_faults(*, npages: int = 65536, runs: int = RUNS) -> Section:
    """Faults per second: lazy driver (read, write), remap_pfn_range driver, anonymous."""
    sec = Section(f"1. Fault throughput ({npages:,} pages, each touched once)")
    counts: dict[str, int] = {}

    def lazy(write: bool) -> float:
        m = Machine.new(npages)
        addrs = page_addrs(m.map(npages), npages)
        touch = touch_write if write else touch_read
        t = timed(lambda: touch(m.proc, addrs))
        counts["write" if write else "read"] = m.drv.faults
        return t

    t_read = best(lambda: lazy(False), runs)
    t_write = best(lambda: lazy(True), runs)
    sec.add(
        "read_faults_per_s",
        "read faults (lazy driver, MAP_SHARED)",
        npages / t_read,
        "faults/s",
        "read_memory(addr+i*4096, 1) for each page; ->fault returns pfn_to_page(base+pgoff)",
    )
    sec.add(
        "write_faults_per_s",
        "write faults (lazy driver, MAP_SHARED)",
        npages / t_write,
        "faults/s",
        "write_memory(addr+i*4096, b'\\x01') for each page (do_shared_fault)",
    )
    sec.add(
        "faults_taken",
        "  faults the driver saw per run",
        counts["read"],
        "faults",
        "driver counter after the read run (one per page)",
    )

    remap: dict[str, float] = {}

    def eager() -> float:
        m = Machine.new(npages, eager=True)
        box: list[int] = []
        remap["map"] = min(remap.get("map", 1e9), timed(lambda: box.append(m.map(npages))))
        remap["ptes"] = m.ptes
        return timed(lambda: touch_read(m.proc, page_addrs(box[0], npages)))

    t_loads = best(eager, runs)
    sec.add(
        "remap_ptes_per_s",
        "remap_pfn_range in ->mmap (eager PTE fill)",
        npages / remap["map"],
        "PTEs/s",
        "time of the mmap call that remaps every page",
    )
    sec.add(
        "present_loads_per_s",
        "loads through present PTEs (no faults)",
        npages / t_loads,
        "loads/s",
        "read_memory per page of the remapped vma (it has no ->fault: a fault = SIGBUS)",
    )
    sec.add(
        "remap_ptes",
        "  PTEs present after the remap mmap",
        int(remap["ptes"]),
        "PTEs",
        "len(proc.mm.pgtable)",
    )

    def anon() -> float:
        k = Kernel(SPEC)
        p = k.spawn("bench")
        addr = p.mmap(0, npages * PAGE_SIZE, PROT_RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        return timed(lambda: touch_write(p, page_addrs(addr, npages)))

    sec.add(
        "anon_faults_per_s",
        "anonymous write faults (MAP_PRIVATE|MAP_ANON)",
        npages / best(anon, runs),
        "faults/s",
        "write_memory per page: do_anonymous_page allocates an order-0 page",
    )
    return sec


# -- 2. mapping cost vs size --------------------------------------------------------------


def bench_mapping_cost(
    *, sizes: Sequence[int] = (1, HUGE_PAGES), reps: int = 2000, runs: int = RUNS
) -> Section:
    """mmap+munmap of a small and a huge lazy mapping: time, tracemalloc peak, leftovers."""
    sec = Section("2. Mapping cost vs size (lazy driver: ->mmap only sets vm_ops)")
    times: dict[int, float] = {}
    for npages in sizes:
        m = Machine.new(max(sizes))
        proc = m.proc
        length = npages * PAGE_SIZE

        def cycle(proc: Process = proc, length: int = length, fd: int = m.fd) -> None:
            for _ in range(reps):
                proc.munmap(proc.mmap(0, length, PROT_RW, mmap.MAP_SHARED, fd, 0), length)

        cycle()  # warm up (first-call costs, interned objects)
        times[npages] = best(lambda cycle=cycle: timed(cycle), runs) / reps
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            proc.munmap(proc.mmap(0, length, PROT_RW, mmap.MAP_SHARED, m.fd, 0), length)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        tag = f"{npages_label(npages)} page{'s' if npages > 1 else ''}"
        if npages == HUGE_PAGES:
            tag += " (1 TiB)"
        sec.add(
            f"time_us[{npages}]",
            f"mmap+munmap, {tag}",
            times[npages] * 1e6,
            "µs",
            f"{reps} mmap+munmap pairs, per pair",
        )
        sec.add(
            f"peak_bytes[{npages}]",
            f"  tracemalloc peak, {tag}",
            peak - before,
            "bytes",
            "one pair under tracemalloc: peak minus the size traced before",
        )
        sec.add(
            f"kept_bytes[{npages}]",
            f"  memory kept after munmap, {tag}",
            current - before,
            "bytes",
            "traced size after the pair minus before",
        )
        sec.add(f"ptes[{npages}]", f"  PTEs after, {tag}", m.ptes, "PTEs", "len(proc.mm.pgtable)")
        sec.add(
            f"struct_pages[{npages}]",
            f"  struct pages after, {tag}",
            m.kernel.mem.materialised_pages,
            "pages",
            "kernel.mem.materialised_pages",
        )
    if len(sizes) == 2:
        small, big = sizes
        sec.add(
            "time_ratio",
            "time ratio, largest / smallest mapping",
            times[big] / times[small],
            "x",
            "≈ 1 when the cost does not depend on the mapping size",
        )
    return sec


# -- 3. memory held by untouched pages ------------------------------------------------------


def bench_untouched_memory(*, npages: int = 262144, touched: int = 1000) -> Section:
    """What an allocated-but-untouched buffer costs, and what touching some of it costs."""
    gib = npages * PAGE_SIZE / (1 << 30)
    sec = Section(f"3. Memory held by untouched pages ({npages:,} pages = {gib:g} GiB)")
    k = Kernel(SPEC, ram_pages=max(1 << 24, 4 * npages))
    mem = k.mem
    p = k.spawn("bench")
    tracemalloc.start()
    try:
        t0 = tracemalloc.get_traced_memory()[0]
        base = mem.alloc_contig(npages)
        t_alloc = tracemalloc.get_traced_memory()[0]
        data_alloc, pages_alloc = mem.pages_with_data, mem.materialised_pages
        BenchDriver(k, "/dev/bench", npages, base=base)
        fd = p.open("/dev/bench", os.O_RDWR)
        addr = p.mmap(0, npages * PAGE_SIZE, PROT_RW, mmap.MAP_SHARED, fd, 0)
        t_map = tracemalloc.get_traced_memory()[0]
        stride = max(1, npages // touched)
        touch_write(p, page_addrs(addr, touched, stride))
        k.cache.flush_all()  # write the dirty lines back: the bytes now live in DRAM
        t_touch = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    sec.add(
        "alloc_bytes",
        "alloc_contig, untouched: traced memory",
        t_alloc - t0,
        "bytes",
        "tracemalloc size after kernel.mem.alloc_contig(n) minus before",
    )
    sec.add(
        "alloc_data_pages",
        "  pages with data, untouched",
        data_alloc,
        "pages",
        "kernel.mem.pages_with_data",
    )
    sec.add(
        "alloc_struct_pages",
        "  struct pages, untouched",
        pages_alloc,
        "pages",
        "kernel.mem.materialised_pages",
    )
    sec.add(
        "map_bytes",
        "driver + open + mmap of the whole buffer",
        t_map - t_alloc,
        "bytes",
        "tracemalloc size delta (chrdev, file, vma; no per-page state)",
    )
    sec.add(
        "touch_bytes",
        f"after touching {touched:,} pages: traced memory",
        t_touch - t_map,
        "bytes",
        f"write 1 byte to pages {stride} apart (faults), then cache.flush_all()",
    )
    sec.add(
        "touch_bytes_per_page",
        "  per touched page",
        (t_touch - t_map) / touched,
        "bytes",
        "4 KiB of data + struct page + PTE + dict slots",
    )
    sec.add(
        "touch_data_pages",
        "  pages with data, touched",
        mem.pages_with_data,
        "pages",
        "kernel.mem.pages_with_data",
    )
    sec.add(
        "touch_struct_pages",
        "  struct pages, touched",
        mem.materialised_pages,
        "pages",
        "kernel.mem.materialised_pages (the fault handler's get_page)",
    )
    sec.add("touch_ptes", "  PTEs, touched", len(p.mm.pgtable), "PTEs", "len(proc.mm.pgtable)")
    return sec


# -- 4. fault cost vs number of vmas ---------------------------------------------------------


def _faults_with_vmas(nvmas: int, fault_pages: int, out: list[Machine]) -> float:
    """Seconds to read-fault ``fault_pages`` pages of one vma in a process with ``nvmas`` vmas."""
    m = Machine.new(nvmas + fault_pages)
    top = m.proc.mm.mmap_base
    # nvmas-1 one-page vmas packed below mmap_base, where that many hint-less
    # mmaps would put them (placed with MAP_FIXED to keep the set-up linear)
    for i in range(nvmas - 1):
        m.map(1, pgoff=i, addr=top - (i + 1) * PAGE_SIZE, flags=MAP_FIXED)
    addr = m.map(fault_pages, pgoff=nvmas)
    out.append(m)
    return timed(lambda: touch_read(m.proc, page_addrs(addr, fault_pages)))


def bench_faults_vs_vmas(
    *,
    vma_counts: Sequence[int] = (10, 1000, 10000),
    fault_pages: int = 16384,
    mmap_reps: int = 200,
    runs: int = RUNS,
) -> Section:
    """Read faults/s in one vma while the process has N vmas; and a hint-less mmap's cost."""
    sec = Section(f"4. Fault cost vs number of vmas ({fault_pages:,} read faults in one vma)")
    for nvmas in vma_counts:
        built: list[Machine] = []
        t = best(lambda n=nvmas, out=built: _faults_with_vmas(n, fault_pages, out), runs)
        m = built[-1]
        sec.add(
            f"faults_per_s[{nvmas}]",
            f"read faults/s with {nvmas:,} vmas",
            fault_pages / t,
            "faults/s",
            f"map_count={m.proc.mm.map_count}; i_mmap holds them all",
        )

        def cycle(m: Machine = m) -> None:
            for _ in range(mmap_reps):
                a = m.map(1)
                m.proc.munmap(a, PAGE_SIZE)

        t_map = best(lambda cycle=cycle: timed(cycle), runs) / mmap_reps
        sec.add(
            f"mmap_us[{nvmas}]",
            f"  mmap+munmap without a hint, {nvmas:,} vmas",
            t_map * 1e6,
            "µs",
            f"{mmap_reps} pairs of 1 page; get_unmapped_area from the free-area cache",
        )
    return sec


# -- 5. unmap_mapping_range ---------------------------------------------------------------------


def zap_cost(
    m: Machine, refault: Sequence[int], holebegin: int, holelen: int, reps: int, runs: int
) -> tuple[float, int]:
    """Mean seconds per unmap_mapping_range call (best of runs) and PTEs zapped per call."""
    mapping = m.file.f_mapping
    zapped: list[int] = []

    def run() -> float:
        total = 0.0
        for _ in range(reps):
            touch_read(m.proc, refault)  # untimed: make the PTEs present again
            total += timed(
                lambda: zapped.append(unmap_mapping_range(mapping, holebegin, holelen, 1))
            )
        return total / reps

    return best(run, runs), zapped[-1]


def bench_unmap_mapping_range(
    *,
    huge: int = HUGE_PAGES,
    present_counts: Sequence[int] = (1, 100, 10000),
    small: int = 16,
    fixed_present: int = 10,
    other_ptes: int = 10000,
    nvmas: int = 1000,
    reps: int = 100,
    runs: int = RUNS,
) -> Section:
    """unmap_mapping_range(f_mapping, ...) vs present PTEs, mapping size and vmas in i_mmap."""
    sec = Section("5. unmap_mapping_range(file->f_mapping, ...) cost per call")
    method_all = "hole = whole file (holelen 0); PTEs refaulted (untimed) before each call"

    def reps_for(n: int) -> int:
        return max(1, min(reps, (20 * reps) // max(n, 1)))

    # (a) present PTEs, one fixed huge mapping
    for n in present_counts:
        m = Machine.new(huge)
        addr = m.map(huge)
        refault = page_addrs(addr, n, huge // n)
        t, zapped = zap_cost(m, refault, 0, 0, reps_for(n), runs)
        sec.add(
            f"a_us[{n}]",
            f"(a) present PTEs = {n:,}, {npages_label(huge)}-page vma",
            t * 1e6,
            "µs",
            f"{method_all}; zapped {zapped}",
        )
        if n == max(present_counts):
            sec.add(
                "a_ns_per_pte",
                f"    per PTE at {n:,} PTEs",
                t / n * 1e9,
                "ns",
                "the call time divided by the PTEs it zapped",
            )

    # (b) mapping size, fixed number of present PTEs
    for size in (small, huge):
        m = Machine.new(huge)
        addr = m.map(size)
        refault = page_addrs(addr, fixed_present, size // fixed_present)
        t, zapped = zap_cost(m, refault, 0, 0, reps, runs)
        sec.add(
            f"b_us[{size}]",
            f"(b) {npages_label(size)}-page vma, {fixed_present} present PTEs",
            t * 1e6,
            "µs",
            f"{method_all}; zapped {zapped}",
        )
    # ... and the same huge vma while the process has many PTEs elsewhere
    m = Machine.new(huge)
    addr = m.map(huge)
    anon = m.proc.mmap(0, other_ptes * PAGE_SIZE, PROT_RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    touch_write(m.proc, page_addrs(anon, other_ptes))
    refault = page_addrs(addr, fixed_present, huge // fixed_present)
    t, zapped = zap_cost(m, refault, 0, 0, reps, runs)
    sec.add(
        "b_us_other_ptes",
        f"(b) {npages_label(huge)}-page vma, {fixed_present} + {other_ptes:,} elsewhere",
        t * 1e6,
        "µs",
        f"as above + an anon vma with {other_ptes:,} PTEs outside the hole; zapped {zapped}",
    )

    # (c) many vmas in i_mmap, one hit
    def many(count: int, hit_all: bool) -> tuple[float, int]:
        m = Machine.new(nvmas * small)
        target = nvmas // 2
        mapped = range(nvmas) if count > 1 else [target]
        first = {j: m.map(small, pgoff=j * small) for j in mapped}  # vma j: pgoff 16j..16j+15
        touch_read(m.proc, list(first.values()))  # one present PTE in every vma
        if hit_all:
            return zap_cost(m, list(first.values()), 0, 0, reps_for(len(first)), runs)
        hole = (target * small * PAGE_SIZE, small * PAGE_SIZE)
        return zap_cost(m, [first[target]], *hole, reps, runs)

    for count, hit_all, label in (
        (1, False, "(c) 1 vma in i_mmap, 1 hit"),
        (nvmas, False, f"(c) {nvmas:,} vmas in i_mmap, 1 hit"),
        (nvmas, True, f"(c) {nvmas:,} vmas in i_mmap, all hit"),
    ):
        t, zapped = many(count, hit_all)
        sec.add(
            f"c_us[{count},{'all' if hit_all else 1}]",
            label,
            t * 1e6,
            "µs",
            f"{small}-page vmas, 1 present PTE each; zapped {zapped}",
        )
    return sec


# -- main ------------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, dict[str, object]]] = {
    "full": {
        "faults": {"npages": 65536},
        "mapping": {"reps": 2000},
        "memory": {},
        "vmas": {"fault_pages": 16384, "mmap_reps": 200},
        "unmap": {"reps": 100},
    },
    "quick": {
        "faults": {"npages": 8192},
        "mapping": {"reps": 300},
        "memory": {},
        "vmas": {"fault_pages": 2048, "mmap_reps": 30},
        "unmap": {"reps": 20},
    },
}


def main(argv: Sequence[str] | None = None) -> int:
    def benches(mode: str) -> list[tuple[Callable[..., Section], dict[str, object]]]:
        return [
            (bench_faults, PRESETS[mode]["faults"]),
            (bench_mapping_cost, PRESETS[mode]["mapping"]),
            (bench_untouched_memory, PRESETS[mode]["memory"]),
            (bench_faults_vs_vmas, PRESETS[mode]["vmas"]),
            (bench_unmap_mapping_range, PRESETS[mode]["unmap"]),
        ]

    return run_benchmarks(
        argv,
        description=__doc__.splitlines()[0],
        title="mm benchmarks",
        spec=SPEC,
        runs=RUNS,
        benches=benches,
    )


if __name__ == "__main__":
    sys.exit(main())
