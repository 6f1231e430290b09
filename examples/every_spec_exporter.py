"""The exporter of my_exporter.py written for every kernel the simulator models.

What changes between kernels is the shape of the ops (``dmabuf_sim.spec`` names
each difference):

* ``export_info_form`` (4.1+): ``dma_buf_export(kernel, DmaBufExportInfo(...))``;
  before, ``dma_buf_export(kernel, priv, ops, size, flags)``;
* ``kmap_ops_mandatory`` (3.4 to 4.18): ``kmap`` and ``kmap_atomic`` must exist;
* ``cpu_access_has_range_args`` (before 4.6): ``begin/end_cpu_access`` get
  ``(dmabuf, start, len, direction)``; since, ``(dmabuf, direction)`` — taking
  ``*args`` and using ``args[-1]`` serves both.

Check it on every spec:  dmabuf-sim check examples/every_spec_exporter.py:EverySpecExporter
    --spec v3.5 --spec v5.10 --spec v6.1 --spec v6.12 --spec v6.19 --spec latest
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
from dmabuf_sim.mm.vmalloc import KernelMapping


class EverySpecExporter(DmaBufOps):
    def export(self, kernel, size, flags):
        npages = -(-size // 4096)
        pages = SgTable([(kernel.mem.alloc_contig(npages), npages)])
        if kernel.spec.export_info_form:
            info = DmaBufExportInfo(ops=self, size=size, priv=pages, flags=flags)
            return dma_buf_export(kernel, info)
        return dma_buf_export(kernel, pages, self, size, flags)  # the 3.x form

    def map_dma_buf(self, attach, direction):
        sgt = attach.dmabuf.priv.copy()
        dma_map_sgtable(attach.dev, sgt, direction)
        attach.priv = sgt  # mapped: CPU access syncs it
        return sgt

    def unmap_dma_buf(self, attach, sgt, direction):
        attach.priv = None
        dma_unmap_sgtable(attach.dev, sgt, direction)

    def begin_cpu_access(self, dmabuf, *args):  # (direction) or (start, len, direction)
        for a in dmabuf.attachments:
            if a.priv:  # only mapped ones: syncing for the CPU drops lines it wrote
                dma_sync_sgtable_for_cpu(a.dev, a.priv, args[-1])
        return 0

    def end_cpu_access(self, dmabuf, *args):
        for a in dmabuf.attachments:
            if a.priv:
                dma_sync_sgtable_for_device(a.dev, a.priv, args[-1])
        return 0

    def kmap(self, dmabuf, page_num):  # mandatory on 3.x, unused since 5.6
        first, _ = dmabuf.priv.entries[0]
        return KernelMapping(dmabuf.kernel, [first + page_num])

    kmap_atomic = kmap

    def mmap(self, dmabuf, vma):
        first, _ = dmabuf.priv.entries[0]
        return remap_pfn_range(
            vma, vma.vm_start, first + vma.vm_pgoff, vma.vm_end - vma.vm_start, vma.vm_page_prot
        )

    def release(self, dmabuf):
        first, npages = dmabuf.priv.entries[0]
        dmabuf.kernel.mem.free_contig(first, npages)
