"""Teaching exporters: each has exactly one defect, named with the rule it breaks.

They are small, realistic mistakes — the kind the RFC's documentation warns
about — so a reader can watch each one go wrong and see the simulator say why:

======================  ======================================================  =================
exporter                defect                                                  rule
======================  ======================================================  =================
``shared_file_zap``     shoots down through the dma-buf's own file instead of   R26, R56
                        swapping in its own: on the shared anon inode it zaps
                        every other dma-buf's mappings too
``no_bounds_fault``     no bounds check in its fault handler and no             R34
                        ``VM_DONTEXPAND``: a mapping grown with mremap
                        reaches memory past the buffer
``no_coherency``        cached CPU mapping on a non-coherent device with no     SAN-STALE-READ
                        cache maintenance: stale reads under the sync protocol
``waits_in_fault``      its fault handler waits for the buffer's device work    R55
``leaks_file_ref``      takes a file reference in mmap and never drops it:      R17, SAN-REFCOUNT
                        the buffer is never released
``frees_while_mapped``  frees its pages in ``vm_ops->close``, though other      SAN-FREED-PTE
                        vmas (a split, a fork) still map them
======================  ======================================================  =================

Each class names the scenarios it fails (``fails``) and on which specs (``fails_on``).
All are made kernel-side with ``export(kernel, size)``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, ClassVar

from attrs import define, field

from ..device import (
    DMA_BIDIRECTIONAL,
    Device,
    DmaDataDirection,
    SgTable,
    dma_map_sgtable,
    dma_sync_sgtable_for_cpu,
    dma_sync_sgtable_for_device,
    dma_unmap_sgtable,
)
from ..dma_buf.core import DmaBuf, DmaBufAttachment, DmaBufExportInfo, DmaBufOps, get_dma_buf
from ..dma_buf.core import dma_buf_export as _export
from ..dma_buf.dma_resv import DmaResvUsage
from ..errors import KernelError, OutOfMemory
from ..mm.memory import get_page, remap_pfn_range, vmf_insert_pfn
from ..mm.page_alloc import PAGE_SHIFT, PAGE_SIZE
from ..mm.vma import (
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VM_PFNMAP,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)
from ..mm.vmalloc import KernelMapping
from ..trace import kernel_function
from .shootdown import ShootdownExporter

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "TEACHING_EXPORTERS",
    "FreesWhileMapped",
    "LeaksFileRef",
    "NoBoundsFault",
    "NoCoherency",
    "SharedFileZap",
    "SimpleBuffer",
    "WaitsInFault",
]


@define(eq=False, slots=True)
class SimpleBuffer:
    """Contiguous pages from the CMA-like allocator."""

    first_pfn: int
    npages: int
    freed: bool = False
    extra: dict[str, Any] = field(factory=dict, repr=False)

    def pfns(self) -> list[int]:
        return list(range(self.first_pfn, self.first_pfn + self.npages))


class SimpleExporter(DmaBufOps):
    """A correct, minimal exporter: contiguous pages, eager ``remap_pfn_range``.

    The CPU mapping is cached; ``begin/end_cpu_access`` do the cache
    maintenance and ``map_dma_buf`` DMA-maps for the device.  The teaching
    exporters below each break one thing of it.
    """

    exp_name: ClassVar[str] = "simple"
    defect: ClassVar[str] = ""
    rules: ClassVar[tuple[str, ...]] = ()
    fails: ClassVar[tuple[str, ...]] = ()
    """The scenarios this exporter is documented to fail."""
    fails_on: ClassVar[tuple[str, ...]] = ()
    """The specs on which it fails them (empty: all)."""

    def export(self, kernel: Kernel, size: int, flags: int = 0o2) -> DmaBuf:
        npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        try:
            buf = SimpleBuffer(kernel.mem.alloc_contig(npages), npages)
        except OutOfMemory:
            raise KernelError(errno.ENOMEM, f"{self.exp_name}_export") from None
        try:
            if kernel.spec.export_info_form:
                info = DmaBufExportInfo(
                    ops=self, size=size, priv=buf, flags=flags, exp_name=self.exp_name
                )
                return _export(kernel, info)
            return _export(kernel, buf, self, size, flags)
        except KernelError:
            kernel.mem.free_contig(buf.first_pfn, buf.npages)  # nothing else holds them
            raise

    def map_dma_buf(self, attach: DmaBufAttachment, direction: DmaDataDirection) -> SgTable:
        buf: SimpleBuffer = attach.dmabuf.priv
        sgt = SgTable([(buf.first_pfn, buf.npages)])
        dma_map_sgtable(attach.dev, sgt, direction)
        return sgt

    def unmap_dma_buf(self, attach: DmaBufAttachment, sgt: SgTable, d: DmaDataDirection) -> None:
        dma_unmap_sgtable(attach.dev, sgt, d)

    def begin_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        buf: SimpleBuffer = dmabuf.priv
        dma_sync_sgtable_for_cpu(
            Device(dmabuf.kernel, "cpu-sync"),
            SgTable([(buf.first_pfn, buf.npages)]),
            DMA_BIDIRECTIONAL,
        )
        return 0

    def end_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        buf: SimpleBuffer = dmabuf.priv
        dma_sync_sgtable_for_device(
            Device(dmabuf.kernel, "cpu-sync"),
            SgTable([(buf.first_pfn, buf.npages)]),
            DMA_BIDIRECTIONAL,
        )
        return 0

    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        buf: SimpleBuffer = dmabuf.priv
        return remap_pfn_range(
            vma,
            vma.vm_start,
            buf.first_pfn + vma.vm_pgoff,
            vma.vm_end - vma.vm_start,
            vma.vm_page_prot,
        )

    def kmap(self, dmabuf: DmaBuf, page_num: int) -> KernelMapping:
        buf: SimpleBuffer = dmabuf.priv
        return KernelMapping(dmabuf.kernel, [buf.first_pfn + page_num])

    kmap_atomic = kmap

    def release(self, dmabuf: DmaBuf) -> None:
        buf: SimpleBuffer = dmabuf.priv
        if not buf.freed:
            dmabuf.kernel.mem.free_contig(buf.first_pfn, buf.npages)
            buf.freed = True


class SharedFileZap(ShootdownExporter):
    """Shoots down through ``dmabuf->file->f_mapping`` and never swaps ``vm_file``.

    Under the shared anon inode (``rfc-2012``, ``v3.5``) that address_space
    holds the vmas of *every* dma-buf, so leaving the CPU domain on buffer A
    zaps buffer B's mappings in every process (R26, R56).  With per-buffer
    inodes (5.3+) the same code is harmless (R27).
    """

    exp_name = "shared_file_zap"
    defect = "zaps other buffers' mappings through the shared anon inode"
    rules = ("R26", "R56")
    fails = ("two-buffers",)
    fails_on = ("rfc-2012", "v3.5")

    def __init__(self) -> None:
        super().__init__(use_dmabuf_file=True)


class NoBoundsFault(SimpleExporter):
    """Lazy fault handler with no bounds check and no ``VM_DONTEXPAND`` (R34).

    ``dma_buf_mmap_internal`` checks the size once, at mmap; ``mremap`` can grow
    the vma later without asking again, and the fault handler then maps
    ``first_pfn + pgoff`` — memory that belongs to someone else.
    """

    exp_name = "no_bounds_fault"
    defect = "maps memory past the buffer after mremap growth"
    rules = ("R34",)
    fails = ("grow-past-end",)

    @kernel_function("no_bounds_fault_mmap", file="(teaching exporter)")
    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner=self.exp_name)
        vma.vm_private_data = dmabuf.priv
        return 0

    @kernel_function("no_bounds_fault_fault", file="(teaching exporter)")
    def fault(self, vmf: VmFault) -> int:
        buf: SimpleBuffer = vmf.vma.vm_private_data
        # BUG: no "if (vmf->pgoff >= buf->npages) return VM_FAULT_SIGBUS;"
        page = vmf.kernel.mem.pfn_to_page(buf.first_pfn + vmf.pgoff)
        get_page(page)
        vmf.page = page
        return 0


class NoCoherency(SimpleExporter):
    """A cached mapping and no cache maintenance anywhere.

    ``map_dma_buf`` hands the device the pages without ``dma_map_sgtable``
    (no clean), and begin/end_cpu_access do nothing: on a non-coherent device
    the CPU and the device each see stale data, sync ioctl or not.
    """

    exp_name = "no_coherency"
    defect = "stale reads under the sync protocol"
    rules = ("SAN-STALE-READ",)
    fails = ("round-trip",)

    def map_dma_buf(self, attach: DmaBufAttachment, direction: DmaDataDirection) -> SgTable:
        buf: SimpleBuffer = attach.dmabuf.priv
        return SgTable([(buf.first_pfn, buf.npages)])  # BUG: no dma_map_sgtable

    def unmap_dma_buf(self, attach: DmaBufAttachment, sgt: SgTable, d: DmaDataDirection) -> None:
        return None  # BUG: no dma_unmap_sgtable

    def begin_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        return 0  # BUG: no dma_sync_*_for_cpu

    def end_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        return 0  # BUG: no dma_sync_*_for_device


class WaitsInFault(SimpleExporter):
    """Its fault handler waits for the buffer's implicit fences (R55).

    The RFC: exporters "shall not do any synchronization at fault time with
    outstanding device operations" — it would make userspace depend on an
    implicit sync that other exporters do not provide.
    """

    exp_name = "waits_in_fault"
    defect = "waits on device work inside its fault handler"
    rules = ("R55", "SEED-NO-FAULT-SYNC")
    fails = ("no-wait-in-fault",)
    # implicit fences need a dma_resv (3.17+): every spec after v3.5
    fails_on = ("v5.10", "v6.1", "v6.12", "v6.19", "latest")

    @kernel_function("waits_in_fault_mmap", file="(teaching exporter)")
    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        vma.vm_flags |= VM_PFNMAP | VM_DONTEXPAND
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner=self.exp_name)
        vma.vm_private_data = dmabuf
        return 0

    @kernel_function("waits_in_fault_fault", file="(teaching exporter)")
    def fault(self, vmf: VmFault) -> int:
        dmabuf: DmaBuf = vmf.vma.vm_private_data
        buf: SimpleBuffer = dmabuf.priv
        if vmf.pgoff >= buf.npages:
            return VM_FAULT_SIGBUS
        if dmabuf.resv is not None:
            dmabuf.resv.wait(DmaResvUsage.READ, True)  # BUG: sync at fault time
        return vmf_insert_pfn(vmf.vma, vmf.address, buf.first_pfn + vmf.pgoff)


class LeaksFileRef(SimpleExporter):
    """Takes a file reference in ``mmap`` "for the vma" — the vma already has one."""

    exp_name = "leaks_file_ref"
    defect = "reference count off by one: the buffer is never released"
    rules = ("R17", "SAN-REFCOUNT")
    fails = ("close-while-mapped", "import-into-vgem")

    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        get_dma_buf(dmabuf)  # BUG: mmap_region already did get_file() for this vma
        return super().mmap(dmabuf, vma)


class FreesWhileMapped(SimpleExporter):
    """Frees the buffer's pages in ``vm_ops->close`` of the first vma to go."""

    exp_name = "frees_while_mapped"
    defect = "PTEs into freed pages after one of several vmas closes"
    rules = ("SAN-FREED-PTE",)
    fails = ("partial-munmap", "fork")

    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        vma.vm_ops = VmOperationsStruct(close=self._close, owner=self.exp_name)
        vma.vm_private_data = dmabuf.priv
        return super().mmap(dmabuf, vma)

    @kernel_function("frees_while_mapped_close", file="(teaching exporter)")
    def _close(self, vma: VmAreaStruct) -> None:
        buf: SimpleBuffer = vma.vm_private_data
        if not buf.freed:  # BUG: other vmas (splits, forks) still map these pages
            vma.kernel.mem.free_contig(buf.first_pfn, buf.npages)
            buf.freed = True


TEACHING_EXPORTERS: dict[str, type[SimpleExporter] | type[ShootdownExporter]] = {
    cls.exp_name: cls
    for cls in (
        SharedFileZap,
        NoBoundsFault,
        NoCoherency,
        WaitsInFault,
        LeaksFileRef,
        FreesWhileMapped,
    )
}
