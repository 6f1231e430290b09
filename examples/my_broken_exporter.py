"""The exporter of my_exporter.py with one line broken: its mmap ignores vm_pgoff.

A mapping at a non-zero offset then shows the buffer's first pages instead of
the requested ones.  `dmabuf-sim check examples/my_broken_exporter.py:MyBrokenExporter`
names the rule (R60) and prints the shortest steps that show it.  The file is
self-contained (a copy of my_exporter.py but for that line), so it works wherever
it is copied.
"""

from dmabuf_sim.device import (
    SgTable,
    dma_map_sgtable,
    dma_sync_sgtable_for_cpu,
    dma_sync_sgtable_for_device,
    dma_unmap_sgtable,
)
from dmabuf_sim.dma_buf import DmaBufExportInfo, DmaBufOps, dma_buf_export
from dmabuf_sim.mm.memory import remap_pfn_range


class MyBrokenExporter(DmaBufOps):
    def export(self, kernel, size, flags):
        npages = -(-size // 4096)
        pages = SgTable([(kernel.mem.alloc_contig(npages), npages)])
        info = DmaBufExportInfo(ops=self, size=size, priv=pages, flags=flags, exp_name="mine")
        return dma_buf_export(kernel, info)

    def map_dma_buf(self, attach, direction):
        sgt = attach.dmabuf.priv.copy()
        dma_map_sgtable(attach.dev, sgt, direction)  # clean the CPU cache for the device
        attach.priv = sgt  # mapped: CPU access syncs it
        return sgt

    def unmap_dma_buf(self, attach, sgt, direction):
        attach.priv = None
        dma_unmap_sgtable(attach.dev, sgt, direction)  # invalidate: the device wrote

    def begin_cpu_access(self, dmabuf, direction):
        for a in dmabuf.attachments:
            if a.priv:  # not one merely attached: that would drop lines the CPU wrote
                dma_sync_sgtable_for_cpu(a.dev, a.priv, direction)
        return 0

    def end_cpu_access(self, dmabuf, direction):
        for a in dmabuf.attachments:
            if a.priv:
                dma_sync_sgtable_for_device(a.dev, a.priv, direction)
        return 0

    def mmap(self, dmabuf, vma):
        first, _ = dmabuf.priv.entries[0]
        return remap_pfn_range(
            vma, vma.vm_start, first, vma.vm_end - vma.vm_start, vma.vm_page_prot
        )  # BUG: forgot + vma.vm_pgoff

    def release(self, dmabuf):
        first, npages = dmabuf.priv.entries[0]
        dmabuf.kernel.mem.free_contig(first, npages)
