"""The seed's recipe: faked coherency by PTE shoot-down (omapdrm-like), kernel-spec §5.5, §6.7.

``mmap`` swaps the exporter's own shmem file into ``vm_file`` (R25); leaving the CPU
domain (``map_dma_buf``, ``end_cpu_access``) DMA-maps every CPU-owned page and
``unmap_mapping_range`` on the own file zaps every user PTE of the buffer in every
process (R28); the next touch faults, and the fault takes a device-owned page back
for the CPU (cache invalidate) without waiting for anything (R55).  Userspace needs
no DMA_BUF_IOCTL_SYNC.  Tested on v3.5 (the shared anon inode) and v6.12 alike;
under rfc-2012 the dma-buf fd cannot be mapped (R61), but an importer's mmap through
``dma_buf_mmap`` can.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel, Process
from dmabuf_sim.coherency import CoherencyChecker
from dmabuf_sim.device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, Device
from dmabuf_sim.dma_buf import (
    DmaFence,
    DmaResvUsage,
    dma_buf_attach,
    dma_buf_begin_cpu_access,
    dma_buf_detach,
    dma_buf_end_cpu_access,
    dma_buf_kmap,
    dma_buf_kunmap,
    dma_buf_map_attachment_unlocked,
    dma_buf_mmap,
    dma_buf_unmap_attachment_unlocked,
)
from dmabuf_sim.dma_buf.core import DmaBuf, dma_buf_fd
from dmabuf_sim.errors import KernelOops
from dmabuf_sim.exporters.shootdown import ShootdownExporter
from dmabuf_sim.exporters.teaching import SimpleExporter
from dmabuf_sim.fs import FileOperations
from dmabuf_sim.mm.memory import unmap_mapping_range
from dmabuf_sim.mm.vma import VM_DONTEXPAND, VM_MIXEDMAP, VM_PFNMAP, VmAreaStruct
from dmabuf_sim.uapi import DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_END, DMA_BUF_SYNC_RW, DmaBufSync

SPECS = ["v3.5", "v6.12"]
FENCE_SPECS = ["v6.1", "v6.12", "latest"]
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def _export(spec: str, pages: int, ops: Any = None) -> tuple[Kernel, Process, DmaBuf, int]:
    k = Kernel(spec)
    p = k.spawn("app")
    ops = ops if ops is not None else ShootdownExporter()
    with k.running(p):
        dmabuf = ops.export(k, pages * PAGE)
        fd = dma_buf_fd(dmabuf, 0)
    assert fd >= 0
    return k, p, dmabuf, fd


def _cpu(k: Kernel, dmabuf: DmaBuf, *, end: bool, direction: Any = DMA_BIDIRECTIONAL) -> None:
    """begin/end_cpu_access in the spec's signature (3.x passes start and len)."""
    args = (0, dmabuf.size, direction) if k.spec.cpu_access_has_range_args else (direction,)
    (dma_buf_end_cpu_access if end else dma_buf_begin_cpu_access)(dmabuf, *args)


def _device_job(k: Kernel, dmabuf: DmaBuf, fn: Callable[[Device, Any], Any]) -> Any:
    """attach → map (leaving the CPU domain) → fn(dev, sgt) → unmap → detach."""
    gpu = Device(k, "gpu")
    at = dma_buf_attach(dmabuf, gpu)
    sgt = dma_buf_map_attachment_unlocked(at, DMA_BIDIRECTIONAL)
    try:
        return fn(gpu, sgt)
    finally:
        dma_buf_unmap_attachment_unlocked(at, sgt, DMA_BIDIRECTIONAL)
        dma_buf_detach(dmabuf, at)


def _ptes(p: Process, addr: int, pages: int) -> int:
    vpn = addr // PAGE
    return sum(1 for _ in p.mm.pgtable.iter_range(vpn, vpn + pages))


def _lines(k: Kernel, pfn: int) -> int:
    return sum(1 for base in k.cache.lines if pfn * PAGE <= base < (pfn + 1) * PAGE)


class ZapLog:
    """An instrument: every unmap_mapping_range zap, as (pid, PTEs zapped)."""

    def __init__(self) -> None:
        self.zaps: list[tuple[int, int]] = []

    def on_zap(self, mapping: Any, vma: VmAreaStruct, start: int, end: int, n: int) -> None:
        self.zaps.append((vma.vm_mm.owner.pid, n))


# -- R25: the exporter's own file ---------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_r25_vma_gets_the_exporters_own_file_and_address_space(spec: str) -> None:
    """R25: after mmap the vma's vm_file is the exporter's shmem file, it is linked in that
    file's i_mmap and not in the dma-buf's (on v3.5: the anon inode every dma-buf shares);
    the dma-buf file's refcount is the same before and after mmap and munmap; only a zap
    of the own address_space reaches the vma."""
    k, p, dmabuf, fd = _export(spec, 4)
    buf = dmabuf.priv
    assert dmabuf.file is not None
    dcount, own_count = dmabuf.file.f_count, buf.filp.f_count
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is buf.filp
    assert vma in buf.filp.f_mapping.mapped_vmas()
    assert vma not in dmabuf.file.f_mapping.mapped_vmas()
    if spec == "v3.5":
        assert dmabuf.file.f_mapping is k.anon_inode.i_mapping
    assert (dmabuf.file.f_count, buf.filp.f_count) == (dcount, own_count + 1)
    assert vma.vm_flags & (VM_MIXEDMAP | VM_DONTEXPAND) == VM_MIXEDMAP | VM_DONTEXPAND
    assert not vma.vm_flags & VM_PFNMAP
    p.write_memory(addr, b"x" * 4 * PAGE)
    assert unmap_mapping_range(dmabuf.file.f_mapping, 0, 0, 1) == 0
    assert _ptes(p, addr, 4) == 4
    assert unmap_mapping_range(buf.filp.f_mapping, 0, 0, 1) == 4
    p.munmap(addr, 4 * PAGE)
    assert (dmabuf.file.f_count, buf.filp.f_count) == (dcount, own_count)


# -- R28: shoot-downs reach every process -------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_r28_map_dma_buf_zaps_every_pte_in_every_process(spec: str) -> None:
    """R28: a device mapping the buffer (leaving the CPU domain) zaps every PTE of the buffer
    in the parent, in a fork child (its copied MIXEDMAP PTEs) and in the child's own later
    mapping at another offset; nothing else of theirs is touched."""
    k, p, dmabuf, fd = _export(spec, 4)
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"p" * 4 * PAGE)
    anon = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    p.write_memory(anon, b"mine")
    child = p.fork()
    caddr = child.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 2 * PAGE)
    child.read_memory(caddr, 2 * PAGE)
    assert (_ptes(p, addr, 4), _ptes(child, addr, 4), _ptes(child, caddr, 2)) == (4, 4, 2)
    log = ZapLog()
    k.add_instrument(log)
    _device_job(k, dmabuf, lambda dev, sgt: None)
    assert (_ptes(p, addr, 4), _ptes(child, addr, 4), _ptes(child, caddr, 2)) == (0, 0, 0)
    assert sorted(log.zaps) == sorted([(p.pid, 4), (child.pid, 4), (child.pid, 2)])
    assert _ptes(p, anon, 1) == 1 and p.read_memory(anon, 4) == b"mine"
    assert dmabuf.priv.shootdowns == 1


@pytest.mark.parametrize("spec", SPECS)
def test_r28_end_cpu_access_zaps_after_cpu_access(spec: str) -> None:
    """R28: end_cpu_access after the CPU touched pages zaps every PTE in parent and child;
    the next touch faults into the exporter's fault handler."""
    k, p, dmabuf, fd = _export(spec, 3)
    addr = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"a" * 3 * PAGE)
    child = p.fork()
    assert (_ptes(p, addr, 3), _ptes(child, addr, 3)) == (3, 3)
    _cpu(k, dmabuf, end=True, direction=DMA_TO_DEVICE)
    assert (_ptes(p, addr, 3), _ptes(child, addr, 3)) == (0, 0)
    with k.trace() as events:
        assert child.read_memory(addr + PAGE, 1) == b"a"
    assert [e.func for e in events if e.kind == "entry" and e.func == "shootdown_fault"] == [
        "shootdown_fault"
    ]
    assert (_ptes(p, addr, 3), _ptes(child, addr, 3)) == (0, 1)


def test_r28_sync_end_ioctl_shoots_down_on_v612() -> None:
    """On v6.12 userspace reaches end_cpu_access with DMA_BUF_IOCTL_SYNC(END)."""
    _k, p, dmabuf, fd = _export("v6.12", 2)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"z" * 2 * PAGE)
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW))
    assert _ptes(p, addr, 2) == 0 and dmabuf.priv.shootdowns == 1


@pytest.mark.parametrize("spec", SPECS)
def test_leaving_the_cpu_domain_twice_without_cpu_access_shoots_down_once(spec: str) -> None:
    """omap_gem_dma_sync_buffer zaps only if some page was CPU-owned: after map_dma_buf every
    page is the device's (omap_gem_pin attaches them all first), so an end_cpu_access with
    no CPU access in between DMA-maps nothing and zaps nothing."""
    k, p, dmabuf, fd = _export(spec, 4)
    buf = dmabuf.priv
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr, 1)  # page 0 exists; pages 1-3 are first allocated by the device map
    _device_job(k, dmabuf, lambda dev, sgt: None)
    assert buf.device_owned == {0, 1, 2, 3} and buf.shootdowns == 1
    log = ZapLog()
    k.add_instrument(log)
    _cpu(k, dmabuf, end=True)
    assert buf.shootdowns == 1 and log.zaps == []


# -- R55: coherency from the fault, never a wait ------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_r55_no_stale_reads_in_either_direction_without_any_sync(spec: str) -> None:
    """R55, end to end, with a CoherencyChecker attached and no SYNC (or begin/end_cpu_access)
    at all: the CPU caches the buffer, the device overwrites page 0, the CPU reads the
    device's bytes; the CPU writes page 1, the device reads the CPU's bytes."""
    k, p, dmabuf, fd = _export(spec, 2)
    checker = CoherencyChecker.attach(k)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert p.read_memory(addr, 2 * PAGE) == bytes(2 * PAGE)  # both pages cached, clean
    _device_job(k, dmabuf, lambda dev, sgt: dev.dma_write(sgt, 0, b"D" * PAGE))
    assert p.read_memory(addr, PAGE) == b"D" * PAGE
    p.write_memory(addr + PAGE, b"C" * 64)  # a dirty line in the CPU cache
    seen = _device_job(k, dmabuf, lambda dev, sgt: dev.dma_read(sgt, PAGE, 64))
    assert seen == b"C" * 64
    assert p.read_memory(addr + PAGE, 64) == b"C" * 64
    assert checker.stale == [] and checker.checked_reads >= 4


@pytest.mark.parametrize("spec", SPECS)
def test_r55_the_fault_itself_drops_stale_lines_of_a_device_owned_page(spec: str) -> None:
    """The invalidate happens in the fault handler (omap_gem_cpu_sync_page): map_dma_buf
    cleans the CPU's lines but keeps them cached; the device writes while it still holds
    the buffer; the CPU's next load faults (its PTE was zapped) and the fault drops the
    stale lines, so it reads the device's bytes — before any unmap, without SYNC."""
    k, p, dmabuf, fd = _export(spec, 1)
    checker = CoherencyChecker.attach(k)
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr, PAGE)
    gpu = Device(k, "gpu")
    at = dma_buf_attach(dmabuf, gpu)
    sgt = dma_buf_map_attachment_unlocked(at, DMA_BIDIRECTIONAL)  # zaps; page device-owned
    assert _ptes(p, addr, 1) == 0 and dmabuf.priv.device_owned == {0}
    gpu.dma_write(sgt, 0, b"N" * PAGE)
    assert _lines(k, dmabuf.priv.pfn(0)) == PAGE // 64  # stale lines, still cached
    with k.trace() as events:
        assert p.read_memory(addr, PAGE) == b"N" * PAGE
    funcs = [e.func for e in events if e.kind == "entry"]
    assert funcs.index("shootdown_fault") < funcs.index("dma_unmap_sgtable")
    assert dmabuf.priv.device_owned == set()
    assert checker.stale == []
    dma_buf_unmap_attachment_unlocked(at, sgt, DMA_BIDIRECTIONAL)
    dma_buf_detach(dmabuf, at)


@pytest.mark.parametrize("spec", SPECS)
def test_control_without_shootdown_the_same_sequence_reads_stale(spec: str) -> None:
    """Control for the test above: the simple exporter (eager PTEs, no shoot-down, coherency
    only through begin/end_cpu_access) under the same no-SYNC sequence reads stale lines."""
    k, p, dmabuf, fd = _export(spec, 1, SimpleExporter())
    checker = CoherencyChecker.attach(k)
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr, PAGE)
    gpu = Device(k, "gpu")
    sgt = dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, gpu), DMA_BIDIRECTIONAL)
    gpu.dma_write(sgt, 0, b"N" * PAGE)
    assert p.read_memory(addr, PAGE) == bytes(PAGE)
    assert [s.reader.split()[0] for s in checker.stale] == ["CPU"]


@pytest.mark.parametrize("spec", FENCE_SPECS)
def test_r55_fault_never_waits_for_a_pending_fence(spec: str) -> None:
    """R55: with an unsignalled WRITE fence on the buffer, faults (the first one and the
    re-fault after a shoot-down) neither wait nor advance the clock."""
    k, p, dmabuf, fd = _export(spec, 2)
    assert dmabuf.resv is not None
    fence = DmaFence(k, "gpu-job", 1, completes_at=k.clock + 10**9)
    dmabuf.resv.add_fence(fence, DmaResvUsage.WRITE)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr, 2 * PAGE)
    _device_job(k, dmabuf, lambda dev, sgt: None)  # waits for KERNEL fences only
    p.write_memory(addr + PAGE, b"again")
    assert k.fault_waits == [] and k.clock == 0 and not fence.signaled


# -- kernel CPU access (kmap, 3.x) --------------------------------------------------------------


def test_kmap_takes_the_page_back_so_a_later_fault_keeps_the_kernels_write() -> None:
    """omap_gem_dmabuf_kmap calls omap_gem_cpu_sync_page: a kernel write through kmap of a
    device-owned page is neither lost to the next user fault's invalidate nor kept from
    the device (the page is CPU-owned again, so leaving the CPU domain cleans it)."""
    k, p, dmabuf, fd = _export("v3.5", 2)
    checker = CoherencyChecker.attach(k)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.read_memory(addr, 2 * PAGE)
    _device_job(k, dmabuf, lambda dev, sgt: dev.dma_write(sgt, 0, b"G" * 2 * PAGE))
    assert dmabuf.priv.device_owned == {0, 1}
    _cpu(k, dmabuf, end=False, direction=DMA_TO_DEVICE)
    vaddr = dma_buf_kmap(dmabuf, 0)
    vaddr.write(0, b"kernel")
    dma_buf_kunmap(dmabuf, 0, vaddr)
    _cpu(k, dmabuf, end=True, direction=DMA_TO_DEVICE)
    # kmap made page 0 CPU-owned; end_cpu_access cleaned it, gave it back and zapped
    assert dmabuf.priv.device_owned == {0, 1} and dmabuf.priv.shootdowns == 2
    assert p.read_memory(addr, 6) == b"kernel"
    seen = _device_job(k, dmabuf, lambda dev, sgt: dev.dma_read(sgt, 0, 6))
    assert seen == b"kernel" and checker.stale == []


# -- rfc-2012: no mmap of the fd, but the importer path -----------------------------------------


class Importer:
    """A driver whose f_op->mmap forwards to dma_buf_mmap (the seed's second use case)."""

    PATH = "/dev/importer"

    def __init__(self, kernel: Kernel, dmabuf: DmaBuf) -> None:
        self.dmabuf = dmabuf
        kernel.register_chrdev(self.PATH, FileOperations(owner="importer", mmap=self.mmap))

    def mmap(self, file: Any, vma: VmAreaStruct) -> int:
        return dma_buf_mmap(self.dmabuf, vma, vma.vm_pgoff)


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.5"])
def test_importer_mapping_through_dma_buf_mmap_is_shot_down(spec: str) -> None:
    """Through an importer's mmap (dma_buf_mmap, present in the RFC) the exporter still swaps
    in its own file; end_cpu_access zaps it (R25, R28).  Under rfc-2012 mmap of the dma-buf
    fd itself oopses (R61)."""
    k, p, dmabuf, fd = _export(spec, 2)
    Importer(k, dmabuf)
    ifd = p.open(Importer.PATH, os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, ifd, 0)
    assert p.mm.vma_lookup(addr).vm_file is dmabuf.priv.filp
    p.write_memory(addr, b"i" * 2 * PAGE)
    _cpu(k, dmabuf, end=True)
    assert _ptes(p, addr, 2) == 0
    assert p.read_memory(addr + PAGE, 1) == b"i"
    if spec == "rfc-2012":
        with pytest.raises(KernelOops) as ei:
            p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
        assert ei.value.rule == "R61"


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.5", "v6.12"])
def test_map_dma_buf_without_any_mapping_hands_the_device_every_page(spec: str) -> None:
    """No mmap involved: map_dma_buf allocates every page, DMA-maps it (device-owned) and
    returns one sg table over the buffer; with no vma there is nothing to zap."""
    k, _p, dmabuf, _fd = _export(spec, 3)
    log = ZapLog()
    k.add_instrument(log)
    pfns = _device_job(k, dmabuf, lambda dev, sgt: list(sgt.pfns()))
    assert pfns == [dmabuf.priv.pfn(i) for i in range(3)]
    assert dmabuf.priv.device_owned == {0, 1, 2}
    assert log.zaps == []
    _cpu(k, dmabuf, end=False, direction=DMA_FROM_DEVICE)
