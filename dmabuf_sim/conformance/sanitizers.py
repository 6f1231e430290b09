"""Sanitizers: invariants checked after every step, each naming its rule.

They look at the kernel through a back door — page tables, page frames,
reference counts, the coherency record — never through the exporter under
test, so an exporter cannot hide a violation.  What they need to know about
buffers and mappings is recorded by the harness in a :class:`World`:

* which dma-bufs exist and which physical pages each is made of (learned once,
  by mapping the buffer for a kit-owned device — the importer's view);
* which mappings the harness made of which buffer (process, address, length);
* which references the harness itself holds (``dma_buf_get``).

Each check returns :class:`Finding` values; the kit turns them into
:class:`RuleViolation` exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from ..coherency import CoherencyChecker
from ..device import DMA_BIDIRECTIONAL, Device
from ..errors import DmaBufSimError
from ..mm.page_alloc import PAGE_SHIFT
from ..mm.pgtable import pte_pfn

if TYPE_CHECKING:
    from ..dma_buf.core import DmaBuf
    from ..fs import AddressSpace
    from ..kernel import Kernel
    from ..mm.vma import VmAreaStruct
    from ..process import Process

__all__ = ["ALL_CHECKS", "Finding", "RuleViolation", "TrackedBuffer", "World"]


@frozen
class Finding:
    """One broken invariant: the rule and what the simulator saw."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule} violated: {self.message}"


class RuleViolation(DmaBufSimError, AssertionError):
    """A rule was broken; ``findings`` lists every broken invariant of the step."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        self.rule = findings[0].rule
        super().__init__("; ".join(str(f) for f in findings))


@define(eq=False, slots=True)
class TrackedBuffer:
    """A buffer the harness made: the dma-buf and the physical pages it is made of."""

    name: str
    dmabuf: DmaBuf = field(repr=False)
    pfns: frozenset[int] = field(repr=False)
    order: tuple[int, ...] = field(default=(), repr=False)
    """The pfn of each buffer page, in buffer order (from the sg table)."""
    kernel_refs: int = 0
    """References the harness took with dma_buf_get and has not put."""


@define(eq=False, slots=True)
class Mapping:
    proc: Process = field(repr=False)
    start: int
    length: int
    buffer: TrackedBuffer = field(repr=False)
    first_page: int = 0
    """The buffer page the mapping starts at (the mmap offset in pages)."""


ALL_CHECKS = (
    "SAN-FREED-PTE",
    "SAN-PTE-IN-BUFFER",
    "SAN-STALE-READ",
    "SAN-FAULT-WAIT",
    "SAN-VMA-FILE",
    "SAN-OTHER-BUFFER",
    "SAN-REFCOUNT",
    "R58",
)


@define(eq=False, slots=True)
class World:
    """What the harness knows, plus the instruments the sanitizers read."""

    kernel: Kernel = field(repr=False)
    buffers: list[TrackedBuffer] = field(factory=list, repr=False)
    mappings: list[Mapping] = field(factory=list, repr=False)
    checker: CoherencyChecker = field(init=False, repr=False)
    ignores_vm_pgoff: bool = False
    """The exporter indexes pages from the vma start (drm_gem_shmem), the R60 exception."""
    acting_on: TrackedBuffer | None = field(default=None, repr=False)
    """The buffer whose domain the harness is changing right now (for SAN-OTHER-BUFFER)."""
    other_zaps: list[Finding] = field(factory=list, repr=False)
    _seen_fault_waits: int = 0
    _seen_lock_violations: int = 0
    _seen_stale: int = 0
    _probe_dev: Device | None = field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self.checker = CoherencyChecker.attach(self.kernel)
        self.kernel.add_instrument(self)

    # -- bookkeeping -----------------------------------------------------------------
    def track(self, name: str, dmabuf: DmaBuf) -> TrackedBuffer:
        """Record a new buffer and learn its pages through a kit-owned attachment."""
        from ..dma_buf.access import (
            dma_buf_attach,
            dma_buf_detach,
            dma_buf_map_attachment_unlocked,
            dma_buf_unmap_attachment_unlocked,
        )

        if self._probe_dev is None:
            self._probe_dev = Device(self.kernel, "kit-probe", coherent=True)
        attach = dma_buf_attach(dmabuf, self._probe_dev)
        try:
            sgt = dma_buf_map_attachment_unlocked(attach, DMA_BIDIRECTIONAL)
            order = tuple(sgt.pfns())
            dma_buf_unmap_attachment_unlocked(attach, sgt, DMA_BIDIRECTIONAL)
        finally:
            dma_buf_detach(dmabuf, attach)
        tracked = TrackedBuffer(name, dmabuf, frozenset(order), order)
        self.buffers.append(tracked)
        return tracked

    def add_mapping(
        self, proc: Process, start: int, length: int, buf: TrackedBuffer, first_page: int = 0
    ) -> None:
        self.mappings.append(Mapping(proc, start, length, buf, first_page))

    def forget_process(self, proc: Process) -> None:
        self.mappings = [m for m in self.mappings if m.proc is not proc]

    def buffer_of(self, mm: Any, addr: int) -> TrackedBuffer | None:
        for m in self.mappings:
            if m.proc.mm is mm and m.start <= addr < m.start + m.length:
                return m.buffer
        return None

    # -- instrument hook ------------------------------------------------------------
    def on_zap(
        self, mapping: AddressSpace, vma: VmAreaStruct, start: int, end: int, n: int
    ) -> None:
        if not n or self.acting_on is None:
            return
        victim = self.buffer_of(vma.vm_mm, start)
        if victim is not None and victim is not self.acting_on:
            pid = vma.vm_mm.owner.pid if vma.vm_mm.owner is not None else 0
            self.other_zaps.append(
                Finding(
                    "SAN-OTHER-BUFFER",
                    f"unmap_mapping_range on buffer {self.acting_on.name} zapped {n} PTE(s) of"
                    f" a mapping of buffer {victim.name} (pid {pid}, {start:#x}-{end:#x}) (R26)",
                )
            )

    # -- the checks -------------------------------------------------------------------
    def check(self, only: tuple[str, ...] = ALL_CHECKS) -> list[Finding]:
        out: list[Finding] = []
        for name in only:
            out.extend(_CHECKS[name](self))
        return out

    def _processes(self) -> Iterator[Process]:
        yield from list(self.kernel.processes.values())


def _check_freed_pte(world: World) -> Iterator[Finding]:
    kernel = world.kernel
    mem = kernel.mem
    for proc in world._processes():
        for vpn, pte in proc.mm.pgtable.entries.items():
            pfn = pte_pfn(pte)
            if pfn != kernel.zero_pfn and not mem.pfn_allocated(pfn):
                yield Finding(
                    "SAN-FREED-PTE",
                    f"pid {proc.pid} va {vpn << PAGE_SHIFT:#x} maps pfn {pfn:#x}, a freed page",
                )


def _check_pte_in_buffer(world: World) -> Iterator[Finding]:
    mem = world.kernel.mem
    for m in world.mappings:
        if not m.proc.alive:
            continue
        table = m.proc.mm.pgtable
        first = m.start >> PAGE_SHIFT
        order = m.buffer.order
        for vpn, pte in table.iter_range(first, first + (m.length >> PAGE_SHIFT)):
            pfn = pte_pfn(pte)
            page = mem.page_if_exists(pfn)
            if (page is not None and page.anon) or pfn == world.kernel.zero_pfn:
                continue  # a private COW copy belongs to the process, not the buffer
            if pfn not in m.buffer.pfns:
                yield Finding(
                    "SAN-PTE-IN-BUFFER",
                    f"pid {m.proc.pid} va {vpn << PAGE_SHIFT:#x} in a mapping of buffer"
                    f" {m.buffer.name} maps pfn {pfn:#x}, which is not part of the buffer (R34)",
                )
                continue
            index = m.first_page + vpn - first
            if not world.ignores_vm_pgoff and index < len(order) and order[index] != pfn:
                yield Finding(
                    "R60",
                    f"pid {m.proc.pid} va {vpn << PAGE_SHIFT:#x} should map page {index} of"
                    f" buffer {m.buffer.name} (pfn {order[index]:#x}) but maps page"
                    f" {order.index(pfn)} (pfn {pfn:#x}): the exporter ignores vm_pgoff",
                )


def _check_stale(world: World) -> Iterator[Finding]:
    stale = world.checker.stale
    for s in stale[world._seen_stale :]:
        yield Finding("SAN-STALE-READ", str(s))
    world._seen_stale = len(stale)


def _check_fault_wait(world: World) -> Iterator[Finding]:
    waits = world.kernel.fault_waits
    for w in waits[world._seen_fault_waits :]:
        yield Finding("SAN-FAULT-WAIT", f"{w} (R55)")
    world._seen_fault_waits = len(waits)


def _check_vma_file(world: World) -> Iterator[Finding]:
    for proc in world._processes():
        for vma in proc.mm.vmas:
            want = vma.vm_file.f_mapping if vma.vm_file is not None else None
            if vma.i_mmap_of is not want or (want is not None and vma not in want.i_mmap):
                yield Finding(
                    "SAN-VMA-FILE",
                    f"pid {proc.pid} {vma.trace_name()} has vm_file"
                    f" {vma.vm_file.path() if vma.vm_file else None} but is linked in"
                    f" another address_space",
                )


def _check_other_buffer(world: World) -> Iterator[Finding]:
    found, world.other_zaps = world.other_zaps, []
    yield from found


def _check_refcount(world: World) -> Iterator[Finding]:
    for buf in world.buffers:
        dmabuf = buf.dmabuf
        if dmabuf.released or dmabuf.file is None:
            continue
        file = dmabuf.file
        fds = sum(1 for proc in world._processes() for f in proc.files.fds.values() if f is file)
        vmas = sum(1 for proc in world._processes() for v in proc.mm.vmas if v.vm_file is file)
        holders = fds + vmas + buf.kernel_refs
        if file.f_count != holders:
            yield Finding(
                "SAN-REFCOUNT",
                f"buffer {buf.name}: file refcount {file.f_count} but {holders} holders"
                f" ({fds} fds, {vmas} vmas, {buf.kernel_refs} kernel references)",
            )


def _check_lock_order(world: World) -> Iterator[Finding]:
    found = world.kernel.lock_violations
    for msg in found[world._seen_lock_violations :]:
        yield Finding("R58", msg)
    world._seen_lock_violations = len(found)


_CHECKS = {
    "SAN-FREED-PTE": _check_freed_pte,
    "SAN-PTE-IN-BUFFER": _check_pte_in_buffer,
    "SAN-STALE-READ": _check_stale,
    "SAN-FAULT-WAIT": _check_fault_wait,
    "SAN-VMA-FILE": _check_vma_file,
    "SAN-OTHER-BUFFER": _check_other_buffer,
    "SAN-REFCOUNT": _check_refcount,
    "R58": _check_lock_order,
}


def check_released(world: World) -> list[Finding]:
    """After everything is closed and unmapped: each buffer released exactly once."""
    out = []
    for buf in world.buffers:
        d = buf.dmabuf
        if not d.released:
            count = d.file.f_count if d.file is not None else 0
            out.append(
                Finding(
                    "SAN-RELEASE-ONCE",
                    f"buffer {buf.name} was never released: its file still has {count}"
                    " reference(s) after every fd and mapping went away (R17)",
                )
            )
        elif d.release_calls != 1:
            out.append(
                Finding(
                    "SAN-RELEASE-ONCE",
                    f"buffer {buf.name}: ops->release ran {d.release_calls} times",
                )
            )
    return out
