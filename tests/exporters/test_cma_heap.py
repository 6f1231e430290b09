"""The dma-heap CMA heap (drivers/dma-buf/heaps/cma_heap.c), kernel-spec §6.2.

One physically contiguous block; ``mmap`` refuses non-shared vmas and installs a
fault handler, so pages arrive lazily, one per touch.  v6.1 sets no vm flags and
returns a refcounted page; 6.1.0 had an off-by-one bounds check (``pgoff >
pagecount``), so after ``mremap`` growth the first page past the end read
``pages[pagecount]`` (R34, fixed in 6.11 and in 6.1.y since Sept 2024, so not in
the modelled 6.1.192); since 6.8 the vma is ``VM_IO|VM_PFNMAP|VM_DONTEXPAND|
VM_DONTDUMP``, pages go in with ``vmf_insert_pfn`` and growth fails EFAULT (R33).
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from dmabuf_sim import Kernel, Process
from dmabuf_sim.dma_buf.core import DmaBuf
from dmabuf_sim.errors import BUS_ADRERR, SIGBUS, KernelOops
from dmabuf_sim.mm.mmap import MAP_FIXED
from dmabuf_sim.mm.pgtable import pte_pfn, pte_special
from dmabuf_sim.mm.vma import VM_DONTDUMP, VM_DONTEXPAND, VM_IO, VM_MIXEDMAP, VM_PFNMAP
from dmabuf_sim.spec import SPECS, Spec
from dmabuf_sim.uapi import DMA_HEAP_IOCTL_ALLOC, DmaHeapAllocationData

# 6.1.0 as released: the off-by-one reached 6.1.y's fix only in Sept 2024 (ea5ff5d351b5),
# so v6.1 (6.1.192) no longer has it.
V61_0 = SPECS["v6.1"].replace(name="v6.1.0", cma_heap_fault_off_by_one=True)
MODERN = ["v6.1", "v6.12", "latest"]
FIXED = ["v6.12", "latest"]
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
MREMAP_MAYMOVE = 1
PFNMAP_FLAGS = VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP


def _buffer(spec: str | Spec, pages: int = 4) -> tuple[Kernel, Process, int, DmaBuf]:
    k = Kernel(spec)
    p = k.spawn("cma")
    heap = p.open("/dev/dma_heap/reserved", os.O_RDONLY | os.O_CLOEXEC)
    data = DmaHeapAllocationData(len=pages * PAGE, fd_flags=os.O_RDWR | os.O_CLOEXEC)
    p.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
    p.close(heap)
    dmabuf = p.file(data.fd).private_data
    assert isinstance(dmabuf, DmaBuf)
    return k, p, int(data.fd), dmabuf


def _present(p: Process, addr: int, npages: int) -> list[int]:
    """Page indexes (relative to ``addr``) that have a PTE."""
    vpn = addr // PAGE
    return [v - vpn for v, _pte in p.mm.pgtable.iter_range(vpn, vpn + npages)]


@pytest.mark.parametrize("spec", MODERN)
def test_buffer_is_one_contiguous_zeroed_block(spec: str) -> None:
    """cma_alloc: one sg entry covering every page; the pages read as zeros."""
    _k, p, fd, dmabuf = _buffer(spec, 8)
    buffer = dmabuf.priv
    assert buffer.sg_table.entries == [(buffer.first_pfn, 8)] and buffer.pagecount == 8
    addr = p.mmap(0, 8 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert p.read_memory(addr, 8 * PAGE) == bytes(8 * PAGE)


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("pages", [1, 4])
def test_r57_map_private_einval(spec: str, pages: int) -> None:
    """R57: cma_heap_mmap refuses a vma without VM_SHARED|VM_MAYSHARE → EINVAL, even for one
    page; nothing is left mapped and no file reference is leaked."""
    _k, p, fd, _d = _buffer(spec)
    count = p.file(fd).f_count
    for prot in (mmap.PROT_READ, RW):
        with pytest.raises(OSError) as ei:
            p.mmap(0, pages * PAGE, prot, mmap.MAP_PRIVATE, fd, 0)
        assert ei.value.errno == errno.EINVAL
    assert not p.mm.vmas and p.file(fd).f_count == count


@pytest.mark.parametrize("spec", MODERN)
def test_faults_are_lazy_one_pte_per_touched_page(spec: str) -> None:
    """No PTE after mmap(2); each touch faults in exactly its own page, at the pfn
    ``first_pfn + vm_pgoff + index`` (R60)."""
    _k, p, fd, dmabuf = _buffer(spec, 8)
    first = dmabuf.priv.first_pfn
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 3 * PAGE)  # pages 3..6
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_ops is not None and vma.vm_ops.fault is not None
    assert _present(p, addr, 4) == []
    p.read_memory(addr + 2 * PAGE, 1)
    assert _present(p, addr, 4) == [2]
    p.write_memory(addr, b"w")
    assert _present(p, addr, 4) == [0, 2]
    assert pte_pfn(p.mm.pgtable.get(addr // PAGE + 2)) == first + 5
    assert pte_pfn(p.mm.pgtable.get(addr // PAGE)) == first + 3


@pytest.mark.parametrize("spec", MODERN)
def test_two_mappings_share_the_pages(spec: str) -> None:
    """Writes through one mapping are seen through another at a different offset."""
    _k, p, fd, _d = _buffer(spec)
    a = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    b = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 2 * PAGE)
    p.write_memory(a + 3 * PAGE + 100, b"from-a")
    assert p.read_memory(b + PAGE + 100, 6) == b"from-a"
    p.write_memory(b, b"from-b")
    assert p.read_memory(a + 2 * PAGE, 6) == b"from-b"


# -- v6.1: no flags, refcounted pages, growth and the off-by-one ---------------------------------


def test_v61_no_vm_flags_and_the_fault_returns_a_refcounted_page() -> None:
    """v6.1: cma_heap_mmap sets none of IO/PFNMAP/DONTEXPAND/DONTDUMP; the fault hands the
    core ``vmf->page`` after get_page: the page gains a reference and a mapcount, which
    munmap gives back."""
    k, p, fd, dmabuf = _buffer("v6.1")
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & (PFNMAP_FLAGS | VM_MIXEDMAP) == 0
    p.read_memory(addr + PAGE, 1)
    pte = p.mm.pgtable.get(addr // PAGE + 1)
    assert not pte_special(pte)
    page = k.mem.page_if_exists(dmabuf.priv.first_pfn + 1)
    assert page is not None and (page.refcount, page.mapcount) == (2, 1)
    p.munmap(addr, 4 * PAGE)
    assert (page.refcount, page.mapcount) == (1, 0)


def test_r34_v61_growth_succeeds_and_the_first_page_past_the_end_oopses() -> None:
    """R34 (v6.1): without VM_DONTEXPAND mremap may grow the vma past the buffer; the fault at
    ``pgoff == pagecount`` passes the off-by-one check ``pgoff > pagecount`` and reads
    ``buffer->pages[pagecount]``, past the array (a KASAN slab-out-of-bounds: KernelOops)."""
    k, p, fd, _d = _buffer(V61_0)
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    new = p.mremap(addr, 4 * PAGE, 6 * PAGE, MREMAP_MAYMOVE)
    assert p.mm.vma_lookup(new).vm_end - new == 6 * PAGE
    p.read_memory(new + 3 * PAGE, 1)  # the last real page is fine
    with pytest.raises(KernelOops) as ei:
        p.read_memory(new + 4 * PAGE, 1)
    assert ei.value.rule == "R34" and ei.value.func == "cma_heap_vm_fault"
    assert k.tainted


def test_r34_v61_192_has_the_stable_fix_the_first_page_past_the_end_sigbus() -> None:
    """R34 (v6.1 = 6.1.192, with ea5ff5d351b5 from 6.1.y): the grown vma's first page past
    the buffer fails ``pgoff >= pagecount`` → SIGBUS, where 6.1.0 read past the array."""
    k, p, fd, _d = _buffer("v6.1")
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    new = p.mremap(addr, 4 * PAGE, 6 * PAGE, MREMAP_MAYMOVE)
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(new + 4 * PAGE, 1)
    assert (ei.value.si_code, ei.value.addr) == (BUS_ADRERR, new + 4 * PAGE)
    assert not k.tainted


def test_r34_v61_pages_beyond_pagecount_sigbus() -> None:
    """R34 (v6.1): ``pgoff > pagecount`` is refused with VM_FAULT_SIGBUS → SIGBUS/BUS_ADRERR
    at the faulting address, and nothing is mapped there."""
    k, p, fd, _d = _buffer("v6.1")
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    new = p.mremap(addr, 4 * PAGE, 6 * PAGE, MREMAP_MAYMOVE)
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(new + 5 * PAGE + 8, 1)
    assert (ei.value.si_code, ei.value.addr) == (BUS_ADRERR, new + 5 * PAGE + 8)
    assert _present(p, new, 6) == [] and not k.tainted


# -- v6.12 / latest: PFNMAP, vmf_insert_pfn, no growth ---------------------------------------------


@pytest.mark.parametrize("spec", FIXED)
def test_pfnmap_flags_and_special_ptes_without_refcounts(spec: str) -> None:
    """Since 6.8: VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP; vmf_insert_pfn puts a special PTE
    and no struct page is touched."""
    k, p, fd, dmabuf = _buffer(spec)
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & PFNMAP_FLAGS == PFNMAP_FLAGS
    struct_pages = k.mem.materialised_pages
    p.write_memory(addr + 2 * PAGE, b"x")
    pte = p.mm.pgtable.get(addr // PAGE + 2)
    assert pte_special(pte) and pte_pfn(pte) == dmabuf.priv.first_pfn + 2
    assert k.mem.materialised_pages == struct_pages


@pytest.mark.parametrize("spec", FIXED)
def test_r33_growth_efault_and_the_mapping_is_unchanged(spec: str) -> None:
    """R33: mremap growth of a VM_DONTEXPAND|VM_PFNMAP vma fails EFAULT; the old mapping and
    its PTEs stay as they were."""
    _k, p, fd, _d = _buffer(spec)
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"keep")
    for flags in (0, MREMAP_MAYMOVE):
        with pytest.raises(OSError) as ei:
            p.mremap(addr, 4 * PAGE, 5 * PAGE, flags)
        assert ei.value.errno == errno.EFAULT
    vma = p.mm.vma_lookup(addr)
    assert (vma.vm_start, vma.vm_end) == (addr, addr + 4 * PAGE)
    assert _present(p, addr, 4) == [0] and p.read_memory(addr, 4) == b"keep"


@pytest.mark.parametrize("spec", MODERN)
def test_release_returns_the_contiguous_range(spec: str) -> None:
    """R16/R17: the last reference releases the buffer; cma_release frees the whole range."""
    k = Kernel(spec)
    baseline = k.mem.allocated_pages
    p = k.spawn("cma")
    heap = p.open("/dev/dma_heap/reserved", os.O_RDONLY)
    data = DmaHeapAllocationData(len=4 * PAGE, fd_flags=os.O_RDWR)
    p.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
    dmabuf = p.file(data.fd).private_data
    first = dmabuf.priv.first_pfn
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, data.fd, 0)
    p.write_memory(addr, b"x" * 4 * PAGE)
    p.close(data.fd)
    assert k.mem.allocated_pages == baseline + 4
    p.munmap(addr, 4 * PAGE)
    assert dmabuf.release_calls == 1 and k.mem.allocated_pages == baseline
    assert not any(k.mem.pfn_allocated(first + i) for i in range(4))
    assert k.bad_pages == []


# -- R35: merging before ->mmap --------------------------------------------------------------------


def test_r35_v61_adjacent_mmap_past_the_end_merges_and_skips_the_bounds_check() -> None:
    """R35 (v6.1): with no VM_SPECIAL flag on the vma, a MAP_FIXED mmap right after it with
    the contiguous pgoff is merged into it before ->mmap would run — so
    dma_buf_mmap_internal never rejects page 4 of a 4-page buffer, and touching it hits
    the off-by-one (R34)."""
    k, p, fd, _d = _buffer(V61_0)
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    past = p.mmap(addr + 4 * PAGE, PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 4 * PAGE)
    assert past == addr + 4 * PAGE
    (vma,) = p.mm.vmas
    assert (vma.vm_start, vma.vm_end) == (addr, addr + 5 * PAGE)
    with pytest.raises(KernelOops) as ei:
        p.read_memory(past, 1)
    assert ei.value.rule == "R34" and k.tainted


@pytest.mark.parametrize("spec", FIXED)
def test_r35_pfnmap_vmas_never_merge_so_the_bounds_check_runs(spec: str) -> None:
    """R35/R1 (6.8+): VM_PFNMAP|VM_DONTEXPAND make the vma unmergeable: the same mmap reaches
    dma_buf_mmap_internal and fails EINVAL; a legal adjacent mapping stays a second vma."""
    _k, p, fd, _d = _buffer(spec)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    with pytest.raises(OSError) as ei:
        p.mmap(addr + 2 * PAGE, 3 * PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 2 * PAGE)
    assert ei.value.errno == errno.EINVAL
    p.mmap(addr + 2 * PAGE, 2 * PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 2 * PAGE)
    assert len(p.mm.vmas) == 2
