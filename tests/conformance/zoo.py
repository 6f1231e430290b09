"""A zoo of exporters for testing the conformance kit itself.

Five correct base exporters, each in the style of a real driver, and then:

* **defects**: each a base exporter with one realistic bug, the kind real
  drivers have shipped (``INTENDED`` names the rule the kit must report, ``SPEC``
  where the bug shows);
* **unusual but correct** exporters: legal choices the kit must not reject.

The kit loads them by path (``tests/conformance/zoo.py:NAME``), as a user's
exporter would be loaded, so every printed reproducer imports this file.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

from dmabuf_sim.device import (
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_TO_DEVICE,
    Device,
    SgTable,
    dma_map_sgtable,
    dma_sync_sgtable_for_cpu,
    dma_sync_sgtable_for_device,
    dma_unmap_sgtable,
)
from dmabuf_sim.dma_buf import DmaBufExportInfo, DmaBufOps, dma_buf_export, dma_buf_put, get_dma_buf
from dmabuf_sim.dma_buf.dma_resv import DmaResvUsage
from dmabuf_sim.exporters.registry import Capabilities
from dmabuf_sim.exporters.shootdown import ShootdownBuffer, ShootdownExporter
from dmabuf_sim.lockdep import might_fault
from dmabuf_sim.mm.memory import (
    get_page,
    remap_pfn_range,
    unmap_mapping_range,
    vm_insert_page,
    vmf_insert_pfn,
)
from dmabuf_sim.mm.mmap import is_cow_mapping
from dmabuf_sim.mm.pgtable import CACHE_WC, pgprot_writecombine
from dmabuf_sim.mm.shmem import shmem_truncate
from dmabuf_sim.mm.util import vma_set_file
from dmabuf_sim.mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
    VM_IO,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
    VmOperationsStruct,
)
from dmabuf_sim.mm.vmalloc import KernelMapping, vmap, vunmap
from dmabuf_sim.module import find_module, try_module_get

P = 4096


class Pages:
    """An exporter's buffer: its pages in order, and bookkeeping the bases need."""

    def __init__(self, pfns: list[int], size: int) -> None:
        self.pfns = pfns
        self.size = size
        self.vaddr: KernelMapping | None = None
        self.attachments: list[Any] = []
        self.freed = False
        self.extra: dict[str, Any] = {}


class Att:
    def __init__(self, table: SgTable) -> None:
        self.table = table
        self.mapped = False


def _export(ops: Any, kernel: Any, buf: Pages, size: int, flags: int) -> Any:
    if kernel.spec.export_info_form:
        return dma_buf_export(kernel, DmaBufExportInfo(ops=ops, size=size, priv=buf, flags=flags))
    return dma_buf_export(kernel, buf, ops, size, flags)


class Scatter(DmaBufOps):
    """System-heap style: scattered pages, eager remap_pfn_range, syncs mapped attachments."""

    capabilities: ClassVar[Capabilities] = Capabilities()
    exp_name = "zoo"
    INTENDED: ClassVar[str | None] = None
    SPEC: ClassVar[str] = "v6.12"

    def alloc(self, kernel: Any, npages: int) -> list[int]:
        return [kernel.mem.alloc_pages(0) for _ in range(npages)]

    def export(self, kernel: Any, size: int, flags: int) -> Any:
        npages = -(-size // P)
        return _export(self, kernel, Pages(self.alloc(kernel, npages), size), size, flags)

    def table(self, buf: Pages) -> SgTable:
        return SgTable.from_pfns(buf.pfns)

    def attach(self, dmabuf: Any, *args: Any) -> int:
        attachment = args[-1]
        attachment.priv = Att(self.table(dmabuf.priv))
        dmabuf.priv.attachments.append(attachment)
        return 0

    def detach(self, dmabuf: Any, attachment: Any) -> None:
        dmabuf.priv.attachments.remove(attachment)

    def map_dma_buf(self, attachment: Any, direction: Any) -> SgTable:
        a: Att = attachment.priv
        dma_map_sgtable(attachment.dev, a.table, direction)
        a.mapped = True
        return a.table

    def unmap_dma_buf(self, attachment: Any, table: SgTable, direction: Any) -> None:
        attachment.priv.mapped = False
        dma_unmap_sgtable(attachment.dev, table, direction)

    def synced(self, buf: Pages) -> list[Any]:
        return [a for a in buf.attachments if a.priv.mapped]

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        for a in self.synced(dmabuf.priv):
            dma_sync_sgtable_for_cpu(a.dev, a.priv.table, args[-1])
        return 0

    def end_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        for a in self.synced(dmabuf.priv):
            dma_sync_sgtable_for_device(a.dev, a.priv.table, args[-1])
        return 0

    def page_for(self, vma: Any, index: int) -> int:
        return vma.vm_pgoff + index

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        buf: Pages = dmabuf.priv
        for i in range((vma.vm_end - vma.vm_start) // P):
            ret = remap_pfn_range(
                vma, vma.vm_start + i * P, buf.pfns[self.page_for(vma, i)], P, vma.vm_page_prot
            )
            if ret:
                return ret
        return 0

    def vmap(self, dmabuf: Any, map: Any) -> int:
        buf: Pages = dmabuf.priv
        buf.vaddr = vmap(dmabuf.kernel, list(buf.pfns))
        map.vaddr = buf.vaddr
        return 0

    def vunmap(self, dmabuf: Any, map: Any) -> None:
        buf: Pages = dmabuf.priv
        if buf.vaddr is not None:
            vunmap(buf.vaddr)
            buf.vaddr = None

    def kmap(self, dmabuf: Any, page_num: int) -> KernelMapping:
        return KernelMapping(dmabuf.kernel, [dmabuf.priv.pfns[page_num]])

    kmap_atomic = kmap

    def free(self, kernel: Any, buf: Pages) -> None:
        for pfn in buf.pfns:
            kernel.mem.free_pages(pfn, 0)

    def release(self, dmabuf: Any) -> None:
        self.free(dmabuf.kernel, dmabuf.priv)


class Contig(Scatter):
    """CMA style: one contiguous block, eager remap of the whole vma in one call."""

    def alloc(self, kernel: Any, npages: int) -> list[int]:
        first = kernel.mem.alloc_contig(npages)
        return list(range(first, first + npages))

    def free(self, kernel: Any, buf: Pages) -> None:
        kernel.mem.free_contig(buf.pfns[0], len(buf.pfns))

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        buf: Pages = dmabuf.priv
        first = buf.pfns[0] + vma.vm_pgoff
        return remap_pfn_range(
            vma, vma.vm_start, first, vma.vm_end - vma.vm_start, vma.vm_page_prot
        )


class Lazy(Contig):
    """CMA heap (6.8+) style: PFNMAP vma, pages inserted at fault, bounds-checked."""

    def check_bounds(self, vmf: Any, buf: Pages) -> bool:
        return vmf.pgoff < len(buf.pfns)

    def vma_flags(self) -> int:
        return VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
            return -errno.EINVAL
        vma.vm_flags |= self.vma_flags()
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner="zoo")
        vma.vm_private_data = dmabuf
        return 0

    def fault(self, vmf: Any) -> int:
        buf: Pages = vmf.vma.vm_private_data.priv
        if not self.check_bounds(vmf, buf):
            return VM_FAULT_SIGBUS
        return vmf_insert_pfn(vmf.vma, vmf.address, buf.pfns[self.fault_index(vmf)])

    def fault_index(self, vmf: Any) -> int:
        return int(vmf.pgoff)


class LazyPage(Contig):
    """CMA heap (6.1) style: no vma flags, the fault returns a referenced page."""

    capabilities = Capabilities(growable=True)

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
            return -errno.EINVAL
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner="zoo")
        vma.vm_private_data = dmabuf
        return 0

    def fault(self, vmf: Any) -> int:
        buf: Pages = vmf.vma.vm_private_data.priv
        if vmf.pgoff >= len(buf.pfns):
            return VM_FAULT_SIGBUS
        page = vmf.kernel.mem.pfn_to_page(buf.pfns[vmf.pgoff])
        get_page(page)
        vmf.page = page
        return 0


class Shoot(ShootdownExporter):
    """The RFC's faked coherency (the reference shoot-down exporter)."""

    capabilities: ClassVar[Capabilities] = Capabilities(coherent=True, swaps_vm_file=True)
    INTENDED: ClassVar[str | None] = None
    SPEC: ClassVar[str] = "v6.12"


class WriteCombined(Scatter):
    """A coherent (write-combined) mapping and kernel mapping: no cache maintenance needed."""

    capabilities = Capabilities(coherent=True)
    begin_cpu_access = None
    end_cpu_access = None

    def map_dma_buf(self, attachment: Any, direction: Any) -> SgTable:
        attachment.priv.mapped = True
        return attachment.priv.table  # nothing is ever in the CPU cache

    def unmap_dma_buf(self, attachment: Any, table: SgTable, direction: Any) -> None:
        attachment.priv.mapped = False

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        # COW copies go through the kernel's cached alias of the page, which a store
        # through this mapping bypasses: refuse private mappings (as drm_gem_shmem does)
        if is_cow_mapping(vma.vm_flags):
            return -errno.EINVAL
        vma.vm_page_prot = pgprot_writecombine(vma.vm_page_prot)
        return super().mmap(dmabuf, vma)

    def vmap(self, dmabuf: Any, map: Any) -> int:
        buf: Pages = dmabuf.priv
        buf.vaddr = vmap(dmabuf.kernel, list(buf.pfns), CACHE_WC)
        map.vaddr = buf.vaddr
        return 0


# ================================================================================================
# Defects: one realistic bug each
# ================================================================================================
class IgnoresPgoff(Contig):
    """mmap maps from the first page whatever the offset (forgot + vm_pgoff)."""

    INTENDED = "R60"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        buf: Pages = dmabuf.priv
        return remap_pfn_range(
            vma, vma.vm_start, buf.pfns[0], vma.vm_end - vma.vm_start, vma.vm_page_prot
        )


class PgoffOffByOne(Scatter):
    """Indexes pages by vm_pgoff + i + 1."""

    INTENDED = "R60"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        buf: Pages = dmabuf.priv
        n = len(buf.pfns)
        for i in range((vma.vm_end - vma.vm_start) // P):
            ret = remap_pfn_range(
                vma, vma.vm_start + i * P, buf.pfns[(vma.vm_pgoff + i + 1) % n], P, vma.vm_page_prot
            )
            if ret:
                return ret
        return 0


class RejectsOffsets(Contig):
    """Refuses any mapping that does not start at page 0."""

    INTENDED = "R1"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        if vma.vm_pgoff:
            return -errno.EINVAL
        return super().mmap(dmabuf, vma)


class OwnBoundsOffByOne(Contig):
    """Repeats the core's bounds check, wrongly: a mapping reaching the last page fails."""

    INTENDED = "R1"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        if vma.vm_pgoff + (vma.vm_end - vma.vm_start) // P >= len(dmabuf.priv.pfns):
            return -errno.EINVAL
        return super().mmap(dmabuf, vma)


class MapsFirstPageOnly(Scatter):
    """Eager mmap whose loop stops after one page; no fault handler for the rest."""

    INTENDED = "R30"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        buf: Pages = dmabuf.priv
        return remap_pfn_range(vma, vma.vm_start, buf.pfns[vma.vm_pgoff], P, vma.vm_page_prot)


class NoBoundsNoDontexpand(LazyPage):
    """Lazy fault without a bounds check and without VM_DONTEXPAND: mremap reaches past it."""

    INTENDED = "R34"

    def fault(self, vmf: Any) -> int:
        buf: Pages = vmf.vma.vm_private_data.priv
        page = vmf.kernel.mem.pfn_to_page(buf.pfns[0] + vmf.pgoff)
        get_page(page)
        vmf.page = page
        return 0


class FaultBoundsOffByOne(LazyPage):
    """The 6.1 CMA heap bug: ``pgoff > pagecount`` lets page ``pagecount`` through."""

    INTENDED = "R34"

    def fault(self, vmf: Any) -> int:
        buf: Pages = vmf.vma.vm_private_data.priv
        if vmf.pgoff > len(buf.pfns):
            return VM_FAULT_SIGBUS
        page = vmf.kernel.mem.pfn_to_page(buf.pfns[0] + vmf.pgoff)
        get_page(page)
        vmf.page = page
        return 0


class FaultRefusesLastPage(Lazy):
    """Bounds check off by one the other way: the last page of the buffer gets SIGBUS."""

    INTENDED = "R34"

    def check_bounds(self, vmf: Any, buf: Pages) -> bool:
        return vmf.pgoff < len(buf.pfns) - 1


class FaultIgnoresPgoff(Lazy):
    """Fault handler indexes from the vma start (drm_gem_shmem style) without saying so."""

    INTENDED = "R60"

    def fault_index(self, vmf: Any) -> int:
        return (vmf.address - vmf.vma.vm_start) // P


class FaultNopageWithoutInsert(Lazy):
    """Returns VM_FAULT_NOPAGE having inserted nothing: the access faults for ever."""

    INTENDED = "SAN-OOPS"

    def fault(self, vmf: Any) -> int:
        return VM_FAULT_NOPAGE


class FaultZeroWithoutPage(Lazy):
    """Returns 0 from ->fault without setting vmf->page."""

    INTENDED = "SAN-OOPS"

    def fault(self, vmf: Any) -> int:
        return 0


class PfnmapAcceptsPrivate(Lazy):
    """Forgot to refuse MAP_PRIVATE on a VM_PFNMAP mapping: vmf_insert_pfn on a COW vma BUGs."""

    INTENDED = "R37"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        vma.vm_flags |= self.vma_flags()
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner="zoo")
        vma.vm_private_data = dmabuf
        return 0


class WaitsInFault(Lazy):
    """Waits for the buffer's pending device work in its fault handler."""

    INTENDED = "SAN-FAULT-WAIT"

    def fault(self, vmf: Any) -> int:
        dmabuf = vmf.vma.vm_private_data
        if dmabuf.resv is not None:
            dmabuf.resv.wait(DmaResvUsage.WRITE, True)
        return super().fault(vmf)


class InsertPageIntoPfnmap(Scatter):
    """Sets VM_PFNMAP, then inserts struct pages with vm_insert_page (BUG_ON)."""

    INTENDED = "R39"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        vma.vm_flags |= VM_PFNMAP | VM_DONTEXPAND
        buf: Pages = dmabuf.priv
        for i in range((vma.vm_end - vma.vm_start) // P):
            page = dmabuf.kernel.mem.pfn_to_page(buf.pfns[vma.vm_pgoff + i])
            ret = vm_insert_page(vma, vma.vm_start + i * P, page)
            if ret:
                return ret
        return 0


class FaultPageWithoutRef(LazyPage):
    """Hands the page to the core without get_page: unmapping drops a reference it never had."""

    INTENDED = "SAN-BAD-PAGE"

    def fault(self, vmf: Any) -> int:
        buf: Pages = vmf.vma.vm_private_data.priv
        if vmf.pgoff >= len(buf.pfns):
            return VM_FAULT_SIGBUS
        vmf.page = vmf.kernel.mem.pfn_to_page(buf.pfns[vmf.pgoff])
        return 0


class TakesRefInMmap(Contig):
    """get_dma_buf in mmap "for the vma": the vma already holds one; never dropped."""

    INTENDED = "SAN-REFCOUNT"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        get_dma_buf(dmabuf)
        return super().mmap(dmabuf, vma)


class PutsRefInMmap(Contig):
    """dma_buf_put in mmap, as if mmap had been handed a reference to consume."""

    INTENDED = "SAN-REFCOUNT"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        dma_buf_put(dmabuf)
        return super().mmap(dmabuf, vma)


class PutsRefInClose(Contig):
    """vm_ops->close drops a dma-buf reference nothing took."""

    INTENDED = "SAN-REFCOUNT"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        vma.vm_ops = VmOperationsStruct(close=self._close, owner="zoo")
        vma.vm_private_data = dmabuf
        return super().mmap(dmabuf, vma)

    def _close(self, vma: Any) -> None:
        dma_buf_put(vma.vm_private_data)


class RefPerVmaWithoutOpen(Contig):
    """A reference per vma taken in mmap, dropped in close, but no ->open for splits and forks."""

    INTENDED = "SAN-REFCOUNT"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        get_dma_buf(dmabuf)
        vma.vm_ops = VmOperationsStruct(close=self._close, owner="zoo")
        vma.vm_private_data = dmabuf
        return super().mmap(dmabuf, vma)

    def _close(self, vma: Any) -> None:
        dma_buf_put(vma.vm_private_data)


class LeaksPagesOnRelease(Scatter):
    """ops->release forgets to free the pages."""

    INTENDED = "SAN-LEAK"

    def free(self, kernel: Any, buf: Pages) -> None:
        pass


class FreesInClose(Contig):
    """Frees the pages in vm_ops->close of the first vma to go (a split or a child still maps)."""

    INTENDED = "SAN-FREED-PTE"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        vma.vm_ops = VmOperationsStruct(close=self._close, owner="zoo")
        vma.vm_private_data = dmabuf.priv
        return super().mmap(dmabuf, vma)

    def _close(self, vma: Any) -> None:
        buf: Pages = vma.vm_private_data
        if not buf.freed:
            buf.freed = True
            self.free(vma.kernel, buf)

    def release(self, dmabuf: Any) -> None:
        if not dmabuf.priv.freed:
            dmabuf.priv.freed = True
            super().release(dmabuf)


class FreesInDetach(Scatter):
    """Frees the pages when the last device detaches, though mappings still use them."""

    INTENDED = "SAN-FREED-PTE"

    def detach(self, dmabuf: Any, attachment: Any) -> None:
        super().detach(dmabuf, attachment)
        buf: Pages = dmabuf.priv
        if not buf.attachments and buf.extra.get("attached_once") and not buf.freed:
            buf.freed = True
            self.free(dmabuf.kernel, buf)

    def attach(self, dmabuf: Any, *args: Any) -> int:
        dmabuf.priv.extra["attached"] = dmabuf.priv.extra.get("attached", 0) + 1
        if dmabuf.priv.extra["attached"] > 1:  # the kit's own probe comes first
            dmabuf.priv.extra["attached_once"] = True
        return super().attach(dmabuf, *args)

    def release(self, dmabuf: Any) -> None:
        if not dmabuf.priv.freed:
            super().release(dmabuf)


class VunmapLeaks(Scatter):
    """->vunmap forgets to vunmap the kernel mapping."""

    INTENDED = "SAN-LEAK"

    def vunmap(self, dmabuf: Any, map: Any) -> None:
        dmabuf.priv.vaddr = None


class VmapReversed(Scatter):
    """->vmap maps the pages in the wrong order."""

    INTENDED = "SAN-STALE-READ"

    def vmap(self, dmabuf: Any, map: Any) -> int:
        buf: Pages = dmabuf.priv
        buf.vaddr = vmap(dmabuf.kernel, list(reversed(buf.pfns)))
        map.vaddr = buf.vaddr
        return 0


class KmapIgnoresPage(Scatter):
    """3.x ->kmap hands back page 0 whatever page was asked for."""

    INTENDED = "SAN-STALE-READ"
    SPEC = "v3.5"

    def kmap(self, dmabuf: Any, page_num: int) -> KernelMapping:
        return KernelMapping(dmabuf.kernel, [dmabuf.priv.pfns[0]])

    kmap_atomic = kmap


class BeginNoInvalidate(Scatter):
    """begin_cpu_access does nothing: the CPU keeps stale lines after a device wrote."""

    INTENDED = "SAN-STALE-READ"

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        return 0


class EndNoClean(Scatter):
    """end_cpu_access does nothing: the CPU's writes stay in its cache."""

    INTENDED = "SAN-STALE-READ"

    def end_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        return 0


class BeginEndSwapped(Scatter):
    """Calls dma_sync_*_for_device in begin and *_for_cpu in end."""

    INTENDED = "SAN-STALE-READ"

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        return Scatter.end_cpu_access(self, dmabuf, *args)

    def end_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        return Scatter.begin_cpu_access(self, dmabuf, *args)


class BeginWrongDirection(Scatter):
    """Syncs for the CPU with DMA_TO_DEVICE whatever the direction (so never invalidates)."""

    INTENDED = "SAN-STALE-READ"

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        for a in self.synced(dmabuf.priv):
            dma_sync_sgtable_for_cpu(a.dev, a.priv.table, DMA_TO_DEVICE)
        return 0


class MapNoClean(Scatter):
    """map_dma_buf hands the table over without dma_map_sgtable."""

    INTENDED = "SAN-STALE-READ"

    def map_dma_buf(self, attachment: Any, direction: Any) -> SgTable:
        attachment.priv.mapped = True
        return attachment.priv.table


class UnmapNoInvalidate(Scatter):
    """unmap_dma_buf forgets dma_unmap_sgtable."""

    INTENDED = "SAN-STALE-READ"

    def unmap_dma_buf(self, attachment: Any, table: SgTable, direction: Any) -> None:
        attachment.priv.mapped = False


class UnmapAlwaysToDevice(Scatter):
    """unmap_dma_buf passes DMA_TO_DEVICE whatever direction the device used."""

    INTENDED = "SAN-STALE-READ"

    def unmap_dma_buf(self, attachment: Any, table: SgTable, direction: Any) -> None:
        attachment.priv.mapped = False
        dma_unmap_sgtable(attachment.dev, table, DMA_TO_DEVICE)


class SyncsFirstAttachmentOnly(Scatter):
    """begin/end_cpu_access sync only the first mapped attachment."""

    INTENDED = "SAN-STALE-READ"

    def synced(self, buf: Pages) -> list[Any]:
        return [a for a in buf.attachments if a.priv.mapped][:1]


class SyncsOnlyWhenVmapped(Scatter):
    """Cache maintenance nested under ``if (buffer->vmap_cnt)`` by mistake."""

    INTENDED = "SAN-STALE-READ"

    def synced(self, buf: Pages) -> list[Any]:
        return super().synced(buf) if buf.vaddr is not None else []


class ShootNoZapOnEnd(Shoot):
    """end_cpu_access syncs but does not shoot the PTEs down."""

    INTENDED = "SAN-STALE-READ"

    def end_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        return 0


class ShootZapsPagesNotBytes(Shoot):
    """unmap_mapping_range given a length in pages: only the first page is zapped."""

    INTENDED = "SAN-STALE-READ"

    def dma_sync_buffer(self, dmabuf: Any) -> None:
        buf: ShootdownBuffer = dmabuf.priv
        dirty = sorted(buf.cpu_owned)
        for index in dirty:
            dma_map_sgtable(buf.dev, SgTable([(buf.pfn(index), 1)]), DMA_BIDIRECTIONAL)
            buf.device_owned.add(index)
        buf.cpu_owned.clear()
        if dirty:
            unmap_mapping_range(buf.filp.f_mapping, 0, buf.npages, 1)


class ShootFaultNoSync(Shoot):
    """The fault handler inserts the page without taking it back from the device."""

    INTENDED = "SAN-STALE-READ"

    def cpu_sync_page(self, buf: ShootdownBuffer, index: int) -> None:
        if index in buf.device_owned:
            buf.device_owned.discard(index)
            buf.cpu_owned.add(index)  # BUG: no dma_unmap (the cache is not invalidated)


class ShootWithoutOwnFile(Shoot):
    """Shoots down through its own file but never put that file in vm_file: zaps nothing."""

    INTENDED = "SAN-STALE-READ"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        buf: ShootdownBuffer = dmabuf.priv
        vma.vm_flags = (vma.vm_flags & ~VM_PFNMAP) | 0x10000000 | VM_DONTEXPAND
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner="zoo")
        vma.vm_private_data = buf
        return 0


class ShootSwapWithoutRef(Shoot):
    """Puts its file in vm_file by assignment: no reference taken, the dma-buf's not dropped."""

    INTENDED = "SAN-REFCOUNT"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        ret = super().mmap(dmabuf, vma)
        # undo the proper swap, then do it the broken way
        vma_set_file(vma, dmabuf.file)
        vma.vm_file = dmabuf.priv.filp
        return ret


class ShootFreesPagesOnRelease(Shoot):
    """ops->release truncates its shmem file though vmas (which hold the file) still map it.

    The truncation zaps the mappings first, so nothing points at a freed page:
    the data is simply gone, and the next touch faults in a fresh zero page.
    """

    INTENDED = "SAN-STALE-READ"

    def release(self, dmabuf: Any) -> None:
        buf: ShootdownBuffer = dmabuf.priv
        shmem_truncate(buf.filp, 0)
        super().release(dmabuf)


class ShootSharedFileZap(Shoot):
    """Shoots down through the dma-buf's own file: on the shared anon inode it hits every buffer."""

    INTENDED = "SAN-OTHER-BUFFER"
    SPEC = "v3.5"

    def __init__(self) -> None:
        super().__init__(use_dmabuf_file=True)


class CachedButClaimsCoherent(WriteCombined):
    """Declares a coherent mapping but forgot pgprot_writecombine: cached, no maintenance."""

    INTENDED = "SAN-STALE-READ"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        return Scatter.mmap(self, dmabuf, vma)


class NotZeroed(Scatter):
    """Recycles pages of released buffers from a private pool without clearing them."""

    INTENDED = "SAN-STALE-READ"

    def __init__(self) -> None:
        self.pool: list[int] = []

    def alloc(self, kernel: Any, npages: int) -> list[int]:
        out = []
        for _ in range(npages):
            out.append(self.pool.pop() if self.pool else kernel.mem.alloc_pages(0))
        return out

    def free(self, kernel: Any, buf: Pages) -> None:
        kernel.cache.clean_range(buf.pfns[0] * P, P)  # what the CPU wrote is in DRAM now
        for pfn in buf.pfns:
            kernel.cache.clean_range(pfn * P, P)
        self.pool.extend(buf.pfns)


class FloorsOddSizes(Scatter):
    """Allocates size // PAGE_SIZE pages: the tail of an odd-sized buffer has no memory."""

    INTENDED = "SAN-SGT"

    def export(self, kernel: Any, size: int, flags: int) -> Any:
        npages = max(1, size // P)
        return _export(self, kernel, Pages(self.alloc(kernel, npages), size), size, flags)


class TableMissesLastPage(Scatter):
    """map_dma_buf builds the table one page short."""

    INTENDED = "SAN-SGT"

    def table(self, buf: Pages) -> SgTable:
        return SgTable.from_pfns(buf.pfns[:-1] or buf.pfns)

    def export(self, kernel: Any, size: int, flags: int) -> Any:
        return super().export(kernel, size, flags)


class CopiesToUserUnderResv(Scatter):
    """begin_cpu_access holds the reservation lock while touching user memory."""

    INTENDED = "R58"

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        dmabuf.resv.lock()
        might_fault(dmabuf.kernel)  # copy_to_user of a status word
        dmabuf.resv.unlock()
        return super().begin_cpu_access(dmabuf, *args)


class KeepsResvLocked(Scatter):
    """begin_cpu_access takes the reservation lock and returns with it held."""

    INTENDED = "R58"

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        dmabuf.resv.lock()
        return super().begin_cpu_access(dmabuf, *args)


class EndAlwaysFails(Scatter):
    """end_cpu_access returns -EINVAL (a leftover check for a table it never builds)."""

    INTENDED = "R44"

    def end_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        super().end_cpu_access(dmabuf, *args)
        return -errno.EINVAL


class BeginRefusesReads(Scatter):
    """begin_cpu_access refuses DMA_FROM_DEVICE (a switch without that case)."""

    INTENDED = "R44"

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        if args[-1] == DMA_FROM_DEVICE:
            return -errno.EINVAL
        return super().begin_cpu_access(dmabuf, *args)


class PrivateMadeShared(LazyPage):
    """Turns a MAP_PRIVATE vma into a shared one: private writes land in the buffer."""

    INTENDED = "SAN-STALE-READ"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        vma.vm_flags |= VM_SHARED | VM_MAYSHARE
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner="zoo")
        vma.vm_private_data = dmabuf
        return 0


class WritableReadOnly(Contig):
    """Clears VM_WRITE in mmap (thinking it is the default), so writes fault with SIGSEGV."""

    INTENDED = "SAN-ACCESS"

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        vma.vm_flags &= ~0x2
        return super().mmap(dmabuf, vma)


class DetachForgetsList(Scatter):
    """detach leaves the attachment on its list: a later begin syncs a freed attachment."""

    INTENDED = "SAN-OOPS"

    def detach(self, dmabuf: Any, attachment: Any) -> None:
        attachment.priv = None  # kfree(a) ... but list_del(&a->list) was forgotten

    def synced(self, buf: Pages) -> list[Any]:
        return [a for a in buf.attachments if a.priv.mapped]


# ================================================================================================
# Unusual but correct
# ================================================================================================
class RefPerVma(Contig):
    """Holds a dma-buf reference per vma: taken in mmap and ->open, dropped in ->close."""

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        get_dma_buf(dmabuf)
        vma.vm_ops = VmOperationsStruct(open=self._open, close=self._close, owner="zoo")
        vma.vm_private_data = dmabuf
        return super().mmap(dmabuf, vma)

    def _open(self, vma: Any) -> None:
        get_dma_buf(vma.vm_private_data)

    def _close(self, vma: Any) -> None:
        dma_buf_put(vma.vm_private_data)


class AllocatesLazily(Lazy):
    """Allocates each page at its first use (fault, device mapping or kernel mapping)."""

    def export(self, kernel: Any, size: int, flags: int) -> Any:
        npages = -(-size // P)
        buf = Pages([0] * npages, size)
        buf.extra["present"] = [False] * npages
        return _export(self, kernel, buf, size, flags)

    def _ensure(self, kernel: Any, buf: Pages, index: int) -> int:
        if not buf.extra["present"][index]:
            buf.pfns[index] = kernel.mem.alloc_pages(0)
            buf.extra["present"][index] = True
        return buf.pfns[index]

    def table(self, buf: Pages) -> SgTable:
        kernel = buf.extra["kernel"]
        return SgTable.from_pfns([self._ensure(kernel, buf, i) for i in range(len(buf.pfns))])

    def attach(self, dmabuf: Any, *args: Any) -> int:
        dmabuf.priv.extra["kernel"] = dmabuf.kernel
        return super().attach(dmabuf, *args)

    def fault(self, vmf: Any) -> int:
        buf: Pages = vmf.vma.vm_private_data.priv
        if vmf.pgoff >= len(buf.pfns):
            return VM_FAULT_SIGBUS
        pfn = self._ensure(vmf.kernel, buf, vmf.pgoff)
        return vmf_insert_pfn(vmf.vma, vmf.address, pfn)

    def vmap(self, dmabuf: Any, map: Any) -> int:
        buf: Pages = dmabuf.priv
        pfns = [self._ensure(dmabuf.kernel, buf, i) for i in range(len(buf.pfns))]
        buf.vaddr = vmap(dmabuf.kernel, pfns)
        map.vaddr = buf.vaddr
        return 0

    def free(self, kernel: Any, buf: Pages) -> None:
        for pfn, present in zip(buf.pfns, buf.extra["present"], strict=True):
            if present:
                kernel.mem.free_pages(pfn, 0)


class InsertsPagesEagerly(Scatter):
    """Maps refcounted pages with vm_insert_page at mmap time (a VM_MIXEDMAP vma)."""

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        buf: Pages = dmabuf.priv
        vma.vm_flags |= VM_DONTEXPAND
        for i in range((vma.vm_end - vma.vm_start) // P):
            page = dmabuf.kernel.mem.pfn_to_page(buf.pfns[vma.vm_pgoff + i])
            ret = vm_insert_page(vma, vma.vm_start + i * P, page)
            if ret:
                return ret
        return 0


class Growable(LazyPage):
    """No VM_DONTEXPAND: mremap may grow a mapping; faults past the end give SIGBUS."""


class CachesSgt(Scatter):
    """Asks the core to cache its sg table per attachment (cache_sgt_mapping)."""

    cache_sgt_mapping = True


class Dynamic(Scatter):
    """A dynamic exporter: pin/unpin in pairs (the core pins for non-dynamic importers)."""

    def pin(self, attachment: Any) -> int:
        return 0

    def unpin(self, attachment: Any) -> None:
        return None


class ShootThroughDmabufFile(Shoot):
    """Shoot-down through the dma-buf's own file: right since every buffer has its inode (5.3)."""

    def __init__(self) -> None:
        super().__init__(use_dmabuf_file=True)


class PrivateCow(LazyPage):
    """Allows MAP_PRIVATE: the fault hands out the page, the core copies it on write."""

    capabilities = Capabilities(growable=True, private_mapping=True)

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner="zoo")
        vma.vm_private_data = dmabuf
        return 0


class RefusesCoherentDevices(Scatter):
    """attach refuses the coherent device with -EBUSY (incompatible backing storage)."""

    def attach(self, dmabuf: Any, *args: Any) -> int:
        attachment = args[-1]
        if attachment.dev.coherent and attachment.dev.name != "kit-probe":
            return -errno.EBUSY
        return super().attach(dmabuf, *args)


class FaultTakesResv(Lazy):
    """Takes the reservation lock in its fault handler (allowed: mmap_lock -> dma_resv)."""

    def fault(self, vmf: Any) -> int:
        resv = vmf.vma.vm_private_data.resv
        resv.lock()
        try:
            return super().fault(vmf)
        finally:
            resv.unlock()


class DeclaredIgnoresPgoff(Lazy):
    """Indexes pages from the vma start, and says so (drm_gem_shmem's R60 exception)."""

    capabilities = Capabilities(ignores_vm_pgoff=True)

    def fault_index(self, vmf: Any) -> int:
        return (vmf.address - vmf.vma.vm_start) // P


class BeginWaitsForFences(Scatter):
    """begin_cpu_access waits for pending device work itself (allowed; not at fault time)."""

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        if dmabuf.resv is not None:
            ret = dmabuf.resv.wait(DmaResvUsage.WRITE, True)
            if ret:
                return int(ret)
        return super().begin_cpu_access(dmabuf, *args)


class SyncsWholeBufferAlways(Scatter):
    """begin/end sync every page for the CPU/device through a device of its own, always."""

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        own = Device(dmabuf.kernel, "zoo-sync")
        dma_sync_sgtable_for_cpu(own, self.table(dmabuf.priv), args[-1])
        return 0

    def end_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        own = Device(dmabuf.kernel, "zoo-sync")
        dma_sync_sgtable_for_device(own, self.table(dmabuf.priv), args[-1])
        return 0


class SyncsUnmappedAttachments(Scatter):
    """Syncs every attachment at CPU access, also one not mapped: the invalidate drops
    lines the CPU wrote and nothing has cleaned yet."""

    INTENDED = "SAN-STALE-READ"

    def synced(self, buf: Pages) -> list[Any]:
        return list(buf.attachments)


class FirstSyncOnlyMaps(Scatter):
    """udmabuf before 1d0e25c1ddf2: CPU access syncs through a table of its own device,
    which the first call only maps (a clean) instead of syncing for the CPU."""

    INTENDED = "SAN-STALE-READ"

    def begin_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        extra = dmabuf.priv.extra
        if "own" not in extra:
            extra["own"] = (Device(dmabuf.kernel, "zoo-misc"), self.table(dmabuf.priv))
            dma_map_sgtable(*extra["own"], args[-1])
            return 0
        dma_sync_sgtable_for_cpu(*extra["own"], args[-1])
        return 0

    def end_cpu_access(self, dmabuf: Any, *args: Any) -> int:
        own = dmabuf.priv.extra.get("own")
        if own is None:
            return -22  # EINVAL: SYNC END before any START, as udmabuf
        dma_sync_sgtable_for_device(*own, args[-1])
        return 0


class InModule(Scatter):
    """Built as a module: every buffer holds it through exp_info.owner (THIS_MODULE)."""

    module = "zoo_mod"

    def export(self, kernel: Any, size: int, flags: int) -> Any:
        npages = -(-size // P)
        buf = Pages(self.alloc(kernel, npages), size)
        if kernel.spec.export_info_form:
            info = DmaBufExportInfo(ops=self, size=size, priv=buf, flags=flags, owner=self.module)
            return dma_buf_export(kernel, info)
        return dma_buf_export(kernel, buf, self, size, flags)


class ModuleForgetsOwner(Scatter):
    """A module exporter that leaves exp_info.owner NULL: rmmod works under live buffers."""

    module = "zoo_mod"
    INTENDED = "SAN-MODULE"


class ModuleLeaksReference(InModule):
    """Takes a module reference per buffer for its own bookkeeping and never puts it."""

    INTENDED = "SAN-MODULE"

    def export(self, kernel: Any, size: int, flags: int) -> Any:
        try_module_get(find_module(kernel, self.module))
        return super().export(kernel, size, flags)


DEFECTS = [
    IgnoresPgoff,
    PgoffOffByOne,
    RejectsOffsets,
    OwnBoundsOffByOne,
    MapsFirstPageOnly,
    NoBoundsNoDontexpand,
    FaultBoundsOffByOne,
    FaultRefusesLastPage,
    FaultIgnoresPgoff,
    FaultNopageWithoutInsert,
    FaultZeroWithoutPage,
    PfnmapAcceptsPrivate,
    WaitsInFault,
    InsertPageIntoPfnmap,
    FaultPageWithoutRef,
    TakesRefInMmap,
    PutsRefInMmap,
    PutsRefInClose,
    RefPerVmaWithoutOpen,
    LeaksPagesOnRelease,
    FreesInClose,
    FreesInDetach,
    VunmapLeaks,
    VmapReversed,
    KmapIgnoresPage,
    BeginNoInvalidate,
    EndNoClean,
    BeginEndSwapped,
    BeginWrongDirection,
    MapNoClean,
    UnmapNoInvalidate,
    UnmapAlwaysToDevice,
    SyncsFirstAttachmentOnly,
    SyncsOnlyWhenVmapped,
    ShootNoZapOnEnd,
    ShootZapsPagesNotBytes,
    ShootFaultNoSync,
    ShootWithoutOwnFile,
    ShootSwapWithoutRef,
    ShootFreesPagesOnRelease,
    ShootSharedFileZap,
    CachedButClaimsCoherent,
    NotZeroed,
    FloorsOddSizes,
    TableMissesLastPage,
    CopiesToUserUnderResv,
    KeepsResvLocked,
    EndAlwaysFails,
    BeginRefusesReads,
    PrivateMadeShared,
    WritableReadOnly,
    DetachForgetsList,
    ModuleForgetsOwner,
    ModuleLeaksReference,
    SyncsUnmappedAttachments,
    FirstSyncOnlyMaps,
]

CORRECT = [
    Scatter,
    Contig,
    Lazy,
    LazyPage,
    Shoot,
    WriteCombined,
    RefPerVma,
    AllocatesLazily,
    InsertsPagesEagerly,
    Growable,
    CachesSgt,
    Dynamic,
    ShootThroughDmabufFile,
    PrivateCow,
    RefusesCoherentDevices,
    FaultTakesResv,
    DeclaredIgnoresPgoff,
    BeginWaitsForFences,
    SyncsWholeBufferAlways,
    InModule,
]
