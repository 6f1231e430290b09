"""Benchmarks of the exporters: faults, eager remaps, shoot-downs, untouched memory.

Run ``python benchmarks/bench_exporters.py`` (about 10 s on a 2-core machine) or
``--quick`` (about 2 s).  Only the standard library and :mod:`dmabuf_sim` are
used, in the style of ``bench_mm.py``.

Every timing is the best (minimum) of ``RUNS`` runs, with the cyclic garbage
collector off while the clock runs; set-up (a fresh kernel, the buffer, the
mapping, re-faulting PTEs) is never timed.  ``tracemalloc`` runs only inside the
memory section.  Nothing here asserts on time.  The ``bench_*`` functions return
:class:`Section` objects whose rows carry a stable ``key``, so a test can check
the structural figures (PTE, page and zap counts) without looking at times.

Sections:

1. fault throughput of the exporters that fault (CMA heap, udmabuf on v6.12 and
   latest — which pre-faults the whole vma on the first fault, so it is reported
   in PTEs/s — and the shoot-down exporter), and eager ``remap_pfn_range`` PTEs/s
   of the exporters that map in ``->mmap`` (system heap on v6.12 and latest, the
   ``simple`` exporter, which has no fault handler at all);
2. the shoot-down exporter's ``end_cpu_access`` (DMA-map every CPU-owned page, then
   ``unmap_mapping_range`` on its own file) as a function of present PTEs;
3. the same as a function of the buffer size, with 10 present PTEs — flat as long
   as only the touched pages exist; and, reported separately, what it costs once a
   ``map_dma_buf`` has allocated every page (it grows: see the row's method);
4. memory held by a 1 GiB system-heap buffer that is never touched, mapped, and
   then touched at 1000 pages.
"""

from __future__ import annotations

import mmap
import os
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmabuf_sim import Kernel, Process
from dmabuf_sim.device import DMA_BIDIRECTIONAL, DMA_TO_DEVICE, Device
from dmabuf_sim.dma_buf import (
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_end_cpu_access,
    dma_buf_map_attachment_unlocked,
    dma_buf_unmap_attachment_unlocked,
)
from dmabuf_sim.dma_buf.core import DmaBuf, dma_buf_fd
from dmabuf_sim.exporters.shootdown import ShootdownExporter
from dmabuf_sim.exporters.teaching import SimpleExporter
from dmabuf_sim.mm.memory import unmap_mapping_range
from dmabuf_sim.mm.page_alloc import PAGE_SIZE
from dmabuf_sim.mm.shmem import F_SEAL_SHRINK, MFD_ALLOW_SEALING
from dmabuf_sim.uapi import (
    DMA_HEAP_IOCTL_ALLOC,
    F_ADD_SEALS,
    UDMABUF_CREATE,
    DmaHeapAllocationData,
    UdmabufCreate,
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
    "GIB_PAGES",
    "PRESETS",
    "RUNS",
    "Machine",
    "Row",
    "Section",
    "ZapCounter",
    "bench_faults",
    "bench_shootdown_vs_ptes",
    "bench_shootdown_vs_size",
    "bench_system_heap_memory",
    "format_row",
    "main",
    "page_addrs",
]

SPEC = "v6.12"
RUNS = 3
"""Timings report the best of this many runs."""
GIB_PAGES = 1 << 18
"""1 GiB in 4 KiB pages (262,144)."""
PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE

# -- machines: one kernel, one process, one buffer ----------------------------------------------


class ZapCounter:
    """An instrument counting the PTEs unmap_mapping_range zaps."""

    def __init__(self) -> None:
        self.ptes = 0
        self.calls = 0

    def on_zap(self, mapping: Any, vma: Any, start: int, end: int, n: int) -> None:
        self.ptes += n
        self.calls += 1


@dataclass
class Machine:
    """A fresh kernel of ``spec``, one process, and a buffer of ``npages`` from ``exporter``."""

    kernel: Kernel
    proc: Process
    fd: int
    dmabuf: DmaBuf
    npages: int

    @classmethod
    def new(cls, exporter: str, npages: int, spec: str = SPEC) -> Machine:
        kernel = Kernel(spec, ram_pages=max(1 << 24, 4 * npages))
        proc = kernel.spawn("bench")
        if exporter in ("system_heap", "cma_heap"):
            name = "system" if exporter == "system_heap" else "reserved"
            heap = proc.open(f"/dev/dma_heap/{name}", os.O_RDONLY | os.O_CLOEXEC)
            data = DmaHeapAllocationData(len=npages * PAGE_SIZE, fd_flags=os.O_RDWR)
            proc.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
            proc.close(heap)
            fd = int(data.fd)
        elif exporter == "udmabuf":
            memfd = proc.memfd_create("bench", MFD_ALLOW_SEALING)
            proc.ftruncate(memfd, npages * PAGE_SIZE)
            proc.fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK)
            dev = proc.open("/dev/udmabuf", os.O_RDWR)
            fd = proc.ioctl(dev, UDMABUF_CREATE, UdmabufCreate(memfd, 0, 0, npages * PAGE_SIZE))
            proc.close(dev)
            proc.close(memfd)
        else:
            ops = {"shootdown": ShootdownExporter, "simple": SimpleExporter}[exporter]()
            with kernel.running(proc):
                dmabuf = ops.export(kernel, npages * PAGE_SIZE)
                fd = dma_buf_fd(dmabuf, 0)
        dmabuf = proc.file(fd).private_data
        assert isinstance(dmabuf, DmaBuf)
        return cls(kernel, proc, fd, dmabuf, npages)

    def map(self) -> int:
        return self.proc.mmap(0, self.npages * PAGE_SIZE, PROT_RW, mmap.MAP_SHARED, self.fd, 0)

    @property
    def ptes(self) -> int:
        return len(self.proc.mm.pgtable)

    def end_cpu_access(self) -> None:
        dma_buf_end_cpu_access(self.dmabuf, DMA_TO_DEVICE)

    def device_map(self) -> None:
        """attach → map_dma_buf → unmap → detach (a device job doing nothing)."""
        at = dma_buf_attach(self.dmabuf, Device(self.kernel, "gpu"))
        sgt = dma_buf_map_attachment_unlocked(at, DMA_BIDIRECTIONAL)
        dma_buf_unmap_attachment_unlocked(at, sgt, DMA_BIDIRECTIONAL)
        dma_buf_detach(self.dmabuf, at)


# -- 1. fault throughput and eager remaps -------------------------------------------------------

FAULTING = (
    ("cma_heap", SPEC, "CMA heap: vmf_insert_pfn"),
    ("udmabuf", SPEC, "udmabuf: vmf_insert_pfn"),
    ("shootdown", SPEC, "shoot-down: first touch (alloc + insert)"),
)
EAGER = (
    ("system_heap", "v6.12", "system heap v6.12: remap page by page"),
    ("system_heap", "latest", "system heap latest: remap chunk by chunk"),
    ("simple", SPEC, "simple: one remap_pfn_range for the vma"),
)


def bench_faults(*, npages: int = 16384, runs: int = RUNS) -> Section:
    """Faults/s of the faulting exporters; eager PTEs/s of those that remap in ->mmap."""
    sec = Section(f"1. Exporter fault throughput ({npages:,}-page buffer, each page touched once)")
    for exporter, spec, label in FAULTING:
        ptes: list[int] = []

        def run(exporter: str = exporter, spec: str = spec, ptes: list[int] = ptes) -> float:
            m = Machine.new(exporter, npages, spec)
            addrs = page_addrs(m.map(), npages)
            t = timed(lambda: touch_read(m.proc, addrs))
            ptes.append(m.ptes)
            return t

        t = best(run, runs)
        sec.add(
            f"faults_per_s[{exporter}]",
            f"{label} ({spec})",
            npages / t,
            "faults/s",
            f"read_memory(addr+i*4096, 1) for each page; {ptes[-1]:,} PTEs after",
        )
        sec.add(f"ptes[{exporter}]", "  PTEs after touching every page", ptes[-1], "PTEs", "")

    # the shoot-down exporter's re-fault: device-owned pages, invalidate + insert
    refault_ptes: list[int] = []

    def refault() -> float:
        m = Machine.new("shootdown", npages, SPEC)
        addrs = page_addrs(m.map(), npages)
        touch_read(m.proc, addrs)
        m.end_cpu_access()  # every page DMA-mapped (device-owned), every PTE zapped
        t = timed(lambda: touch_read(m.proc, addrs))
        refault_ptes.append(m.ptes)
        return t

    sec.add(
        "refaults_per_s[shootdown]",
        f"shoot-down: re-fault, page device-owned ({SPEC})",
        npages / best(refault, runs),
        "faults/s",
        "touch all, end_cpu_access (untimed), then time touching all again: cpu_sync_page"
        " invalidates each page",
    )
    sec.add("ptes[shootdown-refault]", "  PTEs after re-faulting", refault_ptes[-1], "PTEs", "")

    # latest udmabuf: the first fault maps the whole vma
    pre: list[int] = []

    def prefault() -> float:
        m = Machine.new("udmabuf", npages, "latest")
        addr = m.map()
        t = timed(lambda: m.proc.read_memory(addr, 1))
        pre.append(m.ptes)
        return t

    sec.add(
        "prefault_ptes_per_s[udmabuf-latest]",
        "udmabuf latest: one fault pre-faults the vma",
        npages / best(prefault, runs),
        "PTEs/s",
        "time of the first read_memory (one fault) / PTEs it left",
    )
    sec.add("ptes[udmabuf-latest]", "  PTEs after that single access", pre[-1], "PTEs", "")

    for exporter, spec, label in EAGER:
        eager_ptes: list[int] = []

        def eager(exporter: str = exporter, spec: str = spec, out: list[int] = eager_ptes) -> float:
            m = Machine.new(exporter, npages, spec)
            t = timed(m.map)
            out.append(m.ptes)
            return t

        key = f"{exporter}-{spec}"
        sec.add(
            f"remap_ptes_per_s[{key}]",
            label,
            npages / best(eager, runs),
            "PTEs/s",
            "time of the mmap call (remap_pfn_range fills every PTE; no fault handler)",
        )
        sec.add(f"ptes[{key}]", "  PTEs right after mmap", eager_ptes[-1], "PTEs", "")
    return sec


# -- 2 and 3. shoot-down cost -------------------------------------------------------------------


def _shootdown_cost(
    m: Machine, refault: Sequence[int], reps: int, runs: int, what: str = "end_cpu_access"
) -> tuple[float, int]:
    """Mean seconds per call (best of runs) and PTEs zapped per call.

    Before each call the ``refault`` pages are touched again (untimed): each fault takes
    its page back for the CPU, so every call DMA-maps and zaps the same amount of work.
    """
    counter = ZapCounter()
    m.kernel.add_instrument(counter)
    mapping = m.dmabuf.priv.filp.f_mapping
    zapped: list[int] = []

    def call() -> None:
        if what == "end_cpu_access":
            m.end_cpu_access()
        else:
            unmap_mapping_range(mapping, 0, 0, 1)

    def run() -> float:
        total = 0.0
        for _ in range(reps):
            touch_read(m.proc, refault)
            before = counter.ptes
            total += timed(call)
            zapped.append(counter.ptes - before)
        return total / reps

    return best(run, runs), zapped[-1]


def bench_shootdown_vs_ptes(
    *,
    npages: int = GIB_PAGES,
    present_counts: Sequence[int] = (1, 100, 10000),
    reps: int = 50,
    runs: int = RUNS,
) -> Section:
    """end_cpu_access of the shoot-down exporter vs PTEs present, buffer size fixed."""
    sec = Section(
        f"2. Shoot-down cost vs present PTEs ({npages_label(npages)}-page shoot-down buffer)"
    )
    for n in present_counts:
        m = Machine.new("shootdown", npages)
        refault = page_addrs(m.map(), n, max(1, npages // n))
        r = max(1, min(reps, (20 * reps) // n))
        t, zapped = _shootdown_cost(m, refault, r, runs)
        sec.add(
            f"end_us[{n}]",
            f"end_cpu_access, {n:,} present PTEs",
            t * 1e6,
            "µs",
            f"DMA-map the {n:,} CPU-owned pages + unmap_mapping_range; zapped {zapped}",
        )
        t_zap, zapped = _shootdown_cost(m, refault, r, runs, what="unmap_mapping_range")
        sec.add(
            f"zap_us[{n}]",
            "  of which unmap_mapping_range alone",
            t_zap * 1e6,
            "µs",
            f"unmap_mapping_range(own file, 0, 0, 1) in the same state; zapped {zapped}",
        )
        sec.add(f"zapped[{n}]", "  PTEs zapped per call", zapped, "PTEs", "ZapCounter instrument")
        if n == max(present_counts):
            sec.add(
                "end_ns_per_pte",
                f"  end_cpu_access per PTE at {n:,} PTEs",
                t / n * 1e9,
                "ns",
                "the call time divided by the PTEs it zapped",
            )
    return sec


def bench_shootdown_vs_size(
    *,
    sizes: Sequence[int] = (16, GIB_PAGES),
    present: int = 10,
    reps: int = 50,
    runs: int = RUNS,
    after_map: bool = True,
) -> Section:
    """end_cpu_access with ``present`` PTEs vs the buffer size; then after a map_dma_buf."""
    sec = Section(f"3. Shoot-down cost vs buffer size ({present} present PTEs)")
    times: dict[str, float] = {}
    for size in sizes:
        m = Machine.new("shootdown", size)
        refault = page_addrs(m.map(), present, max(1, size // present))
        t, zapped = _shootdown_cost(m, refault, reps, runs)
        times[f"faulted-{size}"] = t
        sec.add(
            f"end_us[{size}]",
            f"end_cpu_access, {npages_label(size)}-page buffer",
            t * 1e6,
            "µs",
            f"only the {present} touched pages exist (shmem allocates on fault); zapped {zapped}",
        )
        sec.add(
            f"allocated[{size}]",
            "  pages the exporter holds",
            len(m.dmabuf.priv.filp.f_mapping.pages),
            "pages",
            "own shmem file's page cache",
        )
    if len(sizes) == 2:
        small, big = sizes
        sec.add(
            "end_ratio",
            "time ratio, largest / smallest buffer",
            times[f"faulted-{big}"] / times[f"faulted-{small}"],
            "x",
            "≈ 1: the shoot-down does not grow with the buffer size",
        )
    if not after_map:
        return sec
    for size in sizes:
        m = Machine.new("shootdown", size)
        addr = m.map()
        t_map = timed(m.device_map)  # once: it allocates every page of the buffer
        sec.add(
            f"map_ms[{size}]",
            f"map_dma_buf of a {npages_label(size)}-page buffer (once)",
            t_map * 1e3,
            "ms",
            "allocates + DMA-maps every page (omap_gem_pin, then the sync): O(buffer)",
        )
        refault = page_addrs(addr, present, max(1, size // present))
        t, zapped = _shootdown_cost(m, refault, reps, runs)
        times[f"mapped-{size}"] = t
        sec.add(
            f"end_after_map_us[{size}]",
            f"  then end_cpu_access, {present} present PTEs",
            t * 1e6,
            "µs",
            "after a map_dma_buf every page exists; the shoot-down still visits only the"
            f" CPU-owned pages (ShootdownBuffer.cpu_owned); zapped {zapped}",
        )
    if len(sizes) == 2:
        small, big = sizes
        sec.add(
            "end_after_map_ratio",
            "  time ratio after map_dma_buf, largest / smallest",
            times[f"mapped-{big}"] / times[f"mapped-{small}"],
            "x",
            "≈ 1: O(CPU-owned pages) per call (omapdrm's own loop is O(pages))",
        )
    return sec


# -- 4. memory of a big untouched system-heap buffer --------------------------------------------


def bench_system_heap_memory(
    *, npages: int = GIB_PAGES, touched: int = 1000, spec: str = SPEC
) -> Section:
    """Traced memory, pages with data and struct pages: allocated, mapped, touched."""
    gib = npages * PAGE_SIZE / (1 << 30)
    sec = Section(f"4. Memory held by a {gib:g} GiB system-heap buffer ({npages:,} pages, {spec})")
    k = Kernel(spec, ram_pages=max(1 << 24, 4 * npages))
    mem = k.mem
    p = k.spawn("bench")
    heap = p.open("/dev/dma_heap/system", os.O_RDONLY)
    data = DmaHeapAllocationData(len=npages * PAGE_SIZE, fd_flags=os.O_RDWR)
    data0, struct0 = mem.pages_with_data, mem.materialised_pages
    tracemalloc.start()
    try:
        t0 = tracemalloc.get_traced_memory()[0]
        p.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
        t_alloc = tracemalloc.get_traced_memory()[0]
        data_alloc, struct_alloc = mem.pages_with_data - data0, mem.materialised_pages - struct0
        addr = p.mmap(0, npages * PAGE_SIZE, PROT_RW, mmap.MAP_SHARED, data.fd, 0)
        t_map = tracemalloc.get_traced_memory()[0]
        ptes_map = len(p.mm.pgtable)
        stride = max(1, npages // touched)
        touch_write(p, page_addrs(addr, touched, stride))
        k.cache.flush_all()  # the dirty lines reach DRAM: now the bytes exist
        t_touch = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    chunks = len(p.file(data.fd).private_data.priv.chunks)
    sec.add(
        "alloc_bytes",
        "DMA_HEAP_IOCTL_ALLOC, never touched: traced",
        t_alloc - t0,
        "bytes",
        f"tracemalloc delta: {chunks:,} chunks + sg table + dma-buf + file (per chunk, not page)",
    )
    sec.add("alloc_data_pages", "  pages with data", data_alloc, "pages", "mem.pages_with_data")
    sec.add("alloc_struct_pages", "  struct pages", struct_alloc, "pages", "mem.materialised_pages")
    sec.add(
        "map_bytes",
        "mmap of the whole buffer: traced",
        t_map - t_alloc,
        "bytes",
        "eager remap_pfn_range: one PTE (dict entry) per page — O(buffer), by design",
    )
    sec.add("map_ptes", "  PTEs after mmap", ptes_map, "PTEs", "len(proc.mm.pgtable)")
    sec.add(
        "touch_bytes",
        f"after writing {touched:,} pages: traced",
        t_touch - t_map,
        "bytes",
        f"1 byte to pages {stride} apart (no faults: PTEs present), then cache.flush_all()",
    )
    sec.add(
        "touch_bytes_per_page",
        "  per touched page",
        (t_touch - t_map) / touched,
        "bytes",
        "a 4 KiB bytearray + its dict slot",
    )
    sec.add(
        "touch_data_pages",
        "  pages with data, touched",
        mem.pages_with_data - data0,
        "pages",
        "mem.pages_with_data",
    )
    sec.add(
        "touch_struct_pages",
        "  struct pages, touched",
        mem.materialised_pages - struct0,
        "pages",
        "special PFN PTEs take no page reference",
    )
    return sec


# -- main ---------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, dict[str, object]]] = {
    "full": {
        "faults": {"npages": 16384},
        "ptes": {"reps": 50},
        "size": {"reps": 50},
        "memory": {},
    },
    "quick": {
        "faults": {"npages": 2048},
        "ptes": {"npages": 1 << 16, "present_counts": (1, 100, 2000), "reps": 10},
        "size": {"sizes": (16, 1 << 16), "reps": 10},
        "memory": {"npages": 1 << 16, "touched": 1000},
    },
}


def main(argv: Sequence[str] | None = None) -> int:
    def benches(mode: str) -> list[tuple[Callable[..., Section], dict[str, object]]]:
        return [
            (bench_faults, PRESETS[mode]["faults"]),
            (bench_shootdown_vs_ptes, PRESETS[mode]["ptes"]),
            (bench_shootdown_vs_size, PRESETS[mode]["size"]),
            (bench_system_heap_memory, PRESETS[mode]["memory"]),
        ]

    return run_benchmarks(
        argv,
        description=__doc__.splitlines()[0],
        title="exporter benchmarks",
        spec=SPEC,
        runs=RUNS,
        benches=benches,
    )


if __name__ == "__main__":
    sys.exit(main())
