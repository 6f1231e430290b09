"""The seed's recipe: faked coherency by PTE shoot-down (omapdrm-like), kernel-spec §6.7.

The RFC: "the exporter needs to set up a coherent mapping.  If that's not
possible, it needs to fake coherency by manually shooting down ptes when
leaving the cpu domain and flushing caches at fault time. [...] the exporter
needs to replace the dma_buf file stored in vma->vm_file with it's own if pte
shootdown is required."  This exporter does exactly that, on a
non-coherent device:

* **own file**: the buffer lives in a shmem file of its own; ``mmap``
  swaps it into ``vma->vm_file`` (:func:`vma_set_file`), so the vma is linked
  into *that* file's ``i_mmap`` (R25) — not the anon inode every old dma-buf
  shares (R26);
* **ownership per page**: a page is CPU-owned (may be mapped in userspace)
  or device-owned (DMA-mapped, cache cleaned);
* **fault** (CPU domain): a device-owned page is taken back for the CPU —
  ``dma_unmap_page`` invalidates its cache lines — and inserted with
  ``vmf_insert_mixed``; the handler never waits for device work (R55);
* **leaving the CPU domain** (``map_dma_buf`` and ``end_cpu_access``): every
  CPU-owned page is DMA-mapped (cleaned), and if any was,
  ``unmap_mapping_range`` on the own file zaps every user PTE of the buffer in
  every process, so the next CPU touch faults and re-syncs (R28, R55).

Userspace needs no ``DMA_BUF_IOCTL_SYNC`` for coherency (the RFC's promise);
calling it is harmless.  Buffers are made kernel-side with :meth:`export`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from attrs import define, field

from ..device import (
    DMA_BIDIRECTIONAL,
    Device,
    DmaDataDirection,
    SgTable,
    dma_map_sgtable,
    dma_unmap_sgtable,
)
from ..dma_buf.core import DmaBuf, DmaBufAttachment, DmaBufExportInfo, DmaBufOps
from ..dma_buf.core import dma_buf_export as _export
from ..errors import KernelError
from ..fs import File, fput
from ..kstate import Key
from ..mm.memory import unmap_mapping_range, vmf_insert_mixed
from ..mm.page_alloc import PAGE_SHIFT, PAGE_SIZE
from ..mm.shmem import shmem_file_setup, shmem_read_mapping_page
from ..mm.util import vma_set_file
from ..mm.vma import (
    VM_DONTEXPAND,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)
from ..mm.vmalloc import KernelMapping
from ..trace import kernel_function

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["ShootdownBuffer", "ShootdownExporter"]

SHOOTDOWN_DEV: Key[Device] = Key("shootdown-dev")
"""The one non-coherent device every shoot-down buffer of a kernel is mapped for."""


@define(eq=False, slots=True)
class ShootdownBuffer:
    """The exporter's object: its own shmem file and the per-page ownership."""

    kernel: Kernel = field(repr=False)
    filp: File = field(repr=False)
    npages: int
    dev: Device = field(repr=False)
    device_owned: set[int] = field(factory=set, repr=False)
    """Page indexes currently DMA-mapped for the device."""
    cpu_owned: set[int] = field(factory=set, repr=False)
    """Allocated pages that are not DMA-mapped.  omapdrm finds them by scanning every
    page; keeping the set makes a shoot-down cost O(pages the CPU touched) instead,
    with the same outcome."""
    shootdowns: int = 0

    def pfn(self, index: int) -> int:
        pages = self.filp.f_mapping.pages
        fresh = index not in pages
        pfn = shmem_read_mapping_page(self.filp.f_inode, index).pfn
        if fresh:
            self.cpu_owned.add(index)  # a new page is not DMA-mapped: the CPU owns it
        return pfn

    def allocated(self) -> list[int]:
        return sorted(self.filp.f_mapping.pages)


class ShootdownExporter(DmaBufOps):
    """``dma_buf_ops`` of the shoot-down exporter."""

    exp_name: ClassVar[str] = "shootdown"
    defect: ClassVar[str] = ""
    rules: ClassVar[tuple[str, ...]] = ()
    fails: ClassVar[tuple[str, ...]] = ()
    fails_on: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, use_dmabuf_file: bool = False) -> None:
        # The teaching variant (R26/R56) shoots down through the dma-buf's own file.
        self.use_dmabuf_file = use_dmabuf_file

    # -- export ------------------------------------------------------------------
    def export(self, kernel: Kernel, size: int, flags: int = 0o2) -> DmaBuf:
        """Create a buffer of ``size`` bytes (rounded up to pages) and export it."""
        npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        filp = shmem_file_setup(kernel, f"{self.exp_name}-obj", npages << PAGE_SHIFT)
        dev = kernel.drivers.setdefault(
            SHOOTDOWN_DEV, lambda: Device(kernel, "shootdown", coherent=False)
        )
        buf = ShootdownBuffer(kernel, filp, npages, dev)
        if kernel.spec.export_info_form:
            info = DmaBufExportInfo(
                ops=self, size=size, priv=buf, flags=flags, exp_name=self.exp_name
            )
            return _export(kernel, info)
        return _export(kernel, buf, self, size, flags)

    # -- the CPU domain --------------------------------------------------------------
    @kernel_function("shootdown_mmap", file="(omapdrm-like: omap_gem_mmap_obj)")
    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        buf: ShootdownBuffer = dmabuf.priv
        if not self.use_dmabuf_file:
            vma_set_file(vma, buf.filp)  # own address_space for the shoot-down (R25)
        vma.vm_flags = (vma.vm_flags & ~VM_PFNMAP) | VM_MIXEDMAP | VM_DONTEXPAND
        vma.vm_ops = VmOperationsStruct(fault=self.fault, owner=self.exp_name)
        vma.vm_private_data = buf
        return 0

    @kernel_function("shootdown_fault", file="(omapdrm-like: omap_gem_fault_1d)")
    def fault(self, vmf: VmFault) -> int:
        vma = vmf.vma
        buf: ShootdownBuffer = vma.vm_private_data
        if vmf.pgoff >= buf.npages:
            return VM_FAULT_SIGBUS
        self.cpu_sync_page(buf, vmf.pgoff)
        try:
            pfn = buf.pfn(vmf.pgoff)
        except KernelError:
            return VM_FAULT_OOM  # no page for it: vmf_error(-ENOMEM)
        return vmf_insert_mixed(vma, vmf.address, pfn)

    @kernel_function("shootdown_cpu_sync_page", file="(omapdrm-like: omap_gem_cpu_sync_page)")
    def cpu_sync_page(self, buf: ShootdownBuffer, index: int) -> None:
        """Take a device-owned page back for the CPU: invalidate its cache lines."""
        if index in buf.device_owned:
            buf.device_owned.discard(index)
            buf.cpu_owned.add(index)
            dma_unmap_sgtable(buf.dev, SgTable([(buf.pfn(index), 1)]), DMA_BIDIRECTIONAL)

    # -- leaving the CPU domain --------------------------------------------------------
    @kernel_function("shootdown_dma_sync_buffer", file="(omapdrm-like: omap_gem_dma_sync_buffer)")
    def dma_sync_buffer(self, dmabuf: DmaBuf) -> None:
        """Hand every CPU-owned page to the device; if any, zap all user PTEs."""
        buf: ShootdownBuffer = dmabuf.priv
        dirty = sorted(buf.cpu_owned)
        for index in dirty:
            dma_map_sgtable(buf.dev, SgTable([(buf.pfn(index), 1)]), DMA_BIDIRECTIONAL)
            buf.device_owned.add(index)
        buf.cpu_owned.clear()
        if dirty:
            buf.shootdowns += 1
            assert dmabuf.file is not None
            mapping = dmabuf.file.f_mapping if self.use_dmabuf_file else buf.filp.f_mapping
            # even_cows = 0: this is an invalidation, not a truncate ("don't throw away
            # private data"); omapdrm passes 1, which discards what a MAP_PRIVATE mapping
            # wrote into its own copies of the pages.
            unmap_mapping_range(mapping, 0, buf.npages << PAGE_SHIFT, 0)

    @kernel_function("shootdown_map_dma_buf", file="(omapdrm-like: omap_gem_map_dma_buf)")
    def map_dma_buf(self, attach: DmaBufAttachment, direction: DmaDataDirection) -> SgTable:
        buf: ShootdownBuffer = attach.dmabuf.priv
        # omap_gem_map_dma_buf pins (attaches every page) before it syncs: "this must
        # be after omap_gem_pin() to ensure we have pages attached", so pages first
        # allocated here are handed to the device too and recorded device-owned.
        pfns = [buf.pfn(i) for i in range(buf.npages)]
        self.dma_sync_buffer(attach.dmabuf)
        sgt = SgTable.from_pfns(pfns)
        dma_map_sgtable(attach.dev, sgt, direction)
        return sgt

    @kernel_function("shootdown_unmap_dma_buf", file="(omapdrm-like)")
    def unmap_dma_buf(
        self, attach: DmaBufAttachment, sgt: SgTable, direction: DmaDataDirection
    ) -> None:
        dma_unmap_sgtable(attach.dev, sgt, direction)

    def begin_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        return 0  # faults re-sync page by page

    @kernel_function("shootdown_end_cpu_access", file="(omapdrm-like)")
    def end_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        self.dma_sync_buffer(dmabuf)
        return 0

    # -- kernel CPU access (3.x mandatory ops) --------------------------------------------
    def kmap(self, dmabuf: DmaBuf, page_num: int) -> KernelMapping:
        buf: ShootdownBuffer = dmabuf.priv
        # omap_gem_dmabuf_kmap calls omap_gem_cpu_sync_page first: the page becomes
        # CPU-owned, so a later fault does not invalidate (lose) what the kernel wrote
        # and the next leaving of the CPU domain cleans it.
        self.cpu_sync_page(buf, page_num)
        return KernelMapping(dmabuf.kernel, [buf.pfn(page_num)])

    kmap_atomic = kmap

    @kernel_function("shootdown_release", file="(omapdrm-like)")
    def release(self, dmabuf: DmaBuf) -> None:
        buf: ShootdownBuffer = dmabuf.priv
        fput(buf.filp)
