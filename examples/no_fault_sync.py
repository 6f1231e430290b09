"""Why a fault handler must not wait for outstanding device work.

The RFC: "Exporters that shoot down mappings (for any reasons) shall not do any
synchronization at fault time with outstanding device operations.  Synchronization is
an orthogonal issue to sharing the backing storage of a buffer [...] if different
exporters handle this differently, buffer sharing can fail in interesting ways
depending upon the exporter (if userspace starts depending upon this implicit
synchronization)."

A GPU job that renders into the buffer is pending: its fence sits in the buffer's
dma_resv and completes 5 ms from now.  The same program then reads the mapping:

* waits_in_fault blocks in its fault handler until the job is done: the program sees the
  rendered frame, and comes to depend on it (kernel.fault_waits records the wait);
* simple (a correct exporter) does not wait: the same program reads an unfinished frame.

Waiting is userspace's business: DMA_BUF_IOCTL_SYNC (since 4.6 it waits for the implicit
fences, interruptibly, in a syscall) or poll() on the fd work the same with every exporter.

Run: python examples/no_fault_sync.py
"""

import mmap
import os

from dmabuf_sim import Kernel
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device
from dmabuf_sim.dma_buf import (
    DmaFence,
    DmaResvUsage,
    dma_buf_attach,
    dma_buf_get,
    dma_buf_map_attachment_unlocked,
)
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.uapi import DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_READ, DMA_BUF_SYNC_START, DmaBufSync

DONE_AT = 5_000_000  # ns of virtual time


def run(exporter: str, sync: bool = False) -> None:
    k = Kernel("v6.12")
    app = k.spawn("app")
    fd = EXPORTERS[exporter].make_fd(app, 4096, os.O_RDWR)
    with k.running(app):
        dmabuf = dma_buf_get(k, fd)
    gpu = Device(k, "gpu")
    sgt = dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, gpu), DMA_BIDIRECTIONAL)
    # Queue the render job: its DMA write runs when the fence completes.
    job = DmaFence(k, "gpu", 1, completes_at=DONE_AT)
    job.work.append(lambda: gpu.dma_write(sgt, 0, b"rendered frame"))
    dmabuf.resv.add_fence(job, DmaResvUsage.WRITE)  # the implicit (dma_resv) fence

    addr = app.mmap(0, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if sync:  # the right way: wait explicitly, outside any fault handler
        app.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ))
    seen = app.read_memory(addr, 14)
    shown = repr(seen) if any(seen) else "zeros (unfinished)"
    label = exporter + (" + SYNC" if sync else "")
    print(f"{label:15} read {shown:19} clock {k.clock:>7} ns  fence signaled={job.signaled}")
    print(f"{'':15} fault_waits: {k.fault_waits}")


# Forbidden: the fault handler waits 5 ms for the GPU, with the task's mmap_lock held,
# and userspace silently starts relying on an exporter-specific implicit sync.
run("waits_in_fault")
run("simple")  # correct: the fault path never waits; the frame is not finished yet
run("simple", sync=True)  # userspace asks for the wait: DMA_BUF_IOCTL_SYNC
