"""munmap, vma splits and file lifetime (kernel-spec §5.6; R17, R19).

Counts of ``->open``/``->close``/``->release`` and ``f_count`` are asserted
exactly after each step.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import SIGSEGV, Kernel
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10
TASK_SIZE = 0x7FFFFFFFF000
SPECS_ = ["v3.5", "v6.1", "latest"]


def errno_of(fn: Callable[..., Any], *args: Any) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)
    return int(ei.value.errno)


def toy(
    make_driver: Callable[..., Any], plain_mmap: Any, spec: str = "v6.12"
) -> tuple[Kernel, Any, Any, int]:
    k = Kernel(spec)
    drv = make_driver(k, plain_mmap)
    p = k.spawn()
    return k, drv, p, p.open("/dev/toy", os.O_RDWR)


def layout(p: Any) -> list[tuple[int, int, int]]:
    return [(v.vm_start, v.vm_end, v.vm_pgoff) for v in p.mm.vmas]


# -- R17 --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS_)
def test_r17_each_vma_holds_a_file_reference(
    make_driver: Callable[..., Any], plain_mmap: Any, spec: str
) -> None:
    _, drv, p, fd = toy(make_driver, plain_mmap, spec)
    f = p.file(fd)
    a = p.mmap(0, 2 * PAGE, R, SH, fd, 0)
    b = p.mmap(0, PAGE, R, SH, fd, 5 * PAGE)
    assert f.f_count == 3
    p.close(fd)
    assert f.f_count == 2 and not f.released and drv.releases == 0
    p.read_memory(a, 1)  # still usable
    p.munmap(a, 2 * PAGE)
    assert f.f_count == 1 and drv.releases == 0
    p.munmap(b, PAGE)
    assert f.f_count == 0 and f.released and drv.releases == 1
    assert drv.closes and len(drv.closes) == 2


def test_r17_exit_drops_vma_and_fd_references(
    make_driver: Callable[..., Any], plain_mmap: Any
) -> None:
    _, drv, p, fd = toy(make_driver, plain_mmap)
    f = p.file(fd)
    p.mmap(0, 2 * PAGE, R, SH, fd, 0)
    p.mmap(0, 2 * PAGE, R, PR, fd, 0)
    assert f.f_count == 3
    p.exit()
    assert f.released and drv.releases == 1 and len(drv.closes) == 2


# -- R19: splits --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS_)
def test_r19_munmap_middle_splits(
    make_driver: Callable[..., Any], plain_mmap: Any, spec: str
) -> None:
    k, drv, p, fd = toy(make_driver, plain_mmap, spec)
    f = p.file(fd)
    base = p.mmap(0, 4 * PAGE, R | W, SH, fd, 4 * PAGE)
    p.write_memory(base, b"a" * (4 * PAGE))
    p.munmap(base + PAGE, 2 * PAGE)
    assert layout(p) == [(base, base + PAGE, 4), (base + 3 * PAGE, base + 4 * PAGE, 7)]
    # two splits (each new vma: ->open, +1 ref), one removed piece (->close, -1 ref)
    assert len(drv.opens) == 2 and len(drv.closes) == 1
    assert drv.closes[0] not in p.mm.vmas
    assert f.f_count == 1 + 2
    assert sorted(f.f_mapping.i_mmap.interval_of(v) for v in p.mm.vmas) == [(4, 4), (7, 7)]
    assert len(f.f_mapping.i_mmap) == 2
    # PTEs of the hole are gone and the page refs with them
    assert [p.mm.pgtable.get((base >> PAGE_SHIFT) + i) is not None for i in range(4)] == [
        True,
        False,
        False,
        True,
    ]
    for pg in (5, 6):
        page = k.mem.page_if_exists(drv.pfn(pg))
        assert (page.refcount, page.mapcount) == (1, 0)
    with pytest.raises(SIGSEGV) as ei:
        p.read_memory(base + PAGE, 1)
    assert ei.value.addr == base + PAGE
    assert p.read_memory(base + 3 * PAGE, 1) == b"a"


@pytest.mark.parametrize("spec", SPECS_)
def test_r19_mprotect_middle_splits_in_three(
    make_driver: Callable[..., Any], plain_mmap: Any, spec: str
) -> None:
    _, drv, p, fd = toy(make_driver, plain_mmap, spec)
    f = p.file(fd)
    base = p.mmap(0, 3 * PAGE, R | W, SH, fd, 0)
    p.mprotect(base + PAGE, PAGE, R)
    assert layout(p) == [
        (base, base + PAGE, 0),
        (base + PAGE, base + 2 * PAGE, 1),
        (base + 2 * PAGE, base + 3 * PAGE, 2),
    ]
    assert len(drv.opens) == 2 and drv.closes == [] and f.f_count == 4
    assert p.maps().split("\n")[1].split()[1] == "r--s"
    p.munmap(base, 3 * PAGE)
    assert len(drv.closes) == 3 and f.f_count == 1 and p.mm.map_count == 0
    assert len(f.f_mapping.i_mmap) == 0


def test_r19_munmap_spanning_vmas_and_holes(
    make_driver: Callable[..., Any], plain_mmap: Any
) -> None:
    _, drv, p, fd = toy(make_driver, plain_mmap)
    f = p.file(fd)
    base = 0x60000000
    p.mmap(base, 2 * PAGE, R, SH | MAP_FIXED, fd, 0)
    p.mmap(base + 3 * PAGE, 2 * PAGE, R, SH | MAP_FIXED, fd, 8 * PAGE)
    p.mmap(base + 6 * PAGE, PAGE, R, PR | ANON | MAP_FIXED)
    p.munmap(base + PAGE, 5 * PAGE)  # tail of the 1st, all of the 2nd, hole, hole
    assert layout(p) == [
        (base, base + PAGE, 0),
        (base + 6 * PAGE, base + 7 * PAGE, base // PAGE + 6),
    ]
    assert len(drv.opens) == 1 and len(drv.closes) == 2
    assert f.f_count == 2


def test_munmap_of_nothing_succeeds_and_changes_nothing() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    p.munmap(0x70000000, 16 * PAGE)
    assert p.mm.map_count == 0


@pytest.mark.parametrize(
    ("addr", "length"),
    [(0x70000001, PAGE), (0x70000000, 0), (TASK_SIZE + PAGE, PAGE), (PAGE, TASK_SIZE), (0, -1)],
)
def test_munmap_einval(addr: int, length: int) -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    keep = p.mmap(0x70000000, PAGE, R, PR | ANON | MAP_FIXED)
    assert errno_of(p.munmap, addr, length) == errno.EINVAL
    assert layout(p) == [(keep, keep + PAGE, keep // PAGE)]


def test_munmap_frees_anonymous_pages() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    before = k.mem.allocated_pages
    addr = p.mmap(0, 4 * PAGE, R | W, PR | ANON)
    p.write_memory(addr, b"x" * (4 * PAGE))
    assert k.mem.allocated_pages == before + 4
    p.munmap(addr + PAGE, 2 * PAGE)
    assert k.mem.allocated_pages == before + 2
    p.munmap(addr, 4 * PAGE)
    assert k.mem.allocated_pages == before
    assert k.bad_pages == []


# -- may_split vetoes ------------------------------------------------------------------


def veto_driver(make_driver: Callable[..., Any], k: Kernel, veto_at: list[int]) -> Any:
    def may_split(vma: Any, addr: int) -> int:
        return -errno.EINVAL if addr in veto_at else 0

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        vma.vm_ops = d.vm_ops()
        vma.vm_ops.may_split = may_split
        return 0

    return make_driver(k, mmap_fn)


@pytest.mark.parametrize("op", ["munmap", "mprotect"])
def test_may_split_veto_on_first_edge_changes_nothing(
    make_driver: Callable[..., Any], op: str
) -> None:
    k = Kernel("v6.12")
    base = 0x60000000
    drv = veto_driver(make_driver, k, [base + PAGE])
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    p.mmap(base, 4 * PAGE, R | W, SH | MAP_FIXED, fd, 0)
    if op == "munmap":
        assert errno_of(p.munmap, base + PAGE, 2 * PAGE) == errno.EINVAL
    else:
        assert errno_of(p.mprotect, base + PAGE, 2 * PAGE, R) == errno.EINVAL
    assert layout(p) == [(base, base + 4 * PAGE, 0)]
    assert drv.opens == [] and drv.closes == [] and p.file(fd).f_count == 2


@pytest.mark.parametrize("op", ["munmap", "mprotect"])
def test_may_split_veto_on_end_edge_keeps_the_start_split(
    make_driver: Callable[..., Any], op: str
) -> None:
    """The kernel splits the start edge, then the end edge's ->may_split fails: the
    first split is not undone (do_vmi_align_munmap / mprotect_fixup)."""
    k = Kernel("v6.12")
    base = 0x60000000
    drv = veto_driver(make_driver, k, [base + 3 * PAGE])
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    p.mmap(base, 4 * PAGE, R | W, SH | MAP_FIXED, fd, 0)
    if op == "munmap":
        assert errno_of(p.munmap, base + PAGE, 2 * PAGE) == errno.EINVAL
    else:
        assert errno_of(p.mprotect, base + PAGE, 2 * PAGE, R) == errno.EINVAL
    assert layout(p) == [(base, base + PAGE, 0), (base + PAGE, base + 4 * PAGE, 1)]
    assert len(drv.opens) == 1 and drv.closes == [] and p.file(fd).f_count == 3
    assert all(v.vm_flags & 0x2 for v in p.mm.vmas)  # still writable everywhere
