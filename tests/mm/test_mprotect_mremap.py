"""mprotect(2) and mremap(2) (kernel-spec §5.6; R7, R33, R34)."""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import SIGBUS, SIGSEGV, Kernel
from dmabuf_sim.mm.memory import remap_pfn_range
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import pte_pfn, pte_write
from dmabuf_sim.mm.vma import VM_DONTEXPAND, VM_PFNMAP

PAGE = 4096
R, W, X = mmap.PROT_READ, mmap.PROT_WRITE, mmap.PROT_EXEC
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
SPECS_ = ["v3.5", "v6.1", "v6.12", "latest"]


def errno_of(fn: Callable[..., Any], *args: Any) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)
    return int(ei.value.errno)


def spans(p: Any) -> list[tuple[int, int]]:
    return [(v.vm_start, v.vm_end) for v in p.mm.vmas]


# -- mprotect ----------------------------------------------------------------------------


def test_mprotect_argument_errors() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, 2 * PAGE, R, PR | ANON)
    assert errno_of(p.mprotect, addr + 1, PAGE, R) == errno.EINVAL
    assert errno_of(p.mprotect, addr, PAGE, R | 0x100) == errno.EINVAL
    assert errno_of(p.mprotect, addr, -PAGE, R) == errno.ENOMEM  # end wraps
    assert errno_of(p.mprotect, 0x40000000, PAGE, R) == errno.ENOMEM  # nothing mapped
    assert errno_of(p.mprotect, addr, 3 * PAGE, R | W) == errno.ENOMEM  # runs past the vma
    p.mprotect(0x40000000, 0, R | W)  # length 0: success, even unmapped
    p.mprotect(addr + 1 - 1, 0, 0x100)


def test_mprotect_grows_flags() -> None:
    """PROT_GROWSDOWN|PROT_GROWSUP together is EINVAL before anything else; one of them
    on a vma that does not grow is EINVAL after the vma lookup (ENOMEM if none)."""
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, 2 * PAGE, R, PR | ANON)
    both = R | PROT_GROWSDOWN | PROT_GROWSUP
    assert errno_of(p.mprotect, addr + 1, PAGE, both) == errno.EINVAL
    assert errno_of(p.mprotect, 0x40000000, PAGE, R | PROT_GROWSDOWN) == errno.ENOMEM
    assert errno_of(p.mprotect, addr, PAGE, R | PROT_GROWSDOWN) == errno.EINVAL
    assert errno_of(p.mprotect, addr, PAGE, R | PROT_GROWSUP) == errno.EINVAL
    assert spans(p) == [(addr, addr + 2 * PAGE)]


@pytest.mark.parametrize("spec", SPECS_)
def test_mprotect_changes_ptes_and_access(spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, PAGE, R | W, SH, fd, 0)
    p.write_memory(addr, b"rw")
    p.mprotect(addr, PAGE, R)
    assert not pte_write(p.mm.pgtable.get(addr >> PAGE_SHIFT))
    with pytest.raises(SIGSEGV) as ei:
        p.write_memory(addr, b"x")
    assert (ei.value.si_code, ei.value.addr) == (2, addr)
    assert p.read_memory(addr, 2) == b"rw"
    p.mprotect(addr, PAGE, 0)
    with pytest.raises(SIGSEGV) as ei:
        p.read_memory(addr, 1)
    assert ei.value.si_code == 2
    p.mprotect(addr, PAGE, R | W)
    p.write_memory(addr, b"ok")
    assert p.read_memory(addr, 2) == b"ok"
    assert p.maps().split()[1] == "rw-s"


def test_mprotect_private_readonly_then_writable_still_cows() -> None:
    k = Kernel("v6.12")
    drv = k.drivers["simmem"]
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, PAGE, R, PR, fd, 0)
    p.read_memory(addr, 1)
    assert pte_pfn(p.mm.pgtable.get(addr >> PAGE_SHIFT)) == drv.pfns[0]
    p.mprotect(addr, PAGE, R | W)
    assert not pte_write(p.mm.pgtable.get(addr >> PAGE_SHIFT))  # still COW-protected
    p.write_memory(addr, b"priv")
    assert pte_pfn(p.mm.pgtable.get(addr >> PAGE_SHIFT)) != drv.pfns[0]
    k.cache.flush_all()
    assert k.mem.read(drv.pfns[0] * PAGE, 4) == bytes(4)


def test_mprotect_is_not_atomic_across_vmas() -> None:
    """mm/mprotect.c changes vma after vma; a hole after the first is ENOMEM with the
    first already changed (the documented kernel behaviour, not a simulator slip)."""
    k = Kernel("v6.12")
    p = k.spawn()
    base = 0x40000000
    p.mmap(base, PAGE, R | W, PR | ANON | MAP_FIXED)
    p.mmap(base + 2 * PAGE, PAGE, R | W, PR | ANON | MAP_FIXED)
    assert errno_of(p.mprotect, base, 3 * PAGE, R) == errno.ENOMEM
    assert [v.vm_flags & 0x3 for v in p.mm.vmas] == [0x1, 0x3]


def test_r7_mprotect_exec_allowed_by_vm_mayexec() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDONLY)
    addr = p.mmap(0, PAGE, R, SH, fd, 0)
    p.mprotect(addr, PAGE, R | X)
    assert p.maps().split()[1] == "r-xs"
    assert errno_of(p.mprotect, addr, PAGE, R | W | X) == errno.EACCES
    assert p.maps().split()[1] == "r-xs"


# -- R33 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS_)
def test_r33_mremap_growth_efault_with_dontexpand(spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, R, SH, fd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & VM_DONTEXPAND
    assert errno_of(p.mremap, addr, 2 * PAGE, 4 * PAGE, 0) == errno.EFAULT
    assert errno_of(p.mremap, addr, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE) == errno.EFAULT
    assert spans(p) == [(addr, addr + 2 * PAGE)]
    # shrinking is always allowed
    assert p.mremap(addr, 2 * PAGE, PAGE, 0) == addr
    assert spans(p) == [(addr, addr + PAGE)]
    assert k.drivers["simmem"].closes == 1


@pytest.mark.parametrize("spec", SPECS_)
def test_r33_mremap_growth_efault_with_pfnmap(make_driver: Callable[..., Any], spec: str) -> None:
    k = Kernel(spec)

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        ret = int(remap_pfn_range(vma, vma.vm_start, d.pfn(0), PAGE, vma.vm_page_prot))
        vma.vm_flags &= ~VM_DONTEXPAND  # leave only VM_PFNMAP to block growth
        return ret

    make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, PAGE, R, SH, fd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & (VM_PFNMAP | VM_DONTEXPAND) == VM_PFNMAP
    assert errno_of(p.mremap, addr, PAGE, 2 * PAGE, MREMAP_MAYMOVE) == errno.EFAULT
    assert spans(p) == [(addr, addr + PAGE)]


# -- R34 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS_)
def test_r34_mremap_growth_in_place_without_calling_mmap(
    make_driver: Callable[..., Any], plain_mmap: Any, spec: str
) -> None:
    k = Kernel(spec)
    drv = make_driver(k, plain_mmap, npages=2)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    base = 0x40000000
    p.mmap(base, 2 * PAGE, R | W, SH | MAP_FIXED, fd, 0)
    assert drv.mmap_calls == 1
    assert p.mremap(base, 2 * PAGE, 4 * PAGE, 0) == base
    assert drv.mmap_calls == 1 and drv.opens == []
    vma = p.mm.vma_lookup(base + 3 * PAGE)
    assert (vma.vm_start, vma.vm_end, vma.vm_pgoff) == (base, base + 4 * PAGE, 0)
    assert p.file(fd).f_mapping.i_mmap.interval_of(vma) == (0, 3)
    p.write_memory(base + PAGE, b"in")
    # the grown part reaches past the driver's 2 pages: only ->fault can refuse it
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(base + 2 * PAGE + 4, 1)
    assert (ei.value.si_code, ei.value.addr) == (2, base + 2 * PAGE + 4)
    assert drv.faults[-1] == base + 2 * PAGE


def test_r34_mremap_growth_that_must_move(make_driver: Callable[..., Any], plain_mmap: Any) -> None:
    k = Kernel("v6.12")
    drv = make_driver(k, plain_mmap, npages=8)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    base = 0x40000000
    p.mmap(base, 2 * PAGE, R | W, SH | MAP_FIXED, fd, 0)
    p.mmap(base + 2 * PAGE, PAGE, R, PR | ANON | MAP_FIXED)  # blocks in-place growth
    p.write_memory(base + PAGE, b"moved")
    old_pfn = pte_pfn(p.mm.pgtable.get((base + PAGE) >> PAGE_SHIFT))
    assert errno_of(p.mremap, base, 2 * PAGE, 4 * PAGE, 0) == errno.ENOMEM
    new = p.mremap(base, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE)
    assert new != base
    assert drv.mmap_calls == 1
    assert len(drv.opens) == 1 and len(drv.closes) == 1  # copy_vma ->open, old ->close
    assert p.mm.vma_lookup(base) is None
    assert pte_pfn(p.mm.pgtable.get((new + PAGE) >> PAGE_SHIFT)) == old_pfn
    assert p.read_memory(new + PAGE, 5) == b"moved"
    assert p.file(fd).f_count == 2


# -- mremap argument checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "err"),
    [
        ((PAGE, PAGE, 8), errno.EINVAL),  # unknown flag
        ((PAGE, 2 * PAGE, MREMAP_FIXED), errno.EINVAL),  # FIXED without MAYMOVE
        ((PAGE, 2 * PAGE, MREMAP_DONTUNMAP), errno.EINVAL),  # DONTUNMAP without MAYMOVE
        ((PAGE, 2 * PAGE, MREMAP_DONTUNMAP | MREMAP_MAYMOVE), errno.EINVAL),  # resizing
        ((PAGE, 0, 0), errno.EINVAL),  # new_len 0
        ((3 * PAGE, 4 * PAGE, 0), errno.EFAULT),  # old range crosses the vma end
    ],
)
def test_mremap_errors(args: tuple[int, int, int], err: int) -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, 2 * PAGE, R, PR | ANON)
    assert errno_of(p.mremap, addr, *args) == err
    assert errno_of(p.mremap, addr + 1, PAGE, 2 * PAGE, 0) == errno.EINVAL
    assert spans(p) == [(addr, addr + 2 * PAGE)]


@pytest.mark.parametrize("spec", SPECS_)
def test_mremap_growth_of_unmapped_address_efault(spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    assert errno_of(p.mremap, 0x40000000, PAGE, 2 * PAGE, MREMAP_MAYMOVE) == errno.EFAULT


@pytest.mark.parametrize("spec", SPECS_)
def test_mremap_old_len_zero_without_vma_efault(spec: str) -> None:
    """vma_to_resize (3.x) / the vma_lookup at the top of do_mremap (5.16+): EFAULT."""
    k = Kernel(spec)
    p = k.spawn()
    assert errno_of(p.mremap, 0x40000000, 0, 2 * PAGE, MREMAP_MAYMOVE) == errno.EFAULT


def test_mremap_old_len_zero_of_private_mapping_einval() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, PAGE, R, PR | ANON)
    assert errno_of(p.mremap, addr, 0, PAGE, MREMAP_MAYMOVE) == errno.EINVAL
