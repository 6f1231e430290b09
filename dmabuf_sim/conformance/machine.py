"""A hypothesis state machine that drives any exporter through processes, devices and CPU access.

:func:`make_machine` builds a :class:`RuleBasedStateMachine` subclass named
after the exporter and spec, so a shrunk failure reads as a short runnable
reproducer::

    state = DmaBufMachine_SystemHeap_v6_12()
    buffers_0 = state.new_buffer(pages=2)
    mappings_0 = state.mmap(buf=buffers_0, offset=0, pages=2)
    state.cpu_write(mapping=mappings_0, offset=0, data=b'\\x01')
    state.device_read(buf=buffers_0, offset=0, n=1)
    state.teardown()

Rules cover buffers (new, dup, close), mappings (mmap in and out of bounds,
munmap whole or middle, mremap growth, mprotect read-only), processes (fork,
child reads and writes, child exit), CPU access under the sync protocol and
device DMA jobs (attach → map → DMA → unmap → detach).  A model of each
buffer's bytes checks every read; the sanitizers of :mod:`.sanitizers` run
after every step; teardown checks that every buffer is released exactly once.
"""

from __future__ import annotations

import errno
import mmap as _mmap
import os
import re
from typing import TYPE_CHECKING, Any

from attrs import define, field
from hypothesis import event as _hyp_event
from hypothesis import note as _hyp_note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from ..device import Device
from ..errors import KernelOops, Signal
from ..kernel import Kernel
from .sanitizers import ALL_CHECKS, Finding, RuleViolation, TrackedBuffer, World, check_released

if TYPE_CHECKING:
    from ..exporters.registry import ExporterInfo
    from ..process import Process

__all__ = ["DmaBufMachine", "make_machine"]

PAGE = 4096
RW = _mmap.PROT_READ | _mmap.PROT_WRITE
MAX_PAGES = 4

# Offsets biased to a few cache lines and page edges, so that a CPU access and a
# device access often touch the same line: that is where coherency bugs show.
OFFSETS = st.one_of(
    st.sampled_from([0, 8, 60, 64, PAGE - 8, PAGE, PAGE + 64, 2 * PAGE]),
    st.integers(0, MAX_PAGES * PAGE - 1),
)


@define(eq=False)
class BufferRef:
    """A buffer, its control fd in the parent, and the model of its bytes."""

    index: int
    tracked: TrackedBuffer = field(repr=False)
    fd: int = field(repr=False)
    pages: int = field(repr=False)
    model: bytearray = field(repr=False)
    known: bytearray = field(repr=False)
    extra_fds: list[int] = field(factory=list, repr=False)

    def __repr__(self) -> str:
        return f"<buffer {self.tracked.name}: {self.pages} pages>"


@define(eq=False)
class MappingRef:
    proc: Process = field(repr=False)
    addr: int
    pages: int
    first_page: int
    buf: BufferRef = field(repr=False)
    writable: bool = True

    def __repr__(self) -> str:
        return f"<mapping of {self.buf.tracked.name} pages {self.first_page}+{self.pages}>"

    @property
    def usable(self) -> int:
        """Bytes of the mapping that lie inside the buffer (a grown mapping may reach past it)."""
        return max(0, min(self.pages, self.buf.pages - self.first_page)) * PAGE


def event(value: str) -> None:
    """``hypothesis.event`` inside a test; nothing when a reproducer runs as plain Python."""
    if currently_in_test_context():
        _hyp_event(value)


def note(value: str) -> None:
    if currently_in_test_context():
        _hyp_note(value)


class DmaBufMachine(RuleBasedStateMachine):
    """Base machine; use :func:`make_machine` to bind an exporter and a spec."""

    exporter: ExporterInfo
    spec: str
    stats: dict[str, int]
    """Per machine class: examples run and steps taken (diagnostics for the kit's figures)."""

    buffers = Bundle("buffers")
    mappings = Bundle("mappings")
    children = Bundle("children")

    def __init__(self) -> None:
        super().__init__()
        type(self).stats["examples"] += 1
        self.kernel = Kernel(self.spec)
        self.world = World(
            self.kernel, ignores_vm_pgoff=self.exporter.capabilities.ignores_vm_pgoff
        )
        self.gpu = Device(self.kernel, "gpu")
        self.proc = self.kernel.spawn("kit")
        self.bufs: list[BufferRef] = []
        self.maps: list[MappingRef] = []
        self.kids: list[Process] = []

    # -- helpers ------------------------------------------------------------------------
    def _fail(self, rule: str, message: str) -> None:
        raise RuleViolation([Finding(rule, message)])

    def _sync(self, proc: Process, buf: BufferRef, *, start: bool, write: bool) -> None:
        from .scenarios import Harness

        harness = Harness(self.kernel, self.exporter, self.world, self.gpu, proc)
        harness.sync(proc, buf.fd, buf.tracked, start=start, write=write)

    def _device_job(self, buf: BufferRef, fn: Any) -> Any:
        from .scenarios import Harness

        harness = Harness(self.kernel, self.exporter, self.world, self.gpu, self.proc)
        return harness.device_job(buf.tracked, fn)

    def _check_read(self, buf: BufferRef, offset: int, got: bytes, who: str) -> None:
        for i, byte in enumerate(got):
            if buf.known[offset + i] and buf.model[offset + i] != byte:
                self._fail(
                    "SAN-STALE-READ",
                    f"{who} read byte {offset + i} of buffer {buf.tracked.name} as"
                    f" {byte:#04x}, but the last write put {buf.model[offset + i]:#04x} there",
                )

    # -- buffers ---------------------------------------------------------------------------
    @rule(target=buffers, pages=st.integers(1, MAX_PAGES))
    def new_buffer(self, pages: int) -> BufferRef:
        from ..dma_buf.core import DmaBuf

        if len(self.bufs) >= 3:
            return multiple()  # type: ignore[return-value]
        fd = self.exporter.make_fd(self.proc, pages * PAGE, os.O_RDWR | os.O_CLOEXEC)
        dmabuf = self.proc.file(fd).private_data
        if not isinstance(dmabuf, DmaBuf):
            raise TypeError(f"exporter {self.exporter.name} returned an fd that is no dma-buf")
        tracked = self.world.track(chr(ord("A") + len(self.bufs)), dmabuf)
        ref = BufferRef(
            len(self.bufs), tracked, fd, pages, bytearray(pages * PAGE), bytearray(pages * PAGE)
        )
        self.bufs.append(ref)
        event("new_buffer")
        return ref

    @rule(buf=buffers)
    def dup_fd(self, buf: BufferRef) -> None:
        buf.extra_fds.append(self.proc.dup(buf.fd))

    @precondition(lambda self: any(b.extra_fds for b in self.bufs))
    @rule(buf=buffers)
    def close_dup(self, buf: BufferRef) -> None:
        if buf.extra_fds:
            self.proc.close(buf.extra_fds.pop())

    # -- mappings ---------------------------------------------------------------------------
    @rule(
        target=mappings,
        buf=buffers,
        offset=st.integers(0, MAX_PAGES - 1),
        pages=st.integers(1, MAX_PAGES),
        past_end=st.sampled_from([False] * 4 + [True]),
    )
    def mmap(self, buf: BufferRef, offset: int, pages: int, past_end: bool) -> MappingRef:
        """Map pages ``offset``..``offset+pages`` of ``buf`` (clamped inside unless past_end)."""
        if past_end:
            offset = min(offset, buf.pages)
            pages = buf.pages - offset + pages  # always at least one page too many
        else:
            offset %= buf.pages
            pages = 1 + (pages - 1) % (buf.pages - offset)
        inside = offset + pages <= buf.pages
        try:
            addr = self.proc.mmap(0, pages * PAGE, RW, _mmap.MAP_SHARED, buf.fd, offset * PAGE)
        except OSError as exc:
            if inside:
                self._fail(
                    "R1",
                    f"mmap of pages {offset}+{pages} of a {buf.pages}-page buffer"
                    f" (inside it) failed with {errno.errorcode.get(exc.errno or 0)}",
                )
            if exc.errno != errno.EINVAL:
                self._fail("R1", f"mmap past the end failed with {exc.errno}, not EINVAL")
            event("mmap past the end: EINVAL")
            return multiple()  # type: ignore[return-value]
        if not inside:
            self._fail(
                "R1",
                f"mmap of pages {offset}+{pages} of a {buf.pages}-page buffer"
                " succeeded past the end",
            )
        # An exporter that declares it ignores vm_pgoff (drm_gem_shmem, the R60
        # exception) shows the buffer from page 0 whatever the offset.
        first = 0 if self.exporter.capabilities.ignores_vm_pgoff else offset
        ref = MappingRef(self.proc, addr, pages, first, buf)
        self.world.add_mapping(self.proc, addr, pages * PAGE, buf.tracked, offset)
        self.maps.append(ref)
        event("mmap")
        return ref

    def _forget_mapping(self, m: MappingRef) -> None:
        self.world.mappings = [
            w for w in self.world.mappings if not (w.proc is m.proc and w.start == m.addr)
        ]
        if m in self.maps:
            self.maps.remove(m)

    @rule(m=consumes(mappings))
    def munmap(self, m: MappingRef) -> None:
        if not m.proc.alive:
            return
        m.proc.munmap(m.addr, m.pages * PAGE)
        self._forget_mapping(m)

    @rule(target=mappings, m=consumes(mappings))
    def munmap_middle(self, m: MappingRef) -> Any:
        if m.pages < 3 or not m.proc.alive:
            return multiple(m)
        m.proc.munmap(m.addr + PAGE, PAGE)
        self._forget_mapping(m)
        low = MappingRef(m.proc, m.addr, 1, m.first_page, m.buf, m.writable)
        high = MappingRef(
            m.proc, m.addr + 2 * PAGE, m.pages - 2, m.first_page + 2, m.buf, m.writable
        )
        for piece in (low, high):
            self.world.add_mapping(
                piece.proc, piece.addr, piece.pages * PAGE, m.buf.tracked, piece.first_page
            )
            self.maps.append(piece)
        try:
            m.proc.read_memory(m.addr + PAGE, 1)
            self._fail("R32", "the unmapped middle page is still readable")
        except Signal as sig:
            if sig.signo != 11:
                self._fail("R32", f"touching the hole gave {sig}, not SIGSEGV")
        return multiple(low, high)

    @rule(target=mappings, m=consumes(mappings))
    def mremap_grow(self, m: MappingRef) -> MappingRef:
        if not m.proc.alive:
            return m
        try:
            new = m.proc.mremap(m.addr, m.pages * PAGE, (m.pages + 1) * PAGE, 1)
        except OSError as exc:
            if exc.errno != errno.EFAULT:
                self._fail("R33", f"mremap growth failed with errno {exc.errno}, not EFAULT")
            event("mremap growth: EFAULT")
            return m
        event("mremap growth allowed")
        self._forget_mapping(m)
        grown = MappingRef(m.proc, new, m.pages + 1, m.first_page, m.buf, m.writable)
        self.world.add_mapping(m.proc, new, grown.pages * PAGE, m.buf.tracked, m.first_page)
        self.maps.append(grown)
        if m.first_page + grown.pages > m.buf.pages:
            try:
                m.proc.read_memory(new + m.pages * PAGE, 1)
            except Signal as sig:
                if sig.signo != 7:
                    self._fail("R34", f"a touch past the buffer gave {sig}, not SIGBUS")
            except KernelOops as oops:
                self._fail("R34", str(oops))
            # a read that returns data is judged by the sanitizers (SAN-PTE-IN-BUFFER)
        return grown

    @rule(m=mappings)
    def mprotect_readonly(self, m: MappingRef) -> None:
        if not m.proc.alive or not m.writable:
            return
        m.proc.mprotect(m.addr, m.pages * PAGE, _mmap.PROT_READ)
        m.writable = False

    # -- processes ----------------------------------------------------------------------------
    @precondition(lambda self: len(self.kids) < 2)
    @rule(target=children)
    def fork(self) -> Process:
        child = self.proc.fork()
        self.kids.append(child)
        for m in list(self.maps):
            if m.proc is self.proc:
                self.world.add_mapping(child, m.addr, m.pages * PAGE, m.buf.tracked, m.first_page)
        return child

    @rule(child=consumes(children))
    def exit_child(self, child: Process) -> None:
        if child.alive:
            child.exit()
        self.world.forget_process(child)
        self.maps = [m for m in self.maps if m.proc is not child]
        if child in self.kids:
            self.kids.remove(child)

    @rule(child=children, m=mappings, data=st.binary(min_size=1, max_size=8))
    def child_write(self, child: Process, m: MappingRef, data: bytes) -> None:
        if not child.alive or m.proc is not self.proc or not m.writable or not m.usable:
            return
        if self.world.buffer_of(child.mm, m.addr) is None:
            return  # mapped after the fork: the child does not have it
        self._cpu_write(child, m, 0, data)

    # -- CPU access -------------------------------------------------------------------------
    def _cpu_write(self, proc: Process, m: MappingRef, offset: int, data: bytes) -> None:
        offset = min(offset, m.usable - len(data))
        self._sync(proc, m.buf, start=True, write=True)
        proc.write_memory(m.addr + offset, data)
        self._sync(proc, m.buf, start=False, write=True)
        pos = m.first_page * PAGE + offset
        m.buf.model[pos : pos + len(data)] = data
        m.buf.known[pos : pos + len(data)] = b"\x01" * len(data)

    @rule(m=mappings, offset=OFFSETS, data=st.binary(min_size=1, max_size=16))
    def cpu_write(self, m: MappingRef, offset: int, data: bytes) -> None:
        if not m.proc.alive or not m.writable or not m.usable:
            return
        self._cpu_write(m.proc, m, offset % m.usable, data)

    @rule(m=mappings, offset=OFFSETS, n=st.integers(1, 16))
    def cpu_read(self, m: MappingRef, offset: int, n: int) -> None:
        if not m.proc.alive or not m.usable:
            return
        offset = min(offset % m.usable, m.usable - n)
        self._sync(m.proc, m.buf, start=True, write=False)
        got = m.proc.read_memory(m.addr + offset, n)
        self._sync(m.proc, m.buf, start=False, write=False)
        self._check_read(m.buf, m.first_page * PAGE + offset, got, f"the CPU (pid {m.proc.pid})")

    @rule(a=buffers, b=buffers, data=st.binary(min_size=1, max_size=8))
    def interleaved_access(self, a: BufferRef, b: BufferRef, data: bytes) -> None:
        """B is mid-access (after SYNC_START) while A leaves the CPU domain (R26).

        Both buffers get a fresh one-page mapping at offset 0 for the step.
        """
        if a is b:
            return
        addr_a = self.proc.mmap(0, PAGE, RW, _mmap.MAP_SHARED, a.fd, 0)
        addr_b = self.proc.mmap(0, PAGE, RW, _mmap.MAP_SHARED, b.fd, 0)
        self.world.add_mapping(self.proc, addr_a, PAGE, a.tracked, 0)
        self.world.add_mapping(self.proc, addr_b, PAGE, b.tracked, 0)
        self._sync(self.proc, b, start=True, write=True)
        self.proc.write_memory(addr_b, data)
        self._sync(self.proc, a, start=True, write=True)
        self.proc.write_memory(addr_a, data)
        self._sync(self.proc, a, start=False, write=True)  # A leaves the CPU domain
        self.sanitizers_hold()
        got = self.proc.read_memory(addr_b, len(data))
        self._sync(self.proc, b, start=False, write=True)
        for buf in (a, b):
            buf.model[: len(data)] = data
            buf.known[: len(data)] = b"\x01" * len(data)
        self._check_read(b, 0, got, f"the CPU (pid {self.proc.pid})")
        for addr in (addr_a, addr_b):
            self.proc.munmap(addr, PAGE)
        self.world.mappings = [w for w in self.world.mappings if w.start not in (addr_a, addr_b)]

    @rule(buf=buffers)
    def touch_with_device_work_pending(self, buf: BufferRef) -> None:
        """A fresh mapping is touched while the device still works on the buffer (R55)."""
        from ..dma_buf.dma_fence import DmaFence
        from ..dma_buf.dma_resv import DmaResvUsage

        resv = buf.tracked.dmabuf.resv
        if resv is None:
            return  # no implicit fences before 3.17
        fence = DmaFence(
            self.kernel, "gpu-job", len(resv.fences) + 1, completes_at=self.kernel.clock + 1_000_000
        )
        resv.add_fence(fence, DmaResvUsage.WRITE)
        addr = self.proc.mmap(0, PAGE, _mmap.PROT_READ, _mmap.MAP_SHARED, buf.fd, 0)
        self.world.add_mapping(self.proc, addr, PAGE, buf.tracked)
        self.proc.read_memory(addr, 1)  # unbracketed on purpose: only the wait matters
        self.proc.munmap(addr, PAGE)
        self.world.mappings = [w for w in self.world.mappings if w.start != addr]
        self.kernel.run_until_idle()  # the device finishes its job

    # -- devices ------------------------------------------------------------------------------
    @rule(buf=buffers, offset=OFFSETS, data=st.binary(min_size=1, max_size=16))
    def device_write(self, buf: BufferRef, offset: int, data: bytes) -> None:
        offset = min(offset % (buf.pages * PAGE), buf.pages * PAGE - len(data))
        self._device_job(buf, lambda sgt: self.gpu.dma_write(sgt, offset, data))
        buf.model[offset : offset + len(data)] = data
        buf.known[offset : offset + len(data)] = b"\x01" * len(data)

    @rule(buf=buffers, offset=OFFSETS, n=st.integers(1, 16))
    def device_read(self, buf: BufferRef, offset: int, n: int) -> None:
        offset = min(offset % (buf.pages * PAGE), buf.pages * PAGE - n)
        got = self._device_job(buf, lambda sgt: self.gpu.dma_read(sgt, offset, n))
        self._check_read(buf, offset, got, "the device")

    # -- invariants and teardown ----------------------------------------------------------------
    @invariant()
    def sanitizers_hold(self) -> None:
        type(self).stats["steps"] += 1  # invariants run once at start and after every step
        findings = self.world.check(ALL_CHECKS)
        if findings:
            tail = self.kernel.tracer.events[-8:]
            if tail:
                note("last trace events: " + "; ".join(f"{e.func}" for e in tail))
            raise RuleViolation(findings)

    def teardown(self) -> None:
        for child in list(self.kids):
            if child.alive:
                child.exit()
        if self.proc.alive:
            self.proc.exit()
        self.world.mappings.clear()
        findings = check_released(self.world) + self.world.check(ALL_CHECKS)
        if findings:
            raise RuleViolation(findings)


def _camel(name: str) -> str:
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    return "".join(p if p[0].isupper() else p.capitalize() for p in parts)


def make_machine(exporter: ExporterInfo, spec: str) -> type[DmaBufMachine]:
    """A machine class bound to ``exporter`` and ``spec``, named after them."""
    label = exporter.name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]  # MODULE:ATTR -> ATTR
    name = f"DmaBufMachine_{_camel(label)}_{re.sub(r'[^A-Za-z0-9]', '_', spec)}"
    stats = {"examples": 0, "steps": 0}
    return type(name, (DmaBufMachine,), {"exporter": exporter, "spec": spec, "stats": stats})


_KINDS = {"buf": "buffers", "a": "buffers", "b": "buffers", "m": "mappings", "child": "children"}
_CONSUMES = {"munmap": "m", "munmap_middle": "m", "mremap_grow": "m", "exit_child": "child"}
_TARGET = {
    "new_buffer": "buffers",
    "mmap": "mappings",
    "munmap_middle": "mappings",
    "mremap_grow": "mappings",
    "fork": "children",
}


def run_operations(exporter: ExporterInfo, spec: str, ops: Any) -> None:
    """Replay a list of :class:`~.strategies.Operation` on a fresh machine.

    Raises :class:`RuleViolation` at the first step that breaks a rule (the
    sanitizers run after every step, the release checks at the end).
    """
    from hypothesis.stateful import MultipleResults

    state = make_machine(exporter, spec)()
    made: dict[str, list[Any]] = {"buffers": [], "mappings": [], "children": []}
    state.sanitizers_hold()
    for op in ops:
        kwargs: dict[str, Any] = {}
        for key, value in op.args:
            kind = _KINDS.get(key)
            if kind is None:
                kwargs[key] = value
                continue
            pool = made[kind]
            if not pool:
                break
            kwargs[key] = pool[int(value) % len(pool)]
        else:
            consumed = _CONSUMES.get(op.rule)
            if consumed is not None:
                made[_KINDS[consumed]].remove(kwargs[consumed])
            result = getattr(state, op.rule)(**kwargs)
            target = _TARGET.get(op.rule)
            if target is not None:
                values = result.values if isinstance(result, MultipleResults) else [result]
                made[target].extend(values)
            state.sanitizers_hold()
    state.teardown()


__all__ += ["run_operations"]
