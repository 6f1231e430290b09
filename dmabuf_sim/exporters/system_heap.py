"""The dma-heap system heap (drivers/dma-buf/heaps/system_heap.c), kernel-spec §6.1.

* **Allocation**: all pages at once, largest chunks first (orders 8, 4, 0,
  never retrying an order that failed), zeroed (``__GFP_ZERO``); one sg
  entry per chunk.
* **mmap**: eager ``remap_pfn_range`` from ``vm_pgoff`` with the default
  cacheable ``vm_page_prot`` — one page per call up to 6.18, one sg chunk per
  call since 6.19 (spec ``system_heap_remap_per_chunk``).  Nothing rejects
  ``MAP_PRIVATE``, but ``remap_pfn_range`` on a COW mapping must cover the
  whole vma in one call, so a private mapping works only when the first call
  does (one page on 6.12; one chunk on latest; R37).
* **Coherency**: none in the mapping (cached, like the CPU's own memory);
  ``begin_cpu_access`` syncs every *mapped* attachment for the CPU
  (invalidate), ``end_cpu_access`` for the device (clean).  No shoot-down,
  no fault handler.
* ``exp_name`` is the heap name, ``system``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from attrs import define, field

from ..device import (
    DmaDataDirection,
    SgTable,
    dma_map_sgtable,
    dma_sync_sgtable_for_cpu,
    dma_sync_sgtable_for_device,
    dma_unmap_sgtable,
)
from ..dma_buf.core import DmaBuf, DmaBufAttachment, DmaBufExportInfo, DmaBufOps, IosysMap
from ..dma_buf.core import dma_buf_export as _export
from ..errors import KernelError, OutOfMemory
from ..kstate import Key
from ..mm.gfp import (
    __GFP_COMP,
    __GFP_NORETRY,
    __GFP_NOWARN,
    __GFP_RECLAIM,
    __GFP_ZERO,
    GFP_HIGHUSER,
)
from ..mm.memory import remap_pfn_range
from ..mm.page_alloc import PAGE_SHIFT, PAGE_SIZE
from ..mm.vma import VmAreaStruct
from ..mm.vmalloc import vmap, vunmap
from ..trace import kernel_function
from .dma_heap import DmaHeap, dma_heap_add

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["SYSTEM_HEAP", "SystemHeap", "SystemHeapBuffer"]

SYSTEM_HEAP: Key[DmaHeap] = Key("system_heap")
"""``/dev/dma_heap/system`` of a kernel (where the spec has dma-heaps)."""

ORDERS = (8, 4, 0)
HIGH_ORDER_GFP = (
    (GFP_HIGHUSER | __GFP_ZERO | __GFP_NOWARN | __GFP_NORETRY) & ~__GFP_RECLAIM
) | __GFP_COMP
LOW_ORDER_GFP = GFP_HIGHUSER | __GFP_ZERO | __GFP_COMP
ORDER_FLAGS = (HIGH_ORDER_GFP, LOW_ORDER_GFP, LOW_ORDER_GFP)


@define(eq=False, slots=True)
class SystemHeapBuffer:
    """``struct system_heap_buffer``."""

    heap: DmaHeap = field(repr=False)
    len: int
    sg_table: SgTable
    attachments: list[DmaBufAttachment] = field(factory=list, repr=False)
    vmap_cnt: int = 0
    vaddr: Any = None
    chunks: list[tuple[int, int]] = field(factory=list, repr=False)
    """(head pfn, order) of every allocation, to free them."""


@define(eq=False, slots=True)
class _HeapAttachment:
    """``struct dma_heap_attachment``: a private copy of the table, mapped or not."""

    table: SgTable
    mapped: bool = False


def heap_buffer_vmap(dmabuf: DmaBuf, map: IosysMap) -> int:
    """The heaps' counted vmap: map the sg table's pages once, hand out the same address."""
    buffer: SystemHeapBuffer = dmabuf.priv
    if buffer.vmap_cnt:
        buffer.vmap_cnt += 1
    else:
        buffer.vaddr = vmap(dmabuf.kernel, list(buffer.sg_table.pfns()))
        buffer.vmap_cnt = 1
    map.vaddr = buffer.vaddr
    return 0


def heap_buffer_vunmap(dmabuf: DmaBuf, map: IosysMap) -> None:
    """The heaps' counted vunmap: the last user unmaps."""
    buffer: SystemHeapBuffer = dmabuf.priv
    buffer.vmap_cnt -= 1
    if buffer.vmap_cnt == 0:
        vunmap(buffer.vaddr)
        buffer.vaddr = None
    map.vaddr = None


class SystemHeapBufOps(DmaBufOps):
    """``system_heap_buf_ops``."""

    exp_name = "system"

    @kernel_function("system_heap_attach", file="drivers/dma-buf/heaps/system_heap.c")
    def attach(self, dmabuf: DmaBuf, attachment: DmaBufAttachment) -> int:
        buffer: SystemHeapBuffer = dmabuf.priv
        attachment.priv = _HeapAttachment(buffer.sg_table.copy())
        buffer.attachments.append(attachment)
        return 0

    @kernel_function("system_heap_detach", file="drivers/dma-buf/heaps/system_heap.c")
    def detach(self, dmabuf: DmaBuf, attachment: DmaBufAttachment) -> None:
        buffer: SystemHeapBuffer = dmabuf.priv
        buffer.attachments.remove(attachment)

    @kernel_function("system_heap_map_dma_buf", file="drivers/dma-buf/heaps/system_heap.c")
    def map_dma_buf(self, attachment: DmaBufAttachment, direction: DmaDataDirection) -> SgTable:
        a: _HeapAttachment = attachment.priv
        if dma_map_sgtable(attachment.dev, a.table, direction):
            raise KernelError(errno.ENOMEM, "system_heap_map_dma_buf")
        a.mapped = True
        return a.table

    @kernel_function("system_heap_unmap_dma_buf", file="drivers/dma-buf/heaps/system_heap.c")
    def unmap_dma_buf(
        self, attachment: DmaBufAttachment, table: SgTable, direction: DmaDataDirection
    ) -> None:
        a: _HeapAttachment = attachment.priv
        a.mapped = False
        dma_unmap_sgtable(attachment.dev, table, direction)

    @kernel_function(
        "system_heap_dma_buf_begin_cpu_access", file="drivers/dma-buf/heaps/system_heap.c"
    )
    def begin_cpu_access(self, dmabuf: DmaBuf, direction: DmaDataDirection) -> int:
        buffer: SystemHeapBuffer = dmabuf.priv
        if buffer.vmap_cnt:
            buffer.vaddr.invalidate()  # invalidate_kernel_vmap_range
        for attachment in buffer.attachments:
            a: _HeapAttachment = attachment.priv
            if a.mapped:
                dma_sync_sgtable_for_cpu(attachment.dev, a.table, direction)
        return 0

    @kernel_function(
        "system_heap_dma_buf_end_cpu_access", file="drivers/dma-buf/heaps/system_heap.c"
    )
    def end_cpu_access(self, dmabuf: DmaBuf, direction: DmaDataDirection) -> int:
        buffer: SystemHeapBuffer = dmabuf.priv
        if buffer.vmap_cnt:
            buffer.vaddr.flush()  # flush_kernel_vmap_range
        for attachment in buffer.attachments:
            a: _HeapAttachment = attachment.priv
            if a.mapped:
                dma_sync_sgtable_for_device(attachment.dev, a.table, direction)
        return 0

    @kernel_function("system_heap_mmap", file="drivers/dma-buf/heaps/system_heap.c")
    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        buffer: SystemHeapBuffer = dmabuf.priv
        addr = vma.vm_start
        skip = vma.vm_pgoff
        per_chunk = dmabuf.kernel.spec.system_heap_remap_per_chunk
        for first, n in buffer.sg_table.entries:
            if skip >= n:
                skip -= n
                continue
            pfn, avail = first + skip, n - skip
            skip = 0
            if per_chunk:
                # 6.19: one call per sg entry, clamped to the vma
                npages = min(avail, (vma.vm_end - addr) >> PAGE_SHIFT)
                ret = remap_pfn_range(vma, addr, pfn, npages * PAGE_SIZE, vma.vm_page_prot)
                if ret:
                    return ret
                addr += npages * PAGE_SIZE
                if addr >= vma.vm_end:
                    return 0
                continue
            for i in range(avail):  # <= 6.18: for_each_sgtable_page, one page per call
                ret = remap_pfn_range(vma, addr, pfn + i, PAGE_SIZE, vma.vm_page_prot)
                if ret:
                    return ret
                addr += PAGE_SIZE
                if addr >= vma.vm_end:
                    return 0
        return 0

    @kernel_function("system_heap_vmap", file="drivers/dma-buf/heaps/system_heap.c")
    def vmap(self, dmabuf: DmaBuf, map: IosysMap) -> int:
        return heap_buffer_vmap(dmabuf, map)

    @kernel_function("system_heap_vunmap", file="drivers/dma-buf/heaps/system_heap.c")
    def vunmap(self, dmabuf: DmaBuf, map: IosysMap) -> None:
        heap_buffer_vunmap(dmabuf, map)

    @kernel_function("system_heap_dma_buf_release", file="drivers/dma-buf/heaps/system_heap.c")
    def release(self, dmabuf: DmaBuf) -> None:
        buffer: SystemHeapBuffer = dmabuf.priv
        mem = dmabuf.kernel.mem
        for pfn, order in buffer.chunks:
            mem.free_pages(pfn, order)
        buffer.chunks.clear()


class SystemHeap:
    """``struct dma_heap_ops`` of the system heap."""

    name = "system"

    def __init__(self) -> None:
        self.buf_ops = SystemHeapBufOps()

    @classmethod
    def register(cls, kernel: Kernel) -> DmaHeap:
        return dma_heap_add(kernel, cls.name, cls())

    @kernel_function("system_heap_allocate", file="drivers/dma-buf/heaps/system_heap.c")
    def allocate(self, heap: DmaHeap, length: int, fd_flags: int, heap_flags: int) -> DmaBuf:
        kernel = heap.kernel
        mem = kernel.mem
        chunks: list[tuple[int, int]] = []
        remaining = length
        max_order = ORDERS[0]
        try:
            while remaining > 0:
                if kernel.current is not None and kernel.current.fatal_signal_pending:
                    raise KernelError(errno.EINTR, "system_heap_allocate")
                pfn, order = self._alloc_largest_available(mem, remaining, max_order)
                chunks.append((pfn, order))
                remaining -= PAGE_SIZE << order
                max_order = order
        except (KernelError, OutOfMemory) as exc:
            for pfn, order in chunks:
                mem.free_pages(pfn, order)
            if isinstance(exc, KernelError):
                raise
            raise KernelError(errno.ENOMEM, "system_heap_allocate") from None
        table = SgTable([(pfn, 1 << order) for pfn, order in chunks])
        buffer = SystemHeapBuffer(heap, length, table, chunks=chunks)
        info = DmaBufExportInfo(
            ops=self.buf_ops, size=length, priv=buffer, flags=fd_flags, exp_name=heap.name
        )
        try:
            return _export(kernel, info)
        except KernelError:
            for pfn, order in chunks:
                mem.free_pages(pfn, order)
            raise

    @staticmethod
    def _alloc_largest_available(mem: Any, size: int, max_order: int) -> tuple[int, int]:
        for order, gfp in zip(ORDERS, ORDER_FLAGS, strict=True):
            if size < PAGE_SIZE << order or max_order < order:
                continue
            try:
                return mem.alloc_pages(order, gfp), order
            except OutOfMemory:
                continue
        raise OutOfMemory("alloc_largest_available", "no page of any order (NULL)")
