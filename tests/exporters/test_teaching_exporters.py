"""Teaching exporters: each defect reproduced directly, with its concrete symptom.

Not through the scenario runner: every test below builds the situation by hand
and looks at the kernel through the back door (PTE counts, pfns, refcounts, the
coherency record, the fault-wait log, the virtual clock).  Each exporter is
``SimpleExporter`` or ``ShootdownExporter`` with exactly one thing broken
(dmabuf_sim/exporters/teaching.py).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import pytest

from dmabuf_sim import Kernel, Process
from dmabuf_sim.coherency import CoherencyChecker
from dmabuf_sim.device import DMA_BIDIRECTIONAL, DMA_TO_DEVICE, Device
from dmabuf_sim.dma_buf import (
    DmaFence,
    DmaResvUsage,
    dma_buf_attach,
    dma_buf_end_cpu_access,
    dma_buf_map_attachment_unlocked,
    dma_buf_mmap,
)
from dmabuf_sim.dma_buf.core import DmaBuf, dma_buf_fd
from dmabuf_sim.exporters.teaching import (
    FreesWhileMapped,
    LeaksFileRef,
    NoBoundsFault,
    NoCoherency,
    SharedFileZap,
    SimpleExporter,
    WaitsInFault,
)
from dmabuf_sim.fs import FileOperations
from dmabuf_sim.mm.pgtable import pte_pfn
from dmabuf_sim.mm.vma import VmAreaStruct
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
    DmaBufSync,
)

MAPPABLE = ["v3.5", "v6.1", "v6.12", "latest"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def _export(k: Kernel, p: Process, ops: Any, pages: int) -> tuple[DmaBuf, int]:
    with k.running(p):
        dmabuf = ops.export(k, pages * PAGE)
        fd = dma_buf_fd(dmabuf, 0)
    return dmabuf, fd


def _ptes(p: Process, addr: int, pages: int) -> int:
    vpn = addr // PAGE
    return sum(1 for _ in p.mm.pgtable.iter_range(vpn, vpn + pages))


def _end_cpu(k: Kernel, dmabuf: DmaBuf) -> None:
    args = (0, dmabuf.size, DMA_TO_DEVICE) if k.spec.cpu_access_has_range_args else (DMA_TO_DEVICE,)
    dma_buf_end_cpu_access(dmabuf, *args)


def _sync(p: Process, fd: int, flags: int) -> None:
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags))


# -- shared_file_zap: R26, R27, R56 -------------------------------------------------------------


@pytest.mark.parametrize(("spec", "b_ptes_after"), [("v3.5", 0), ("v6.12", 2)])
def test_r26_r27_r56_shared_file_zap_hits_other_buffers_only_on_the_anon_inode(
    spec: str, b_ptes_after: int
) -> None:
    """R56/R26 (v3.5): the exporter shoots down through dmabuf->file->f_mapping without
    swapping vm_file; every dma-buf file shares the anon inode, so leaving the CPU domain
    on buffer A zaps the PTEs of buffer B too — in this process and in a fork child.
    R27 (v6.12): each buffer has its own inode; A's shoot-down leaves B's PTEs alone."""
    k = Kernel(spec)
    p = k.spawn("app")
    ops = SharedFileZap()
    a, fa = _export(k, p, ops, 2)
    b, fb = _export(k, p, ops, 2)
    assert a.file is not None and b.file is not None
    assert (a.file.f_mapping is b.file.f_mapping) == (spec == "v3.5")
    addr_a = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fa, 0)
    addr_b = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fb, 0)
    p.write_memory(addr_a, b"a" * 2 * PAGE)
    p.write_memory(addr_b, b"b" * 2 * PAGE)
    child = p.fork()  # MIXEDMAP: the child gets copies of all four PTEs
    assert (_ptes(p, addr_b, 2), _ptes(child, addr_b, 2)) == (2, 2)
    _end_cpu(k, a)  # A leaves the CPU domain; B is in the middle of its CPU access
    assert (_ptes(p, addr_a, 2), _ptes(child, addr_a, 2)) == (0, 0)
    assert (_ptes(p, addr_b, 2), _ptes(child, addr_b, 2)) == (b_ptes_after, b_ptes_after)
    assert p.read_memory(addr_b, 1) == b"b"  # B refaults: data intact, only PTEs went


def test_r56_shared_file_zap_under_the_rfc_through_importer_mappings() -> None:
    """rfc-2012 (mmap of the fd oopses, R61): two importers map A and B via dma_buf_mmap,
    which points vm_file at each dma-buf file — all on the shared anon inode; A's
    shoot-down zaps B's importer mapping."""
    k = Kernel("rfc-2012")
    p = k.spawn("app")
    ops = SharedFileZap()
    bufs = [_export(k, p, ops, 1)[0] for _ in range(2)]
    addrs = []
    for i, dmabuf in enumerate(bufs):

        def fwd(file: Any, vma: VmAreaStruct, dmabuf: DmaBuf = dmabuf) -> int:
            return dma_buf_mmap(dmabuf, vma, vma.vm_pgoff)

        k.register_chrdev(f"/dev/importer{i}", FileOperations(owner="importer", mmap=fwd))
        ifd = p.open(f"/dev/importer{i}", os.O_RDWR)
        addrs.append(p.mmap(0, PAGE, RW, mmap.MAP_SHARED, ifd, 0))
        p.write_memory(addrs[-1], b"x")
    assert [_ptes(p, a, 1) for a in addrs] == [1, 1]
    _end_cpu(k, bufs[0])
    assert [_ptes(p, a, 1) for a in addrs] == [0, 0]


# -- no_bounds_fault: R34 -----------------------------------------------------------------------


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r34_no_bounds_fault_maps_a_neighbours_page_after_mremap_growth(spec: str) -> None:
    """R34: no VM_DONTEXPAND, so mremap grows the vma without asking dma_buf_mmap_internal;
    the fault handler has no bounds check and maps ``first_pfn + pgoff`` — here the first
    page of buffer B, allocated right after A: A's mapping now reads and writes B."""
    k = Kernel(spec)
    p = k.spawn("app")
    a, fa = _export(k, p, NoBoundsFault(), 2)
    b, fb = _export(k, p, SimpleExporter(), 2)
    assert b.priv.first_pfn == a.priv.first_pfn + 2
    addr_b = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fb, 0)
    p.write_memory(addr_b, b"B's secret")
    addr_a = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fa, 0)
    grown = p.mremap(addr_a, 2 * PAGE, 3 * PAGE, 1)  # MREMAP_MAYMOVE
    assert p.read_memory(grown + 2 * PAGE, 10) == b"B's secret"
    pfn = pte_pfn(p.mm.pgtable.get(grown // PAGE + 2))
    assert pfn == b.priv.first_pfn
    assert pfn not in a.priv.pfns()
    p.write_memory(grown + 2 * PAGE, b"overwrite!")
    assert p.read_memory(addr_b, 10) == b"overwrite!"


# -- no_coherency: stale reads under the sync protocol ------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_no_coherency_stale_reads_even_with_sync(spec: str) -> None:
    """SAN-STALE-READ: every access bracketed by DMA_BUF_IOCTL_SYNC, yet the CoherencyChecker
    records stale reads both ways: the device reads zeros instead of the CPU's write (no
    clean), and the CPU reads its old cached line instead of the device's write (no
    invalidate)."""
    k = Kernel(spec)
    p = k.spawn("app")
    checker = CoherencyChecker.attach(k)
    dmabuf, fd = _export(k, p, NoCoherency(), 1)
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    gpu = Device(k, "gpu")
    sgt = dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, gpu), DMA_BIDIRECTIONAL)
    _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE)
    p.write_memory(addr, b"cpu!")
    _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE)
    assert gpu.dma_read(sgt, 0, 4) == bytes(4)
    (stale,) = checker.stale
    assert stale.reader == "device gpu" and stale.expected == b"cpu!" and stale.saw == bytes(4)
    gpu.dma_write(sgt, 8, b"gpu!")  # behind the CPU's line 0 (its write filled it)
    _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
    assert p.read_memory(addr + 8, 4) == bytes(4)
    _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)
    assert len(checker.stale) == 2
    assert checker.stale[1].reader.startswith("CPU") and checker.stale[1].expected == b"gpu!"


# -- waits_in_fault: R55 ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_r55_waits_in_fault_logs_a_fault_wait_and_advances_the_clock(spec: str) -> None:
    """R55: the fault handler waits on the buffer's implicit fences — kernel.fault_waits gets
    an entry, the virtual clock jumps to the fence's completion, the fence signals."""
    k = Kernel(spec)
    p = k.spawn("app")
    dmabuf, fd = _export(k, p, WaitsInFault(), 2)
    assert dmabuf.resv is not None
    fence = DmaFence(k, "gpu-job", 1, completes_at=5_000_000)
    dmabuf.resv.add_fence(fence, DmaResvUsage.WRITE)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert (k.fault_waits, k.clock) == ([], 0)
    p.read_memory(addr, 1)
    assert k.fault_waits == ["wait on fence(gpu-job#1) inside a page fault"]
    assert k.clock == 5_000_000 and fence.signaled


# -- leaks_file_ref: R17 ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r17_leaks_file_ref_keeps_the_buffer_forever(spec: str) -> None:
    """R17: mmap takes an extra file reference the vma never drops: after close(fd) and the
    last munmap the file still has f_count 1, ops->release never runs, the pages stay."""
    k = Kernel(spec)
    p = k.spawn("app")
    dmabuf, fd = _export(k, p, LeaksFileRef(), 2)
    assert dmabuf.file is not None
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert dmabuf.file.f_count == 3  # fd + vma + the leak
    p.close(fd)
    p.munmap(addr, 2 * PAGE)
    assert dmabuf.file.f_count == 1
    assert (dmabuf.released, dmabuf.release_calls) == (False, 0)
    assert k.mem.pfn_allocated(dmabuf.priv.first_pfn)


# -- frees_while_mapped: SAN-FREED-PTE ----------------------------------------------------------


@pytest.mark.parametrize("spec", MAPPABLE)
def test_frees_while_mapped_leaves_ptes_into_freed_pages_after_a_split(spec: str) -> None:
    """SAN-FREED-PTE: unmapping the middle page closes that piece of the vma, whose close
    frees the whole buffer — the two remaining pieces keep PTEs into unallocated pfns."""
    k = Kernel(spec)
    p = k.spawn("app")
    dmabuf, fd = _export(k, p, FreesWhileMapped(), 3)
    addr = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.munmap(addr + PAGE, PAGE)
    left = [pte_pfn(pte) for _vpn, pte in p.mm.pgtable.iter_range(addr // PAGE, addr // PAGE + 3)]
    assert left == [dmabuf.priv.first_pfn, dmabuf.priv.first_pfn + 2]
    assert [k.mem.pfn_allocated(pfn) for pfn in left] == [False, False]
    assert not dmabuf.released  # the dma-buf itself is still alive: fd and two vmas


@pytest.mark.parametrize("spec", MAPPABLE)
def test_frees_while_mapped_child_exit_frees_the_parents_pages(spec: str) -> None:
    """SAN-FREED-PTE: a fork child's vma closing at exit frees the pages the parent's PTEs
    still point at."""
    k = Kernel(spec)
    p = k.spawn("app")
    dmabuf, fd = _export(k, p, FreesWhileMapped(), 2)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    child = p.fork()
    child.exit()
    assert _ptes(p, addr, 2) == 2
    assert not k.mem.pfn_allocated(dmabuf.priv.first_pfn)
