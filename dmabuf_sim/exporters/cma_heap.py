"""The dma-heap CMA heap (drivers/dma-buf/heaps/cma_heap.c), kernel-spec §6.2.

One physically contiguous block, zeroed at allocation.

* **mmap** rejects non-shared vmas (``EINVAL``, R57) and installs a fault
  handler: pages arrive lazily.  6.1: the handler returns the refcounted page
  and no vm flags are set, so ``mremap`` can grow the vma past the buffer; 6.1.0
  checked ``pgoff > pagecount`` — off by one — so a fault at ``pgoff ==
  pagecount`` read ``pages[pagecount]``, past the array (R34; ea5ff5d351b5,
  fixed in 6.11 and in 6.1.y since Sept 2024: spec ``cma_heap_fault_off_by_one``,
  off in the modelled 6.1.192).  Since 6.8 ``VM_IO|VM_PFNMAP|VM_DONTEXPAND|
  VM_DONTDUMP`` and ``vmf_insert_pfn`` (spec ``cma_heap_pfnmap``).
* **Coherency**: like the system heap, begin/end_cpu_access sync mapped
  attachments; the user mapping is cached.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from attrs import define

from ..device import SgTable
from ..dma_buf.core import DmaBuf, DmaBufExportInfo, IosysMap
from ..dma_buf.core import dma_buf_export as _export
from ..errors import KernelError, KernelOops, OutOfMemory
from ..kstate import Key
from ..mm.memory import get_page, vmf_insert_pfn
from ..mm.page_alloc import PAGE_SHIFT
from ..mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VM_IO,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)
from ..trace import kernel_function
from .dma_heap import DmaHeap, dma_heap_add
from .system_heap import (
    SystemHeapBuffer,
    SystemHeapBufOps,
    heap_buffer_vmap,
    heap_buffer_vunmap,
)

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["CMA_HEAP", "CmaHeap", "CmaHeapBuffer"]

CMA_HEAP: Key[DmaHeap] = Key("cma_heap")
"""``/dev/dma_heap/reserved`` of a kernel (where the spec has dma-heaps)."""


@define(eq=False, slots=True)
class CmaHeapBuffer(SystemHeapBuffer):
    """``struct cma_heap_buffer``: one contiguous range of ``pagecount`` pages."""

    first_pfn: int = 0
    pagecount: int = 0


class CmaHeapBufOps(SystemHeapBufOps):
    """``cma_heap_buf_ops``: attach/map/cpu access as the system heap; own mmap and release."""

    exp_name = "reserved"

    @kernel_function("cma_heap_mmap", file="drivers/dma-buf/heaps/cma_heap.c")
    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
            return -errno.EINVAL  # R57
        if dmabuf.kernel.spec.cma_heap_pfnmap:
            vma.vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP
        vma.vm_ops = VmOperationsStruct(fault=cma_heap_vm_fault, owner="cma_heap")
        vma.vm_private_data = dmabuf.priv
        return 0

    @kernel_function("cma_heap_vmap", file="drivers/dma-buf/heaps/cma_heap.c")
    def vmap(self, dmabuf: DmaBuf, map: IosysMap) -> int:
        return heap_buffer_vmap(dmabuf, map)  # sg_table is [(first_pfn, pagecount)]

    @kernel_function("cma_heap_vunmap", file="drivers/dma-buf/heaps/cma_heap.c")
    def vunmap(self, dmabuf: DmaBuf, map: IosysMap) -> None:
        heap_buffer_vunmap(dmabuf, map)

    @kernel_function("cma_heap_dma_buf_release", file="drivers/dma-buf/heaps/cma_heap.c")
    def release(self, dmabuf: DmaBuf) -> None:
        buffer: CmaHeapBuffer = dmabuf.priv
        dmabuf.kernel.mem.free_contig(buffer.first_pfn, buffer.pagecount)


@kernel_function("cma_heap_vm_fault", file="drivers/dma-buf/heaps/cma_heap.c")
def cma_heap_vm_fault(vmf: VmFault) -> int:
    vma = vmf.vma
    buffer: CmaHeapBuffer = vma.vm_private_data
    kernel = vma.kernel
    if kernel.spec.cma_heap_fault_off_by_one:
        if vmf.pgoff > buffer.pagecount:
            return VM_FAULT_SIGBUS
        if vmf.pgoff == buffer.pagecount:
            # buffer->pages[pagecount]: one slot past the kmalloc'd array.  The
            # pointer read is whatever lies there; KASAN calls it out (R34).
            kernel.tainted = True
            raise KernelOops(
                "cma_heap_vm_fault",
                "slab-out-of-bounds read of buffer->pages[pagecount] (off-by-one, fixed in 6.11)",
                rule="R34",
            )
    elif vmf.pgoff >= buffer.pagecount:
        return VM_FAULT_SIGBUS
    pfn = buffer.first_pfn + vmf.pgoff
    if kernel.spec.cma_heap_pfnmap:
        return vmf_insert_pfn(vma, vmf.address, pfn)
    page = kernel.mem.pfn_to_page(pfn)
    get_page(page)
    vmf.page = page
    return 0


class CmaHeap:
    """The ``reserved`` CMA heap (``/dev/dma_heap/reserved``)."""

    name = "reserved"

    def __init__(self) -> None:
        self.buf_ops = CmaHeapBufOps()

    @classmethod
    def register(cls, kernel: Kernel) -> DmaHeap:
        return dma_heap_add(kernel, cls.name, cls())

    @kernel_function("cma_heap_allocate", file="drivers/dma-buf/heaps/cma_heap.c")
    def allocate(self, heap: DmaHeap, length: int, fd_flags: int, heap_flags: int) -> DmaBuf:
        kernel = heap.kernel
        pagecount = length >> PAGE_SHIFT
        try:
            first = kernel.mem.alloc_contig(pagecount)
        except OutOfMemory:
            raise KernelError(errno.ENOMEM, "cma_heap_allocate") from None
        table = SgTable([(first, pagecount)])
        buffer = CmaHeapBuffer(heap, length, table, first_pfn=first, pagecount=pagecount)
        info = DmaBufExportInfo(
            ops=self.buf_ops, size=length, priv=buffer, flags=fd_flags, exp_name=heap.name
        )
        try:
            return _export(kernel, info)
        except KernelError:
            kernel.mem.free_contig(first, pagecount)
            raise
