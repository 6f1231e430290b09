"""Use case 1 of the RFC: CPU fallback processing in a pipeline (a thumbnail).

"No special interfaces, userspace simply calls mmap on the dma-buf fd."  Since 4.6 it
also brackets its access with DMA_BUF_IOCTL_SYNC; the second frame shows why, on a CPU
that is not coherent with DMA.  Run: python examples/cpu_fallback_thumbnail.py
"""

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

from dmabuf_sim import Kernel, Process
from dmabuf_sim.coherency import CoherencyChecker
from dmabuf_sim.device import DMA_FROM_DEVICE, Device
from dmabuf_sim.dma_buf import (
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_get,
    dma_buf_map_attachment_unlocked,
    dma_buf_put,
    dma_buf_unmap_attachment_unlocked,
)
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_START,
    DmaBufSync,
)

W = H = 64  # an 8-bit grey image: exactly one page
FRAME1 = bytes((x + y) * 2 for y in range(H) for x in range(W))  # a diagonal ramp
FRAME2 = bytes(255 - v for v in FRAME1)  # its negative


def thumbnail(img: bytes) -> list[list[int]]:
    """8x8 thumbnail: the average of each 8x8 block of the 64x64 image."""
    sums = [[0] * 8 for _ in range(8)]
    for i, value in enumerate(img):
        sums[i // W // 8][i % W // 8] += value
    return [[total // 64 for total in block_row] for block_row in sums]


def row(values: list[int]) -> str:
    return " ".join(f"{v:3d}" for v in values)


@contextmanager
def cpu_read(app: Process, fd: int) -> Iterator[None]:
    """Bracket CPU reads of the mapping with DMA_BUF_IOCTL_SYNC START and END."""
    app.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ))
    yield
    app.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ))


k = Kernel("v6.12")
checker = CoherencyChecker.attach(k)  # compares every read with the last value written
app = k.spawn("thumbnailer")
fd = EXPORTERS["system_heap"].make_fd(app, W * H, os.O_RDWR)  # DMA_HEAP_IOCTL_ALLOC

# The camera driver imports the buffer kernel-side and captures frame 1 into it.
camera = Device(k, "camera")  # non-coherent: its DMA goes to DRAM, past the CPU cache
with k.running(app):  # dma_buf_get() looks the fd up in the current task
    dmabuf = dma_buf_get(k, fd)
attach = dma_buf_attach(dmabuf, camera)
sgt = dma_buf_map_attachment_unlocked(attach, DMA_FROM_DEVICE)
camera.dma_write(sgt, 0, FRAME1)
dma_buf_unmap_attachment_unlocked(attach, sgt, DMA_FROM_DEVICE)

# Userspace: no special interface, just mmap the dma-buf fd; SYNC brackets the access.
addr = app.mmap(0, W * H, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
with cpu_read(app, fd):
    thumb = thumbnail(app.read_memory(addr, W * H))
print("frame 1 thumbnail (8x8 block averages, read between SYNC START and END):")
print("\n".join("    " + row(values) for values in thumb))
print(f"stale reads so far: {len(checker.stale)}")

# Frame 2: a streaming camera keeps its buffer mapped between frames.  The CPU still
# holds the cache lines of its first read; mapping for the device only *cleans* them.
sgt = dma_buf_map_attachment_unlocked(attach, DMA_FROM_DEVICE)
camera.dma_write(sgt, 0, FRAME2)
print("frame 2 WITHOUT sync, thumbnail row 0:", row(thumbnail(app.read_memory(addr, W * H))[0]))
print(f"stale reads: {len(checker.stale)}")
print("   ", checker.stale[-1])
# With SYNC START the system heap syncs every mapped attachment for the CPU
# (dma_sync_sgtable_for_cpu: invalidate), so the next load comes from DRAM.
with cpu_read(app, fd):
    thumb = thumbnail(app.read_memory(addr, W * H))
print("frame 2 with SYNC,    thumbnail row 0:", row(thumb[0]))
print(f"stale reads: {len(checker.stale)} (none added under SYNC)")

dma_buf_unmap_attachment_unlocked(attach, sgt, DMA_FROM_DEVICE)  # the camera stops
dma_buf_detach(dmabuf, attach)
dma_buf_put(dmabuf)
