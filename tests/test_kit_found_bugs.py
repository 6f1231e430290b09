"""Bugs the conformance kit found in the simulator and its reference exporters, pinned.

Each was a stale read (SAN-STALE-READ) in a random program of the kit; each test
replays the shortest program the kit printed, in the simulator's own terms.
"""

from __future__ import annotations

import mmap
import os

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.conformance import make_machine
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device, SgTable, dma_map_sgtable
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.vmalloc import vmap
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    DmaBufSync,
)

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def test_invalidate_kernel_vmap_range_never_loses_what_a_user_mapping_wrote() -> None:
    """The simulated cache is physically indexed: the vmap alias has no lines of its own,
    so invalidate_kernel_vmap_range writes dirty lines back before dropping them (ARM32's
    __cpuc_flush_dcache_area) rather than discarding a user mapping's write."""
    k = Kernel("v6.12")
    pfn = k.mem.alloc_pages(0)
    k.cache.store(pfn * PAGE + 60, b"s")  # a user mapping's write, still in the cache
    mapping = vmap(k, [pfn])
    mapping.invalidate()
    assert not k.cache.lines  # nothing of the range stays cached
    assert k.cache.load(pfn * PAGE + 60, 1) == b"s"  # and memory holds the write


def test_system_heap_begin_cpu_access_with_a_vmap_keeps_the_cpu_s_writes() -> None:
    """The kit's program: write under SYNC, vmap, SYNC START (kernel) — the write stays."""
    state = make_machine("system_heap", "v6.12")()
    b1 = state.new_buffer(size=3 * PAGE)
    m1 = state.mmap(b1, offset=2, pages=1)
    state.sync_start(b1, "rw")
    state.cpu_write(m1, offset=60, data=b"s")
    state.sync_end(b1)
    state.vmap(b1)
    state.sync_start(b1, "read", via="kernel")
    state.cpu_read(m1, offset=60, n=1)  # raised SAN-STALE-READ before the fix
    state.sync_end(b1)
    state.teardown()


@pytest.mark.parametrize("exporter", ["vgem"])
def test_a_cow_copy_of_a_write_combined_page_leaves_no_stale_line(exporter: str) -> None:
    """copy_user_highpage goes through the cached linear map; the copy's lines are written
    back and dropped, so a later write through the write-combined user mapping (straight to
    memory) is what the next COW copy (after fork) reads."""
    k = Kernel("v5.10")
    p = k.spawn()
    fd = EXPORTERS[exporter].make_fd(p, PAGE, os.O_RDWR)
    a = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE, fd, 0)
    p.write_memory(a + 925, b"\x80")  # first COW copy, then a WC store
    child = p.fork()
    p.write_memory(a + 2799, b"\x89")  # second COW copy, from the first
    assert p.read_memory(a + 925, 1) == b"\x80"
    assert child.read_memory(a + 925, 1) == b"\x80"


@pytest.mark.parametrize("spec", ["v6.12", "latest"])
def test_a_shootdown_keeps_a_private_mapping_s_own_copies(spec: str) -> None:
    """The shoot-down is an invalidation (unmap_mapping_range with even_cows = 0): it zaps
    PTEs of the buffer's pages, never a MAP_PRIVATE mapping's anonymous copies."""
    state = make_machine("shootdown", spec)()
    b1 = state.new_buffer(size=6144)
    state.sync_start(b1, "write", via="kernel")
    m1 = state.mmap(b1, offset=0, pages=1, private=True)
    state.cpu_write(m1, offset=422, data=b"\\")
    state.sync_end(b1)  # leaves the CPU domain: shoots the PTEs down
    state.cpu_write(m1, offset=8, data=b"\xf7")
    state.cpu_read(m1, offset=422, n=1)  # raised SAN-STALE-READ with even_cows = 1
    state.teardown()


def _first_sync_after_a_device_write(spec: str) -> bytes:
    """A line cached before a device wrote, then the buffer's first SYNC START."""
    k = Kernel(spec)
    p = k.spawn()
    fd = EXPORTERS["udmabuf"].make_fd(p, PAGE, os.O_RDWR)
    a = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(a + 8, 1)  # the line is now in the CPU cache
    pfn = p.file(fd).private_data.priv.pfns[0]
    dev = Device(k, "gpu")
    sgt = SgTable.from_pfns([pfn])
    dma_map_sgtable(dev, sgt, DMA_BIDIRECTIONAL)
    dev.dma_write(sgt, 8, b"\x5c")
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ))
    seen = p.read_memory(a + 8, 1)
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW))
    return seen


@pytest.mark.parametrize(
    ("spec", "seen"), [("v6.19", b"\x00"), ("v6.12", b"\x5c"), ("latest", b"\x5c")]
)
def test_udmabuf_first_sync_start_invalidates_only_since_the_2026_fix(
    spec: str, seen: bytes
) -> None:
    """R44 and Spec.udmabuf_begin_cpu_always_syncs (1d0e25c1ddf2, 7.2; stable Aug 2026):
    before it, the first begin_cpu_udmabuf only mapped its sg table (a clean), so the
    line cached before the device wrote stayed stale — the kit reports it on v6.19."""
    assert _first_sync_after_a_device_write(spec) == seen
