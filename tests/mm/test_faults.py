"""Page faults: signals, missing fault handlers, COW (kernel-spec §5.3; R30-R32).

Every signal is checked by ``signo``, ``si_code`` and the exact faulting
byte address; every handled fault by which pages the PTE ends up pointing at.
"""

from __future__ import annotations

import mmap
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import SIGBUS, SIGSEGV, Kernel, KernelOops
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import pte_pfn, pte_write
from dmabuf_sim.mm.vma import VmOperationsStruct

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
SEGV_MAPERR, SEGV_ACCERR, BUS_ADRERR = 1, 2, 2
MODERN = ["v6.1", "v6.12", "latest"]
OLD = ["rfc-2012", "v3.5"]


def pfn_at(p: Any, addr: int) -> int | None:
    pte = p.mm.pgtable.get(addr >> PAGE_SHIFT)
    return None if pte is None else pte_pfn(pte)


def no_fault_driver(make_driver: Callable[..., Any], k: Kernel, how: str) -> Any:
    """A driver whose ->mmap installs no PTEs and no ->fault."""

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        if how == "ops_without_fault":
            vma.vm_ops = d.vm_ops(fault=False)
        elif how == "null_ops":
            vma.vm_ops = None
        # "untouched": leave whatever vma_init gave the vma
        return 0

    return make_driver(k, mmap_fn, npages=4)


# -- R30 / R31: a shared file vma without a fault handler --------------------------------


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("how", ["untouched", "ops_without_fault", "null_ops"])
@pytest.mark.parametrize("write", [False, True])
def test_r30_shared_vma_without_fault_handler_sigbus(
    make_driver: Callable[..., Any], spec: str, how: str, write: bool
) -> None:
    k = Kernel(spec)
    drv = no_fault_driver(make_driver, k, how)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
    target = addr + 2 * PAGE + 17
    with pytest.raises(SIGBUS) as ei:
        if write:
            p.write_memory(target, b"x")
        else:
            p.read_memory(target, 1)
    assert (ei.value.signo, ei.value.si_code, ei.value.addr) == (
        int(signal.SIGBUS),
        BUS_ADRERR,
        target,
    )
    assert ei.value.pid == p.pid
    assert len(p.mm.pgtable) == 0
    assert drv.pfns == {}


@pytest.mark.parametrize("spec", MODERN)
def test_r30_private_vma_without_fault_handler_sigbus(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)
    no_fault_driver(make_driver, k, "untouched")
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, PAGE, R | W, PR, fd, 0)
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(addr, 1)
    assert (ei.value.si_code, ei.value.addr) == (BUS_ADRERR, addr)


@pytest.mark.parametrize("spec", OLD)
@pytest.mark.parametrize("how", ["untouched", "ops_without_fault", "null_ops"])
def test_r31_shared_vma_without_fault_handler_gets_anonymous_memory(
    make_driver: Callable[..., Any], spec: str, how: str
) -> None:
    k = Kernel(spec)
    drv = no_fault_driver(make_driver, k, how)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
    # writes land in a fresh anonymous page, never in the driver's memory
    p.write_memory(addr + PAGE, b"lost")
    assert p.read_memory(addr + PAGE, 4) == b"lost"
    pfn = pfn_at(p, addr + PAGE)
    assert pfn is not None and k.mem.page_if_exists(pfn).anon
    assert pfn not in drv.pfns.values()
    assert drv.faults == [] and drv.pfns == {}
    # reads of an untouched page see zeros
    assert p.read_memory(addr + 3 * PAGE, 8) == bytes(8)
    # a second process mapping the same device sees none of it
    q = k.spawn()
    qfd = q.open("/dev/toy", os.O_RDWR)
    qaddr = q.mmap(0, 4 * PAGE, R | W, SH, qfd, 0)
    assert q.read_memory(qaddr + PAGE, 4) == bytes(4)


# -- R32: signals and their siginfo --------------------------------------------------------


@pytest.mark.parametrize("spec", ["v3.5", "v6.12"])
def test_r32_fault_handler_sigbus_at_faulting_address(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)

    def accept_all(d: Any, file: Any, vma: Any) -> int:
        vma.vm_ops = d.vm_ops()
        return 0

    drv = make_driver(k, accept_all, npages=2)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
    p.write_memory(addr + PAGE, b"in")
    target = addr + 2 * PAGE + 0x123
    for access in (lambda: p.read_memory(target, 1), lambda: p.write_memory(target, b"z")):
        with pytest.raises(SIGBUS) as ei:
            access()
        assert ei.value.signo == signal.SIGBUS == 7
        assert ei.value.si_code == BUS_ADRERR
        assert ei.value.addr == target
    # an access straddling into the bad page reports the first bad byte
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(addr + 2 * PAGE - 2, 4)
    assert ei.value.addr == addr + 2 * PAGE
    assert drv.faults[-1] == addr + 2 * PAGE  # vmf->address is page aligned
    assert pfn_at(p, addr + 2 * PAGE) is None


@pytest.mark.parametrize("spec", ["v3.5", "v6.12"])
def test_r32_access_outside_any_vma_segv_maperr(spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    addr = p.mmap(0, PAGE, R | W, PR | ANON)
    for target in (0x1234, addr + PAGE + 5, addr - 1):
        with pytest.raises(SIGSEGV) as ei:
            p.read_memory(target, 1)
        assert (ei.value.signo, ei.value.si_code, ei.value.addr) == (11, SEGV_MAPERR, target)
    with pytest.raises(SIGSEGV) as ei:
        p.write_memory(addr + PAGE - 1, b"ab")  # the second byte is unmapped
    assert (ei.value.si_code, ei.value.addr) == (SEGV_MAPERR, addr + PAGE)
    assert p.read_memory(addr + PAGE - 1, 1) == b"a"  # the first byte was stored


@pytest.mark.parametrize("spec", ["v3.5", "v6.12"])
def test_r32_write_to_readonly_vma_segv_accerr(spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, R, SH, fd, 0)
    p.read_memory(addr, 1)  # PTE present, read-only
    for target in (addr + 3, addr + PAGE + 9):  # with and without a PTE
        with pytest.raises(SIGSEGV) as ei:
            p.write_memory(target, b"w")
        assert (ei.value.signo, ei.value.si_code, ei.value.addr) == (11, SEGV_ACCERR, target)
    k.cache.flush_all()
    assert k.mem.pages_with_data == 0


def test_r32_prot_none_read_segv_accerr() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, PAGE, 0, PR | ANON)
    with pytest.raises(SIGSEGV) as ei:
        p.read_memory(addr + 8, 1)
    assert (ei.value.si_code, ei.value.addr) == (SEGV_ACCERR, addr + 8)
    assert len(p.mm.pgtable) == 0


def test_signal_is_a_kernel_event_in_the_trace() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    with k.trace() as events, pytest.raises(SIGSEGV):
        p.read_memory(0x4000, 1)
    assert [e.func for e in events if e.kind == "event"] == ["force_sig_fault"]


# -- handled faults --------------------------------------------------------------------------


def test_shared_fault_maps_driver_page_once() -> None:
    k = Kernel("v6.12")
    drv = k.drivers["simmem"]
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 8 * PAGE)
    with k.trace() as events:
        p.write_memory(addr + PAGE + 10, b"hello")
        p.read_memory(addr + PAGE, 16)
    assert [e.func for e in events if e.kind == "entry"].count("simmem_fault") == 1
    assert pfn_at(p, addr + PAGE) == drv.pfns[9]
    page = k.mem.page_if_exists(drv.pfns[9])
    assert (page.refcount, page.mapcount) == (2, 1)
    k.cache.flush_all()
    assert k.mem.read(drv.pfns[9] * PAGE + 10, 5) == b"hello"
    # another process sees the same bytes through its own mapping
    q = k.spawn()
    qfd = q.open("/dev/simmem", os.O_RDONLY)
    qaddr = q.mmap(0, PAGE, R, SH, qfd, 9 * PAGE)
    assert q.read_memory(qaddr + 10, 5) == b"hello"
    assert (page.refcount, page.mapcount) == (3, 2)
    p.munmap(addr, 4 * PAGE)
    q.munmap(qaddr, PAGE)
    assert (page.refcount, page.mapcount) == (1, 0)


@pytest.mark.parametrize("spec", ["v3.5", "v6.12"])
def test_private_write_copies_and_leaves_driver_page_alone(spec: str) -> None:
    k = Kernel(spec)
    drv = k.drivers["simmem"]
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    shared = p.mmap(0, PAGE, R | W, SH, fd, 0)
    p.write_memory(shared, b"orig")
    priv = p.mmap(0, PAGE, R | W, PR, fd, 0)
    assert p.read_memory(priv, 4) == b"orig"
    assert pfn_at(p, priv) == drv.pfns[0]  # read fault: the driver's page, read-only
    assert not pte_write(p.mm.pgtable.get(priv >> PAGE_SHIFT))
    p.write_memory(priv, b"mine")
    new = pfn_at(p, priv)
    assert new != drv.pfns[0] and k.mem.page_if_exists(new).anon
    assert pte_write(p.mm.pgtable.get(priv >> PAGE_SHIFT))
    assert p.read_memory(shared, 4) == b"orig"
    assert p.read_memory(priv, 4) == b"mine"
    # the shared side's later writes no longer show through the private copy
    p.write_memory(shared, b"next")
    assert p.read_memory(priv, 4) == b"mine"
    assert k.mem.page_if_exists(drv.pfns[0]).mapcount == 1


def test_private_write_first_is_a_cow_fault() -> None:
    k = Kernel("v6.12")
    drv = k.drivers["simmem"]
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, PAGE, R | W, PR, fd, 3 * PAGE)
    with k.trace() as events:
        p.write_memory(addr + 1, b"c")
    assert "do_cow_fault" in [e.func for e in events]
    assert pfn_at(p, addr) != drv.pfns[3]
    assert drv.kernel.mem.page_if_exists(drv.pfns[3]).refcount == 1  # the handler's ref dropped


def test_anonymous_read_maps_zero_page_then_write_allocates() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, 2 * PAGE, R | W, PR | ANON)
    assert p.read_memory(addr, 4) == bytes(4)
    assert pfn_at(p, addr) == k.zero_pfn
    before = k.mem.allocated_pages
    p.write_memory(addr, b"data")
    assert pfn_at(p, addr) != k.zero_pfn
    assert k.mem.allocated_pages == before + 1
    assert p.read_memory(addr, 4) == b"data"
    p.munmap(addr, 2 * PAGE)
    assert k.mem.allocated_pages == before


def test_fault_handler_returning_nothing_is_an_oops(make_driver: Callable[..., Any]) -> None:
    """->fault returning 0 without vmf->page cannot be mapped: a kernel bug, not an errno."""
    k = Kernel("v6.12")

    def bad(d: Any, file: Any, vma: Any) -> int:
        vma.vm_ops = VmOperationsStruct(fault=lambda vmf: 0)
        return 0

    make_driver(k, bad)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, PAGE, R, SH, fd, 0)
    with pytest.raises(KernelOops):
        p.read_memory(addr, 1)
    assert len(p.mm.pgtable) == 0


@pytest.mark.parametrize("spec", OLD)
def test_r31_read_then_write_lands_in_the_zero_page_cve_2015_3288(
    make_driver: Callable[..., Any], spec: str
) -> None:
    """Before 4.1.4 a read fault maps the shared zero page into such a VM_SHARED vma and
    a later write goes *into the zero page* (CVE-2015-3288, fixed by "mm: avoid setting
    up anonymous pages into file mapping"): every zero-page reader then sees it."""
    k = Kernel(spec)
    no_fault_driver(make_driver, k, "untouched")
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, PAGE, R | W, SH, fd, 0)
    assert p.read_memory(addr, 4) == bytes(4)
    assert pfn_at(p, addr) == k.zero_pfn
    p.write_memory(addr, b"oops")
    assert pfn_at(p, addr) == k.zero_pfn
    victim = k.spawn("victim")
    anon = victim.mmap(0, PAGE, R, PR | ANON)
    assert victim.read_memory(anon, 4) == b"oops"
