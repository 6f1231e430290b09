"""The PTE helpers a driver calls (kernel-spec §5.4, §5.5; R29, R36-R39).

Each test's driver calls the helper from its ``->mmap`` or ``->fault``
exactly as a kernel driver would, and the test checks flags, PTEs, return
values and page reference counts.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import SIGBUS, Kernel
from dmabuf_sim.mm.memory import remap_pfn_range, vm_insert_page, vmf_insert_pfn, zap_vma_ptes
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import (
    CACHE_WC,
    pgprot_writecombine,
    pte_cache_mode,
    pte_pfn,
    pte_special,
)
from dmabuf_sim.mm.vma import VM_FAULT_NOPAGE, VM_FAULT_SIGBUS, VM_MIXEDMAP, VM_PFNMAP
from dmabuf_sim.spec import SPECS

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR = mmap.MAP_SHARED, mmap.MAP_PRIVATE
MMAP_SPECS = [s for s in SPECS if SPECS[s].has_mmap_fop]
MODERN = ["v6.1", "v6.12", "latest"]

# include/linux/mm.h values, written out independently of the simulator
VM_IO_ = 0x4000
VM_PFNMAP_ = 0x400
VM_DONTEXPAND_ = 0x40000
VM_DONTDUMP_ = 0x4000000
VM_RESERVED_ = 0x80000
REMAP_FLAGS = {
    "rfc-2012": VM_IO_ | VM_RESERVED_ | VM_PFNMAP_,
    "v3.4": VM_IO_ | VM_RESERVED_ | VM_PFNMAP_,
    "v3.5": VM_IO_ | VM_RESERVED_ | VM_PFNMAP_,
    "v5.10": VM_IO_ | VM_PFNMAP_ | VM_DONTEXPAND_ | VM_DONTDUMP_,
    "v6.1": VM_IO_ | VM_PFNMAP_ | VM_DONTEXPAND_ | VM_DONTDUMP_,
    "v6.12": VM_IO_ | VM_PFNMAP_ | VM_DONTEXPAND_ | VM_DONTDUMP_,
    "v6.19": VM_IO_ | VM_PFNMAP_ | VM_DONTEXPAND_ | VM_DONTDUMP_,
    "latest": VM_IO_ | VM_PFNMAP_ | VM_DONTEXPAND_ | VM_DONTDUMP_,
}


def ptes(p: Any, addr: int, n: int) -> list[int | None]:
    return [p.mm.pgtable.get((addr >> PAGE_SHIFT) + i) for i in range(n)]


def remap_driver(
    make_driver: Callable[..., Any], k: Kernel, *, partial: bool = False, prot: Any = None
) -> Any:
    """->mmap remaps physically contiguous frames (CMA) for the whole vma, or its first page."""
    base = k.mem.alloc_contig(16)
    results: list[int] = []

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        size = PAGE if partial else vma.vm_end - vma.vm_start
        pg = vma.vm_page_prot if prot is None else prot(vma.vm_page_prot)
        ret = int(remap_pfn_range(vma, vma.vm_start, base + vma.vm_pgoff, size, pg))
        results.append(ret)
        return ret

    drv = make_driver(k, mmap_fn)
    drv.base = base
    drv.results = results
    return drv


# -- R36 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", list(SPECS))
def test_r36_remap_pfn_range_sets_spec_flags_and_populates_eagerly(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)
    drv = remap_driver(make_driver, k)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 2 * PAGE)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_flags & REMAP_FLAGS[spec] == REMAP_FLAGS[spec]
    assert SPECS[spec].remap_pfn_range_flags == REMAP_FLAGS[spec]
    got = ptes(p, addr, 4)
    assert [pte_pfn(x) for x in got if x is not None] == [drv.base + 2 + i for i in range(4)]
    assert all(x is not None and pte_special(x) for x in got)
    # raw pfns: no struct page was materialised or referenced
    assert all(k.mem.page_if_exists(drv.base + 2 + i) is None for i in range(4))
    # the access needs no fault
    with k.trace() as events:
        p.write_memory(addr + 3 * PAGE, b"eager")
    assert "do_user_addr_fault" not in [e.func for e in events]
    k.cache.flush_all()
    assert k.mem.read((drv.base + 5) * PAGE, 5) == b"eager"


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r36_shared_whole_vma_remap_pgoff_per_spec(
    make_driver: Callable[..., Any], spec: str
) -> None:
    """3.4-3.6 record the pfn in vm_pgoff for any whole-vma remap; later only COW ones."""
    k = Kernel(spec)
    drv = remap_driver(make_driver, k)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, R, SH, fd, PAGE)
    vma = p.mm.vma_lookup(addr)
    if SPECS[spec].remap_pfn_range_sets_pgoff_whole_vma:
        assert vma.vm_pgoff == drv.base + 1
    else:
        assert vma.vm_pgoff == 1
    assert p.file(fd).f_mapping.i_mmap.interval_of(vma) == (vma.vm_pgoff, vma.vm_pgoff + 1)


def test_r36_remap_unaligned_addr_einval(make_driver: Callable[..., Any]) -> None:
    k = Kernel("v6.12")
    seen: list[int] = []

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        seen.append(int(remap_pfn_range(vma, vma.vm_start + 1, d.pfn(0), PAGE, vma.vm_page_prot)))
        return seen[-1]

    make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, R, SH, fd, 0)
    assert ei.value.errno == errno.EINVAL and seen == [-errno.EINVAL]
    assert p.mm.map_count == 0 and len(p.mm.pgtable) == 0


# -- R37 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r37_private_partial_remap_einval(make_driver: Callable[..., Any], spec: str) -> None:
    k = Kernel(spec)
    drv = remap_driver(make_driver, k, partial=True)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    with pytest.raises(OSError) as ei:
        p.mmap(0, 2 * PAGE, R, PR, fd, 0)
    assert ei.value.errno == errno.EINVAL
    assert drv.results == [-errno.EINVAL]
    assert p.mm.map_count == 0 and len(p.mm.pgtable) == 0
    assert p.file(fd).f_count == 1
    # a one-page private mapping is the whole vma: fine, and vm_pgoff becomes the pfn
    addr = p.mmap(0, PAGE, R, PR, fd, 0)
    assert p.mm.vma_lookup(addr).vm_pgoff == drv.base
    # shared partial remaps are fine too
    addr = p.mmap(0, 2 * PAGE, R, SH, fd, 0)
    assert [x is not None for x in ptes(p, addr, 2)] == [True, False]


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r37_private_whole_remap_then_write_copies(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)
    drv = remap_driver(make_driver, k)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    shared = p.mmap(0, 2 * PAGE, R | W, SH, fd, 0)
    p.write_memory(shared + PAGE, b"dev")
    priv = p.mmap(0, 2 * PAGE, R | W, PR, fd, 0)
    assert p.mm.vma_lookup(priv).vm_pgoff == drv.base
    assert p.read_memory(priv + PAGE, 3) == b"dev"
    p.write_memory(priv + PAGE, b"cow")
    assert pte_pfn(p.mm.pgtable.get((priv + PAGE) >> PAGE_SHIFT)) != drv.base + 1
    assert p.read_memory(shared + PAGE, 3) == b"dev"


# -- R38 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_r38_vmf_insert_pfn_outside_sigbus_present_nopage(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)
    log: list[tuple[int, int]] = []

    def fault(vmf: Any) -> int:
        vma = vmf.vma
        outside = int(vmf_insert_pfn(vma, vma.vm_end, drv.pfn(0)))
        below = int(vmf_insert_pfn(vma, vma.vm_start - PAGE, drv.pfn(0)))
        first = int(vmf_insert_pfn(vma, vmf.address, drv.pfn(vmf.pgoff)))
        again = int(vmf_insert_pfn(vma, vmf.address, drv.pfn(7)))  # already present
        log.append((outside, below))
        log.append((first, again))
        return first

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        vma.vm_flags |= VM_PFNMAP
        vma.vm_ops = d.vm_ops()
        vma.vm_ops.fault = fault
        return 0

    drv = make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0x50000000, 2 * PAGE, R | W, SH | 0x10, fd, 0)
    p.write_memory(addr + PAGE, b"pfn")
    assert log == [(VM_FAULT_SIGBUS, VM_FAULT_SIGBUS), (VM_FAULT_NOPAGE, VM_FAULT_NOPAGE)]
    assert VM_FAULT_SIGBUS == 0x2 and VM_FAULT_NOPAGE == 0x100
    pte = p.mm.pgtable.get((addr + PAGE) >> PAGE_SHIFT)
    assert pte is not None and pte_pfn(pte) == drv.pfn(1) and pte_special(pte)
    assert len(p.mm.pgtable) == 1  # nothing landed outside the vma
    assert k.mem.page_if_exists(drv.pfn(1)) is None  # raw pfn: no struct page ref


# -- R39 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r39_vm_insert_page_efault_ebusy_and_mixedmap(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)
    results: dict[str, Any] = {}

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        page = k.mem.pfn_to_page(d.pfn(0))
        results["before"] = vma.vm_flags & VM_MIXEDMAP
        results["outside"] = int(vm_insert_page(vma, vma.vm_end, page))
        results["below"] = int(vm_insert_page(vma, vma.vm_start - PAGE, page))
        results["ok"] = int(vm_insert_page(vma, vma.vm_start, page))
        results["busy"] = int(vm_insert_page(vma, vma.vm_start, page))
        results["after"] = vma.vm_flags & VM_MIXEDMAP
        results["refcount"] = page.refcount
        return 0

    drv = make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, R | W, SH, fd, 0)
    assert results["before"] == 0 and results["after"] == VM_MIXEDMAP
    assert (results["outside"], results["below"]) == (-errno.EFAULT, -errno.EFAULT)
    assert (results["ok"], results["busy"]) == (0, -errno.EBUSY)
    page = k.mem.page_if_exists(drv.pfn(0))
    assert results["refcount"] == 2 and (page.refcount, page.mapcount) == (2, 1)
    pte = p.mm.pgtable.get(addr >> PAGE_SHIFT)
    assert pte is not None and pte_pfn(pte) == drv.pfn(0) and not pte_special(pte)
    assert p.mm.pgtable.get((addr >> PAGE_SHIFT) + 1) is None
    p.munmap(addr, 2 * PAGE)
    assert (page.refcount, page.mapcount) == (1, 0)


def test_r39_vm_insert_page_rejects_anonymous_page(make_driver: Callable[..., Any]) -> None:
    k = Kernel("v6.12")
    got: list[int] = []

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        anon = k.mem.pfn_to_page(k.mem.alloc_pages(0))
        anon.anon = True
        got.append(int(vm_insert_page(vma, vma.vm_start, anon)))
        return 0

    make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    p.mmap(0, PAGE, R, SH, fd, 0)
    assert got == [-errno.EINVAL] and len(p.mm.pgtable) == 0


# -- R29 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r29_zap_vma_ptes_noop_without_pfnmap_or_out_of_range(spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R, SH, fd, 0)
    p.read_memory(addr, 4 * PAGE)
    vma = p.mm.vma_lookup(addr)
    before = dict(p.mm.pgtable.entries)
    noop = 0 if SPECS[spec].vmf_insert_api else -1  # 3.x returned int, later void
    with k.running(p):
        assert zap_vma_ptes(vma, addr, 4 * PAGE) == noop  # not VM_PFNMAP
    assert p.mm.pgtable.entries == before


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r29_zap_vma_ptes_on_pfnmap(make_driver: Callable[..., Any], spec: str) -> None:
    k = Kernel(spec)
    remap_driver(make_driver, k)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R, SH, fd, 0)
    vma = p.mm.vma_lookup(addr)
    before = dict(p.mm.pgtable.entries)
    noop = 0 if SPECS[spec].vmf_insert_api else -1
    with k.running(p):
        assert zap_vma_ptes(vma, addr - PAGE, 2 * PAGE) == noop  # starts below the vma
        assert zap_vma_ptes(vma, addr + 3 * PAGE, 2 * PAGE) == noop  # ends past it
        assert p.mm.pgtable.entries == before
        assert zap_vma_ptes(vma, addr + PAGE, 2 * PAGE) == 0
    assert [x is not None for x in ptes(p, addr, 4)] == [True, False, False, True]
    # the zapped range has no ->fault to refill it
    if SPECS[spec].fault_without_handler == "sigbus":
        with pytest.raises(SIGBUS) as ei:
            p.read_memory(addr + PAGE + 8, 1)
        assert ei.value.addr == addr + PAGE + 8


# -- PTE cache modes survive mprotect (x86 pte_modify keeps _PAGE_CHG_MASK) ------------------


@pytest.mark.parametrize("set_vma_prot", [False, True])
def test_mprotect_keeps_pte_cache_mode(make_driver: Callable[..., Any], set_vma_prot: bool) -> None:
    k = Kernel("v6.12")

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        prot = pgprot_writecombine(vma.vm_page_prot)
        if set_vma_prot:
            vma.vm_page_prot = prot
        return int(remap_pfn_range(vma, vma.vm_start, d.pfn(0), PAGE, prot))

    make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, PAGE, R | W, SH, fd, 0)
    assert pte_cache_mode(p.mm.pgtable.get(addr >> PAGE_SHIFT)) == CACHE_WC
    p.mprotect(addr, PAGE, R)
    pte = p.mm.pgtable.get(addr >> PAGE_SHIFT)
    assert pte_cache_mode(pte) == CACHE_WC
    p.mprotect(addr, PAGE, R | W)
    pte = p.mm.pgtable.get(addr >> PAGE_SHIFT)
    assert pte_cache_mode(pte) == CACHE_WC and pte_special(pte)
    p.write_memory(addr, b"wc")  # write-combining: straight to DRAM
    assert k.mem.read(p.file(fd).kernel.chrdevs["/dev/toy"].driver.pfn(0) * PAGE, 2) == b"wc"
