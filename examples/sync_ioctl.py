"""How the dropped prepare/finish came back: DMA_BUF_IOCTL_SYNC (Linux 4.6).

The RFC dropped Rob Clark's prepare/finish ioctls: exporters had to give userspace a
coherent mapping (or fake one), so userspace had nothing to call.  In 2016 the ioctl
returned as DMA_BUF_IOCTL_SYNC, forwarding to the existing begin/end_cpu_access hooks;
today userspace "must" bracket every CPU access with SYNC_START and SYNC_END.

The same program runs on v3.5 (EXPORTERS["simple"]) and v6.12 (the system heap): a
display device has the buffer mapped, and the CPU draws into it between SYNC calls.

Run: python examples/sync_ioctl.py
"""

import errno
import mmap
import os

from dmabuf_sim import Kernel
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device
from dmabuf_sim.dma_buf import dma_buf_attach, dma_buf_get, dma_buf_map_attachment_unlocked
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.trace import format_function_graph
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    DmaBufSync,
)


def program(spec: str, exporter: str) -> None:
    k = Kernel(spec)
    app = k.spawn("app")
    fd = EXPORTERS[exporter].make_fd(app, 4096, os.O_RDWR)
    with k.running(app):
        dmabuf = dma_buf_get(k, fd)
    display = Device(k, "display")  # a non-coherent importer that keeps the buffer mapped
    dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, display), DMA_BIDIRECTIONAL)
    addr = app.mmap(0, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    try:
        with k.trace() as events:
            app.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW))
    except OSError as exc:
        # 3.5's dma_buf_fops has no ->unlocked_ioctl: the VFS answers ENOTTY.  Userspace
        # had no way to bracket its access; coherency was the exporter's job alone.
        print(f"{spec:5} {exporter:11}: SYNC_START -> {errno.errorcode[exc.errno]} ({exc})")
        return
    app.write_memory(addr, b"pixels")
    with k.trace() as end_events:
        app.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW))
    # START: the exporter invalidates the CPU cache for every mapped attachment, then the
    # core waits for the implicit fences (dma_resv_wait_timeout); END cleans it again.
    print(f"{spec:5} {exporter:11}: SYNC_START -> 0, forwarded to begin_cpu_access:")
    graph = format_function_graph(events, show_task=False).splitlines()
    first = next(i for i, line in enumerate(graph) if "dma_buf_ioctl() {" in line)
    last = next(i for i, line in enumerate(graph) if "} /* dma_buf_ioctl" in line)
    cut = graph[first].index("dma_buf_ioctl")  # drop the syscall layers' indentation
    for line in graph[first : last + 1]:
        print("   ", line[cut:])
    calls = [e.func for e in end_events if e.kind == "entry"]
    print("    SYNC_END:", " -> ".join(calls[calls.index("dma_buf_ioctl") :]))


program("v3.5", "simple")
program("v6.12", "system_heap")
