"""The buddy allocator, CMA, gfp flags, and misuse reported the kernel's way.

mm/page_alloc.c: free lists per order, split on allocation (``expand``),
merge with the buddy on free (``__free_one_page``); a failed request changes
nothing.  mm/cma.c: first-fit contiguous runs.  Misuse: a double free is
``VM_BUG_ON_PAGE`` (an oops); freeing a mapped or still-referenced page is
``bad_page()`` ("Bad page state", the block is leaked) — never a Python
ValueError (issue 11, item 5).
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel, KernelOops
from dmabuf_sim.errors import SIGKILL, OutOfMemory
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.gfp import __GFP_NOWARN, __GFP_ZERO, GFP_KERNEL, gfp_name
from dmabuf_sim.mm.memory import get_page, put_page
from dmabuf_sim.mm.page_alloc import MAX_ORDER, NR_NODES
from dmabuf_sim.uaccess import copy_to_user
from dmabuf_sim.uapi import DMA_HEAP_IOCTL_ALLOC, DmaBufSync, DmaHeapAllocationData

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
SMALL = 1 << 13  # 32 MiB: small enough to exhaust in a test


def free_state(k: Kernel) -> list[list[tuple[int, int]]]:
    return [sorted(z.free_blocks()) for z in k.mem._zones]


# -- the buddy: split, merge, capacity ------------------------------------------------------------


def test_split_hands_out_buddies_and_merge_restores_the_block() -> None:
    """expand() keeps the low half and lists the upper halves; freeing both buddies
    merges them back up to the block they came from (scatter off: the local node)."""
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    mem.scatter = False
    fresh = free_state(k)
    a = mem.alloc_pages(0)
    b = mem.alloc_pages(0)
    assert b == a ^ 1  # the buddy of a, from the order-0 list expand() left
    c = mem.alloc_pages(1)
    assert c == a + 2  # the order-1 buddy of the pair
    mem.free_pages(a, 0)
    mem.free_pages(c, 1)
    mem.free_pages(b, 0)
    assert free_state(k) == fresh
    mem.check_consistency()


def test_scatter_interleaves_nodes_so_consecutive_allocations_are_not_adjacent() -> None:
    k = Kernel("latest")
    pfns = [k.mem.alloc_pages(0) for _ in range(3 * NR_NODES)]
    assert all(abs(b - a) > 1 for a, b in itertools.pairwise(pfns))
    nodes = [k.mem._zone_of(p).nid for p in pfns]
    assert all(a != b for a, b in itertools.pairwise(nodes))


def test_one_failed_huge_heap_allocation_costs_no_capacity() -> None:
    """Issue 15 item 1: a 1 TiB DMA_HEAP_IOCTL_ALLOC is ENOMEM, and afterwards the machine
    has exactly the free pages it had before; anonymous memory, vgem, udmabuf and the
    shoot-down exporter all still get pages."""
    k = Kernel("v6.12", ram_pages=SMALL)
    p = k.spawn("app")
    heap = p.open("/dev/dma_heap/system", os.O_RDONLY)
    before = k.mem.nr_free_pages()
    with pytest.raises(OSError) as ei:
        p.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, DmaHeapAllocationData(len=1 << 40, fd_flags=2))
    assert ei.value.errno == errno.ENOMEM
    assert k.mem.nr_free_pages() == before
    k.mem.check_consistency()
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    p.write_memory(addr, b"x" * 4 * PAGE)
    for name in ("vgem", "udmabuf", "shootdown", "system_heap"):
        fd = EXPORTERS[name].make_fd(p, 8 * PAGE, os.O_RDWR)
        buf = p.mmap(0, 8 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        p.write_memory(buf, b"y")
        assert p.read_memory(buf, 1) == b"y"


def test_exhaustion_then_everything_back_merges_to_the_largest_blocks() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    fresh = free_state(k)
    free = mem.nr_free_pages() - sum(mem._cma_free.values())  # the buddy zones' share
    got = []
    with pytest.raises(OutOfMemory):
        while True:
            got.append(mem.alloc_pages(0, GFP_KERNEL | __GFP_NOWARN))
    assert len(got) == free
    with pytest.raises(OutOfMemory):
        mem.alloc_pages(0)
    for pfn in got:
        mem.free_pages(pfn, 0)
    assert free_state(k) == fresh
    mem.alloc_pages(MAX_ORDER)  # whole 4 MiB blocks exist again


@given(
    scatter=st.booleans(),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("alloc"), st.integers(0, MAX_ORDER)),
            st.tuples(st.just("cma"), st.integers(1, 700)),
            st.tuples(st.just("free"), st.integers(0, 10**6)),
        ),
        max_size=60,
    ),
)
def test_any_sequence_keeps_the_tiling_and_gives_every_page_back(
    scatter: bool, ops: list[tuple[str, int]]
) -> None:
    """Rule: free and allocated blocks tile the managed frames exactly after every step,
    a failed request changes nothing, and once everything is freed the free lists are
    those of a fresh machine (no capacity is ever lost)."""
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    mem.scatter = scatter
    fresh = free_state(k)
    fresh_cma = dict(mem._cma_free)
    baseline = mem.allocated_pages
    live: list[tuple[str, int, int]] = []
    for op, n in ops:
        before = (free_state(k), dict(mem._cma_free), mem.allocated_pages)
        try:
            if op == "alloc":
                live.append(("buddy", mem.alloc_pages(n), n))
            elif op == "cma":
                live.append(("cma", mem.alloc_contig(n), n))
            elif live:
                kind, pfn, size = live.pop(n % len(live))
                if kind == "buddy":
                    mem.free_pages(pfn, size)
                else:
                    assert mem.free_contig(pfn, size)
        except OutOfMemory:
            assert (free_state(k), dict(mem._cma_free), mem.allocated_pages) == before
        mem.check_consistency()
    for kind, pfn, size in live:
        if kind == "buddy":
            mem.free_pages(pfn, size)
        else:
            mem.free_contig(pfn, size)
    assert mem.allocated_pages == baseline
    assert free_state(k) == fresh and mem._cma_free == fresh_cma
    assert k.bad_pages == []


def test_cma_is_first_fit_and_a_partial_release_is_allowed() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    a = mem.alloc_contig(10)
    b = mem.alloc_contig(10)
    assert b == a + 10
    assert mem.free_contig(a + 2, 3)  # cma_release of part of an allocation
    assert not mem.pfn_allocated(a + 3) and mem.pfn_allocated(a + 5)
    assert mem.alloc_contig(3) == a + 2  # first fit finds the hole
    assert mem.alloc_contig(4) == b + 10  # too big for any hole
    assert mem.free_contig(0x100, 1) is False  # cma_pages_valid: not the CMA area
    mem.check_consistency()


# -- gfp: zeroing and what the previous owner left ------------------------------------------------


def test_without_gfp_zero_a_page_keeps_what_its_previous_owner_wrote() -> None:
    """What lets an exporter that forgot __GFP_ZERO leak data: the DRAM bytes and the
    CPU cache lines of the previous owner are still there."""
    k = Kernel("latest")
    mem = k.mem
    mem.scatter = False
    pfn = mem.alloc_pages(0)
    mem.write(pfn * PAGE, b"secret in DRAM")
    k.cache.store(pfn * PAGE + 100, b"secret in cache")  # a dirty line, never written back
    mem.free_pages(pfn, 0)
    again = mem.alloc_pages(0, GFP_KERNEL)
    assert again == pfn  # LIFO: the hot page comes back first
    assert mem.read(pfn * PAGE, 14) == b"secret in DRAM"
    assert k.cache.load(pfn * PAGE + 100, 15) == b"secret in cache"
    mem.free_pages(again, 0)
    zeroed = mem.alloc_pages(0, GFP_KERNEL | __GFP_ZERO)
    assert zeroed == pfn
    assert k.cache.load(pfn * PAGE, PAGE) == bytes(PAGE)


def test_default_and_init_on_alloc_zero() -> None:
    k = Kernel("latest")
    mem = k.mem
    mem.scatter = False
    pfn = mem.alloc_pages(0)
    mem.write(pfn * PAGE, b"old")
    mem.free_pages(pfn, 0)
    assert mem.read(mem.alloc_pages(0) * PAGE, 3) == bytes(3)  # no gfp: zeroed
    mem.free_pages(pfn, 0)
    mem.write(pfn * PAGE, b"old")
    mem.init_on_alloc = True
    assert mem.read(mem.alloc_pages(0, GFP_KERNEL) * PAGE, 3) == bytes(3)


def test_contig_without_gfp_zero_keeps_old_bytes() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    first = mem.alloc_contig(2)
    mem.write(first * PAGE + PAGE, b"cma leftovers")
    mem.free_contig(first, 2)
    assert mem.read(mem.alloc_contig(2, GFP_KERNEL) * PAGE + PAGE, 13) == b"cma leftovers"


def test_gfp_names_and_bad_gfp() -> None:
    assert gfp_name(GFP_KERNEL) == "GFP_KERNEL"
    assert gfp_name(GFP_KERNEL | __GFP_ZERO) == "GFP_KERNEL|__GFP_ZERO"
    k = Kernel("latest", ram_pages=SMALL)
    with pytest.raises(TypeError, match="gfp must be an int"):
        k.mem.alloc_pages(0, "GFP_KERNEL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="__GFP_BITS_MASK"):
        k.mem.alloc_pages(0, 1 << 40)


# -- exhaustion is the kernel's answer, never the interpreter's MemoryError ----------------------


def test_out_of_memory_is_a_null_return_not_a_memoryerror() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    with k.trace() as events, pytest.raises(OutOfMemory) as ei:
        k.mem.alloc_contig(1 << 30)
    assert not isinstance(ei.value, MemoryError)
    assert isinstance(ei.value, KernelOops)  # escaping, it is an unchecked NULL
    assert "return -ENOMEM" in str(ei.value)
    assert [e for e in events if e.func == "warn_alloc"]


def test_order_above_max_warns_and_fails() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    with pytest.raises(OutOfMemory):
        k.mem.alloc_pages(MAX_ORDER + 1)
    assert k.warnings == ["__alloc_pages: WARN_ON(order > MAX_PAGE_ORDER)"]
    with pytest.raises(OutOfMemory):
        k.mem.alloc_pages(MAX_ORDER + 1, GFP_KERNEL | __GFP_NOWARN)
    assert len(k.warnings) == 1


def _exhaust(k: Kernel) -> list[int]:
    hog = []
    for order in range(MAX_ORDER, -1, -1):
        while True:
            try:
                hog.append(k.mem.alloc_pages(order, GFP_KERNEL | __GFP_NOWARN))
            except OutOfMemory:
                break
    return hog


def test_anonymous_fault_without_memory_oom_kills_the_task() -> None:
    """VM_FAULT_OOM from user mode: pagefault_out_of_memory kills the faulting task
    (oom_kill_allocating_task); its fds and mappings go, and its pages come back."""
    k = Kernel("latest", ram_pages=SMALL)
    p = k.spawn("victim")
    other = k.spawn("bystander")
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 8 * PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    p.write_memory(addr, b"mine")
    owned = k.mem.allocated_pages
    hog = _exhaust(k)
    with pytest.raises(SIGKILL) as ei:
        p.write_memory(addr + PAGE, b"one page too many")
    assert (ei.value.addr, ei.value.pid) == (addr + PAGE, p.pid)
    assert not p.alive and p.pid not in k.processes and p.files.fds == {}
    assert other.alive
    with pytest.raises(ValueError, match="has exited"):
        p.close(fd)
    for pfn in hog:
        k.mem.free_pages(pfn, k.mem._blocks[pfn])
    assert k.mem.allocated_pages == owned - 1  # the victim's anonymous page is back


def test_kernel_write_to_user_memory_without_memory_is_efault() -> None:
    """From kernel mode VM_FAULT_OOM goes through the exception-table fixup: copy_to_user
    fails with -EFAULT and nobody is killed."""
    k = Kernel("latest", ram_pages=SMALL)
    p = k.spawn("app")
    addr = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _exhaust(k)
    with k.running(p):
        assert copy_to_user(k, addr, DmaBufSync(1)) == -errno.EFAULT
    assert p.alive


# -- misuse, reported as the kernel reports it (issue 11, item 5) ---------------------------------


def test_double_free_is_vm_bug_on_page() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    pfn = k.mem.alloc_pages(2)
    k.mem.free_pages(pfn, 2)
    with pytest.raises(KernelOops, match=r"VM_BUG_ON_PAGE\(page_ref_count\(page\) == 0\)"):
        k.mem.free_pages(pfn, 2)
    assert [b.pfn for b in k.bad_pages] == [pfn]
    k.mem.check_consistency()


def test_free_with_the_wrong_order_is_vm_bug_on_page() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    pfn = k.mem.alloc_pages(2)
    with pytest.raises(KernelOops, match="not the head of an allocated block"):
        k.mem.free_pages(pfn, 1)
    assert k.mem.pfn_allocated(pfn + 3)  # nothing was freed


def test_freeing_a_mapped_page_is_bad_page_state_and_the_block_is_leaked() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    pfn = mem.alloc_pages(1)
    mem.pfn_to_page(pfn + 1).mapcount = 1  # a PTE maps the tail page (without a reference)
    allocated = mem.allocated_pages
    mem.free_pages(pfn, 1)  # no exception: bad_page() reports and carries on
    assert [(b.pfn, b.reason) for b in k.bad_pages] == [
        (pfn + 1, "Bad page state: nonzero mapcount")
    ]
    assert mem.pfn_allocated(pfn) and mem.allocated_pages == allocated
    assert mem.leaked_pages == 2
    mem.check_consistency()


def test_freeing_a_tail_page_someone_references_is_nonzero_refcount() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    pfn = mem.alloc_pages(2)
    get_page(mem.pfn_to_page(pfn + 3))
    mem.free_pages(pfn, 2)
    assert [b.reason for b in k.bad_pages] == ["Bad page state: nonzero _refcount"]
    put_page(k, mem.pfn_to_page(pfn + 3))  # the leaked page stays leaked, silently
    assert len(k.bad_pages) == 1 and mem.pfn_allocated(pfn + 3)


def test_freeing_an_order0_page_someone_references_drops_only_the_owner_reference() -> None:
    """__free_pages: put_page_testzero is false, so the page lives until the last put."""
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    pfn = mem.alloc_pages(0)
    page = mem.pfn_to_page(pfn)
    get_page(page)
    mem.free_pages(pfn, 0)
    assert mem.pfn_allocated(pfn) and k.bad_pages == []
    put_page(k, page)
    assert not mem.pfn_allocated(pfn) and k.bad_pages == []


def test_freeing_a_high_order_block_with_a_referenced_head_frees_the_tail() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    pfn = mem.alloc_pages(3)
    page = mem.pfn_to_page(pfn)
    get_page(page)
    allocated = mem.allocated_pages
    mem.free_pages(pfn, 3)
    assert mem.pfn_allocated(pfn) and not mem.pfn_allocated(pfn + 1)
    assert mem.allocated_pages == allocated - 7  # the seven tail pages went back now
    put_page(k, page)
    assert not mem.pfn_allocated(pfn) and k.bad_pages == []
    mem.check_consistency()


def test_cma_release_of_pages_in_use_warns_and_they_live_until_the_last_put() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    mem = k.mem
    first = mem.alloc_contig(4)
    page = mem.pfn_to_page(first + 2)
    get_page(page)
    assert mem.free_contig(first, 4)
    assert k.warnings == ["free_contig_range: WARN_ON(count != 0: 1 pages are still in use!)"]
    assert mem.pfn_allocated(first + 2) and not mem.pfn_allocated(first + 1)
    put_page(k, page)
    assert not mem.pfn_allocated(first + 2) and k.bad_pages == []
    mem.check_consistency()


def test_cma_double_release_is_vm_bug_on_page() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    first = k.mem.alloc_contig(4)
    k.mem.free_contig(first, 4)
    with pytest.raises(KernelOops, match="VM_BUG_ON_PAGE"):
        k.mem.free_contig(first + 1, 2)
    assert k.bad_pages[0].pfn == first + 1


def test_python_misuse_of_the_allocator_is_typeerror_or_valueerror() -> None:
    k = Kernel("latest", ram_pages=SMALL)
    with pytest.raises(TypeError, match="order must be an int"):
        k.mem.alloc_pages(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order must be >= 0"):
        k.mem.alloc_pages(-1)
    with pytest.raises(ValueError, match="npages must be positive"):
        k.mem.alloc_contig(0)


def test_populate_that_runs_out_of_memory_gives_up_on_the_vma_and_kills_nobody() -> None:
    """__mm_populate ignores errors: the first VM_FAULT_OOM ends the work on that vma
    (populate_vma_page_range fails), mmap still succeeds and no task is killed."""
    k = Kernel("latest", ram_pages=SMALL)
    p = k.spawn("app")
    free = k.mem.nr_free_pages() - k.mem.nr_free_cma_pages()
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x8000  # MAP_POPULATE
    with k.trace() as events:
        addr = p.mmap(0, 2 * free * PAGE, RW, flags)
    assert p.alive and addr
    assert len(p.mm.pgtable) == free  # every free page went in, then it stopped
    faults = [e for e in events if e.kind == "entry" and e.func == "handle_mm_fault"]
    assert len(faults) == free + 1
    p.munmap(addr, 2 * free * PAGE)
    assert k.mem.nr_free_pages() - k.mem.nr_free_cma_pages() == free
