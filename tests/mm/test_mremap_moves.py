"""mremap moves: MREMAP_FIXED, MREMAP_DONTUNMAP and old_len == 0 (mm/mremap.c).

A dma-buf vma (VM_DONTEXPAND and mostly VM_PFNMAP) may move at its size — its PTEs go
with it — but never grow (R33), never leave an empty twin behind (DONTUNMAP: EINVAL
since 5.13) and never be duplicated (old_len 0 is growth from 0: EFAULT).
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel
from dmabuf_sim.errors import SIGSEGV
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.mremap import MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE
from dmabuf_sim.mm.vma import VM_LOCKED
from dmabuf_sim.process import Process

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
MOVE = MREMAP_MAYMOVE | MREMAP_FIXED
ANON = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10


def errno_of(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or 0
    return 0


def far(p: Process, pages: int) -> int:
    """A free range well away from everything: reserve then release it."""
    addr = p.mmap(0, (pages + 64) * PAGE, 0, ANON, -1, 0)
    p.munmap(addr, (pages + 64) * PAGE)
    return addr + 32 * PAGE


@pytest.mark.parametrize(
    ("spec", "exporter"),
    [("v5.10", "vgem"), ("v6.1", "udmabuf"), ("v6.12", "system_heap"), ("latest", "vgem")],
)
def test_fixed_move_of_a_dmabuf_mapping_takes_its_bytes_along(spec: str, exporter: str) -> None:
    """MREMAP_FIXED at the same size: move_vma copies the vma, moves the PTEs and unmaps
    the old range; the buffer reads the same at the new address, nothing at the old."""
    p = Kernel(spec).spawn("mremap")
    fd = EXPORTERS[exporter].make_fd(p, 2 * PAGE, os.O_RDWR)
    a = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(a + PAGE, b"page one")
    dst = far(p, 2)
    assert p.mremap(a, 2 * PAGE, 2 * PAGE, MOVE, dst) == dst
    assert p.read_memory(dst + PAGE, 8) == b"page one"
    with pytest.raises(SIGSEGV):
        p.read_memory(a, 1)
    assert [v.vm_start for v in p.mm.vmas] == [dst]


def test_fixed_move_unmaps_the_destination_first_even_when_it_then_fails() -> None:
    """mremap_to: do_munmap(new_addr) comes before vma_to_resize, so growing a dma-buf vma
    (EFAULT, R33) still leaves a hole where the destination was."""
    p = Kernel("v6.12").spawn("mremap")
    fd = EXPORTERS["system_heap"].make_fd(p, 2 * PAGE, os.O_RDWR)
    a = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    dst = p.mmap(far(p, 2), 2 * PAGE, RW, ANON | 0x10, -1, 0)  # MAP_FIXED
    assert errno_of(p.mremap, a, PAGE, 2 * PAGE, MOVE, dst) == errno.EFAULT
    assert p.mm.vma_lookup(dst) is None  # the kernel does not undo the unmap
    assert p.mm.vma_lookup(a) is not None


def test_fixed_move_checks_the_new_range() -> None:
    """Unaligned or overlapping destinations are EINVAL; FIXED without MAYMOVE EINVAL."""
    p = Kernel("v6.12").spawn("mremap")
    a = p.mmap(0, 2 * PAGE, RW, ANON, -1, 0)
    assert errno_of(p.mremap, a, 2 * PAGE, 2 * PAGE, MOVE, a + PAGE) == errno.EINVAL
    assert errno_of(p.mremap, a, 2 * PAGE, 2 * PAGE, MOVE, far(p, 2) + 1) == errno.EINVAL
    assert errno_of(p.mremap, a, PAGE, PAGE, MREMAP_FIXED, far(p, 1)) == errno.EINVAL


@pytest.mark.parametrize(("spec", "want"), [("v5.10", errno.EINVAL), ("v6.12", errno.EFAULT)])
def test_no_vma_at_the_old_address_beats_a_bad_new_address_since_5_16(spec: str, want: int) -> None:
    """5.16 (550a7d60bd5e) looks the vma up first: EFAULT; 5.10 checked the unaligned
    new address in mremap_to first: EINVAL."""
    p = Kernel(spec).spawn("mremap")
    hole = far(p, 1)
    assert errno_of(p.mremap, hole, PAGE, PAGE, MOVE, hole + 10 * PAGE + 1) == want


@pytest.mark.parametrize("spec", ["v5.10", "v6.12"])
def test_dontunmap_leaves_an_empty_anonymous_vma_behind(spec: str) -> None:
    """MREMAP_DONTUNMAP of private anonymous memory: the pages move, the old vma stays and
    reads zeros (a fresh anonymous fault); it is no longer VM_LOCKED."""
    p = Kernel(spec).spawn("mremap")
    a = p.mmap(0, 2 * PAGE, RW, ANON | 0x2000, -1, 0)  # MAP_LOCKED
    p.write_memory(a, b"anon")
    new = p.mremap(a, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
    assert new != a and p.read_memory(new, 4) == b"anon"
    assert p.read_memory(a, 4) == bytes(4)
    assert not p.mm.vma_lookup(a).vm_flags & VM_LOCKED
    assert errno_of(p.mremap, a, PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP) == (
        errno.EINVAL  # it never resizes
    )


@pytest.mark.parametrize(
    ("spec", "exporter", "want"),
    [
        ("v5.10", "vgem", errno.EINVAL),  # 5.7-5.12: private anonymous only
        ("v6.12", "udmabuf", errno.EINVAL),  # 5.13+: VM_DONTEXPAND|VM_PFNMAP
        ("latest", "system_heap", errno.EINVAL),
        ("v6.1", "udmabuf", 0),  # 6.1's udmabuf vma is neither: a shared file vma moves
    ],
)
def test_dontunmap_of_a_dmabuf(spec: str, exporter: str, want: int) -> None:
    p = Kernel(spec).spawn("mremap")
    fd = EXPORTERS[exporter].make_fd(p, PAGE, os.O_RDWR)
    a = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(a, b"shared")
    assert errno_of(p.mremap, a, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP) == want
    assert p.read_memory(a, 6) == b"shared"  # refaulted from the buffer if it moved


def test_dontunmap_shared_memfd_refaults_the_old_range_from_the_file() -> None:
    """5.13+: a shared file vma moves too; the empty old vma refaults the same file pages."""
    p = Kernel("v6.12").spawn("mremap")
    m = p.memfd_create("m")
    p.ftruncate(m, PAGE)
    a = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, m, 0)
    p.write_memory(a, b"file")
    new = p.mremap(a, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
    p.write_memory(new, b"FILE")
    assert p.read_memory(a, 4) == b"FILE"


@pytest.mark.parametrize(
    ("exporter", "spec"), [("system_heap", "v6.12"), ("vgem", "latest"), ("vgem", "v5.10")]
)
def test_old_len_zero_of_a_dmabuf_is_efault(exporter: str, spec: str) -> None:
    """mremap(old_len=0) is growth from nothing: VM_DONTEXPAND (every dma-buf vma) → EFAULT."""
    p = Kernel(spec).spawn("mremap")
    fd = EXPORTERS[exporter].make_fd(p, PAGE, os.O_RDWR)
    a = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert errno_of(p.mremap, a, 0, PAGE, MREMAP_MAYMOVE) == errno.EFAULT


def test_old_len_zero_duplicates_a_shared_mapping_and_refuses_a_private_one() -> None:
    """vma_to_resize: a private mapping cannot be duplicated (EINVAL); a shared memfd mapping
    gets a second vma over the same pages, and the first one stays.  Without MAYMOVE: ENOMEM."""
    p = Kernel("v6.12").spawn("mremap")
    m = p.memfd_create("m")
    p.ftruncate(m, PAGE)
    a = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, m, 0)
    assert errno_of(p.mremap, a, 0, PAGE, 0) == errno.ENOMEM
    twin = p.mremap(a, 0, PAGE, MREMAP_MAYMOVE)
    p.write_memory(twin, b"twin")
    assert p.read_memory(a, 4) == b"twin"
    priv = p.mmap(0, PAGE, RW, ANON, -1, 0)
    assert errno_of(p.mremap, priv, 0, PAGE, MREMAP_MAYMOVE) == errno.EINVAL


def test_locked_vma_populates_what_it_gains() -> None:
    """A VM_LOCKED vma that grows has the new pages faulted in at once (mm_populate)."""
    p = Kernel("v6.12").spawn("mremap")
    a = p.mmap(0, PAGE, RW, ANON | 0x2000, -1, 0)
    new = p.mremap(a, PAGE, 3 * PAGE, MREMAP_MAYMOVE)
    assert all(p.mm.pgtable.get(new // PAGE + i) is not None for i in range(3))


@given(pages=st.integers(1, 6), data=st.binary(min_size=1, max_size=64))
def test_property_a_fixed_move_keeps_every_byte(pages: int, data: bytes) -> None:
    """move_vma moves PTEs, not data: every byte written before the move reads the same
    at the new address, for anonymous and dma-buf memory alike."""
    p = Kernel("v6.12").spawn("mremap")
    fd = EXPORTERS["udmabuf"].make_fd(p, pages * PAGE, os.O_RDWR)
    for a in (
        p.mmap(0, pages * PAGE, RW, ANON, -1, 0),
        p.mmap(0, pages * PAGE, RW, mmap.MAP_SHARED, fd, 0),
    ):
        for i in range(pages):
            p.write_memory(a + i * PAGE, data)
        dst = far(p, pages)
        p.mremap(a, pages * PAGE, pages * PAGE, MOVE, dst)
        assert all(p.read_memory(dst + i * PAGE, len(data)) == data for i in range(pages))


def _three_with_a_gap(p: Process) -> int:
    """Anonymous [A A] [B] _ [C] at a free range: two touching vmas of different
    protections, a one-page gap, then a third."""
    base = far(p, 8)
    fixed = ANON | MAP_FIXED
    p.mmap(base, 2 * PAGE, RW, fixed, -1, 0)
    p.mmap(base + 2 * PAGE, PAGE, mmap.PROT_READ, fixed, -1, 0)
    p.mmap(base + 4 * PAGE, PAGE, RW, fixed, -1, 0)
    p.write_memory(base, b"A")
    p.write_memory(base + 4 * PAGE, b"C")
    return base


@pytest.mark.parametrize("spec", ["v6.19", "latest"])
def test_a_fixed_move_spans_several_vmas_and_keeps_their_gaps_since_6_17(spec: str) -> None:
    """6.17's remap_move: a same-length MREMAP_FIXED move takes every vma in the old
    range along, each where its offset says, the gap between them kept."""
    p = Kernel(spec).spawn("mremap")
    base = _three_with_a_gap(p)
    dst = far(p, 16)
    assert p.mremap(base, 5 * PAGE, 5 * PAGE, MOVE, dst) == dst
    moved = [(v.vm_start - dst, v.vm_end - dst) for v in p.mm.vmas_in(dst, dst + 5 * PAGE)]
    assert moved == [(0, 2 * PAGE), (2 * PAGE, 3 * PAGE), (4 * PAGE, 5 * PAGE)]
    assert p.read_memory(dst, 1) == b"A"
    assert p.read_memory(dst + 4 * PAGE, 1) == b"C"
    assert p.mm.vmas_in(base, base + 5 * PAGE) == []


@pytest.mark.parametrize("spec", ["v6.19", "latest"])
def test_a_fixed_move_must_start_inside_a_vma_since_6_17(spec: str) -> None:
    """remap_move: "No gap permitted at the start of the range" → EFAULT, nothing moved
    and the destination left alone (the checks now precede every unmap)."""
    p = Kernel(spec).spawn("mremap")
    base = _three_with_a_gap(p)
    dst = p.mmap(far(p, 16), PAGE, RW, ANON | MAP_FIXED, -1, 0)
    layout = [(v.vm_start, v.vm_end) for v in p.mm.vmas]
    assert errno_of(p.mremap, base + 3 * PAGE, 2 * PAGE, 2 * PAGE, MOVE, dst) == errno.EFAULT
    assert [(v.vm_start, v.vm_end) for v in p.mm.vmas] == layout


@pytest.mark.parametrize("spec", ["v5.10", "v6.12"])
def test_a_fixed_move_across_vmas_fails_before_6_17(spec: str) -> None:
    """Up to 6.16 vma_to_resize refuses an old range that runs past its vma: EFAULT,
    after mremap_to has already unmapped the destination."""
    p = Kernel(spec).spawn("mremap")
    base = _three_with_a_gap(p)
    dst = p.mmap(far(p, 16), PAGE, RW, ANON | MAP_FIXED, -1, 0)
    assert errno_of(p.mremap, base, 5 * PAGE, 5 * PAGE, MOVE, dst) == errno.EFAULT
    assert p.read_memory(base + 4 * PAGE, 1) == b"C"  # the source stayed
    assert p.mm.vma_lookup(dst) is None  # the destination did not


@pytest.mark.parametrize("exporter", ["system_heap", "vgem"])
def test_a_dmabuf_vma_moves_along_with_its_neighbours_since_6_17(exporter: str) -> None:
    """A dma-buf file has no get_unmapped_area, so vma_multi_allowed lets its vma join
    a multi-vma move: the PTEs travel, the buffer reads the same at the new place."""
    p = Kernel("latest").spawn("mremap")
    fd = EXPORTERS[exporter].make_fd(p, PAGE, os.O_RDWR)
    base = far(p, 4)
    p.mmap(base, PAGE, RW, ANON | MAP_FIXED, -1, 0)
    p.mmap(base + PAGE, PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 0)
    p.write_memory(base + PAGE, b"buffer")
    dst = far(p, 16)
    assert p.mremap(base, 2 * PAGE, 2 * PAGE, MOVE, dst) == dst
    assert p.read_memory(dst + PAGE, 6) == b"buffer"
    assert p.mm.vma_lookup(dst + PAGE).vm_file is not None  # type: ignore[union-attr]
