"""Physical page frames: ``struct page``, the buddy allocator and CMA (mm/page_alloc.c, mm/cma.c).

**The buddy allocator.**  Each node's zone keeps ``free_area[order]``, one
free list per order (0 .. ``MAX_ORDER``).  An allocation of order *n* takes
the first block of the smallest order that has one and splits it down,
putting each upper half back on the list of its order (``__rmqueue_smallest``
and ``expand``).  A freed block merges with its buddy (the block at
``pfn ^ (1 << order)``) while the buddy is free at the same order
(``__free_one_page``).  A request that finds nothing fails and changes
nothing, so the capacity it asked for stays available to smaller requests.

**CMA.**  The top quarter of memory is the CMA area.  ``cma_alloc`` takes the
first run of free frames long enough (first fit, as ``cma->bitmap`` is
searched) and ``cma_release`` gives any allocated run back.

**Lazy and sparse.**  A free list holds blocks, not pages, and the never-used
part of each zone is one bump pointer (the tail of ``free_area[MAX_ORDER]``),
so an untouched machine of any size costs a few dozen objects.  A
``struct page`` (:class:`Page`) exists only once something takes a reference
or maps it through rmap: an untouched allocated page has the implicit
refcount 1 (its owner's) and costs nothing.  A page's bytes exist only once
written.

**Contents.**  DRAM keeps what was written after a page is freed, as it
does.  An allocation with ``__GFP_ZERO`` (the default when no ``gfp`` is
given, see :data:`~dmabuf_sim.mm.gfp.DEFAULT_GFP`) clears the frames and
drops any line the previous owner left in the CPU cache — the kernel's
``clear_page`` stores overwrite those lines.  Without ``__GFP_ZERO`` the new
owner sees the old bytes, in DRAM and in the cache, exactly as a kernel
exporter that forgot ``__GFP_ZERO`` would hand them to userspace.

**Misuse is reported the kernel's way.**  Freeing a block that is not
allocated (a double free) is ``VM_BUG_ON_PAGE(page_ref_count(page) == 0)``
in ``put_page_testzero``: recorded with :meth:`Kernel.report_bad_page` and
raised as a :class:`~dmabuf_sim.errors.KernelOops`.  Freeing a page that is
still mapped, still in a page cache, or whose refcount another holder raised,
is ``bad_page()``'s "Bad page state" (nonzero mapcount / non-NULL mapping /
nonzero _refcount): recorded, and the block is leaked rather than handed out
twice, as the kernel does; execution continues.  ``__free_pages`` of an
order-0 page that someone else still references only drops the owner's
reference: the last ``put_page`` frees it (not a bug in the kernel either).

Simplified:

* every page of a block carries its own reference count (the owner holds
  one on each), whether or not ``__GFP_COMP`` was passed;
* no per-CPU lists, watermarks, reclaim, compaction or migrate types; the
  OOM killer runs only for user page faults (``VM_FAULT_OOM``), with
  ``oom_kill_allocating_task`` semantics; a kernel allocation that finds no
  block fails at once;
* ``scatter`` (the default) stands for a busy machine: memory is four nodes
  and allocations interleave across them (``MPOL_INTERLEAVE``, in a seeded
  node order), so two consecutive allocations are never physically adjacent;
  ``scatter=False`` allocates from node 0 first, as the local-node policy
  does on an idle machine, and consecutive allocations are adjacent;
* ``cma_alloc`` has no alignment argument.
"""

from __future__ import annotations

import bisect
import random
from typing import TYPE_CHECKING

from attrs import define, field

from ..errors import KernelOops, OutOfMemory
from ..trace import kernel_function
from .gfp import __GFP_NOWARN, __GFP_ZERO, DEFAULT_GFP, check_gfp, gfp_name

if TYPE_CHECKING:
    from ..fs import AddressSpace
    from ..kernel import Kernel

__all__ = [
    "MAX_ORDER",
    "NR_NODES",
    "PAGE_ALIGN",
    "PAGE_MASK",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "ULONG_MAX",
    "Page",
    "PhysicalMemory",
    "Zone",
    "page_pieces",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ULONG_MAX = (1 << 64) - 1
PAGE_MASK = ULONG_MAX & ~(PAGE_SIZE - 1)
MAX_ORDER = 10  # largest buddy block: 2**10 pages (4 MiB); MAX_PAGE_ORDER since 6.8
MAX_ORDER_NR_PAGES = 1 << MAX_ORDER
NR_NODES = 4
FIRST_PFN = 0x100  # pfn 0..0xff are left unused (firmware, as on x86)
# Python mangles ``__NAME`` inside a class body: the methods use these aliases.
_GFP_ZERO = __GFP_ZERO
_GFP_NOWARN = __GFP_NOWARN


def PAGE_ALIGN(addr: int) -> int:
    """Round up to a page boundary in 64-bit unsigned arithmetic (wraps to 0 like C)."""
    return ((addr + PAGE_SIZE - 1) & PAGE_MASK) & ULONG_MAX


def page_pieces(start: int, n: int) -> list[tuple[int, int, int, int]]:
    """``[start, start + n)`` cut at page boundaries: ``(page, offset in it, offset in the
    range, length)`` for each piece (page = pfn for a physical address)."""
    out = []
    pos = 0
    while pos < n:
        page, off = divmod(start + pos, PAGE_SIZE)
        chunk = min(n - pos, PAGE_SIZE - off)
        out.append((page, off, pos, chunk))
        pos += chunk
    return out


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


class FreeList:
    """``free_area[order].free_list``: head pfns of free blocks of one order.

    Adding and taking happen at the head (LIFO, as ``add_to_free_list`` and
    ``get_page_from_free_area``); any block can be unlinked in O(1), which
    merging needs for the buddy."""

    __slots__ = ("pfns", "pos")

    def __init__(self) -> None:
        self.pfns: list[int] = []
        self.pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.pfns)

    def __contains__(self, pfn: int) -> bool:
        return pfn in self.pos

    def add(self, pfn: int) -> None:
        self.pos[pfn] = len(self.pfns)
        self.pfns.append(pfn)

    def pop(self) -> int:
        pfn = self.pfns.pop()
        del self.pos[pfn]
        return pfn

    def remove(self, pfn: int) -> None:
        i = self.pos.pop(pfn)
        last = self.pfns.pop()
        if last != pfn:
            self.pfns[i] = last
            self.pos[last] = i


@define(eq=False, slots=True)
class Zone:
    """One node's ``struct zone``: the buddy free lists of ``[start, end)``.

    ``[untouched, untouched_end)`` is the part never split since boot: free
    ``MAX_ORDER`` blocks that are not on ``free_area[MAX_ORDER]`` one by one
    (the list would hold thousands of entries on a 64 GiB machine)."""

    nid: int
    start: int
    end: int
    free_area: list[FreeList] = field(factory=lambda: [FreeList() for _ in range(MAX_ORDER + 1)])
    untouched: int = 0
    untouched_end: int = 0
    nr_free: int = 0

    def __attrs_post_init__(self) -> None:
        # memblock_free_all: hand the range to the buddy in the largest aligned blocks
        lo = -(-self.start // MAX_ORDER_NR_PAGES) * MAX_ORDER_NR_PAGES
        hi = self.end // MAX_ORDER_NR_PAGES * MAX_ORDER_NR_PAGES
        if lo >= hi:
            lo = hi = self.end
        self._carve(self.start, lo)
        self._carve(hi, self.end)
        self.untouched, self.untouched_end = lo, hi
        self.nr_free = self.end - self.start

    def _carve(self, lo: int, hi: int) -> None:
        pfn = lo
        while pfn < hi:
            order = MAX_ORDER
            while order and (pfn & ((1 << order) - 1) or pfn + (1 << order) > hi):
                order -= 1
            self.free_area[order].add(pfn)
            pfn += 1 << order

    def rmqueue(self, order: int) -> int | None:
        """``__rmqueue_smallest`` + ``expand``: the head pfn of a free block, or None."""
        area = self.free_area
        for current in range(order, MAX_ORDER + 1):
            if area[current].pfns:
                pfn = area[current].pop()
                break
        else:
            if self.untouched >= self.untouched_end:
                return None
            pfn = self.untouched
            self.untouched += MAX_ORDER_NR_PAGES
            current = MAX_ORDER
        while current > order:  # expand: the upper halves go back on the lists
            current -= 1
            area[current].add(pfn + (1 << current))
        self.nr_free -= 1 << order
        return pfn

    def free_one(self, pfn: int, order: int) -> None:
        """``__free_one_page``: merge with free buddies, then list the result."""
        area = self.free_area
        self.nr_free += 1 << order
        while order < MAX_ORDER:
            buddy = pfn ^ (1 << order)
            if buddy not in area[order]:
                break
            area[order].remove(buddy)
            pfn &= ~(1 << order)
            order += 1
        if order == MAX_ORDER and pfn + MAX_ORDER_NR_PAGES == self.untouched:
            # Whole again and next to the untouched part: fold it back in, so a
            # machine whose memory all came back costs what a fresh one does.
            self.untouched = pfn
            top = area[MAX_ORDER]
            while self.untouched - MAX_ORDER_NR_PAGES in top:
                self.untouched -= MAX_ORDER_NR_PAGES
                top.remove(self.untouched)
            return
        area[order].add(pfn)

    def free_blocks(self) -> list[tuple[int, int]]:
        """Every free block ``(pfn, order)`` (the untouched part as one entry per block)."""
        out = [(pfn, order) for order, fl in enumerate(self.free_area) for pfn in fl.pfns]
        out += [
            (pfn, MAX_ORDER)
            for pfn in range(self.untouched, self.untouched_end, MAX_ORDER_NR_PAGES)
        ]
        return out


@define(eq=False, slots=True)
class PhysicalMemory:
    """All physical memory of one simulated machine."""

    kernel: Kernel = field(repr=False)
    nr_pages: int = 1 << 24
    """Total page frames (default 64 GiB)."""
    scatter: bool = True
    """Interleave allocations across nodes, so that consecutive ones are not adjacent."""
    seed: int = 0
    init_on_alloc: bool = False
    """The ``init_on_alloc=1`` boot option: zero every allocation, ``__GFP_ZERO`` or not."""
    init_on_free: bool = False
    """The ``init_on_free=1`` boot option: zero pages as they are freed."""
    _data: dict[int, bytearray] = field(factory=dict, repr=False)
    _pages: dict[int, Page] = field(factory=dict, repr=False)
    _blocks: dict[int, int] = field(factory=dict, repr=False)  # head pfn -> order
    _zones: list[Zone] = field(factory=list, repr=False)
    _zone_starts: list[int] = field(factory=list, repr=False)
    _il_order: list[int] = field(factory=list, repr=False)
    _il_next: int = 0
    _contig_starts: list[int] = field(factory=list, repr=False)
    _contig: dict[int, int] = field(factory=dict, repr=False)  # start pfn -> npages
    _cma_free: dict[int, int] = field(factory=dict, repr=False)  # free run start -> npages
    _cma_free_starts: list[int] = field(factory=list, repr=False)
    _orphans: set[int] = field(factory=set, repr=False)
    """CMA frames released while another holder kept a reference: the last put frees them."""
    _leaked: dict[int, int] = field(factory=dict, repr=False)
    """Blocks (head pfn -> order) that bad_page() took out of circulation for good."""
    _buddy_end: int = 0
    allocated_pages: int = 0
    leaked_pages: int = 0
    """Pages leaked by ``bad_page()``: allocated for ever, owned by nobody."""

    def __attrs_post_init__(self) -> None:
        # The CMA area is the top quarter of memory; the buddy zones share the rest.
        self._buddy_end = self.nr_pages - self.nr_pages // 4
        span = self._buddy_end - FIRST_PFN
        step = span // NR_NODES
        if step >= MAX_ORDER_NR_PAGES:
            step -= step % MAX_ORDER_NR_PAGES
        bounds = [FIRST_PFN + i * step for i in range(NR_NODES)] + [self._buddy_end]
        self._zones = [Zone(i, bounds[i], bounds[i + 1]) for i in range(NR_NODES)]
        self._zone_starts = bounds[:NR_NODES]
        self._il_order = list(range(NR_NODES))
        random.Random(self.seed).shuffle(self._il_order)
        cma_pages = self.nr_pages - self._buddy_end
        self._cma_free = {self._buddy_end: cma_pages}
        self._cma_free_starts = [self._buddy_end]

    # -- the buddy allocator -------------------------------------------------------
    @kernel_function("alloc_pages", file="mm/page_alloc.c")
    def alloc_pages(self, order: int, gfp: int | None = None) -> int:
        """Allocate ``2**order`` physically contiguous pages; return the head pfn.

        ``gfp`` defaults to :data:`~dmabuf_sim.mm.gfp.DEFAULT_GFP` (zeroed
        pages).  Raises :class:`~dmabuf_sim.errors.OutOfMemory` where the
        kernel returns NULL: no free block of this order or larger, or an
        order above ``MAX_ORDER`` (which also WARNs unless ``__GFP_NOWARN``).
        """
        order = _nonneg_int("order", order)
        mask = DEFAULT_GFP if gfp is None else check_gfp(gfp)
        if order > MAX_ORDER:
            if not mask & _GFP_NOWARN:
                self.kernel.warn("__alloc_pages", "order > MAX_PAGE_ORDER")
            raise self._failed("alloc_pages", order, mask)
        pfn = self._rmqueue(order)
        if pfn is None:
            raise self._failed("alloc_pages", order, mask)
        self._blocks[pfn] = order
        self.allocated_pages += 1 << order
        if mask & _GFP_ZERO or self.init_on_alloc:
            self._zero_fill(pfn, 1 << order)
        return pfn

    def alloc_page(self, gfp: int | None = None) -> int:
        return self.alloc_pages(0, gfp)

    def _rmqueue(self, order: int) -> int | None:
        """Try the nodes in policy order (interleave or local), falling back as zonelists do."""
        zones = self._zones
        if self.scatter:
            first = self._il_order[self._il_next]
            self._il_next = (self._il_next + 1) % NR_NODES
        else:
            first = 0
        for i in range(NR_NODES):
            pfn = zones[(first + i) % NR_NODES].rmqueue(order)
            if pfn is not None:
                return pfn
        return None

    def _failed(self, func: str, order: int, gfp: int, reason: str = "") -> OutOfMemory:
        """``warn_alloc`` (traced unless ``__GFP_NOWARN``), then the NULL return."""
        if not reason:
            reason = f"page allocation failure: order:{order}, mode:{gfp:#x}({gfp_name(gfp)})"
        tracer = self.kernel.tracer
        if tracer.enabled and not gfp & _GFP_NOWARN:
            tracer.event("warn_alloc", reason)
        return OutOfMemory(func, reason)

    @kernel_function("__free_pages", file="mm/page_alloc.c")
    def free_pages(self, pfn: int, order: int) -> None:
        """``__free_pages``: drop the owner's reference on a block and free it.

        If another holder still references the head page, only the owner's
        reference goes: the head lives on as an order-0 page that the last
        ``put_page`` frees, and the rest of the block is freed now (the
        ``!PageHead`` branch).  A block that is not allocated is a double
        free (``VM_BUG_ON_PAGE``: a :class:`KernelOops`); a page still
        mapped or referenced is a "Bad page state" and its block is leaked.
        """
        pfn = _nonneg_int("pfn", pfn)
        order = _nonneg_int("order", order)
        if self._blocks.get(pfn) != order or pfn in self._leaked:
            self._bad_free("__free_pages", pfn, f"order {order}")
        head = self._pages.get(pfn)
        del self._blocks[pfn]
        if head is not None and head.refcount > 1:
            head.refcount -= 1  # put_page_testzero: someone else still holds it
            self._blocks[pfn] = 0
            for sub in range(order - 1, -1, -1):
                self._free_block(pfn + (1 << sub), sub, exempt=None)
            return
        self._free_block(pfn, order, exempt=pfn)

    def _free_block(self, pfn: int, order: int, *, exempt: int | None) -> None:
        """``free_the_page``: check every page (``free_pages_prepare``), then merge it in.

        ``exempt`` is the page whose last reference is being dropped now (its
        refcount is not checked); every other page must hold exactly the
        owner's reference."""
        npages = 1 << order
        bad = self._bad_pages_in(pfn, npages, exempt)
        if bad:
            self._leak(pfn, order, npages, bad)
            self._blocks[pfn] = order
            return
        self._forget(pfn, npages)
        self.allocated_pages -= npages
        self._zone_of(pfn).free_one(pfn, order)

    def _zone_of(self, pfn: int) -> Zone:
        return self._zones[bisect.bisect_right(self._zone_starts, pfn) - 1]

    def last_reference_dropped(self, page: Page) -> None:
        """``put_page`` took the refcount to 0: free the page if nobody else owns it.

        An order-0 buddy page (anonymous, page cache, or an owner's page it
        freed while others held it) and a CMA frame released while in use
        are freed; a page inside a block its owner still holds is a bug."""
        pfn = page.pfn
        if self._blocks.get(pfn) == 0 and pfn not in self._leaked:
            del self._blocks[pfn]
            self._free_block(pfn, 0, exempt=pfn)
        elif pfn in self._orphans:
            self._orphans.discard(pfn)
            bad = self._bad_pages_in(pfn, 1, pfn)
            if bad:
                self._leak(pfn, 0, 1, bad)
                return
            self._cma_unlink(pfn, 1)
            self._forget(pfn, 1)
            self.allocated_pages -= 1
            self._cma_add_free(pfn, 1)
        elif self._owner_leaked(pfn):
            pass  # bad_page() already reported it; the page stays out of circulation
        else:
            self.kernel.report_bad_page(pfn, "refcount reached 0 on a page its owner still holds")

    # -- CMA ---------------------------------------------------------------------
    @kernel_function("cma_alloc", file="mm/cma.c")
    def alloc_contig(self, npages: int, gfp: int | None = None) -> int:
        """``cma_alloc``: ``npages`` physically contiguous pages; return the first pfn.

        The kernel's ``cma_alloc`` never zeroes (the CMA heap clears the pages
        itself); here the default ``gfp`` asks for zeroed pages, which is what
        every exporter written against this API expects.  Pass ``gfp`` without
        ``__GFP_ZERO`` for the raw frames.  Raises
        :class:`~dmabuf_sim.errors.OutOfMemory` (NULL) when no free run is
        long enough.
        """
        if isinstance(npages, bool) or not isinstance(npages, int):
            raise TypeError(f"npages must be an int, not {type(npages).__name__}")
        if npages <= 0:
            raise ValueError(f"npages must be positive, not {npages}")
        mask = DEFAULT_GFP if gfp is None else check_gfp(gfp)
        start = None
        for run in self._cma_free_starts:  # first fit, as the bitmap search
            if self._cma_free[run] >= npages:
                start = run
                break
        if start is None:
            largest = max(self._cma_free.values(), default=0)
            reason = f"alloc failed, req-size: {npages} pages (largest free run {largest})"
            raise self._failed("cma_alloc", 0, mask, reason)
        self._cma_take_free(start, npages)
        self._cma_link(start, npages)
        self.allocated_pages += npages
        if mask & _GFP_ZERO or self.init_on_alloc:
            self._zero_fill(start, npages)
        return start

    @kernel_function("cma_release", file="mm/cma.c")
    def free_contig(self, start: int, npages: int) -> bool:
        """``cma_release`` → ``free_contig_range``: give ``npages`` frames back.

        Returns False, changing nothing, for a range outside the CMA area (as
        ``cma_pages_valid`` does).  Any run of allocated frames may be given
        back, not only a whole allocation.  A frame in the range that is not
        allocated is a double free (:class:`KernelOops`).  A frame another
        holder still references stays allocated until its last ``put_page``
        (``free_contig_range`` WARNs "pages are still in use!"); a frame still
        mapped is a "Bad page state" and is leaked.
        """
        start = _nonneg_int("start", start)
        npages = _nonneg_int("npages", npages)
        if start < self._buddy_end or start + npages > self.nr_pages:
            return False  # cma_pages_valid: not this area's pages
        if npages == 0:
            return True
        hole = self._cma_first_hole(start, start + npages)
        if hole is not None:
            self._bad_free("free_contig_range", hole, "a CMA frame")
        in_use: list[int] = []
        bad: list[tuple[int, str]] = []
        pages = self._pages
        end = start + npages
        candidates = (
            [p for p in range(start, end) if p in pages]
            if npages <= len(pages)
            else sorted(p for p in pages if start <= p < end)
        )
        for p in candidates:
            page = pages[p]
            if page.refcount > 1:  # __free_page only drops the owner's reference
                page.refcount -= 1
                in_use.append(p)
            elif why := _bad_reason(page, exempt=False):
                bad.append((p, why))
        keep = sorted([*in_use, *(p for p, _ in bad)])
        if in_use:
            self.kernel.warn(
                "free_contig_range", f"count != 0: {len(in_use)} pages are still in use!"
            )
            self._orphans.update(in_use)
        for p, why in bad:
            self.kernel.report_bad_page(p, f"Bad page state: {why}")
            self._leaked[p] = 0
            self.leaked_pages += 1
        # Everything else in the range goes back, run by run.
        self._cma_unlink(start, npages)
        pos = start
        for p in [*keep, end]:
            if p > pos:
                self._forget(pos, p - pos)
                self.allocated_pages -= p - pos
                self._cma_add_free(pos, p - pos)
            if p < end:
                self._cma_link(p, 1)
            pos = p + 1
        return True

    def _cma_link(self, start: int, npages: int) -> None:
        bisect.insort(self._contig_starts, start)
        self._contig[start] = npages

    def _cma_unlink(self, start: int, npages: int) -> None:
        """Forget ``[start, start + npages)`` as allocated; every frame of it is."""
        end = start + npages
        starts = self._contig_starts
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        while i < len(starts) and starts[i] < end:
            first = starts[i]
            last = first + self._contig[first]
            if last <= start:
                i += 1
                continue
            del starts[i]
            del self._contig[first]
            if first < start:
                self._cma_link(first, start - first)
                i += 1
            if last > end:
                self._cma_link(end, last - end)
                i += 1

    def _cma_first_hole(self, start: int, end: int) -> int | None:
        """The first frame of ``[start, end)`` that is not allocated, or None."""
        starts = self._contig_starts
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        pos = start
        while pos < end:
            if i >= len(starts) or starts[i] > pos:
                return pos
            last = starts[i] + self._contig[starts[i]]
            pos = max(pos, last)
            i += 1
        return None

    def _cma_take_free(self, start: int, npages: int) -> None:
        run = self._cma_free.pop(start)
        i = bisect.bisect_left(self._cma_free_starts, start)
        del self._cma_free_starts[i]
        if run > npages:
            self._cma_free[start + npages] = run - npages
            self._cma_free_starts.insert(i, start + npages)

    def _cma_add_free(self, start: int, npages: int) -> None:
        """Return a run to the free runs, merging with its neighbours."""
        runs = self._cma_free
        starts = self._cma_free_starts
        i = bisect.bisect_left(starts, start)
        if i > 0 and starts[i - 1] + runs[starts[i - 1]] == start:
            i -= 1
            start = starts[i]
            npages += runs.pop(start)
            del starts[i]
        end = start + npages
        if i < len(starts) and starts[i] == end:
            npages += runs.pop(end)
            del starts[i]
        runs[start] = npages
        starts.insert(i, start)

    # -- page state checks ---------------------------------------------------------
    def _bad_pages_in(self, pfn: int, npages: int, exempt: int | None) -> list[tuple[int, str]]:
        """``free_page_is_bad`` for each materialised page of the block."""
        pages = self._pages
        if not pages:
            return []
        if npages <= len(pages):
            found = [pages[p] for p in range(pfn, pfn + npages) if p in pages]
        else:
            found = sorted(
                (pg for p, pg in pages.items() if pfn <= p < pfn + npages), key=lambda pg: pg.pfn
            )
        out = []
        for page in found:
            why = _bad_reason(page, exempt=page.pfn == exempt)
            if why:
                out.append((page.pfn, why))
        return out

    def _leak(self, pfn: int, order: int, npages: int, bad: list[tuple[int, str]]) -> None:
        """``bad_page()``: report, and take the block out of circulation for good."""
        for p, why in bad:
            self.kernel.report_bad_page(p, f"Bad page state: {why}")
        self._leaked[pfn] = order
        self.leaked_pages += npages

    def _owner_leaked(self, pfn: int) -> bool:
        leaked = self._leaked
        if not leaked:
            return False
        for order in range(MAX_ORDER + 1):
            head = pfn & ~((1 << order) - 1)
            if leaked.get(head) == order:
                return True
        return False

    def _bad_free(self, func: str, pfn: int, what: str) -> None:
        """A free of something not allocated: ``VM_BUG_ON_PAGE`` in ``put_page_testzero``."""
        reason = "VM_BUG_ON_PAGE(page_ref_count(page) == 0)"
        self.kernel.report_bad_page(pfn, f"{reason}: {func} of a free page ({what})")
        if self.pfn_allocated(pfn):
            detail = f"pfn {pfn:#x} is not the head of an allocated block of that {what}"
        else:
            detail = f"pfn {pfn:#x} is free (double free, or never allocated)"
        raise KernelOops(func, f"{reason}: {detail}")

    # -- contents ------------------------------------------------------------------
    def _zero_fill(self, pfn: int, npages: int) -> None:
        """Hand out zeroed frames.  The kernel zeroes with CPU stores (clear_page), which
        overwrite any line a previous owner left in the CPU cache; here DRAM is cleared
        and such stale lines are dropped, so old data can never reach the new owner."""
        observers = self.kernel.observers
        if observers.memory_reset:
            observers.emit("memory_reset", pfn, npages)
        self._clear_data(pfn, npages)
        cache = getattr(self.kernel, "cache", None)  # absent while the Kernel is built
        if cache is not None and cache.lines:
            cache.invalidate_range(pfn << PAGE_SHIFT, npages << PAGE_SHIFT)

    def _clear_data(self, pfn: int, npages: int) -> None:
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
        """The frames are free again: their ``struct page``s go; their bytes stay in DRAM."""
        if self.init_on_free:
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

    # -- queries --------------------------------------------------------------------
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

    def nr_free_pages(self) -> int:
        """``nr_free_pages()``: free frames in the buddy zones and the CMA area."""
        return sum(z.nr_free for z in self._zones) + self.nr_free_cma_pages()

    def nr_free_cma_pages(self) -> int:
        """``NR_FREE_CMA_PAGES``: the CMA area's share of the free frames."""
        return sum(self._cma_free.values())

    @property
    def managed_pages(self) -> int:
        """Frames the allocators manage (everything above the unused low frames)."""
        return self.nr_pages - FIRST_PFN

    def check_consistency(self) -> None:
        """Assert the allocator's invariants (for tests): the free blocks and the
        allocated blocks tile the managed frames exactly, with no overlap."""
        spans: list[tuple[int, int, str]] = []
        for zone in self._zones:
            for pfn, order in zone.free_blocks():
                assert zone.start <= pfn and pfn + (1 << order) <= zone.end, (pfn, order)
                assert pfn & ((1 << order) - 1) == 0, f"free block {pfn:#x} misaligned"
                spans.append((pfn, 1 << order, "free"))
            assert zone.nr_free == sum(1 << o for _, o in zone.free_blocks()), zone.nid
        spans += [(pfn, 1 << order, "block") for pfn, order in self._blocks.items()]
        spans += [(s, n, "cma-free") for s, n in self._cma_free.items()]
        spans += [(s, n, "cma") for s, n in self._contig.items()]
        spans.sort()
        pos = FIRST_PFN
        for pfn, n, kind in spans:
            assert pfn == pos, f"{kind} at {pfn:#x}: expected the next span at {pos:#x}"
            pos = pfn + n
        assert pos == self.nr_pages, f"spans end at {pos:#x}, not {self.nr_pages:#x}"
        owned = sum(1 << o for o in self._blocks.values()) + sum(self._contig.values())
        assert owned == self.allocated_pages, (owned, self.allocated_pages)
        assert self.allocated_pages + self.nr_free_pages() == self.managed_pages

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
    @property
    def frames(self) -> dict[int, bytearray]:
        """The frames that hold data, by pfn (the others read as zeros); the live dict.

        Only the CPU cache reads it directly (a line fill slices one frame); everyone
        else goes through :meth:`read` and :meth:`write`."""
        return self._data

    def read(self, pa: int, n: int) -> bytes:
        """Read ``n`` bytes of physical memory (the DRAM view, no cache)."""
        data = self._data
        off = pa & (PAGE_SIZE - 1)
        if off + n <= PAGE_SIZE:  # within one frame: the common case
            page = data.get(pa >> PAGE_SHIFT)
            return bytes(page[off : off + n]) if page is not None else bytes(n)
        out = bytearray()
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
        n = len(buf)
        off = pa & (PAGE_SIZE - 1)
        if off + n <= PAGE_SIZE:  # within one frame: the common case
            pfn = pa >> PAGE_SHIFT
            page = data.get(pfn)
            if page is None:
                if not any(buf):
                    return  # writing zeros to an untouched page changes nothing
                page = data[pfn] = bytearray(PAGE_SIZE)
            page[off : off + n] = buf
            return
        mv = memoryview(buf)
        pos = 0
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


def _bad_reason(page: Page, *, exempt: bool) -> str:
    """``page_bad_reason``, in its order; ``exempt`` skips the refcount check."""
    if page.mapcount > 0:
        return "nonzero mapcount"
    if page.mapping is not None:
        return "non-NULL mapping"
    if not exempt and page.refcount != 1:
        return "nonzero _refcount" if page.refcount > 1 else "refcount already 0 (put too often)"
    return ""


def _nonneg_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value
