"""The RFC's recipe for exporters that cannot map coherently: fake it.

"If that's not possible, it needs to fake coherency by manually shooting down ptes when
leaving the cpu domain and flushing caches at fault time."  EXPORTERS["shootdown"] does
that (omapdrm-like): handing the buffer to a device cleans the CPU cache and zaps every
user PTE, so the CPU's next touch faults, and the fault handler takes the page back for
the CPU (invalidate) before mapping it again.  Userspace needs no DMA_BUF_IOCTL_SYNC.
EXPORTERS["no_coherency"] maps the same cached pages and does no maintenance at all.

Run: python examples/faked_coherency.py
"""

import mmap
import os

from dmabuf_sim import Kernel
from dmabuf_sim.coherency import CoherencyChecker
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device
from dmabuf_sim.dma_buf import dma_buf_attach, dma_buf_get, dma_buf_map_attachment_unlocked
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.trace import format_function_graph

SIZE = 2 * 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def run(exporter: str) -> None:
    k = Kernel("v6.12")
    checker = CoherencyChecker.attach(k)
    app = k.spawn("app")
    fd = EXPORTERS[exporter].make_fd(app, SIZE, os.O_RDWR)
    addr = app.mmap(0, SIZE, RW, mmap.MAP_SHARED, fd, 0)
    app.write_memory(addr, b"CPU wrote this..")  # plain stores, no SYNC ioctl anywhere
    app.write_memory(addr + 4096, b"page 2")
    print(f"[{exporter}] user PTEs after the CPU's writes: {len(app.mm.pgtable)}")

    gpu = Device(k, "gpu")  # non-coherent: sees only DRAM
    with k.running(app):
        dmabuf = dma_buf_get(k, fd)
    attach = dma_buf_attach(dmabuf, gpu)
    with k.trace() as events:  # leaving the CPU domain
        sgt = dma_buf_map_attachment_unlocked(attach, DMA_BIDIRECTIONAL)
    zapped = sum(e.ret for e in events if e.kind == "exit" and e.func == "unmap_mapping_range")
    print(f"  map_attachment zapped {zapped} PTEs; user PTEs left: {len(app.mm.pgtable)}")
    print(f"  device reads:   {gpu.dma_read(sgt, 0, 16)!r}")
    gpu.dma_write(sgt, 0, b"GPU wrote this!!")

    with k.trace() as events:  # the CPU's next touch
        seen = app.read_memory(addr, 16)
    print(f"  CPU then reads: {seen!r}")
    calls = [e.func for e in events if e.kind == "entry"]
    if "shootdown_fault" in calls:  # show the fault path and the handler's cache sync
        print("  ", " -> ".join(calls[: calls.index("shootdown_fault") + 1]))
        graph = format_function_graph(events, show_task=False).splitlines()
        first = next(i for i, line in enumerate(graph) if "shootdown_fault() {" in line)
        last = next(i for i, line in enumerate(graph) if "} /* shootdown_fault" in line)
        cut = graph[first].index("shootdown_fault")
        for line in graph[first : last + 1]:
            print("     ", line[cut:])
    print(f"  stale reads: {len(checker.stale)}")
    for stale in checker.stale:
        print(f"    {stale}")


run("shootdown")
run("no_coherency")
