"""Physical page frames: ``struct page`` and the page allocator (mm/page_alloc.c).

Memory is *lazy and sparse*:

* an allocated block is one dict entry (head pfn → order), whatever its size;
* a ``struct page`` (:class:`Page`) exists only once something takes a
  reference or maps it through rmap; an untouched allocated page has the
  implicit refcount 1 and costs nothing;
* a page's bytes exist only once written: reading an unwritten page gives
  zeros (pages come from the allocator zeroed, as with ``__GFP_ZERO``).

Simplified: there are no zones, no per-CPU lists and no buddy coalescing; a
freed block goes back to the free list of its order.  Contiguous ranges larger
than a buddy block (CMA) come from a separate bump region.  "Scattered"
allocation is modelled by leaving a deterministic (seeded) gap between blocks,
so that consecutive allocations are not physically contiguous.
"""

from __future__ import annotations

import bisect
import random
from typing import TYPE_CHECKING

from attrs import define, field

from ..trace import kernel_function

if TYPE_CHECKING:
    from ..fs import AddressSpace
    from ..kernel import Kernel

__all__ = [
    "MAX_ORDER",
    "PAGE_ALIGN",
    "PAGE_MASK",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "ULONG_MAX",
    "Page",
    "PhysicalMemory",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ULONG_MAX = (1 << 64) - 1
PAGE_MASK = ULONG_MAX & ~(PAGE_SIZE - 1)
MAX_ORDER = 10  # largest buddy block: 2**10 pages (4 MiB)


def PAGE_ALIGN(addr: int) -> int:
    """Round up to a page boundary in 64-bit unsigned arithmetic (wraps to 0 like C)."""
    return ((addr + PAGE_SIZE - 1) & PAGE_MASK) & ULONG_MAX


@define(eq=False, slots=True)
class Page:
    """``struct page``: exists only for pages whose refcount or mapcount changed."""

    pfn: int
    refcount: int = 1
    mapcount: int = 0
    """Number of rmap'ed (non-special) PTEs pointing at this page."""
    mapping: AddressSpace | None = field(default=None, repr=False)
    index: int = 0
    anon: bool = False

    def trace_name(self) -> str:
        return f"page(pfn={self.pfn:#x})"


@define(eq=False, slots=True)
class PhysicalMemory:
    """All physical memory of one simulated machine."""

    kernel: Kernel = field(repr=False)
    nr_pages: int = 1 << 24
    """Total page frames (default 64 GiB)."""
    scatter: bool = True
    """Leave seeded gaps between buddy blocks so allocations are not contiguous."""
    seed: int = 0
    _data: dict[int, bytearray] = field(factory=dict, repr=False)
    _pages: dict[int, Page] = field(factory=dict, repr=False)
    _blocks: dict[int, int] = field(factory=dict, repr=False)  # head pfn -> order
    _free: dict[int, list[int]] = field(factory=dict, repr=False)
    _contig_starts: list[int] = field(factory=list, repr=False)
    _contig: dict[int, int] = field(factory=dict, repr=False)  # start pfn -> npages
    _next: int = 0x100  # buddy bump pointer; pfn 0..0xff left unused
    _contig_next: int = 0
    _buddy_end: int = 0
    _rng: random.Random = field(init=False, repr=False)
    allocated_pages: int = 0

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        # CMA-like contiguous region: the top quarter of memory.
        self._buddy_end = self._contig_next = self.nr_pages - self.nr_pages // 4

    # -- allocation -----------------------------------------------------------
    @kernel_function("alloc_pages", file="mm/page_alloc.c")
    def alloc_pages(self, order: int) -> int:
        """Allocate ``2**order`` zeroed, physically contiguous pages; return the head pfn.

        Raises MemoryError when simulated memory is exhausted (the kernel
        returns NULL; callers turn that into -ENOMEM).
        """
        if not 0 <= order <= MAX_ORDER:
            raise ValueError(f"order must be within 0..{MAX_ORDER}, not {order}")
        free = self._free.get(order)
        if free:
            pfn = free.pop()
        else:
            size = 1 << order
            pfn = (self._next + size - 1) & ~(size - 1)
            gap = self._rng.randrange(8) << order if self.scatter else 0
            if pfn + size > self._buddy_end:
                raise MemoryError("simulated physical memory exhausted")
            self._next = pfn + size + gap
        self._blocks[pfn] = order
        self.allocated_pages += 1 << order
        self._zero_fill(pfn, 1 << order)
        return pfn

    def alloc_page(self) -> int:
        return self.alloc_pages(0)

    @kernel_function("__free_pages", file="mm/page_alloc.c")
    def free_pages(self, pfn: int, order: int) -> None:
        """Return a block to the allocator; its ``struct page``s and bytes go too."""
        if self._blocks.get(pfn) != order:
            raise ValueError(f"free of pfn {pfn:#x} order {order}: not an allocated block")
        del self._blocks[pfn]
        self._forget(pfn, 1 << order)
        self._free.setdefault(order, []).append(pfn)
        self.allocated_pages -= 1 << order

    @kernel_function("cma_alloc", file="mm/cma.c")
    def alloc_contig(self, npages: int) -> int:
        """Allocate ``npages`` physically contiguous zeroed pages (CMA); return the first pfn."""
        if npages <= 0:
            raise ValueError(f"npages must be positive, not {npages}")
        start = self._contig_next
        if start + npages > self.nr_pages:
            raise MemoryError("simulated CMA area exhausted")
        self._contig_next = start + npages
        bisect.insort(self._contig_starts, start)
        self._contig[start] = npages
        self.allocated_pages += npages
        self._zero_fill(start, npages)
        return start

    @kernel_function("cma_release", file="mm/cma.c")
    def free_contig(self, start: int, npages: int) -> None:
        if self._contig.get(start) != npages:
            raise ValueError(f"cma_release of {start:#x}+{npages}: not an allocated range")
        del self._contig[start]
        self._contig_starts.remove(start)
        self._forget(start, npages)
        self.allocated_pages -= npages

    def _zero_fill(self, pfn: int, npages: int) -> None:
        """Hand out zeroed frames.  The kernel zeroes with CPU stores (clear_page), which
        overwrite any line a previous owner left in the CPU cache; here DRAM is cleared
        and such stale lines are dropped, so old data can never reach the new owner."""
        self._clear_data(pfn, npages)
        cache = getattr(self.kernel, "cache", None)  # absent while the Kernel is built
        if cache is not None and cache.lines:
            cache.invalidate_range(pfn << PAGE_SHIFT, npages << PAGE_SHIFT)

    def _clear_data(self, pfn: int, npages: int) -> None:
        observer = self.kernel.access_observer
        if observer is not None:
            observer.memory_reset(pfn, npages)
        # Cost follows what was written, not the block size.
        data = self._data
        if not data:
            return
        if npages <= len(data):
            for p in range(pfn, pfn + npages):
                data.pop(p, None)
        else:
            for p in [p for p in data if pfn <= p < pfn + npages]:
                del data[p]

    def _forget(self, pfn: int, npages: int) -> None:
        self._clear_data(pfn, npages)
        pages = self._pages
        if not pages:
            return
        if npages <= len(pages):
            doomed = [p for p in range(pfn, pfn + npages) if p in pages]
        else:
            doomed = [p for p in pages if pfn <= p < pfn + npages]
        for p in doomed:
            pages.pop(p).refcount = 0

    # -- queries --------------------------------------------------------------
    def pfn_allocated(self, pfn: int) -> bool:
        """Is this frame currently owned by someone (buddy block or CMA range)?

        The two regions are disjoint: buddy blocks end at or below
        ``_buddy_end`` and CMA ranges start at or above it.  So a frame in the
        CMA region is looked up there alone (one bisect), and only a frame
        below it tries the buddy orders.
        """
        if pfn >= self._buddy_end:
            starts = self._contig_starts
            i = bisect.bisect_right(starts, pfn) - 1
            if i >= 0:
                start = starts[i]
                return pfn < start + self._contig[start]
            return False
        blocks = self._blocks
        for order in range(MAX_ORDER + 1):
            head = pfn & ~((1 << order) - 1)
            if blocks.get(head) == order:
                return True
        return False

    def pfn_to_page(self, pfn: int) -> Page:
        """``pfn_to_page``: materialise the struct page of an allocated frame."""
        page = self._pages.get(pfn)
        if page is None:
            page = Page(pfn)
            self._pages[pfn] = page
        return page

    def page_if_exists(self, pfn: int) -> Page | None:
        return self._pages.get(pfn)

    @property
    def materialised_pages(self) -> int:
        return len(self._pages)

    @property
    def pages_with_data(self) -> int:
        return len(self._data)

    # -- bytes ----------------------------------------------------------------
    def read(self, pa: int, n: int) -> bytes:
        """Read ``n`` bytes of physical memory (the DRAM view, no cache)."""
        out = bytearray()
        data = self._data
        while n > 0:
            pfn, off = divmod(pa, PAGE_SIZE)
            chunk = min(n, PAGE_SIZE - off)
            page = data.get(pfn)
            out += page[off : off + chunk] if page is not None else bytes(chunk)
            pa += chunk
            n -= chunk
        return bytes(out)

    def write(self, pa: int, buf: bytes | bytearray | memoryview) -> None:
        """Write bytes to physical memory (the DRAM view, no cache)."""
        data = self._data
        mv = memoryview(buf)
        pos = 0
        n = len(mv)
        while pos < n:
            pfn, off = divmod(pa + pos, PAGE_SIZE)
            chunk = min(n - pos, PAGE_SIZE - off)
            page = data.get(pfn)
            if page is None:
                if not any(mv[pos : pos + chunk]):
                    pos += chunk
                    continue  # writing zeros to an untouched page changes nothing
                page = data[pfn] = bytearray(PAGE_SIZE)
            page[off : off + chunk] = mv[pos : pos + chunk]
            pos += chunk

    def copy_page(self, dst_pfn: int, src_pfn: int) -> None:
        src = self._data.get(src_pfn)
        if src is None:
            self._data.pop(dst_pfn, None)
        else:
            self._data[dst_pfn] = bytearray(src)
