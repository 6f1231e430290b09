"""Sequence diagrams from a trace: who called whom, across kernel subsystems.

:func:`sequence_from_trace` turns the ``entry``/``exit``/``event`` records of
``with kernel.trace() as events:`` into a :class:`Sequence`: one *lifeline*
per subsystem, classified by the kernel source file each function mirrors
(:data:`dmabuf_sim.trace.KERNEL_FUNCTIONS`):

=============  =================================================================
lifeline       functions from
=============  =================================================================
``comm-pid``   the userspace task (the caller of every outermost call)
mm             ``mm/*``, ``arch/x86/mm/*``, the x86 mmap syscall entry
vfs            ``fs/*``, ``include/linux/fs.h``
dma-buf core   ``drivers/dma-buf/dma-buf.c`` and its fences, resv, sync_file
exporter       heaps, ``udmabuf.c``, drm, the teaching and omapdrm-like exporters
device/DMA     ``kernel/dma/*``, the device DMA engine (``device_dma_*``)
kernel         anything else (``kernel/fork.c``, ``kernel/exit.c``, ...)
=============  =================================================================

Each call is an arrow from the caller's lifeline to the callee's; each return
an arrow back labelled with the value (errno names for ``-errno``,
``VM_FAULT_*`` names for a ``vm_fault_t``); point events
(``zap_page_range_single``, ``stale_read``, ``force_sig_fault``, ``oops``...)
become notes, and so does each userspace call, over its task, as strace
prints it (``mmap(NULL, 8192, ...) = 0x7f...``).  Long traces are capped at ``max_calls`` calls with
a note saying how many were left out.  Renderers live in
:mod:`.mermaid` and :mod:`.sequence_svg`.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import define, field, frozen

from ..trace import KERNEL_FUNCTIONS, USER_KINDS, TraceEvent, strace_line, vm_fault_name

__all__ = [
    "LIFELINE_KINDS",
    "Call",
    "Lifeline",
    "Note",
    "Return",
    "Sequence",
    "Step",
    "lifeline_of",
    "sequence_from_trace",
]

LIFELINE_KINDS = {
    "mm": "mm",
    "vfs": "vfs",
    "dmabuf": "dma-buf core",
    "exporter": "exporter",
    "device": "device/DMA",
    "kernel": "kernel",
}
"""Kernel lifeline ids and their titles, in diagram order (tasks come first)."""

TRACE_ENDED = "(trace ended)"
"""The value of a return the trace never recorded (the capture stopped inside the call)."""

# (source-file prefix, lifeline); first match wins, so specific paths come first.
_FILE_RULES: tuple[tuple[str, str], ...] = (
    ("drivers/dma-buf/heaps/", "exporter"),
    ("drivers/dma-buf/udmabuf.c", "exporter"),
    ("drivers/dma-buf/dma-heap.c", "exporter"),
    ("drivers/dma-buf/", "dmabuf"),
    ("drivers/base/dma-buf.c", "dmabuf"),
    ("include/linux/dma-buf.h", "dmabuf"),
    ("drivers/", "exporter"),  # drm, misc and other drivers
    ("(omapdrm-like", "exporter"),
    ("(teaching", "exporter"),
    ("(device", "device"),
    ("kernel/dma/", "device"),
    ("mm/", "mm"),
    ("arch/x86/mm/", "mm"),
    ("arch/x86/kernel/sys_x86_64.c", "mm"),
    ("fs/", "vfs"),
    ("include/linux/fs.h", "vfs"),
)


def lifeline_of(func: str) -> str | None:
    """The kernel lifeline id of a simulated kernel function, or None if unregistered."""
    info = KERNEL_FUNCTIONS.get(func)
    if info is None:
        return "device" if func.startswith("device_dma_") else None
    for prefix, lifeline in _FILE_RULES:
        if info.file.startswith(prefix):
            return lifeline
    return "device" if func.startswith("device_dma_") else "kernel"


@frozen
class Lifeline:
    """A column of the diagram: a userspace task (``kind="task"``) or a kernel subsystem."""

    id: str
    label: str
    kind: str


@frozen
class Call:
    src: str
    dst: str
    func: str
    args: str = ""
    returned: str | None = None
    """For a leaf call drawn in one row (``merge_leaves``): the value it returned."""
    error: bool = False

    @property
    def text(self) -> str:
        call = f"{self.func}({self.args})"
        if self.returned is None:
            return call
        return call if self.returned == "void" else f"{call} = {self.returned}"


@frozen
class Return:
    src: str
    dst: str
    func: str
    value: str
    """The rendered value: ``0``, ``0x7f...``, ``-22 EINVAL``, ``raised SIGBUS``, ``void``."""
    error: bool = False

    @property
    def text(self) -> str:
        if self.value == "void":
            return f"{self.func} returns"
        if self.value == TRACE_ENDED:
            return f"{self.func} {TRACE_ENDED}"
        return f"{self.func} = {self.value}"


@frozen
class Note:
    over: str
    text: str
    alert: bool = False
    """A hazard (an oops, a signal, a stale read, a WARN_ON)."""


Step = Call | Return | Note


@frozen
class Sequence:
    """A sequence diagram as a value: lifelines in order and the steps top to bottom."""

    lifelines: tuple[Lifeline, ...]
    steps: tuple[Step, ...]
    calls: int
    """Calls in the trace (drawn or not)."""
    omitted: int
    """Calls left out because of ``max_calls``."""
    title: str = "dmabuf_sim trace"

    def lifeline(self, lifeline_id: str) -> Lifeline:
        for line in self.lifelines:
            if line.id == lifeline_id:
                return line
        raise KeyError(lifeline_id)


_ALERTS = ("oops", "force_sig_fault", "stale_read", "WARN_ON", "bad_page", "fault_wait")


def _value(ev: TraceEvent) -> tuple[str, bool]:
    ret, note = ev.ret, ev.note
    if ret is None:
        text = "void"
    elif isinstance(ret, int) and not isinstance(ret, bool):
        info = KERNEL_FUNCTIONS.get(ev.func)
        if info is not None and info.returns == "vm_fault_t" and ret > 0:
            text = vm_fault_name(ret)
        else:
            text = hex(ret) if ret >= 4096 else str(ret)
    else:
        text = str(ret)
    if note:
        text = note if ret is None else f"{text} {note}"
    error = (isinstance(ret, int) and -4095 <= ret < 0) or note.startswith("raised")
    return text, error


@define
class _Frame:
    func: str
    lifeline: str
    caller: str
    shown: bool


@define
class _Builder:
    max_calls: int
    merge_leaves: bool = False
    lifelines: dict[str, Lifeline] = field(factory=dict)
    steps: list[Step] = field(factory=list)
    stack: list[_Frame] = field(factory=list)
    calls: int = 0
    omitted: int = 0
    cut_at: int | None = None

    def task(self, ev: TraceEvent) -> str:
        lid = f"t{ev.pid}"
        if lid not in self.lifelines:
            label = f"{ev.comm}-{ev.pid}" if ev.pid else "kernel thread"
            self.lifelines[lid] = Lifeline(lid, label, "task")
        return lid

    def kernel_line(self, lid: str) -> str:
        if lid not in self.lifelines:
            self.lifelines[lid] = Lifeline(lid, LIFELINE_KINDS[lid], lid)
        return lid

    def here(self, ev: TraceEvent) -> str:
        return self.stack[-1].lifeline if self.stack else self.task(ev)

    def entry(self, ev: TraceEvent) -> None:
        caller = self.here(ev)
        callee = self.kernel_line(lifeline_of(ev.func) or "kernel")
        self.calls += 1
        shown = self.calls <= self.max_calls
        if shown:
            self.steps.append(Call(caller, callee, ev.func, ev.args))
        else:
            self.omitted += 1
            if self.cut_at is None:
                self.cut_at = len(self.steps)
                self.steps.append(Note(callee, ""))  # filled in by build()
        self.stack.append(_Frame(ev.func, callee, caller, shown))

    def exit(self, ev: TraceEvent) -> None:
        funcs = [f.func for f in self.stack]
        if ev.func not in funcs:
            return  # the capture began inside this call: nothing to return to
        while self.stack:
            frame = self.stack.pop()
            if frame.func == ev.func:
                if frame.shown:
                    value, error = _value(ev)
                    last = self.steps[-1] if self.steps else None
                    if self.merge_leaves and isinstance(last, Call) and last.func == ev.func:
                        self.steps[-1] = Call(
                            last.src, last.dst, last.func, last.args, value, error
                        )
                    else:
                        self.steps.append(
                            Return(frame.lifeline, frame.caller, ev.func, value, error)
                        )
                return
            if frame.shown:  # an unmatched inner frame (should not happen): close it
                self.steps.append(Return(frame.lifeline, frame.caller, frame.func, "?", True))

    def event(self, ev: TraceEvent) -> None:
        if self.cut_at is not None:
            return
        over = self.here(ev)
        detail = " ".join(part for part in (ev.args, ev.note) if part)
        text = f"{ev.func}: {detail}" if detail else ev.func
        self.steps.append(Note(over, text, ev.func in _ALERTS))

    def user(self, ev: TraceEvent) -> None:
        """A userspace call: a note over its task, in strace's words."""
        if self.cut_at is not None:
            return
        failed = (isinstance(ev.ret, int) and ev.ret < 0) or ev.note.startswith(("SIG", "oops"))
        self.steps.append(Note(self.task(ev), strace_line(ev), failed))

    def build(self, title: str) -> Sequence:
        for frame in reversed(self.stack):
            if frame.shown:
                self.steps.append(
                    Return(frame.lifeline, frame.caller, frame.func, TRACE_ENDED, False)
                )
        if self.cut_at is not None:
            over = self.steps[self.cut_at]
            assert isinstance(over, Note)
            self.steps[self.cut_at] = Note(
                over.over,
                f"… {self.omitted} more calls not drawn (first {self.max_calls} shown)",
            )
        tasks = [line for line in self.lifelines.values() if line.kind == "task"]
        kernel = [self.lifelines[k] for k in LIFELINE_KINDS if k in self.lifelines]
        return Sequence(tuple(tasks + kernel), tuple(self.steps), self.calls, self.omitted, title)


def sequence_from_trace(
    events: Iterable[TraceEvent],
    *,
    max_calls: int = 200,
    title: str = "dmabuf_sim trace",
    merge_leaves: bool = False,
) -> Sequence:
    """Group the calls of a trace by subsystem lifeline (see the module docstring).

    At most ``max_calls`` calls are drawn (with their returns, so the diagram
    stays balanced); a note where the cut happens counts the rest.  With
    ``merge_leaves`` a call that calls nothing is one row, ``f(args) = value``,
    with no separate return (about a third fewer rows).
    """
    if max_calls < 1:
        raise ValueError(f"max_calls must be >= 1, not {max_calls}")
    b = _Builder(max_calls, merge_leaves)
    for ev in events:
        if ev.kind == "entry":
            b.entry(ev)
        elif ev.kind == "exit":
            b.exit(ev)
        elif ev.kind in USER_KINDS:
            b.user(ev)
        else:
            b.event(ev)
    return b.build(title)
