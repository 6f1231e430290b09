"""Shoot-downs through an address_space (kernel-spec §5.2 step 9, §5.5; R25, R28).

``unmap_mapping_range`` is called on ``file.f_mapping`` exactly as a driver
would; the tests check which PTEs went, in which processes, and that the next
access faults back into the driver.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.fs import alloc_anon_inode, alloc_file_pseudo, fput
from dmabuf_sim.mm.memory import remap_pfn_range, unmap_mapping_range
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import pte_pfn
from dmabuf_sim.mm.util import vma_set_file

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR = mmap.MAP_SHARED, mmap.MAP_PRIVATE
ALL = ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"]


def present(p: Any, addr: int, n: int) -> list[bool]:
    return [p.mm.pgtable.get((addr >> PAGE_SHIFT) + i) is not None for i in range(n)]


def fault_count(events: list[Any], name: str = "simmem_fault") -> int:
    return sum(1 for e in events if e.kind == "entry" and e.func == name)


# -- R25: the vma lives in the i_mmap of the file left in vm_file ----------------------------


@pytest.mark.parametrize("spec", ALL)
def test_r25_vma_linked_into_mapping_of_swapped_file(
    make_driver: Callable[..., Any], spec: str
) -> None:
    k = Kernel(spec)
    own_inode = alloc_anon_inode(k, "toyfs")
    own = alloc_file_pseudo(own_inode, "toy-backing", os.O_RDWR, k.chrdevs["/dev/simmem"].fops)

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        vma.vm_ops = d.vm_ops()
        vma_set_file(vma, own)  # get_file(own); fput(the device file)
        return 0

    drv = make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    dev_file = p.file(fd)
    addr = p.mmap(0, 3 * PAGE, R | W, SH, fd, PAGE)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is own
    assert (own.f_count, dev_file.f_count) == (2, 1)  # creator + vma; fd only
    assert vma in own.f_mapping.i_mmap and vma not in dev_file.f_mapping.i_mmap
    assert own.f_mapping.i_mmap.interval_of(vma) == (1, 3)
    p.read_memory(addr, 3 * PAGE)
    # a shoot-down on the device inode reaches nothing
    assert unmap_mapping_range(dev_file.f_mapping, 0, 0, 1) == 0
    assert present(p, addr, 3) == [True, True, True]
    # on the backing file's mapping it zaps, and the next access faults again
    assert unmap_mapping_range(own.f_mapping, 2 * PAGE, PAGE, 1) == 1
    assert present(p, addr, 3) == [True, False, True]
    n = len(drv.faults)
    p.read_memory(addr + PAGE, 1)
    assert drv.faults[n:] == [addr + PAGE]
    # munmap drops the vma's reference on the swapped-in file, not the device file
    p.munmap(addr, 3 * PAGE)
    assert (own.f_count, dev_file.f_count) == (1, 1)
    assert len(own.f_mapping.i_mmap) == 0
    fput(own)
    assert own.released and not dev_file.released


# -- R28: all processes, fork children included ---------------------------------------------


@pytest.mark.parametrize("spec", ALL)
def test_r28_unmap_mapping_range_zaps_every_process_and_refaults(spec: str) -> None:
    k = Kernel(spec)
    drv = k.drivers["simmem"]
    parent = k.spawn("parent")
    fd = parent.open("/dev/simmem", os.O_RDWR)
    addr = parent.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
    parent.write_memory(addr + PAGE, b"before")
    parent.read_memory(addr, 4 * PAGE)
    child = parent.fork()
    child.read_memory(addr, 4 * PAGE)
    other = k.spawn("other")
    ofd = other.open("/dev/simmem", os.O_RDONLY)
    oaddr = other.mmap(0, 2 * PAGE, R, SH, ofd, PAGE)  # file pages 1..2
    other.read_memory(oaddr, 2 * PAGE)
    mapping = parent.file(fd).f_mapping
    assert len(mapping.i_mmap) == 3

    zapped = unmap_mapping_range(mapping, PAGE, PAGE, 1)  # file page 1 only
    assert zapped == 3
    assert present(parent, addr, 4) == [True, False, True, True]
    assert present(child, addr, 4) == [True, False, True, True]
    assert present(other, oaddr, 2) == [False, True]
    page = k.mem.page_if_exists(drv.pfns[1])
    assert (page.refcount, page.mapcount) == (1, 0)

    for proc, base in ((child, addr + PAGE), (other, oaddr), (parent, addr + PAGE)):
        with k.trace() as events:
            assert proc.read_memory(base, 6) == b"before"
        assert fault_count(events) == 1
        assert pte_pfn(proc.mm.pgtable.get(base >> PAGE_SHIFT)) == drv.pfns[1]
    assert (page.refcount, page.mapcount) == (4, 3)


def test_holelen_zero_means_to_the_end_and_rounding() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 8 * PAGE, R, SH, fd, 4 * PAGE)  # file pages 4..11
    mapping = p.file(fd).f_mapping
    p.read_memory(addr, 8 * PAGE)
    # begin rounded down, length rounded up: byte 6*PAGE+1, one byte -> file page 6
    assert unmap_mapping_range(mapping, 6 * PAGE + 1, 1, 1) == 1
    assert present(p, addr, 8) == [True, True, False, True, True, True, True, True]
    # begin and length are rounded independently: two bytes straddling the
    # boundary of file pages 4 and 5 give hba = 4, hlen = 1 -> only page 4
    assert unmap_mapping_range(mapping, 5 * PAGE - 1, 2, 1) == 1
    assert present(p, addr, 8) == [False, True, False, True, True, True, True, True]
    # holelen 0: from file page 9 to the end of the file
    assert unmap_mapping_range(mapping, 9 * PAGE, 0, 1) == 3
    assert present(p, addr, 8) == [False, True, False, True, True, False, False, False]
    # a hole before the mapping's file range touches nothing
    assert unmap_mapping_range(mapping, 0, 4 * PAGE, 1) == 0
    assert present(p, addr, 8) == [False, True, False, True, True, False, False, False]


@pytest.mark.parametrize("even_cows", [0, 1])
def test_even_cows_decides_private_copies(even_cows: int) -> None:
    k = Kernel("v6.12")
    drv = k.drivers["simmem"]
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    shared = p.mmap(0, PAGE, R | W, SH, fd, 0)
    p.write_memory(shared, b"file")
    priv = p.mmap(0, 2 * PAGE, R | W, PR, fd, 0)
    p.write_memory(priv, b"mine")  # page 0: private anonymous copy
    p.read_memory(priv + PAGE, 1)  # page 1: the driver's page, read-only
    copy_pfn = pte_pfn(p.mm.pgtable.get(priv >> PAGE_SHIFT))
    zapped = unmap_mapping_range(p.file(fd).f_mapping, 0, 0, even_cows)
    assert present(p, priv, 2) == [not even_cows, False]
    assert present(p, shared, 1) == [False]
    assert zapped == (3 if even_cows else 2)
    if even_cows:
        assert not k.mem.pfn_allocated(copy_pfn)  # the COW copy was freed
        assert p.read_memory(priv, 4) == b"file"  # refaults the file page
        assert pte_pfn(p.mm.pgtable.get(priv >> PAGE_SHIFT)) == drv.pfns[0]
    else:
        assert p.read_memory(priv, 4) == b"mine"
        assert pte_pfn(p.mm.pgtable.get(priv >> PAGE_SHIFT)) == copy_pfn


def test_unmap_mapping_range_reaches_pfnmap_ptes(make_driver: Callable[..., Any]) -> None:
    k = Kernel("v6.12")

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        return int(remap_pfn_range(vma, vma.vm_start, d.pfn(0), PAGE, vma.vm_page_prot))

    make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, PAGE, R, SH, fd, 0)
    child = p.fork()
    assert present(child, addr, 1) == [True]
    assert unmap_mapping_range(p.file(fd).f_mapping, 0, PAGE, 0) == 2
    assert present(p, addr, 1) == [False] and present(child, addr, 1) == [False]
