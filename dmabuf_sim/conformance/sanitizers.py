"""Sanitizers: invariants checked after every step, each naming its rule.

They look at the kernel through a back door — page tables, page frames,
reference counts, warnings, the lock record — never through the exporter
under test, so an exporter cannot hide a violation.  What they need to know
is kept in a :class:`World`:

* which dma-bufs exist and which physical page backs each of their pages, as
  *observed*: in the sg tables the exporter hands the harness's devices and in
  the PTEs of mappings (never by asking the exporter anything the harness would
  not ask anyway, so the observation does not change what it observes);
* which vmas map which buffer, and at which page (a *lineage*: registered
  when the harness maps a buffer, and carried to every copy the kernel makes
  of that vma — splits, forks, mremap moves — through the ``vma_dup``
  instrument event, so the records follow the vmas, never an address);
* which references the harness itself holds (``dma_buf_get``).

Instrument hooks (``on_fault``, ``on_zap``, ``on_vma_dup``, ``on_vmap``,
``on_vunmap``) record findings the moment something happens: a PTE is checked
when it is installed, because a shoot-down exporter may zap it again before
the step ends.  :meth:`World.check` returns those, then what the after-step
checks see, in the order they happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from ..coherency import CoherencyChecker
from ..errors import DmaBufSimError
from ..mm.page_alloc import PAGE_SHIFT, PAGE_SIZE
from ..mm.pgtable import pte_pfn

if TYPE_CHECKING:
    from ..dma_buf.core import DmaBuf
    from ..fs import AddressSpace
    from ..kernel import Kernel
    from ..mm.vma import VmAreaStruct
    from ..mm.vmalloc import KernelMapping
    from ..process import Process

__all__ = [
    "ALL_CHECKS",
    "Finding",
    "Lineage",
    "RuleViolation",
    "TrackedBuffer",
    "World",
    "check_released",
    "holders",
]


@frozen
class Finding:
    """One broken invariant: the rule and what the simulator saw."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule} violated: {self.message}"


class RuleViolation(DmaBufSimError, AssertionError):
    """A rule was broken; ``findings`` lists what was seen, the first one first."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        self.rule = findings[0].rule
        super().__init__("; ".join(str(f) for f in findings))


@define(eq=False, slots=True)
class TrackedBuffer:
    """A buffer the harness made, and what it has seen of its pages so far."""

    name: str
    dmabuf: DmaBuf = field(repr=False)
    kernel_refs: int = 0
    """References the harness took with dma_buf_get and has not put."""
    pages: dict[int, int] = field(factory=dict, repr=False)
    """Page index -> pfn, as last observed."""
    index_of: dict[int, int] = field(factory=dict, repr=False)
    """pfn -> page index, the inverse of :attr:`pages`."""
    seen_by: dict[int, str] = field(factory=dict, repr=False)
    """Page index -> who observed it (for messages)."""

    @property
    def size(self) -> int:
        return self.dmabuf.size

    @property
    def backing(self) -> int:
        """Pages of memory a buffer of this size has (the size rounded up)."""
        return -(-self.dmabuf.size // PAGE_SIZE)

    @property
    def pfns(self) -> frozenset[int]:
        return frozenset(self.index_of)

    @property
    def order(self) -> tuple[int, ...]:
        """The pfns of the pages observed so far, in page order (gaps left out)."""
        return tuple(self.pages[i] for i in sorted(self.pages))


@frozen
class Lineage:
    """What a vma maps: buffer page ``vm_pgoff + (addr - vm_start) / PAGE + delta``.

    ``delta`` is the user's page offset minus the ``vm_pgoff`` the exporter
    left (zero unless ``->mmap`` rewrote it, as ``remap_pfn_range`` does on a
    COW mapping); the kernel keeps ``vm_pgoff`` consistent through splits,
    forks and moves, so the formula holds for every copy.
    """

    buffer: TrackedBuffer
    delta: int


@define(eq=False, slots=True)
class Mapping:
    """A vma that maps a tracked buffer (what :attr:`World.mappings` lists)."""

    proc: Process = field(repr=False)
    start: int
    length: int
    buffer: TrackedBuffer = field(repr=False)
    first_page: int = 0
    """The buffer page at ``start``."""


ALL_CHECKS = (
    "SAN-PTE-IN-BUFFER",
    "SAN-FREED-PTE",
    "SAN-STALE-READ",
    "SAN-FAULT-WAIT",
    "SAN-VMA-FILE",
    "SAN-OTHER-BUFFER",
    "SAN-REFCOUNT",
    "SAN-BAD-PAGE",
    "SAN-KERNEL-WARN",
    "R58",
)
"""Every after-step check; each name is the rule its findings carry (or their family)."""


@define(eq=False, slots=True)
class World:
    """What the harness knows, plus the instrument hooks the sanitizers read.

    ``ignores_vm_pgoff``: the exporter indexes pages from the vma start
    (drm_gem_shmem, the R60 exception).  ``stale_reads``: also keep the
    coherency truth record (:class:`~dmabuf_sim.coherency.CoherencyChecker`),
    which flags *every* read that misses the last write — right for harnesses
    whose every read follows the sync protocol (the scenarios); the state
    machine judges reads itself and leaves it off.
    """

    kernel: Kernel = field(repr=False)
    ignores_vm_pgoff: bool = False
    stale_reads: bool = True
    buffers: list[TrackedBuffer] = field(factory=list, repr=False)
    lineage: dict[VmAreaStruct, Lineage] = field(factory=dict, repr=False)
    checker: CoherencyChecker | None = field(default=None, repr=False)
    acting_on: TrackedBuffer | None = field(default=None, repr=False)
    """The buffer whose domain the harness is changing right now (for SAN-OTHER-BUFFER)."""
    pending: list[Finding] = field(factory=list, repr=False)
    """Findings of the instrument hooks, in the order they happened."""
    vmaps: dict[KernelMapping, None] = field(factory=dict, repr=False)
    """Kernel mappings made with vmap() and not yet vunmap()ed (insertion-ordered set)."""
    owner_of: dict[int, TrackedBuffer] = field(factory=dict, repr=False)
    """pfn -> the buffer last observed to use it."""
    _seen: dict[str, int] = field(factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.stale_reads:
            self.checker = CoherencyChecker.attach(self.kernel)
        self.kernel.observe(self)

    # -- bookkeeping -----------------------------------------------------------------
    def track(self, name: str, dmabuf: DmaBuf) -> TrackedBuffer:
        """Record a new buffer (its pages are learned as they are observed)."""
        tracked = TrackedBuffer(name, dmabuf)
        self.buffers.append(tracked)
        return tracked

    def observe(self, buf: TrackedBuffer, index: int, pfn: int, who: str) -> Finding | None:
        """``who`` saw page ``index`` of ``buf`` at ``pfn``: check it against what was seen.

        A pfn already known as *another* page of this buffer, or as a page of
        another live buffer, is a finding; a page seen at a new pfn whose old
        one is gone is taken as moved (its contents are judged by reads).
        """
        owner = self.owner_of.get(pfn)
        if owner is not None and owner is not buf and not owner.dmabuf.released:
            return Finding(
                "SAN-PTE-IN-BUFFER",
                f"{who} has pfn {pfn:#x} as page {index} of buffer {buf.name}, but it is page"
                f" {owner.index_of.get(pfn)} of buffer {owner.name}",
            )
        known = buf.index_of.get(pfn)
        if known is not None and known != index and buf.pages.get(known) == pfn:
            return Finding(
                "R60",
                f"{who} has pfn {pfn:#x} as page {index} of buffer {buf.name}, but"
                f" {buf.seen_by[known]} had it as page {known}: pages are indexed by vm_pgoff +"
                " (address - vm_start) / PAGE_SIZE",
            )
        old = buf.pages.get(index)
        if old != pfn:
            if old is not None:
                buf.index_of.pop(old, None)
            buf.pages[index] = pfn
            buf.index_of[pfn] = index
            buf.seen_by[index] = who
        self.owner_of[pfn] = buf
        return None

    def observe_sgt(self, buf: TrackedBuffer, pfns: Iterable[int], who: str) -> list[Finding]:
        """A device's sg table: page ``i`` of the buffer is its ``i``-th page."""
        out = []
        for index, pfn in enumerate(pfns):
            if index >= buf.backing:
                break
            found = self.observe(buf, index, pfn, who)
            if found is not None:
                out.append(found)
        return out

    def add_mapping(
        self, proc: Process, start: int, length: int, buf: TrackedBuffer, first_page: int = 0
    ) -> None:
        """Record that the vma at ``start`` in ``proc`` maps ``buf`` from page ``first_page``.

        ``length`` is accepted for compatibility; the vma knows its own extent.
        A vma that already has a lineage (a merge into a neighbour) keeps it.
        """
        vma = proc.mm.vma_lookup(start)
        if vma is None or vma in self.lineage:
            return
        at_start = vma.vm_pgoff + ((start - vma.vm_start) >> PAGE_SHIFT)
        self.lineage[vma] = Lineage(buf, first_page - at_start)

    def forget_process(self, proc: Process) -> None:
        """Nothing to do: lineages follow the vmas, which go with the process."""

    def live_vmas(self) -> Iterator[tuple[Process, VmAreaStruct, Lineage]]:
        """Every linked vma that maps a tracked buffer, with its lineage."""
        for proc in list(self.kernel.processes.values()):
            for vma in proc.mm.vmas:
                lin = self.lineage.get(vma)
                if lin is not None:
                    yield proc, vma, lin

    @property
    def mappings(self) -> list[Mapping]:
        """The live mappings of tracked buffers, derived from the vmas."""
        return [
            Mapping(
                proc, vma.vm_start, vma.vm_end - vma.vm_start, lin.buffer, self.page_index(vma, lin)
            )
            for proc, vma, lin in self.live_vmas()
        ]

    def page_index(self, vma: VmAreaStruct, lin: Lineage, addr: int | None = None) -> int:
        """The buffer page that ``addr`` (default: ``vm_start``) of ``vma`` shows."""
        at = vma.vm_start if addr is None else addr
        rel = (at - vma.vm_start) >> PAGE_SHIFT
        if self.ignores_vm_pgoff:
            return rel  # drm_gem_shmem: (address - vm_start) >> PAGE_SHIFT
        return vma.vm_pgoff + rel + lin.delta

    def page_of(self, proc: Process, addr: int) -> tuple[TrackedBuffer, int] | None:
        """The buffer and page that ``addr`` of ``proc`` maps, if any."""
        vma = proc.mm.vma_lookup(addr)
        if vma is None:
            return None
        lin = self.lineage.get(vma)
        if lin is None:
            return None
        return lin.buffer, self.page_index(vma, lin, addr)

    def buffer_of(self, mm: Any, addr: int) -> TrackedBuffer | None:
        vma = mm.vma_lookup(addr)
        lin = self.lineage.get(vma) if vma is not None else None
        return lin.buffer if lin is not None else None

    # -- instrument hooks ------------------------------------------------------------
    def on_vma_dup(self, orig: VmAreaStruct, new: VmAreaStruct) -> None:
        lin = self.lineage.get(orig)
        if lin is not None:
            self.lineage[new] = lin

    def on_fault(self, vma: VmAreaStruct, addr: int) -> None:
        lin = self.lineage.get(vma)
        if lin is None:
            return
        vpn = addr >> PAGE_SHIFT
        pte = vma.vm_mm.pgtable.get(vpn)
        if pte is not None:
            found = self._check_pte(vma, lin, vpn, pte)
            if found is not None:
                self.pending.append(found)

    def on_zap(
        self, mapping: AddressSpace, vma: VmAreaStruct, start: int, end: int, n: int
    ) -> None:
        if not n or self.acting_on is None:
            return
        lin = self.lineage.get(vma)
        if lin is not None and lin.buffer is not self.acting_on:
            pid = vma.vm_mm.owner.pid if vma.vm_mm.owner is not None else 0
            self.pending.append(
                Finding(
                    "SAN-OTHER-BUFFER",
                    f"leaving the CPU domain on buffer {self.acting_on.name} zapped {n} PTE(s)"
                    f" of a mapping of buffer {lin.buffer.name} (pid {pid},"
                    f" {start:#x}-{end:#x}) (R26, R56)",
                )
            )

    def on_vmap(self, mapping: KernelMapping) -> None:
        self.vmaps[mapping] = None

    def on_vunmap(self, mapping: KernelMapping) -> None:
        self.vmaps.pop(mapping, None)

    # -- the checks ------------------------------------------------------------------
    def check(self, only: tuple[str, ...] = ALL_CHECKS) -> list[Finding]:
        """Findings of the hooks since the last call, then of the after-step checks."""
        out, self.pending = self.pending, []
        for name in only:
            out.extend(_CHECKS[name](self))
        return list(dict.fromkeys(out))

    def _new(self, key: str, items: list[Any]) -> list[Any]:
        """The entries of a kernel record added since the last look."""
        seen = self._seen.get(key, 0)
        self._seen[key] = len(items)
        return items[seen:]

    def _check_pte(self, vma: VmAreaStruct, lin: Lineage, vpn: int, pte: int) -> Finding | None:
        kernel = self.kernel
        pfn = pte_pfn(pte)
        if pfn == kernel.zero_pfn:
            return None
        mem = kernel.mem
        page = mem.page_if_exists(pfn)
        if page is not None and page.anon:
            return None  # a private COW copy belongs to the process, not the buffer
        buf = lin.buffer
        pid = vma.vm_mm.owner.pid if vma.vm_mm.owner is not None else 0
        where = f"pid {pid} va {vpn << PAGE_SHIFT:#x}"
        index = self.page_index(vma, lin, vpn << PAGE_SHIFT)
        if not self.ignores_vm_pgoff and not 0 <= index < buf.backing:
            return Finding(
                "R34",
                f"{where} maps pfn {pfn:#x} at page {index} of buffer {buf.name}, which has"
                f" {buf.backing} page(s): a fault past the buffer must give SIGBUS",
            )
        if not mem.pfn_allocated(pfn):
            return Finding("SAN-FREED-PTE", f"{where} maps pfn {pfn:#x}, a freed page")
        if self.ignores_vm_pgoff:
            # drm_gem_shmem indexes from vm_start, so after a split the PTEs a vma kept
            # and the ones it faults in disagree: only ownership can be judged.
            owner = self.owner_of.get(pfn)
            if owner is not None and owner is not buf and not owner.dmabuf.released:
                return Finding(
                    "SAN-PTE-IN-BUFFER",
                    f"{where} in a mapping of buffer {buf.name} maps pfn {pfn:#x}, a page of"
                    f" buffer {owner.name}",
                )
            return None
        return self.observe(buf, index, pfn, f"the mapping at {where}")


def _check_freed_pte(world: World) -> Iterator[Finding]:
    """PTEs of vmas that map no tracked buffer (those are judged by SAN-PTE-IN-BUFFER)."""
    kernel = world.kernel
    mem = kernel.mem
    for proc in list(kernel.processes.values()):
        table = proc.mm.pgtable
        for vma in proc.mm.vmas:
            if vma in world.lineage:
                continue
            for vpn, pte in table.iter_range(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT):
                pfn = pte_pfn(pte)
                if pfn != kernel.zero_pfn and not mem.pfn_allocated(pfn):
                    yield Finding(
                        "SAN-FREED-PTE",
                        f"pid {proc.pid} va {vpn << PAGE_SHIFT:#x} maps pfn {pfn:#x}, a freed page",
                    )


def _check_pte_in_buffer(world: World) -> Iterator[Finding]:
    for _proc, vma, lin in world.live_vmas():
        table = vma.vm_mm.pgtable
        for vpn, pte in table.iter_range(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT):
            found = world._check_pte(vma, lin, vpn, pte)
            if found is not None:
                yield found


def _check_stale(world: World) -> Iterator[Finding]:
    if world.checker is None:
        return
    for s in world._new("stale", world.checker.stale):
        yield Finding("SAN-STALE-READ", str(s))


def _check_fault_wait(world: World) -> Iterator[Finding]:
    for w in world._new("fault_waits", world.kernel.fault_waits):
        yield Finding("SAN-FAULT-WAIT", f"{w} (R55, SEED-NO-FAULT-SYNC)")


def _check_vma_file(world: World) -> Iterator[Finding]:
    for proc in list(world.kernel.processes.values()):
        for vma in proc.mm.vmas:
            want = vma.vm_file.f_mapping if vma.vm_file is not None else None
            if vma.i_mmap_of is not want or (want is not None and vma not in want.i_mmap):
                yield Finding(
                    "SAN-VMA-FILE",
                    f"pid {proc.pid} {vma.trace_name()} has vm_file"
                    f" {vma.vm_file.path() if vma.vm_file else None} but is linked in"
                    " another address_space",
                )


def _check_other_buffer(world: World) -> Iterator[Finding]:
    return iter(())  # reported by on_zap as it happens


def holders(world: World, buf: TrackedBuffer) -> tuple[int, int, int]:
    """(fds, vmas, kernel references) that hold ``buf``'s dma-buf file."""
    file = buf.dmabuf.file
    fds = vmas = 0
    for proc in world.kernel.processes.values():
        fds += sum(1 for f in proc.files.fds.values() if f is file)
        vmas += sum(1 for v in proc.mm.vmas if v.vm_file is file)
    return fds, vmas, buf.kernel_refs


def _check_refcount(world: World) -> Iterator[Finding]:
    """At least one reference per holder while alive; release exactly once, after the last.

    An exporter may hold references of its own (one per vma, dropped in
    ``vm_ops->close``, is correct); a reference missing is a bug now, an extra
    one that is never dropped shows when everything is closed
    (:func:`check_released`).
    """
    for buf in world.buffers:
        dmabuf = buf.dmabuf
        if dmabuf.release_calls > 1:
            yield Finding(
                "SAN-RELEASE-ONCE",
                f"buffer {buf.name}: ops->release ran {dmabuf.release_calls} times",
            )
        file = dmabuf.file
        if file is None:
            continue
        fds, vmas, refs = holders(world, buf)
        count = fds + vmas + refs
        if dmabuf.released:
            if count:
                yield Finding(
                    "SAN-RELEASE-ONCE",
                    f"buffer {buf.name} was released while {fds} fd(s), {vmas} vma(s) and"
                    f" {refs} kernel reference(s) still hold its file (R17)",
                )
            continue
        if file.f_count < count:
            yield Finding(
                "SAN-REFCOUNT",
                f"buffer {buf.name}: its file has {file.f_count} reference(s) but {count}"
                f" holder(s) ({fds} fd(s), {vmas} vma(s), {refs} kernel reference(s)):"
                " a reference was dropped that was never taken (R16, R17)",
            )


def _check_bad_page(world: World) -> Iterator[Finding]:
    for bad in world._new("bad_pages", world.kernel.bad_pages):
        yield Finding("SAN-BAD-PAGE", f"bad page state at pfn {bad.pfn:#x}: {bad.reason}")


# WARN_ONs that state an importer's own expectation rather than a dma-buf rule: DRM wants
# VM_DONTEXPAND on every GEM mapping, so a growable (but correct) exporter trips it when a
# DRM importer forwards its mmap with dma_buf_mmap.
_IMPORTER_WARNINGS = ("drm_gem_mmap_obj: WARN_ON(!(vma->vm_flags & VM_DONTEXPAND))",)


def _check_warnings(world: World) -> Iterator[Finding]:
    for warning in world._new("warnings", world.kernel.warnings):
        if warning not in _IMPORTER_WARNINGS:
            yield Finding("SAN-KERNEL-WARN", f"the kernel warned: {warning}")


def _check_lock_order(world: World) -> Iterator[Finding]:
    kernel = world.kernel
    for msg in world._new("locks", kernel.lock_violations):
        yield Finding("R58", msg)
    if kernel.held_locks and kernel.current is None:
        held = ", ".join(kernel.held_locks)
        kernel.held_locks.clear()  # reported once; lockdep would complain at every return
        yield Finding("R58", f"lock held when returning to user space: {held}")


_CHECKS = {
    "SAN-FREED-PTE": _check_freed_pte,
    "SAN-PTE-IN-BUFFER": _check_pte_in_buffer,
    "SAN-STALE-READ": _check_stale,
    "SAN-FAULT-WAIT": _check_fault_wait,
    "SAN-VMA-FILE": _check_vma_file,
    "SAN-OTHER-BUFFER": _check_other_buffer,
    "SAN-REFCOUNT": _check_refcount,
    "SAN-BAD-PAGE": _check_bad_page,
    "SAN-KERNEL-WARN": _check_warnings,
    "R58": _check_lock_order,
}


def check_released(world: World) -> list[Finding]:
    """After everything is closed and unmapped: every buffer released once, nothing kept.

    * each buffer's ``ops->release`` ran exactly once (a reference never dropped
      keeps it alive: SAN-REFCOUNT);
    * every page of every buffer went back to the page allocator, and so did
      every kernel mapping made with ``vmap`` of them (SAN-LEAK).
    """
    out = []
    mem = world.kernel.mem
    for buf in world.buffers:
        d = buf.dmabuf
        if not d.released:
            count = d.file.f_count if d.file is not None else 0
            out.append(
                Finding(
                    "SAN-REFCOUNT",
                    f"buffer {buf.name} was never released: its file still has {count}"
                    " reference(s) after every fd, mapping and attachment went away (R17)",
                )
            )
        elif d.release_calls != 1:
            out.append(
                Finding(
                    "SAN-RELEASE-ONCE",
                    f"buffer {buf.name}: ops->release ran {d.release_calls} times",
                )
            )
        else:
            kept = [
                pfn
                for pfn, owner in world.owner_of.items()
                if owner is buf and mem.pfn_allocated(pfn)
            ]
            if kept:
                out.append(
                    Finding(
                        "SAN-LEAK",
                        f"buffer {buf.name} was released but {len(kept)} of its page(s) were"
                        f" never freed (first: pfn {kept[0]:#x})",
                    )
                )
    mapped: dict[str, int] = {}
    for vm in world.vmaps:
        owners = {world.owner_of[p].name for p in vm.pfns if p in world.owner_of}
        for name in owners:
            mapped[name] = mapped.get(name, 0) + 1
    for name, n in mapped.items():
        out.append(
            Finding(
                "SAN-LEAK",
                f"buffer {name}: {n} kernel mapping(s) made with vmap() were never vunmap()ed",
            )
        )
    return out
