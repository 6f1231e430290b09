"""The shared scenario suite: what every exporter must survive.

Each scenario drives a fresh kernel through one story of the seed — CPU
writes read by a device and back, fork, partial munmap, close while mapped,
growth with mremap, two buffers side by side, device work pending at fault
time — following the sync protocol (``DMA_BUF_IOCTL_SYNC`` or, on the 2012-era
specs, ``dma_buf_begin/end_cpu_access``), and the sanitizers of
:mod:`.sanitizers` judge every step.  :func:`run_scenario` returns a
:class:`ScenarioResult`: passed, skipped (with the reason), or failed with the
findings that say why ("SAN-STALE-READ violated: stale read at pa ...").
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from ..device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, Device
from ..dma_buf.access import (
    dma_buf_attach,
    dma_buf_begin_cpu_access,
    dma_buf_detach,
    dma_buf_end_cpu_access,
    dma_buf_map_attachment_unlocked,
    dma_buf_unmap_attachment_unlocked,
)
from ..dma_buf.core import DmaBuf
from ..dma_buf.dma_fence import DmaFence
from ..dma_buf.dma_resv import DmaResvUsage
from ..errors import KernelOops, Signal
from ..exporters.drm_gem import drm_vma_node_offset_addr
from ..kernel import Kernel
from ..spec import Spec, get_spec
from ..uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    DRM_IOCTL_GEM_CLOSE,
    DRM_IOCTL_PRIME_FD_TO_HANDLE,
    DmaBufSync,
    DrmGemClose,
    DrmPrimeHandle,
)
from .sanitizers import ALL_CHECKS, Finding, TrackedBuffer, World, check_released

if TYPE_CHECKING:
    from ..exporters.registry import ExporterInfo
    from ..process import Process

__all__ = ["SCENARIOS", "Harness", "ScenarioResult", "run_scenario", "run_suite"]

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
STEP_CHECKS = tuple(c for c in ALL_CHECKS if c != "SAN-REFCOUNT")
"""Checked after every step; reference counting is the lifecycle scenario's business."""


class Skip(Exception):
    """The scenario does not apply (the reason names the missing capability)."""


@frozen
class ScenarioResult:
    scenario: str
    exporter: str
    spec: str
    status: str
    """``passed``, ``failed`` or ``skipped``."""
    findings: tuple[Finding, ...] = ()
    reason: str = ""

    @property
    def rules(self) -> frozenset[str]:
        return frozenset(f.rule for f in self.findings)

    def __str__(self) -> str:
        head = f"{self.scenario} [{self.exporter}, {self.spec}]: {self.status}"
        if self.status == "skipped":
            return f"{head} ({self.reason})"
        return head + "".join(f"\n  {f}" for f in self.findings)


@define(eq=False)
class Harness:
    """One scenario's world: a kernel, an exporter, a non-coherent device, processes."""

    kernel: Kernel
    exporter: ExporterInfo
    world: World
    gpu: Device
    proc: Process
    findings: list[Finding] = field(factory=list)
    names: int = 0

    @classmethod
    def create(cls, exporter: ExporterInfo, spec: str | Spec) -> Harness:
        kernel = Kernel(spec)
        caps = exporter.capabilities_for(kernel.spec)
        world = World(kernel, ignores_vm_pgoff=caps.ignores_vm_pgoff)
        return cls(kernel, exporter, world, Device(kernel, "gpu"), kernel.spawn("app"))

    # -- buffers -------------------------------------------------------------------
    def buffer(self, pages: int, proc: Process | None = None) -> tuple[int, TrackedBuffer]:
        """A new buffer of ``pages`` pages: its fd in ``proc`` and its tracking record."""
        proc = proc or self.proc
        fd = self.exporter.make_fd(proc, pages * PAGE, os.O_RDWR | os.O_CLOEXEC)
        dmabuf = proc.file(fd).private_data
        assert isinstance(dmabuf, DmaBuf)
        self.names += 1
        return fd, self.world.track(chr(ord("A") + self.names - 1), dmabuf)

    def map(
        self,
        fd: int,
        buf: TrackedBuffer,
        pages: int,
        *,
        proc: Process | None = None,
        offset: int = 0,
    ) -> int:
        proc = proc or self.proc
        addr = proc.mmap(0, pages * PAGE, RW, mmap.MAP_SHARED, fd, offset)
        self.world.add_mapping(proc, addr, pages * PAGE, buf, offset // PAGE)
        return addr

    # -- the sync protocol ---------------------------------------------------------------
    def sync(self, proc: Process, fd: int, buf: TrackedBuffer, *, start: bool, write: bool) -> None:
        """Bracket CPU access: DMA_BUF_IOCTL_SYNC, or begin/end_cpu_access on old specs."""
        self.world.acting_on = buf
        try:
            if self.kernel.spec.has_sync_ioctl:
                flags = (DMA_BUF_SYNC_START if start else DMA_BUF_SYNC_END) | (
                    DMA_BUF_SYNC_RW if write else DMA_BUF_SYNC_READ
                )
                proc.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags))
                return
            direction = DMA_TO_DEVICE if write else DMA_FROM_DEVICE
            args: tuple[Any, ...] = (0, buf.dmabuf.size, direction)
            with self.kernel.running(proc):
                if start:
                    dma_buf_begin_cpu_access(buf.dmabuf, *args)
                else:
                    dma_buf_end_cpu_access(buf.dmabuf, *args)
        finally:
            self.world.acting_on = None

    def cpu_write(self, proc: Process, fd: int, buf: TrackedBuffer, addr: int, data: bytes) -> None:
        self.sync(proc, fd, buf, start=True, write=True)
        proc.write_memory(addr, data)
        self.sync(proc, fd, buf, start=False, write=True)

    def cpu_read(self, proc: Process, fd: int, buf: TrackedBuffer, addr: int, n: int) -> bytes:
        self.sync(proc, fd, buf, start=True, write=False)
        data = proc.read_memory(addr, n)
        self.sync(proc, fd, buf, start=False, write=False)
        return data

    def device_job(self, buf: TrackedBuffer, fn: Callable[[Any], Any]) -> Any:
        """attach → map (leaving the CPU domain) → ``fn(sgt)`` → unmap → detach."""
        self.world.acting_on = buf
        try:
            attach = dma_buf_attach(buf.dmabuf, self.gpu)
            sgt = dma_buf_map_attachment_unlocked(attach, DMA_BIDIRECTIONAL)
            result = fn(sgt)
            dma_buf_unmap_attachment_unlocked(attach, sgt, DMA_BIDIRECTIONAL)
            dma_buf_detach(buf.dmabuf, attach)
        finally:
            self.world.acting_on = None
        return result

    def expect(self, ok: bool, rule: str, message: str) -> None:
        if not ok:
            self.findings.append(Finding(rule, message))

    def check(self, checks: tuple[str, ...] = STEP_CHECKS) -> None:
        self.findings.extend(self.world.check(checks))


def _pattern(n: int, seed: int) -> bytes:
    return bytes((i * 37 + seed * 101 + 1) & 0xFF for i in range(n))


# -- the scenarios -------------------------------------------------------------------
def scenario_round_trip(h: Harness) -> None:
    """CPU writes, the device reads it; the device writes, the CPU reads it back."""
    fd, buf = h.buffer(2)
    addr = h.map(fd, buf, 2)
    data = _pattern(2 * PAGE, 1)
    h.cpu_write(h.proc, fd, buf, addr, data)
    seen = h.device_job(buf, lambda sgt: h.gpu.dma_read(sgt, 0, 2 * PAGE))
    h.expect(seen == data, "SAN-STALE-READ", "the device did not read what the CPU wrote")
    back = _pattern(2 * PAGE, 2)
    h.device_job(buf, lambda sgt: h.gpu.dma_write(sgt, 0, back))
    got = h.cpu_read(h.proc, fd, buf, addr, 2 * PAGE)
    h.expect(got == back, "SAN-STALE-READ", "the CPU did not read what the device wrote")
    h.check()


def scenario_fork(h: Harness) -> None:
    """A forked child sees the parent's data, writes its own, exits; the parent sees it (R18)."""
    fd, buf = h.buffer(2)
    addr = h.map(fd, buf, 2)
    data = _pattern(2 * PAGE, 3)
    h.cpu_write(h.proc, fd, buf, addr, data)
    child = h.proc.fork()
    got = h.cpu_read(child, fd, buf, addr, 2 * PAGE)
    h.expect(got == data, "R18", "the child does not see the parent's data")
    h.cpu_write(child, fd, buf, addr + PAGE, b"child")
    child.exit()
    h.check()
    got = h.cpu_read(h.proc, fd, buf, addr + PAGE, 5)
    h.expect(got == b"child", "R18", "the parent does not see the child's write")
    h.check()


def scenario_partial_munmap(h: Harness) -> None:
    """Unmapping the middle page splits the mapping; the ends keep their data (R19, R32)."""
    fd, buf = h.buffer(3)
    addr = h.map(fd, buf, 3)
    data = _pattern(3 * PAGE, 4)
    h.cpu_write(h.proc, fd, buf, addr, data)
    h.proc.munmap(addr + PAGE, PAGE)
    h.check()
    try:
        h.proc.read_memory(addr + PAGE, 1)
        h.expect(False, "R32", "the unmapped middle page is still readable")
    except Signal as sig:
        h.expect(sig.signo == signal.SIGSEGV, "R32", f"touching the hole gave {sig}, not SIGSEGV")
    ends = h.cpu_read(h.proc, fd, buf, addr, PAGE) + h.cpu_read(
        h.proc, fd, buf, addr + 2 * PAGE, PAGE
    )
    h.expect(ends == data[:PAGE] + data[2 * PAGE :], "R19", "the ends lost their data")
    h.check()


def scenario_close_while_mapped(h: Harness) -> None:
    """close(fd) keeps a mapped buffer alive; the last munmap releases it, once (R16, R17)."""
    fd, buf = h.buffer(1)
    addr = h.map(fd, buf, 1)
    h.check(ALL_CHECKS)
    h.proc.close(fd)
    h.check(ALL_CHECKS)
    h.proc.write_memory(addr, b"still here")
    h.expect(h.proc.read_memory(addr, 10) == b"still here", "R17", "mapping lost after close")
    if not h.exporter.capabilities_for(h.kernel.spec).swaps_vm_file:
        # An exporter that swaps in its own file keeps its memory alive through that
        # file; the dma-buf itself may go with its last fd (the seed's design).
        h.expect(not buf.dmabuf.released, "R17", "buffer released while still mapped")
    h.proc.munmap(addr, PAGE)
    h.findings.extend(check_released(h.world))
    h.check(ALL_CHECKS)


def scenario_grow_past_end(h: Harness) -> None:
    """mremap growth must never reach memory past the buffer (R33, R34)."""
    fd, buf = h.buffer(2)
    addr = h.map(fd, buf, 2)
    try:
        new = h.proc.mremap(addr, 2 * PAGE, 3 * PAGE, 1)  # MREMAP_MAYMOVE
    except OSError as exc:
        h.expect(
            exc.errno == errno.EFAULT, "R33", f"growth refused with errno {exc.errno}, not EFAULT"
        )
        h.check()
        return
    try:
        h.proc.read_memory(new + 2 * PAGE, 1)
    except Signal as sig:
        h.expect(sig.signo == signal.SIGBUS, "R34", f"touching past the end gave {sig}, not SIGBUS")
    h.check()


def scenario_two_buffers(h: Harness) -> None:
    """Leaving the CPU domain on one buffer leaves another buffer's mappings alone (R26, R27).

    Buffer B is in the middle of a CPU access (between SYNC_START and SYNC_END)
    when buffer A leaves the CPU domain; none of B's PTEs may go.
    """
    fd_a, a = h.buffer(2)
    fd_b, b = h.buffer(2)
    addr_a = h.map(fd_a, a, 2)
    addr_b = h.map(fd_b, b, 2)
    h.sync(h.proc, fd_a, a, start=True, write=True)
    h.proc.write_memory(addr_a, _pattern(2 * PAGE, 5))
    h.sync(h.proc, fd_b, b, start=True, write=True)
    h.proc.write_memory(addr_b, _pattern(2 * PAGE, 6))
    h.sync(h.proc, fd_a, a, start=False, write=True)  # A leaves the CPU domain
    h.check()
    got = h.proc.read_memory(addr_b, 2 * PAGE)
    h.sync(h.proc, fd_b, b, start=False, write=True)
    h.expect(got == _pattern(2 * PAGE, 6), "SAN-STALE-READ", "buffer B lost its data")
    h.device_job(a, lambda sgt: None)
    h.check()


def scenario_no_wait_in_fault(h: Harness) -> None:
    """A fault never waits for the buffer's pending device work (R55)."""
    fd, buf = h.buffer(2)
    if buf.dmabuf.resv is None:
        raise Skip("no dma_resv (implicit fences arrived in 3.17)")
    fence = DmaFence(h.kernel, "gpu-job", 1, completes_at=h.kernel.clock + 1_000_000_000)
    buf.dmabuf.resv.add_fence(fence, DmaResvUsage.WRITE)
    addr = h.map(fd, buf, 2)
    h.proc.read_memory(addr, 1)  # faults with the fence pending: no SYNC, no waiting
    h.expect(not fence.signaled, "R55", "the fault path waited for the device's fence")
    h.check()


def scenario_import_into_vgem(h: Harness) -> None:
    """The buffer imported into vgem and mapped through the DRM fd: one memory (R22).

    The importer forwards its mmap with dma_buf_mmap; data written through either
    mapping is seen through the other, and everything is released at the end.
    """
    if "vgem" not in h.kernel.drivers:
        raise Skip("no vgem importer on this spec")
    if not h.kernel.spec.drm_shmem_resv_locking:
        # drm_gem_shmem_mmap of 6.1 leaves its vm_ops on a forwarded import, so munmap
        # oopses unless the exporter installs its own (fixed in 6.5; see test_vgem.py)
        raise Skip("the 6.1 GEM shmem importer oopses at munmap of forwarded imports")
    fd, buf = h.buffer(2)
    addr = h.map(fd, buf, 2)
    h.cpu_write(h.proc, fd, buf, addr, _pattern(2 * PAGE, 7))
    card = h.proc.open("/dev/dri/card0", os.O_RDWR | os.O_CLOEXEC)
    prime = DrmPrimeHandle(fd=fd)
    h.proc.ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, prime)
    # vgem has no ioctl returning an import's fake offset (MAP_DUMB refuses imports);
    # drivers like panfrost return it from MMAP_BO, so the harness reads it.
    obj = h.proc.file(card).private_data.object_idr[prime.handle]
    offset = drm_vma_node_offset_addr(obj.vma_node)
    vaddr = h.proc.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, card, offset)
    h.world.add_mapping(h.proc, vaddr, 2 * PAGE, buf, 0)
    vma = h.proc.mm.vma_lookup(vaddr)
    assert vma is not None
    if not h.exporter.capabilities_for(h.kernel.spec).swaps_vm_file and h.exporter.name != "vgem":
        h.expect(
            vma.vm_file is buf.dmabuf.file,
            "R22",
            "after dma_buf_mmap the vma does not hold the dma-buf file",
        )
    got = h.cpu_read(h.proc, fd, buf, vaddr, 2 * PAGE)
    h.expect(got == _pattern(2 * PAGE, 7), "R22", "the vgem mapping does not show the buffer")
    h.cpu_write(h.proc, fd, buf, vaddr + PAGE, b"through vgem")
    back = h.cpu_read(h.proc, fd, buf, addr + PAGE, 12)
    h.expect(back == b"through vgem", "R22", "the exporter's mapping misses vgem's write")
    h.check()
    h.proc.munmap(vaddr, 2 * PAGE)
    h.proc.munmap(addr, 2 * PAGE)
    h.proc.ioctl(card, DRM_IOCTL_GEM_CLOSE, DrmGemClose(handle=prime.handle))
    h.proc.close(card)
    h.proc.close(fd)
    h.findings.extend(check_released(h.world))
    h.check(ALL_CHECKS)


SCENARIOS: dict[str, Callable[[Harness], None]] = {
    "round-trip": scenario_round_trip,
    "fork": scenario_fork,
    "partial-munmap": scenario_partial_munmap,
    "close-while-mapped": scenario_close_while_mapped,
    "grow-past-end": scenario_grow_past_end,
    "two-buffers": scenario_two_buffers,
    "no-wait-in-fault": scenario_no_wait_in_fault,
    "import-into-vgem": scenario_import_into_vgem,
}


def run_scenario(name: str, exporter: ExporterInfo, spec: str | Spec) -> ScenarioResult:
    spec_obj = get_spec(spec)
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    why = exporter.available(spec_obj)
    if not why and spec_obj.mmap_internal_reads_uninitialised_dmabuf:
        why = "every mmap of a dma-buf fd oopses under the RFC as posted (R61)"
    if why:
        return ScenarioResult(name, exporter.name, spec_obj.name, "skipped", reason=why)
    h = Harness.create(exporter, spec_obj)
    try:
        SCENARIOS[name](h)
    except Skip as skip:
        return ScenarioResult(name, exporter.name, spec_obj.name, "skipped", reason=str(skip))
    except Signal as sig:
        h.findings.append(Finding("R32", f"unexpected {sig}"))
    except KernelOops as oops:
        h.findings.append(Finding(oops.rule or "oops", str(oops)))
    except OSError as exc:
        h.findings.append(Finding("syscall", f"unexpected {exc!r}"))
    h.findings.extend(h.world.check(STEP_CHECKS))
    status = "failed" if h.findings else "passed"
    unique = tuple(dict.fromkeys(h.findings))
    return ScenarioResult(name, exporter.name, spec_obj.name, status, unique)


def run_suite(exporter: ExporterInfo, spec: str | Spec) -> list[ScenarioResult]:
    return [run_scenario(name, exporter, spec) for name in SCENARIOS]
