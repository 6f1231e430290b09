"""DMA devices, scatter-gather tables and the streaming DMA API.

A :class:`Device` is ``struct device`` plus a DMA engine: it reads and writes
memory through the sg table of an attachment.  A *coherent* device snoops
the CPU cache (it sees dirty lines, and its writes invalidate them); a
non-coherent one sees only DRAM, which is why the streaming DMA API does cache
maintenance (arm64 semantics, kernel/dma/direct.h and arch/arm64/mm/dma-mapping.c):

* ``dma_map_sgtable`` / ``dma_sync_sgtable_for_device`` **clean** the CPU
  cache over the buffer (dirty lines reach DRAM);
* ``dma_unmap_sgtable`` / ``dma_sync_sgtable_for_cpu`` **invalidate** it,
  unless the direction is ``DMA_TO_DEVICE`` (so the CPU's next load comes
  from DRAM and sees what the device wrote).

Simplified: no IOMMU (DMA addresses are physical), no bounce buffers, no
segment merging; an sg entry is a run of physically contiguous pages.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING

from attrs import define, field

from .mm.page_alloc import PAGE_SHIFT, PAGE_SIZE
from .trace import kernel_function

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = [
    "DMA_BIDIRECTIONAL",
    "DMA_FROM_DEVICE",
    "DMA_NONE",
    "DMA_TO_DEVICE",
    "Device",
    "DmaDataDirection",
    "SgTable",
    "dma_map_sgtable",
    "dma_sync_sgtable_for_cpu",
    "dma_sync_sgtable_for_device",
    "dma_unmap_sgtable",
]


class DmaDataDirection(enum.IntEnum):
    """``enum dma_data_direction``."""

    DMA_BIDIRECTIONAL = 0
    DMA_TO_DEVICE = 1
    DMA_FROM_DEVICE = 2
    DMA_NONE = 3


DMA_BIDIRECTIONAL = DmaDataDirection.DMA_BIDIRECTIONAL
DMA_TO_DEVICE = DmaDataDirection.DMA_TO_DEVICE
DMA_FROM_DEVICE = DmaDataDirection.DMA_FROM_DEVICE
DMA_NONE = DmaDataDirection.DMA_NONE


@define(eq=False, slots=True)
class SgTable:
    """``struct sg_table``: runs of ``(first pfn, npages)``; ``mapped_for`` once DMA-mapped."""

    entries: list[tuple[int, int]]
    mapped_for: Device | None = field(default=None, repr=False)
    direction: DmaDataDirection | None = None

    def trace_name(self) -> str:
        return f"sgt({len(self.entries)} ents, {self.npages()} pages)"

    def npages(self) -> int:
        return sum(n for _, n in self.entries)

    def nbytes(self) -> int:
        return self.npages() << PAGE_SHIFT

    def pfns(self) -> Iterator[int]:
        for first, n in self.entries:
            yield from range(first, first + n)

    def page_pfn(self, index: int) -> int:
        """The pfn of the buffer's ``index``-th page (``O(entries)``)."""
        for first, n in self.entries:
            if index < n:
                return first + index
            index -= n
        raise IndexError(f"page {index} past the end of the sg table")

    def ranges(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """Physical pieces ``(pa, buffer offset, length)`` covering ``[offset, offset+length)``."""
        pos = 0
        end = offset + length
        for first, n in self.entries:
            run = n << PAGE_SHIFT
            lo, hi = max(offset, pos), min(end, pos + run)
            if lo < hi:
                yield (first << PAGE_SHIFT) + (lo - pos), lo, hi - lo
            pos += run
            if pos >= end:
                break

    @classmethod
    def from_pfns(cls, pfns: list[int]) -> SgTable:
        """Build a table, merging physically contiguous pages into one entry."""
        entries: list[tuple[int, int]] = []
        for pfn in pfns:
            if entries and entries[-1][0] + entries[-1][1] == pfn:
                entries[-1] = (entries[-1][0], entries[-1][1] + 1)
            else:
                entries.append((pfn, 1))
        return cls(entries)

    def copy(self) -> SgTable:
        return SgTable(list(self.entries))


@define(eq=False, slots=True)
class Device:
    """``struct device`` with a DMA engine."""

    kernel: Kernel = field(repr=False)
    name: str
    coherent: bool = False
    """Does the device snoop the CPU cache (``dev_is_dma_coherent``)?"""
    dma_reads: int = 0
    dma_writes: int = 0

    def trace_name(self) -> str:
        return f"dev({self.name})"

    # -- the device's own accesses -------------------------------------------------
    @kernel_function("device_dma_read", file="(device DMA engine)")
    def dma_read(self, sgt: SgTable, offset: int, length: int) -> bytes:
        """The device reads ``length`` bytes of the buffer at ``offset``."""
        self._check_range(sgt, offset, length)
        cache = self.kernel.cache
        mem = self.kernel.mem
        observers = self.kernel.observers
        out = bytearray()
        for pa, _off, n in sgt.ranges(offset, length):
            piece = cache.snoop_read(pa, n) if self.coherent else mem.read(pa, n)
            if observers.device_access:
                observers.emit("device_access", self, pa, piece, False)
            out += piece
        self.dma_reads += 1
        return bytes(out)

    @kernel_function("device_dma_write", file="(device DMA engine)")
    def dma_write(self, sgt: SgTable, offset: int, data: bytes) -> None:
        """The device writes ``data`` into the buffer at ``offset``."""
        self._check_range(sgt, offset, len(data))
        cache = self.kernel.cache
        mem = self.kernel.mem
        observers = self.kernel.observers
        pos = 0
        for pa, _off, n in sgt.ranges(offset, len(data)):
            piece = data[pos : pos + n]
            if self.coherent:
                cache.snoop_write(pa, piece)
            else:
                mem.write(pa, piece)
            if observers.device_access:
                observers.emit("device_access", self, pa, bytes(piece), True)
            pos += n
        self.dma_writes += 1

    def _check_range(self, sgt: SgTable, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > sgt.nbytes():
            raise ValueError(
                f"DMA of {length} bytes at offset {offset} is outside the"
                f" {sgt.nbytes()}-byte sg table"
            )


# -- the streaming DMA API ----------------------------------------------------------
def _clean(kernel: Kernel, sgt: SgTable) -> None:
    for first, n in sgt.entries:
        kernel.cache.clean_range(first << PAGE_SHIFT, n * PAGE_SIZE)


def _invalidate(kernel: Kernel, sgt: SgTable) -> None:
    for first, n in sgt.entries:
        kernel.cache.invalidate_range(first << PAGE_SHIFT, n * PAGE_SIZE)


@kernel_function("dma_map_sgtable", file="kernel/dma/mapping.c")
def dma_map_sgtable(dev: Device, sgt: SgTable, direction: DmaDataDirection) -> int:
    """Hand the buffer to the device: clean the CPU cache (non-coherent devices)."""
    if direction == DMA_NONE:
        return -errno.EINVAL
    if not dev.coherent:
        _clean(dev.kernel, sgt)
    sgt.mapped_for = dev
    sgt.direction = direction
    return 0


@kernel_function("dma_unmap_sgtable", file="kernel/dma/mapping.c")
def dma_unmap_sgtable(dev: Device, sgt: SgTable, direction: DmaDataDirection) -> None:
    """Take the buffer back for the CPU: invalidate, unless it only went to the device."""
    if not dev.coherent and direction != DMA_TO_DEVICE:
        _invalidate(dev.kernel, sgt)
    sgt.mapped_for = None
    sgt.direction = None


@kernel_function("dma_sync_sgtable_for_cpu", file="kernel/dma/mapping.c")
def dma_sync_sgtable_for_cpu(dev: Device, sgt: SgTable, direction: DmaDataDirection) -> None:
    if not dev.coherent and direction != DMA_TO_DEVICE:
        _invalidate(dev.kernel, sgt)


@kernel_function("dma_sync_sgtable_for_device", file="kernel/dma/mapping.c")
def dma_sync_sgtable_for_device(dev: Device, sgt: SgTable, direction: DmaDataDirection) -> None:
    if not dev.coherent:
        _clean(dev.kernel, sgt)
