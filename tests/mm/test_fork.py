"""fork: dup_mmap, copy_page_range and copy-on-write (kernel-spec §5.6; R18, R40)."""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.mm.memory import remap_pfn_range, vm_insert_page
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import pte_pfn, pte_write
from dmabuf_sim.mm.vma import VM_DONTCOPY

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
SPECS_ = ["rfc-2012", "v3.5", "v6.1", "v6.12", "latest"]


def pte_at(p: Any, addr: int) -> int | None:
    return p.mm.pgtable.get(addr >> PAGE_SHIFT)


# -- R18 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS_)
def test_r18_fork_dups_vmas_with_reference_and_open(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        vma.vm_ops = d.vm_ops()
        if vma.vm_pgoff == 8:
            vma.vm_flags |= VM_DONTCOPY
        return 0

    drv = make_driver(k, mmap_fn)
    parent = k.spawn("parent")
    fd = parent.open("/dev/toy", os.O_RDWR)
    f = parent.file(fd)
    a = parent.mmap(0, 2 * PAGE, R | W, SH, fd, 0)
    b = parent.mmap(0, PAGE, R, PR, fd, 4 * PAGE)
    c = parent.mmap(0, PAGE, R | W, SH, fd, 8 * PAGE)  # VM_DONTCOPY
    assert f.f_count == 4 and drv.opens == []
    child = parent.fork()
    # fd table: one more reference; vmas: one per copied vma; DONTCOPY skipped
    assert f.f_count == 4 + 1 + 2
    assert [(v.vm_start, v.vm_end, v.vm_pgoff) for v in child.mm.vmas] == [
        (v.vm_start, v.vm_end, v.vm_pgoff) for v in parent.mm.vmas if v.vm_start != c
    ]
    assert all(v.vm_file is f for v in child.mm.vmas)
    assert child.mm.vma_lookup(c) is None
    assert len(drv.opens) == 2 and all(v.vm_mm is child.mm for v in drv.opens)
    assert sorted(v.vm_start for v in drv.opens) == sorted([a, b])
    assert len(f.f_mapping.i_mmap) == 5
    assert drv.mmap_calls == 3  # fork never calls ->mmap
    child.exit()
    assert f.f_count == 4 and len(drv.closes) == 2 and len(f.f_mapping.i_mmap) == 3


def test_r18_fork_copies_fd_table_and_cloexec() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR | os.O_CLOEXEC)
    fd2 = p.open("/dev/simmem", os.O_RDONLY)
    child = p.fork()
    assert child.pid != p.pid and child.comm == p.comm
    assert child.file(fd) is p.file(fd) and child.file(fd2) is p.file(fd2)
    assert p.file(fd).f_count == 2

    assert child.fcntl(fd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    assert child.fcntl(fd2, fcntl.F_GETFD) == 0
    child.close(fd)
    assert p.file(fd).f_count == 1


# -- R40 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS_)
def test_r40_plain_shared_file_vma_ptes_not_copied(spec: str) -> None:
    k = Kernel(spec)
    drv = k.drivers["simmem"]
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, R | W, SH, fd, 0)
    p.write_memory(addr, b"shared")
    p.read_memory(addr + PAGE, 1)
    child = p.fork()
    assert len(child.mm.pgtable) == 0
    with k.trace() as events:
        assert child.read_memory(addr, 6) == b"shared"
    assert [e.func for e in events if e.kind == "entry"].count("simmem_fault") == 1
    assert pte_pfn(pte_at(child, addr)) == drv.pfns[0]
    child.write_memory(addr, b"CHILD!")
    assert p.read_memory(addr, 6) == b"CHILD!"  # MAP_SHARED: one page for both


@pytest.mark.parametrize("spec", SPECS_)
def test_r40_pfnmap_ptes_copied(make_driver: Callable[..., Any], spec: str) -> None:
    k = Kernel(spec)
    base = k.mem.alloc_contig(4)

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        return int(
            remap_pfn_range(vma, vma.vm_start, base, vma.vm_end - vma.vm_start, vma.vm_page_prot)
        )

    make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
    child = p.fork()
    assert child.mm.pgtable.entries == p.mm.pgtable.entries
    assert [pte_pfn(pte_at(child, addr + i * PAGE)) for i in range(4)] == [
        base + i for i in range(4)
    ]
    with k.trace() as events:
        child.write_memory(addr + 2 * PAGE, b"pfn")
    assert "do_user_addr_fault" not in [e.func for e in events]
    assert p.read_memory(addr + 2 * PAGE, 3) == b"pfn"


@pytest.mark.parametrize("spec", SPECS_)
def test_r40_mixedmap_ptes_copied_with_page_references(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        for i in range(vma.pages()):
            ret = int(vm_insert_page(vma, vma.vm_start + i * PAGE, k.mem.pfn_to_page(d.pfn(i))))
            if ret:
                return ret
        return 0

    drv = make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, R | W, SH, fd, 0)
    page = k.mem.page_if_exists(drv.pfn(1))
    assert (page.refcount, page.mapcount) == (2, 1)
    child = p.fork()
    assert pte_pfn(pte_at(child, addr + PAGE)) == drv.pfn(1)
    assert (page.refcount, page.mapcount) == (3, 2)
    child.exit()
    assert (page.refcount, page.mapcount) == (2, 1)


# -- copy-on-write both ways ------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS_)
@pytest.mark.parametrize("kind", ["anon", "file"])
def test_cow_after_fork_both_directions(spec: str, kind: str) -> None:
    k = Kernel(spec)
    drv = k.drivers["simmem"]
    p = k.spawn()
    if kind == "anon":
        addr = p.mmap(0, 2 * PAGE, R | W, PR | ANON)
    else:
        fd = p.open("/dev/simmem", os.O_RDWR)
        addr = p.mmap(0, 2 * PAGE, R | W, PR, fd, 0)
    p.write_memory(addr, b"AAAA")
    parent_pfn = pte_pfn(pte_at(p, addr))
    page = k.mem.page_if_exists(parent_pfn)
    assert (page.refcount, page.mapcount) == (1, 1)
    child = p.fork()
    # shared read-only in both until someone writes
    assert pte_pfn(pte_at(child, addr)) == parent_pfn
    assert not pte_write(pte_at(child, addr)) and not pte_write(pte_at(p, addr))
    assert (page.refcount, page.mapcount) == (2, 2)
    assert child.read_memory(addr, 4) == b"AAAA"

    child.write_memory(addr, b"BB")
    assert child.read_memory(addr, 4) == b"BBAA"
    assert p.read_memory(addr, 4) == b"AAAA"
    child_pfn = pte_pfn(pte_at(child, addr))
    assert child_pfn != parent_pfn
    assert (page.refcount, page.mapcount) == (1, 1)

    p.write_memory(addr + 2, b"CC")  # the parent is the only user now: reused, no copy
    assert pte_pfn(pte_at(p, addr)) == parent_pfn
    assert p.read_memory(addr, 4) == b"AACC"
    assert child.read_memory(addr, 4) == b"BBAA"
    if kind == "file":
        k.cache.flush_all()
        assert k.mem.read(drv.pfns[0] * PAGE, 4) == bytes(4)


def test_fork_child_sees_parent_snapshot_of_untouched_private_page() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, PAGE, R | W, PR | ANON)
    child = p.fork()
    p.write_memory(addr, b"late")
    assert child.read_memory(addr, 4) == bytes(4)
    assert child.mm.pgtable.get(addr >> PAGE_SHIFT) is not None
