"""The *structure* of mm costs: what an operation visits grows with the work it does.

"Costs must grow with the work done, never with buffer size or with unrelated
state."  These tests check it deterministically by counting, never by timing:

* ``PageTable.visits`` — page-table pages and PTE slots a range walk examined;
* ``MmStruct.visits`` — vmas the top-down ``get_unmapped_area`` search examined;
* dict probes of the buddy allocator, calls that ran a ``kernel_function`` trampoline.

The free-area cache must never change an answer, so the hint-less mmap tests
also compare every address with the full top-down walk it replaces.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import mmap
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from dmabuf_sim import Kernel, Process
from dmabuf_sim import trace as trace_mod
from dmabuf_sim.errors import KernelOops, Signal
from dmabuf_sim.fs import File, FileOperations
from dmabuf_sim.mm import memory as memory_mod
from dmabuf_sim.mm.memory import get_page, remap_pfn_range, unmap_mapping_range
from dmabuf_sim.mm.mmap import MAP_FIXED, MMAP_MIN_ADDR, MmStruct
from dmabuf_sim.mm.page_alloc import PAGE_SIZE
from dmabuf_sim.mm.pgtable import PTRS_PER_PTE, PageTable, mk_pte
from dmabuf_sim.mm.vma import VM_FAULT_SIGBUS, VmAreaStruct, VmFault, VmOperationsStruct
from dmabuf_sim.trace import Tracer

PAGE = PAGE_SIZE
RW = mmap.PROT_READ | mmap.PROT_WRITE
HUGE = 1 << 28  # pages: a 1 TiB mapping


# -- a driver over one contiguous range -----------------------------------------------------------


class Driver:
    """``->fault`` hands out ``base + pgoff`` (lazy) or ``->mmap`` remaps it all (eager)."""

    def __init__(self, kernel: Kernel, path: str, npages: int, *, eager: bool = False) -> None:
        self.kernel = kernel
        self.npages = npages
        self.base = kernel.mem.alloc_contig(npages)
        self.vm_ops = VmOperationsStruct(fault=self.fault, owner="cost")
        mmap_fn = self.mmap_eager if eager else self.mmap_lazy
        kernel.register_chrdev(path, FileOperations(owner="cost", mmap=mmap_fn), self)

    def mmap_lazy(self, file: File, vma: VmAreaStruct) -> int:
        if vma.vm_pgoff + vma.pages() > self.npages:
            return -errno.EINVAL
        vma.vm_ops = self.vm_ops
        return 0

    def mmap_eager(self, file: File, vma: VmAreaStruct) -> int:
        if vma.vm_pgoff + vma.pages() > self.npages:
            return -errno.EINVAL
        size = vma.vm_end - vma.vm_start
        return remap_pfn_range(vma, vma.vm_start, self.base + vma.vm_pgoff, size, vma.vm_page_prot)

    def fault(self, vmf: VmFault) -> int:
        if vmf.pgoff >= self.npages:
            return VM_FAULT_SIGBUS
        page = self.kernel.mem.pfn_to_page(self.base + vmf.pgoff)
        get_page(page)
        vmf.page = page
        return 0


def machine(npages: int, *, ram_pages: int = 1 << 24) -> tuple[Kernel, Process, Driver, int]:
    k = Kernel("latest", ram_pages=max(ram_pages, 4 * npages))
    drv = Driver(k, "/dev/cost", npages)
    p = k.spawn("cost")
    return k, p, drv, p.open("/dev/cost", os.O_RDWR)


def spread(addr: int, npages: int, n: int) -> list[int]:
    """``n`` page addresses spread evenly over ``npages`` pages from ``addr``."""
    return [addr + i * (npages // n) * PAGE for i in range(n)]


# -- 1. PageTable.iter_range ----------------------------------------------------------------------


def test_iter_range_visits_the_ptes_in_range_not_the_other_100000() -> None:
    table = PageTable()
    for vpn in range(1 << 30, (1 << 30) + 100_000):  # 100,000 unrelated PTEs, far away
        table.set(vpn, vpn << 12)
    first = 1 << 20
    wanted = [first + i * (HUGE // 10) for i in range(10)]
    for vpn in reversed(wanted):
        table.set(vpn, 0x1000 | vpn)
    table.visits = 0
    got = list(table.iter_range(first, first + HUGE))
    assert got == [(vpn, 0x1000 | vpn) for vpn in wanted]
    # 10 PTEs in 10 distinct page-table pages: one visit per table and per PTE.
    assert table.visits == 20


def test_iter_range_cost_is_the_same_with_or_without_unrelated_ptes() -> None:
    def visits(unrelated: int) -> int:
        table = PageTable()
        for vpn in range(5 << 30, (5 << 30) + unrelated):
            table.set(vpn, 1)
        for vpn in range(0x4000, 0x4000 + 10 * 1000, 1000):
            table.set(vpn, 2)
        table.visits = 0
        assert len(list(table.iter_range(0, HUGE))) == 10
        return table.visits

    assert visits(0) == visits(100_000) <= 2 * 10


def test_iter_range_of_a_dense_range_visits_each_pte_once_plus_its_tables() -> None:
    table = PageTable()
    for vpn in range(3 * PTRS_PER_PTE):
        table.set(vpn, vpn)
    table.visits = 0
    assert len(list(table.iter_range(100, 3 * PTRS_PER_PTE - 100))) == 3 * PTRS_PER_PTE - 200
    assert table.visits == 3 * PTRS_PER_PTE - 200 + 3  # the PTEs in range and 3 tables


def test_iter_range_agrees_with_a_brute_force_filter() -> None:
    rng = random.Random(20)
    table = PageTable()
    model: dict[int, int] = {}
    regions = [0, PTRS_PER_PTE - 40, 7 * PTRS_PER_PTE, 1 << 35]
    for step in range(4000):
        vpn = rng.choice(regions) + rng.randrange(3 * PTRS_PER_PTE)
        if rng.random() < 0.6:
            pte = rng.randrange(1 << 40)
            table.set(vpn, pte)
            model[vpn] = pte
        else:
            assert table.clear(vpn) == model.pop(vpn, None)
        if step % 50 == 0:
            table.check_index()
            for _ in range(10):
                lo = rng.choice(regions) + rng.randrange(-600, 3 * PTRS_PER_PTE)
                hi = lo + rng.choice([0, 1, 5, 16, 17, 511, 512, 513, 2000, 1 << 40])
                expect = sorted((v, p) for v, p in model.items() if lo <= v < hi)
                assert list(table.iter_range(lo, hi)) == expect
    assert list(table.iter_range(10, 10)) == [] and list(table.iter_range(10, 5)) == []
    assert len(table) == len(model)


def test_iter_range_tolerates_clearing_while_iterating() -> None:
    table = PageTable()
    for vpn in range(0, 4 * PTRS_PER_PTE, 3):
        table.set(vpn, vpn + 1)
    seen = []
    for vpn, pte in table.iter_range(0, 4 * PTRS_PER_PTE):
        seen.append((vpn, pte))
        table.clear(vpn)
        table.clear(vpn + 3)  # also one not reached yet: it is skipped
        table.clear(vpn + PTRS_PER_PTE)  # and one in a later page-table page
    assert seen == sorted(seen)
    assert all(pte == vpn + 1 for vpn, pte in seen)
    assert len(table) == 0 and not table._tables and not table._table_keys
    table.check_index()


def test_writing_the_value_of_a_present_pte_directly_is_fine() -> None:
    """``user_access`` sets the dirty bit with ``entries[vpn] = ...`` (an existing key)."""
    table = PageTable()
    table.set(600, 1)
    table.entries[600] = 1 | 0x40
    table.check_index()
    assert list(table.iter_range(0, 1 << 20)) == [(600, 0x41)]


def test_a_key_added_behind_set_is_still_found() -> None:
    """Keys must go through set()/clear(); a walk heals the index if one did not."""
    table = PageTable({5: 1, 70_000: 2})
    table.check_index()
    table.entries[90_000] = 3
    assert list(table.iter_range(0, 1 << 20)) == [(5, 1), (70_000, 2), (90_000, 3)]
    table.check_index()


def test_set_range_is_a_loop_of_set() -> None:
    rng = random.Random(7)
    bulk, loop = PageTable(), PageTable()
    for _ in range(300):
        start = rng.randrange(8 * PTRS_PER_PTE)
        n = rng.choice([1, 3, 40, 511, 512, 700, 1500])
        if bulk.first_present(start, start + n) is not None:
            with pytest.raises(ValueError, match="present"):
                bulk.set_range(start, range(n))
            continue
        ptes = [rng.randrange(1 << 40) for _ in range(n)]
        bulk.set_range(start, ptes)
        for i, pte in enumerate(ptes):
            loop.set(start + i, pte)
        bulk.check_index()
        assert list(bulk.entries.items()) == list(loop.entries.items())  # same order too
        for vpn in rng.sample(sorted(bulk.entries), min(len(bulk), 200)):
            bulk.clear(vpn)
            loop.clear(vpn)
    assert list(bulk.iter_range(0, 1 << 20)) == list(loop.iter_range(0, 1 << 20))


def test_remap_over_a_present_pte_oopses_after_filling_the_pages_before_it() -> None:
    _, p, drv, fd = machine(16)
    addr = p.mmap(0, 16 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr + 5 * PAGE, 1)  # one present PTE in the middle
    vma = p.mm.vma_lookup(addr)
    assert vma is not None
    vpn0 = addr // PAGE
    faulted = p.mm.pgtable.get(vpn0 + 5)
    pfn = drv.base + 1000
    with pytest.raises(KernelOops, match="pte_none"):
        remap_pfn_range(vma, addr, pfn, 16 * PAGE, vma.vm_page_prot)
    want = [(vpn0 + i, mk_pte(pfn + i, vma.vm_page_prot, special=True)) for i in range(5)]
    assert list(p.mm.pgtable.iter_range(vpn0, vpn0 + 16)) == [*want, (vpn0 + 5, faulted)]
    p.mm.pgtable.check_index()


# -- 2. unmap_mapping_range through the whole stack -----------------------------------------------


def zap_visits(unrelated: int, present: int, npages: int = HUGE) -> tuple[int, int]:
    """(PTEs zapped, PageTable.visits) of one whole-file unmap_mapping_range."""
    k, p, _, fd = machine(npages, ram_pages=8 * HUGE)  # CMA: room for two drivers
    addr = p.mmap(0, npages * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    if unrelated:
        Driver(k, "/dev/eager", unrelated, eager=True)
        efd = p.open("/dev/eager", os.O_RDWR)
        p.mmap(0, unrelated * PAGE, RW, mmap.MAP_SHARED, efd, 0)  # remaps every page
    for a in spread(addr, npages, present):
        p.read_memory(a, 1)
    assert len(p.mm.pgtable) == unrelated + present
    p.mm.pgtable.visits = 0
    zapped = unmap_mapping_range(p.file(fd).f_mapping, 0, 0, 1)
    assert len(p.mm.pgtable) == unrelated
    p.mm.pgtable.check_index()
    return zapped, p.mm.pgtable.visits


def test_unmap_mapping_range_ignores_100000_unrelated_ptes() -> None:
    alone = zap_visits(0, 10)
    crowded = zap_visits(100_000, 10)
    assert alone == crowded
    assert crowded[0] == 10 and crowded[1] <= 2 * 10


@pytest.mark.parametrize("present", [1, 100, 10_000])
def test_unmap_mapping_range_visits_grow_with_present_ptes(present: int) -> None:
    zapped, visits = zap_visits(0, present)
    assert zapped == present
    assert present <= visits <= 2 * present  # each PTE, plus at most one table per PTE


def test_unmap_mapping_range_visits_do_not_grow_with_the_mapping_size() -> None:
    _, small = zap_visits(0, 10, npages=16)
    _, huge = zap_visits(0, 10, npages=HUGE)
    assert small <= huge <= 2 * 10  # 10 PTEs in one table vs. in ten tables


# -- 3. get_unmapped_area: the free-area cache ----------------------------------------------------


def full_walk(mm: MmStruct, length: int) -> int:
    """The top-down search the free-area cache must agree with (walks every vma)."""
    high = mm.mmap_base
    for vma in reversed(mm.vmas):
        if vma.vm_start >= high:
            continue
        if high - max(vma.vm_end, MMAP_MIN_ADDR) >= length:
            return high - length
        high = vma.vm_start
    if high - MMAP_MIN_ADDR >= length:
        return high - length
    return -errno.ENOMEM


def test_10000_hintless_mmaps_visit_linearly_many_vmas() -> None:
    n = 10_000
    _, p, _, fd = machine(16)
    base = p.mm.mmap_base
    for i in range(n):
        # offset 0 every time: pgoffs are not contiguous, so nothing merges
        assert p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0) == base - (i + 1) * PAGE
    assert p.mm.map_count == n
    # The full walk would have visited 0 + 1 + ... + (n - 1) ≈ 50 million vmas.
    assert p.mm.visits <= 2 * n
    p.mm.check_free_area_cache()


def test_mmap_munmap_pairs_with_10000_vmas_visit_a_constant_number() -> None:
    n = 10_000
    _, p, _, fd = machine(16)
    top = p.mm.mmap_base
    for i in range(n):  # packed below mmap_base, as the benchmark builds them
        p.mmap(top - (i + 1) * PAGE, PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 0)
    first = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert first == top - (n + 1) * PAGE
    assert p.mm.visits <= n  # the first search walks down once...
    p.munmap(first, PAGE)
    p.mm.visits = 0
    for _ in range(200):
        addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
        assert addr == first
        p.munmap(addr, PAGE)
    assert p.mm.visits <= 2 * 200  # ...then each pair starts where it left off
    p.mm.check_free_area_cache()


def test_a_hole_freed_above_the_cache_is_the_next_choice() -> None:
    _, p, _, fd = machine(16)
    base = p.mm.mmap_base
    addrs = [p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0) for _ in range(50)]
    p.munmap(addrs[10], 2 * PAGE)  # far above the cache
    assert p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0) == addrs[10] + PAGE  # its top page
    assert p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0) == addrs[-1] - 2 * PAGE
    p.munmap(addrs[0], 2 * PAGE)  # the top one: the gap reaches mmap_base
    assert p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0) == base - 2 * PAGE
    p.mm.check_free_area_cache()


def test_a_short_request_still_finds_a_hole_the_cache_stepped_over() -> None:
    """Linux 2.6's ``len <= cached_hole_size`` reset: search from the base again."""
    _, p, _, fd = machine(16)
    base = p.mm.mmap_base
    p.mmap(base - PAGE, PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 0)
    p.mmap(base - 3 * PAGE, PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 0)  # 1-page hole above
    assert p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0) == base - 5 * PAGE  # steps over it
    assert p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0) == base - 2 * PAGE  # the hole
    assert p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0) == base - 6 * PAGE
    p.mm.check_free_area_cache()


def test_shrinking_a_vma_above_the_cache_frees_its_tail() -> None:
    _, p, _, _ = machine(16)
    anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    a = p.mmap(0, 8 * PAGE, RW, anon)
    b = p.mmap(0, 8 * PAGE, mmap.PROT_READ, anon)  # different flags: no merge
    assert b == a - 8 * PAGE
    assert p.mremap(a, 8 * PAGE, 2 * PAGE, 0) == a  # shrinks in place: vma_adjust
    p.mm.check_free_area_cache()
    assert p.mmap(0, 6 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS) == a + 2 * PAGE


@pytest.mark.parametrize("side", ["tail", "head"])
def test_vma_adjust_shrinking_a_vma_frees_room_for_the_next_search(side: str) -> None:
    """Today's callers refill at once what vma_adjust frees (split_vma); a caller that
    does not must still see the freed pages."""
    _, p, _, _ = machine(16)
    anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    a = p.mmap(0, 8 * PAGE, RW, anon)
    b = p.mmap(0, 8 * PAGE, mmap.PROT_READ, anon)  # different flags: no merge
    c = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    assert (b, c) == (a - 8 * PAGE, b - PAGE)
    vma = p.mm.vma_lookup(b)
    assert vma is not None
    if side == "tail":
        p.mm.vma_adjust(vma, b, b + 2 * PAGE, vma.vm_pgoff)
        freed = b + 2 * PAGE
    else:
        p.mm.vma_adjust(vma, b + 6 * PAGE, a, vma.vm_pgoff + 6)
        freed = b
    p.mm.check_free_area_cache()
    assert full_walk(p.mm, 6 * PAGE) == freed
    assert p.mmap(0, 6 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS) == freed


def test_a_new_mmap_base_resets_the_cache() -> None:
    _, p, _, fd = machine(16)
    p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.mm.mmap_base = 0x5000_0000_0000
    assert p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0) == 0x5000_0000_0000 - PAGE
    p.mm.check_free_area_cache()


def test_no_room_is_enomem_whether_or_not_the_cache_is_warm() -> None:
    _, p, _, _ = machine(16)
    anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    room = p.mm.mmap_base - MMAP_MIN_ADDR
    half = (room // 2) & ~(PAGE - 1)
    assert p.mm.get_unmapped_area(None, 0, room + PAGE, 0) == -errno.ENOMEM
    assert p.mmap(0, half, RW, anon) == p.mm.mmap_base - half
    assert p.mm.get_unmapped_area(None, 0, half + 2 * PAGE, 0) == -errno.ENOMEM
    assert p.mm.get_unmapped_area(None, 0, half, 0) == full_walk(p.mm, half) > 0
    p.mm.check_free_area_cache()


@pytest.mark.parametrize("seed", range(6))
def test_free_area_cache_answers_like_the_full_walk(seed: int) -> None:
    """Random mmap/munmap/mprotect/mremap/fault mixes: every hint-less mmap lands where
    the full walk says, and the cache invariant and the PTE index hold after each step."""
    rng = random.Random(seed)
    _, p, _, fd = machine(64)
    mm = p.mm
    live: list[tuple[int, int]] = []
    anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    for _ in range(700):
        op = rng.random()
        try:
            if op < 0.45 or not live:
                n = rng.choice([1, 1, 1, 2, 3, 5, 16, 40])
                kind = rng.random()
                if kind < 0.02:
                    n = 1 << 33  # 32 TiB: fits a few times, then ENOMEM
                want = full_walk(mm, n * PAGE)
                if kind < 0.4:
                    flags, f, off = anon, -1, 0  # merges with its neighbours
                elif kind < 0.5:
                    flags, f, off = mmap.MAP_SHARED | mmap.MAP_ANONYMOUS, -1, 0
                else:  # the driver refuses offsets past its 64 pages after the search
                    flags, f, off = mmap.MAP_SHARED, fd, rng.randrange(0, 64) * PAGE
                try:
                    got = p.mmap(0, n * PAGE, RW, flags, f, off)
                except OSError as exc:
                    if want < 0:
                        assert exc.errno == -want
                    else:
                        assert exc.errno == errno.EINVAL  # the driver's ->mmap said no
                else:
                    assert got == want
                    live.append((got, n))
            elif op < 0.75:
                a, n = live.pop(rng.randrange(len(live)))
                off = rng.randrange(n)
                length = rng.randrange(1, n - off + 1)
                p.munmap(a + off * PAGE, length * PAGE)
                if off:
                    live.append((a, off))
                if off + length < n:
                    live.append((a + (off + length) * PAGE, n - off - length))
            elif op < 0.85:
                a, n = rng.choice(live)
                p.mprotect(a, rng.randrange(1, n + 1) * PAGE, rng.choice([mmap.PROT_READ, RW]))
            elif op < 0.93:
                i = rng.randrange(len(live))
                a, n = live[i]
                new = rng.choice([1, n + 1, n + 5, 2 * n])
                live[i] = (p.mremap(a, n * PAGE, new * PAGE, 1), new)
            else:
                a, n = rng.choice(live)
                if n < 1 << 20:
                    for page in range(min(n, 4)):
                        with contextlib.suppress(Signal):  # SIGBUS past the driver's pages
                            p.read_memory(a + page * PAGE, 1)
        except OSError:
            pass  # refusals (EINVAL/EFAULT...) are the syscalls' business, not this test's
        mm.check_free_area_cache()
        mm.pgtable.check_index()
    for length in (PAGE, 2 * PAGE, 7 * PAGE, 1 << 40):
        assert mm.get_unmapped_area(None, 0, length, 0) == full_walk(mm, length)


# -- 4. pfn_allocated -----------------------------------------------------------------------------


class CountingDict(dict[int, int]):
    probes = 0

    def get(self, key: int, default: Any = None) -> Any:
        CountingDict.probes += 1
        return super().get(key, default)


def test_pfn_allocated_answers_cma_frames_without_probing_buddy_orders() -> None:
    k = Kernel("latest")
    mem = k.mem
    blocks = [mem.alloc_pages(order) for order in (0, 3, 10, 2)]
    contig = [mem.alloc_contig(n) for n in (5, 1000, 3)]
    mem.free_pages(blocks.pop(1), 3)
    freed = contig.pop(1)
    mem.free_contig(freed, 1000)
    mem._blocks = CountingDict(mem._blocks)
    CountingDict.probes = 0
    for start in contig:
        assert mem.pfn_allocated(start)
    assert mem.pfn_allocated(contig[0] + 4) and not mem.pfn_allocated(contig[0] + 5)
    assert not mem.pfn_allocated(freed) and not mem.pfn_allocated(freed + 999)
    assert CountingDict.probes == 0
    assert mem.pfn_allocated(blocks[1] + 1023)  # inside the order-10 block: buddy probes
    assert CountingDict.probes > 0


def test_pfn_allocated_keeps_its_answers() -> None:
    k = Kernel("latest", ram_pages=1 << 16)
    mem = k.mem
    rng = random.Random(3)
    owned = {pfn: 1 << order for pfn, order in mem._blocks.items()}  # first pfn -> npages
    owned.update(mem._contig)  # what the kernel allocated while booting
    buddy: list[tuple[int, int]] = []
    cma: list[tuple[int, int]] = []
    for _ in range(200):
        if rng.random() < 0.3 and (buddy or cma):
            pool = buddy if buddy and (not cma or rng.random() < 0.5) else cma
            pfn, size = pool.pop(rng.randrange(len(pool)))
            if pool is buddy:
                mem.free_pages(pfn, size.bit_length() - 1)
            else:
                mem.free_contig(pfn, size)
            del owned[pfn]
        elif rng.random() < 0.7:
            order = rng.randrange(5)
            pfn = mem.alloc_pages(order)
            buddy.append((pfn, 1 << order))
            owned[pfn] = 1 << order
        else:
            n = rng.randrange(1, 40)
            pfn = mem.alloc_contig(n)
            cma.append((pfn, n))
            owned[pfn] = n
    # every frame at and around each block ever handed out, and the CMA boundary
    probes = {p for first, n in owned.items() for p in range(first - 2, first + n + 2)}
    probes |= set(range(mem._buddy_end - 50, mem._buddy_end + 50))
    probes |= {pfn for pfn, _n in buddy + cma}
    for pfn in sorted(probes):
        expect = any(first <= pfn < first + n for first, n in owned.items())
        assert mem.pfn_allocated(pfn) == expect, hex(pfn)


# -- 5. the fault path with tracing off -----------------------------------------------------------


@pytest.fixture
def counted_tracer_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Count traced kernel function calls (trampoline runs) and Tracer.event calls.

    Kernels that other tests left tracing are collected first, so that no kernel in
    the process listens to kernel function calls when the test starts."""
    gc.collect()
    counts = {"traced_calls": 0, "events": 0}
    real_call = trace_mod._KernelFunction.call
    real_event = Tracer.event

    def call(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        counts["traced_calls"] += 1
        return real_call(self, args, kwargs)

    def event(self: Tracer, func: str, note: str = "", args: str = "") -> None:
        counts["events"] += 1
        real_event(self, func, note, args)

    monkeypatch.setattr(trace_mod._KernelFunction, "call", call)
    monkeypatch.setattr(Tracer, "event", event)
    yield counts


def map_two(p: Process, fd: int, n: int) -> tuple[int, int]:
    """A lazy driver mapping and an anonymous one, ``n`` pages each."""
    addr = p.mmap(0, n * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    return addr, p.mmap(0, n * PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def fault_pages(p: Process, mapped: tuple[int, int], n: int) -> None:
    addr, anon = mapped
    for a in spread(addr, n, n):
        p.read_memory(a, 1)  # do_read_fault: _finish_fault -> _install_page
    for a in spread(anon, n, n):
        p.write_memory(a, b"x")  # do_anonymous_page: _install_page


def test_untraced_faults_run_no_wrapper_and_build_no_events(
    counted_tracer_calls: dict[str, int],
) -> None:
    assert not trace_mod.call_tracing_active()
    # the functions of the fault path are their own code: nothing stands in front of them
    for fn in (memory_mod.do_user_addr_fault, memory_mod.handle_mm_fault, memory_mod.do_fault):
        assert fn.__code__ is fn.__kernel_function__.code  # type: ignore[attr-defined]
    _, p, _, fd = machine(64)
    mapped = map_two(p, fd, 32)
    counted_tracer_calls.update(traced_calls=0, events=0)  # boot and mmap may post events
    fault_pages(p, mapped, 32)
    assert len(p.mm.pgtable) == 64
    assert counted_tracer_calls == {"traced_calls": 0, "events": 0}


def test_a_traced_kernel_still_traces_while_another_does_not(
    counted_tracer_calls: dict[str, int],
) -> None:
    k1, p1, _, fd1 = machine(64)
    k2, p2, _, fd2 = machine(64)
    mapped1, mapped2 = map_two(p1, fd1, 4), map_two(p2, fd2, 4)
    with k2.trace() as events:
        fault_pages(p2, mapped2, 4)
        fault_pages(p1, mapped1, 4)  # traced kernel on, this one off: trampolined, not recorded
    assert k1.tracer.events == []
    assert [e.func for e in events if e.kind == "event"] == ["set_pte_at"] * 8
    assert counted_tracer_calls["traced_calls"] > 0
    assert not trace_mod.call_tracing_active()  # capture() switched it off again


def test_the_code_patch_follows_enable_disable_and_collection() -> None:
    gc.collect()
    assert not trace_mod.call_tracing_active()
    k = Kernel("latest", trace=True)
    assert trace_mod.call_tracing_active()
    k.tracer.enabled = False
    assert not trace_mod.call_tracing_active()
    with k.trace():
        assert trace_mod.call_tracing_active()
    assert not trace_mod.call_tracing_active()
    k.tracer.enabled = True
    other = Kernel("latest", trace=True)
    del k
    gc.collect()
    assert trace_mod.call_tracing_active()  # the other kernel still listens
    other.tracer.enabled = False
    assert not trace_mod.call_tracing_active()
