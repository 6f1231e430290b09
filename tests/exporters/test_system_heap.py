"""The dma-heap system heap (drivers/dma-buf/heaps/system_heap.c), kernel-spec §6.1.

Scattered chunks (orders 8, 4, 0) mapped eagerly with ``remap_pfn_range`` from
``vm_pgoff`` — one page per call up to 6.18 (v6.1, v6.12), one sg chunk per call
in 6.19 (latest) — with the default cacheable protection; coherency only through
begin/end_cpu_access on the *mapped* attachments; vmap counted by the core.

The buffer most tests use has 19 pages: an order-4 chunk (pages 0-15) and three
order-0 chunks (pages 16, 17, 18), each physically somewhere else.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel, Process
from dmabuf_sim.coherency import CoherencyChecker
from dmabuf_sim.device import Device
from dmabuf_sim.dma_buf import (
    IosysMap,
    dma_buf_attach,
    dma_buf_map_attachment_unlocked,
    dma_buf_vmap_unlocked,
    dma_buf_vunmap_unlocked,
)
from dmabuf_sim.dma_buf.core import DmaBuf
from dmabuf_sim.mm.pgtable import CACHE_WB, pte_cache_mode, pte_pfn, pte_special
from dmabuf_sim.mm.vma import VM_DONTDUMP, VM_DONTEXPAND, VM_IO, VM_PFNMAP
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
    DMA_HEAP_IOCTL_ALLOC,
    DmaBufSync,
    DmaHeapAllocationData,
)

MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
NPAGES = 19  # chunks: 16 + 1 + 1 + 1
REMAP_FLAGS = VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP


def _buffer(spec: str, pages: int = NPAGES) -> tuple[Kernel, Process, int, DmaBuf]:
    k = Kernel(spec)
    p = k.spawn("heap")
    heap = p.open("/dev/dma_heap/system", os.O_RDONLY | os.O_CLOEXEC)
    data = DmaHeapAllocationData(len=pages * PAGE, fd_flags=os.O_RDWR | os.O_CLOEXEC)
    p.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
    p.close(heap)
    dmabuf = p.file(data.fd).private_data
    assert isinstance(dmabuf, DmaBuf)
    return k, p, int(data.fd), dmabuf


def _ptes(p: Process, addr: int, npages: int) -> list[tuple[int, int]]:
    vpn = addr // PAGE
    return list(p.mm.pgtable.iter_range(vpn, vpn + npages))


def _sync(p: Process, fd: int, flags: int) -> None:
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags))


def _lines(k: Kernel, pfn: int, *, dirty: bool = False) -> int:
    lo, hi = pfn * PAGE, (pfn + 1) * PAGE
    pool = k.cache.dirty if dirty else k.cache.lines
    return sum(1 for base in pool if lo <= base < hi)


def test_buffer_layout_is_one_order4_and_three_order0_chunks() -> None:
    """The fixture the other tests rely on: 19 pages = 16 + 1 + 1 + 1, not contiguous."""
    _k, _p, _fd, dmabuf = _buffer("v6.12")
    entries = dmabuf.priv.sg_table.entries
    assert [n for _pfn, n in entries] == [16, 1, 1, 1]
    firsts = [pfn for pfn, _n in entries]
    assert all(b != a + n for (a, n), b in zip(entries, firsts[1:], strict=False))


# -- R36: eager remap_pfn_range ----------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_r36_mmap_sets_remap_flags_and_every_pte_before_any_access(spec: str) -> None:
    """R36: after mmap(2) returns the vma has VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP, no
    fault handler, and every PTE is present, special (no struct page) and write-back
    cached; loading through it takes no fault at all."""
    k, p, fd, _d = _buffer(spec)
    addr = p.mmap(0, NPAGES * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_flags & REMAP_FLAGS == REMAP_FLAGS
    assert vma.vm_ops is None or vma.vm_ops.fault is None
    ptes = _ptes(p, addr, NPAGES)
    assert len(ptes) == NPAGES == len(p.mm.pgtable)
    assert all(pte_special(pte) and pte_cache_mode(pte) == CACHE_WB for _v, pte in ptes)
    struct_pages = k.mem.materialised_pages
    with k.trace() as events:
        p.write_memory(addr, b"x" * (NPAGES * PAGE))
        assert p.read_memory(addr + 17 * PAGE, 1) == b"x"
    assert not [e for e in events if e.func == "handle_mm_fault"]
    assert k.mem.materialised_pages == struct_pages


@pytest.mark.parametrize("spec", MODERN)
def test_r40_fork_copies_the_pfnmap_ptes(spec: str) -> None:
    """R40: PFNMAP PTEs are copied at fork; the child sees the parent's data without a fault,
    and the parent sees the child's writes (same pages)."""
    k, p, fd, _d = _buffer(spec)
    addr = p.mmap(0, NPAGES * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr + 16 * PAGE, b"parent")
    child = p.fork()
    assert _ptes(child, addr, NPAGES) == _ptes(p, addr, NPAGES)
    with k.trace() as events:
        assert child.read_memory(addr + 16 * PAGE, 6) == b"parent"
    assert not [e for e in events if e.func == "handle_mm_fault"]
    child.write_memory(addr + 18 * PAGE, b"child")
    assert p.read_memory(addr + 18 * PAGE, 5) == b"child"


# -- R37: MAP_PRIVATE and the remap granularity ------------------------------------------------

PRIVATE_CASES = [
    # (pages, pgoff, ok on v6.1/v6.12 (page per call), ok on latest (chunk per call))
    pytest.param(1, 0, True, True, id="1-page"),
    pytest.param(1, 17, True, True, id="1-page-in-order0-chunk"),
    pytest.param(2, 0, False, True, id="2-pages-inside-chunk"),
    pytest.param(16, 0, False, True, id="whole-order4-chunk"),
    pytest.param(3, 5, False, True, id="3-pages-mid-chunk"),
    pytest.param(2, 15, False, False, id="2-pages-spanning-chunks"),
    pytest.param(2, 16, False, False, id="2-order0-chunks"),
]


@pytest.mark.parametrize(("pages", "pgoff", "ok_paged", "ok_chunked"), PRIVATE_CASES)
@pytest.mark.parametrize("spec", MODERN)
def test_r37_private_mapping_succeeds_only_if_one_remap_call_covers_it(
    spec: str, pages: int, pgoff: int, ok_paged: bool, ok_chunked: bool
) -> None:
    """R37: remap_pfn_range on a COW (MAP_PRIVATE) vma must cover the whole vma in one call.
    Up to 6.18 the heap remaps page by page, so only 1-page private mappings work; 6.19
    (04c7adb5871a) remaps per sg chunk, so a private mapping inside one chunk works and one
    spanning two chunks still fails EINVAL — leaving no vma, PTE or file reference."""
    _k, p, fd, _d = _buffer(spec)
    ok = ok_chunked if spec == "latest" else ok_paged
    count = p.file(fd).f_count
    if ok:
        addr = p.mmap(0, pages * PAGE, RW, mmap.MAP_PRIVATE, fd, pgoff * PAGE)
        assert len(_ptes(p, addr, pages)) == pages
        return
    with pytest.raises(OSError) as ei:
        p.mmap(0, pages * PAGE, RW, mmap.MAP_PRIVATE, fd, pgoff * PAGE)
    assert ei.value.errno == errno.EINVAL
    assert not p.mm.vmas and len(p.mm.pgtable) == 0
    assert p.file(fd).f_count == count


def test_r37_latest_private_chunk_mapping_is_copy_on_write() -> None:
    """On latest a multi-page private mapping reads the buffer, but its writes are private
    copies: the shared mapping (the buffer) never sees them."""
    _k, p, fd, _d = _buffer("latest")
    shared = p.mmap(0, NPAGES * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(shared + 3 * PAGE, b"buffer")
    priv = p.mmap(0, 4 * PAGE, RW, mmap.MAP_PRIVATE, fd, 2 * PAGE)
    assert p.read_memory(priv + PAGE, 6) == b"buffer"
    p.write_memory(priv + PAGE, b"mine!!")
    assert p.read_memory(priv + PAGE, 6) == b"mine!!"
    assert p.read_memory(shared + 3 * PAGE, 6) == b"buffer"


# -- R60: vm_pgoff selects the buffer page ------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
@given(data=st.data())
def test_r60_mmap_at_pgoff_maps_the_buffer_pages_from_pgoff(spec: str, data: st.DataObject) -> None:
    """R60: a mapping at page offset ``pgoff`` maps buffer page ``pgoff + i`` at page ``i``
    (across chunk boundaries), and sees what the whole-buffer mapping wrote there."""
    pgoff = data.draw(st.integers(0, NPAGES - 1), label="pgoff")
    pages = data.draw(st.integers(1, NPAGES - pgoff), label="pages")
    _k, p, fd, dmabuf = _buffer(spec)
    whole = p.mmap(0, NPAGES * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    for i in range(NPAGES):
        p.write_memory(whole + i * PAGE + 8, bytes([i + 1]) * 4)
    addr = p.mmap(0, pages * PAGE, RW, mmap.MAP_SHARED, fd, pgoff * PAGE)
    sg = dmabuf.priv.sg_table
    got = [pte_pfn(pte) for _vpn, pte in _ptes(p, addr, pages)]
    assert got == [sg.page_pfn(pgoff + i) for i in range(pages)]
    for i in range(pages):
        assert p.read_memory(addr + i * PAGE + 8, 4) == bytes([pgoff + i + 1]) * 4


# -- begin/end_cpu_access: only mapped attachments are synced -----------------------------------


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("attach", "map_it", "coherent", "cleaned"),
    [
        pytest.param(False, False, False, False, id="no-attachment"),
        pytest.param(True, False, False, False, id="attached-not-mapped"),
        pytest.param(True, True, False, True, id="mapped-noncoherent"),
        pytest.param(True, True, True, False, id="mapped-coherent"),
    ],
)
def test_sync_end_cleans_cpu_cache_only_for_mapped_noncoherent_attachments(
    spec: str, attach: bool, map_it: bool, coherent: bool, cleaned: bool
) -> None:
    """end_cpu_access (SYNC_END|WRITE) runs dma_sync_sgtable_for_device for each *mapped*
    attachment: the CPU's dirty lines reach DRAM only then (a coherent device needs no
    cleaning: it snoops)."""
    k, p, fd, dmabuf = _buffer(spec, 1)
    pfn = dmabuf.priv.sg_table.page_pfn(0)
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    if attach:
        at = dma_buf_attach(dmabuf, Device(k, "dev", coherent=coherent))
        if map_it:
            dma_buf_map_attachment_unlocked(at, 2)  # DMA_FROM_DEVICE
    _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE)
    p.write_memory(addr, b"w" * 256)
    assert _lines(k, pfn, dirty=True) == 4
    _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE)
    assert _lines(k, pfn, dirty=True) == (0 if cleaned else 4)
    assert (k.mem.read(pfn * PAGE, 256) == b"w" * 256) == cleaned


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("map_it", [False, True])
def test_sync_start_invalidates_cpu_cache_only_for_mapped_attachments(
    spec: str, map_it: bool
) -> None:
    """begin_cpu_access (SYNC_START|READ) runs dma_sync_sgtable_for_cpu for each mapped
    attachment: the CPU's cached lines go only then."""
    k, p, fd, dmabuf = _buffer(spec, 1)
    pfn = dmabuf.priv.sg_table.page_pfn(0)
    at = dma_buf_attach(dmabuf, Device(k, "gpu"))
    if map_it:
        dma_buf_map_attachment_unlocked(at, 2)
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr, PAGE)
    assert _lines(k, pfn) == PAGE // 64
    _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
    assert _lines(k, pfn) == (0 if map_it else PAGE // 64)


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("follow_protocol", [False, True])
def test_sync_protocol_decides_stale_reads_on_a_noncoherent_device(
    spec: str, follow_protocol: bool
) -> None:
    """The mapping itself is cached and not coherent: with a mapped non-coherent device the
    CoherencyChecker sees stale reads in both directions unless SYNC_START/SYNC_END bracket
    the CPU access; with them, none."""
    k, p, fd, dmabuf = _buffer(spec, 2)
    checker = CoherencyChecker.attach(k)
    gpu = Device(k, "gpu")
    sgt = dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, gpu), 0)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr, 2 * PAGE)  # the CPU caches both pages
    gpu.dma_write(sgt, 0, b"G" * PAGE)  # the device writes page 0 behind the cache
    if follow_protocol:
        _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
    seen = p.read_memory(addr, 4)
    if follow_protocol:
        _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)
        _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE)
    p.write_memory(addr + PAGE, b"C" * 64)  # the CPU writes page 1 into its cache
    if follow_protocol:
        _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE)
    device_saw = gpu.dma_read(sgt, PAGE, 64)
    if follow_protocol:
        assert (seen, device_saw) == (b"GGGG", b"C" * 64)
        assert checker.stale == []
    else:
        assert (seen, device_saw) == (bytes(4), bytes(64))
        readers = {s.reader.split()[0] for s in checker.stale}
        assert readers == {"CPU", "device"}


# -- R54: vmap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_r54_vmap_is_counted_by_the_core_and_the_heap(spec: str) -> None:
    """R54: two vmaps return the same address with one call into the heap; the first vunmap
    keeps the mapping, the last one unmaps it."""
    _k, _p, _fd, dmabuf = _buffer(spec)
    buffer = dmabuf.priv
    m1, m2 = IosysMap(), IosysMap()
    assert dma_buf_vmap_unlocked(dmabuf, m1) == 0
    assert dma_buf_vmap_unlocked(dmabuf, m2) == 0
    assert m1.vaddr is m2.vaddr is buffer.vaddr
    assert (dmabuf.vmapping_counter, buffer.vmap_cnt) == (2, 1)
    kmap = m1.vaddr
    dma_buf_vunmap_unlocked(dmabuf, m2)
    assert kmap.mapped and buffer.vaddr is kmap and dmabuf.vmapping_counter == 1
    dma_buf_vunmap_unlocked(dmabuf, m1)
    assert not kmap.mapped and buffer.vaddr is None
    assert (dmabuf.vmapping_counter, buffer.vmap_cnt) == (0, 0)


@pytest.mark.parametrize("spec", MODERN)
def test_vmap_and_mmap_see_the_same_bytes(spec: str) -> None:
    """The kernel mapping covers the scattered chunks in buffer order: bytes written through
    the user mapping read back identically through vmap, and the other way round, across
    chunk boundaries."""
    _k, p, fd, dmabuf = _buffer(spec)
    addr = p.mmap(0, NPAGES * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(NPAGES * PAGE))
    p.write_memory(addr, pattern)
    m = IosysMap()
    assert dma_buf_vmap_unlocked(dmabuf, m) == 0
    assert m.vaddr.read(0, NPAGES * PAGE) == pattern
    m.vaddr.write(16 * PAGE - 3, b"across")  # end of chunk 0 into chunk 1
    assert p.read_memory(addr + 16 * PAGE - 3, 6) == b"across"
    dma_buf_vunmap_unlocked(dmabuf, m)


# -- release ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_release_frees_every_chunk_after_the_last_reference(spec: str) -> None:
    """R17: close(fd) keeps a mapped buffer; the last munmap releases it, once, and every
    chunk goes back to the allocator (allocated_pages back to the baseline)."""
    k = Kernel(spec)
    baseline = k.mem.allocated_pages
    p = k.spawn("heap")
    heap = p.open("/dev/dma_heap/system", os.O_RDONLY)
    data = DmaHeapAllocationData(len=(256 + 16 + 3) * PAGE, fd_flags=os.O_RDWR)
    p.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
    dmabuf = p.file(data.fd).private_data
    pfns = list(dmabuf.priv.sg_table.pfns())
    assert k.mem.allocated_pages == baseline + 275
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, data.fd, 255 * PAGE)
    p.write_memory(addr, b"z" * 4 * PAGE)
    p.close(data.fd)
    assert not dmabuf.released and k.mem.allocated_pages == baseline + 275
    p.munmap(addr, 4 * PAGE)
    assert dmabuf.released and dmabuf.release_calls == 1
    assert k.mem.allocated_pages == baseline
    assert not any(k.mem.pfn_allocated(pfn) for pfn in pfns)
    assert k.bad_pages == []


# -- property: every shared mapping of one buffer sees the same memory ----------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("map"), st.integers(0, NPAGES - 1), st.integers(1, NPAGES)),
        st.tuples(st.just("unmap"), st.integers(0, 63)),
        st.tuples(
            st.just("write"),
            st.integers(0, 63),
            st.integers(0, NPAGES * PAGE - 1),
            st.binary(min_size=1, max_size=80),
        ),
        st.tuples(
            st.just("read"),
            st.integers(0, 63),
            st.integers(0, NPAGES * PAGE - 1),
            st.integers(1, 80),
        ),
    ),
    max_size=40,
)


@given(ops=OPS)
def test_property_all_shared_mappings_of_one_buffer_see_the_same_memory(
    ops: list[tuple[Any, ...]],
) -> None:
    """Rule: all shared mappings of one buffer see the same memory.  Random mmaps at random
    page offsets and lengths, munmaps, writes at random offsets through one mapping and
    reads through others (v6.12 system heap): every read returns the last bytes written
    at that buffer offset, whichever mapping wrote them."""
    _k, p, fd, _d = _buffer("v6.12")
    model = bytearray(NPAGES * PAGE)
    maps: list[tuple[int, int, int]] = [(p.mmap(0, NPAGES * PAGE, RW, 1, fd, 0), 0, NPAGES)]

    def check(view: tuple[int, int, int], start: int, end: int) -> None:
        """Read buffer bytes [start, end) through ``view`` (clipped to what it maps)."""
        addr, pgoff, pages = view
        lo, hi = max(start, pgoff * PAGE), min(end, (pgoff + pages) * PAGE)
        if lo < hi:
            assert p.read_memory(addr + lo - pgoff * PAGE, hi - lo) == bytes(model[lo:hi])

    for kind, *args in ops:
        if kind == "map":
            pgoff, pages = args[0], min(args[1], NPAGES - args[0])
            maps.append((p.mmap(0, pages * PAGE, RW, 1, fd, pgoff * PAGE), pgoff, pages))
            continue
        if not maps:
            continue
        view = maps[args[0] % len(maps)]
        addr, pgoff, pages = view
        if kind == "unmap":
            p.munmap(addr, pages * PAGE)
            maps.remove(view)
        elif kind == "write":
            off = args[1] % (pages * PAGE)
            data = args[2][: pages * PAGE - off]
            p.write_memory(addr + off, data)
            start = pgoff * PAGE + off
            model[start : start + len(data)] = data
            for other in maps:  # read it back through every mapping that covers it
                check(other, start, start + len(data))
        else:
            start = pgoff * PAGE + args[1] % (pages * PAGE)
            check(view, start, start + args[2])
