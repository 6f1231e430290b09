"""The machine as a whole: laziness (cost follows work, not size) and independence of kernels."""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS


def test_huge_mapping_creates_no_ptes_no_struct_pages_no_bytes(
    make_driver: Callable[..., Any], plain_mmap: Any
) -> None:
    npages = 2**28  # 1 TiB
    k = Kernel("v6.12")
    drv = make_driver(k, plain_mmap, "/dev/big", npages=npages)
    p = k.spawn()
    fd = p.open("/dev/big", os.O_RDWR)
    pages_before = k.mem.materialised_pages
    data_before = k.mem.pages_with_data
    addr = p.mmap(0, npages * PAGE, R | W, SH, fd, 0)
    vma = p.mm.vma_lookup(addr + (npages - 1) * PAGE)
    assert vma is not None and vma.vm_end - vma.vm_start == npages * PAGE
    assert len(p.mm.pgtable) == 0
    assert k.mem.materialised_pages == pages_before
    assert k.mem.pages_with_data == data_before
    assert drv.pfns == {}
    # touching one page costs one PTE and one struct page; reading gives no bytes
    assert p.read_memory(addr + 123_456 * PAGE, 8) == bytes(8)
    assert len(p.mm.pgtable) == 1
    assert k.mem.materialised_pages == pages_before + 1
    assert k.mem.pages_with_data == data_before
    # writing zeros to an untouched page still stores no bytes
    p.write_memory(addr + 5 * PAGE, bytes(64))
    k.cache.flush_all()
    assert k.mem.pages_with_data == data_before
    p.write_memory(addr + 6 * PAGE, b"x")
    k.cache.flush_all()
    assert k.mem.pages_with_data == data_before + 1
    # and tearing it down is as cheap
    p.munmap(addr, npages * PAGE)
    assert len(p.mm.pgtable) == 0 and drv.closes


def test_anonymous_terabyte_is_free_until_touched() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    allocated = k.mem.allocated_pages
    addr = p.mmap(0, 2**40, R | W, PR | ANON)
    assert k.mem.allocated_pages == allocated and len(p.mm.pgtable) == 0
    p.write_memory(addr + 2**39, b"mid")
    assert k.mem.allocated_pages == allocated + 1 and len(p.mm.pgtable) == 1


def test_two_kernels_share_nothing(make_driver: Callable[..., Any], plain_mmap: Any) -> None:
    a = Kernel("v6.12")
    b = Kernel("v3.5")
    assert a.mem is not b.mem and a.cache is not b.cache and a.tracer is not b.tracer
    assert a.anon_inode is not b.anon_inode
    assert a.drivers["simmem"] is not b.drivers["simmem"]
    pa, pb = a.spawn("a"), b.spawn("b")
    assert pa.pid == pb.pid == 1  # each kernel numbers its own processes
    fa = pa.open("/dev/simmem", os.O_RDWR)
    fb = pb.open("/dev/simmem", os.O_RDWR)
    assert pa.file(fa).f_inode is not pb.file(fb).f_inode
    xa = pa.mmap(0, PAGE, R | W, SH, fa, 0)
    xb = pb.mmap(0, PAGE, R | W, SH, fb, 0)
    pa.write_memory(xa, b"only in a")
    assert pb.read_memory(xb, 9) == bytes(9)
    a.cache.flush_all()
    b.cache.flush_all()
    assert a.mem.pages_with_data == 1 and b.mem.pages_with_data == 0
    # a device registered in one kernel does not exist in the other
    make_driver(a, plain_mmap, "/dev/only-a")
    with pytest.raises(OSError) as ei:
        pb.open("/dev/only-a")
    assert ei.value.errno == errno.ENOENT
    # tracing one kernel records nothing in the other
    with a.trace() as events_a:
        pa.read_memory(xa, 1)
        pb.read_memory(xb, 1)
    assert b.tracer.events == [] and not b.tracer.enabled
    assert {e.pid for e in events_a} <= {0, pa.pid}
    assert all(e.comm != "b" for e in events_a)
    # the spec of one kernel drives only that kernel
    with pytest.raises(OSError) as ei:
        pa.mmap(0, PAGE, R, SH, fa, -PAGE)
    assert ei.value.errno == errno.EOVERFLOW
    with pytest.raises(OSError) as ei:
        pb.mmap(0, PAGE, R, SH, fb, -PAGE)
    assert ei.value.errno == errno.EINVAL


def test_kernels_with_the_same_seed_are_deterministic() -> None:
    def run() -> tuple[list[int], str]:
        k = Kernel("v6.12", seed=7)
        p = k.spawn()
        fd = p.open("/dev/simmem", os.O_RDWR)
        addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
        p.write_memory(addr, b"x" * 4 * PAGE)
        return sorted(p.mm.pgtable.entries.values()), p.maps()

    assert run() == run()
    assert (
        Kernel("v6.12", seed=1).drivers["simmem"].pfns
        != Kernel("v6.12", seed=2).drivers["simmem"].pfns
    )
