"""The tracer: every kernel function reports here, like ftrace's function_graph.

Kernel functions are declared with :func:`kernel_function`, which records the
C name and source file in a registry (so a reader finds the twin of any kernel
function, and a coverage page falls out of it) and, when the owning kernel's
tracer is on, records an entry and an exit event with the return value.

Events are rendered three ways:

* :func:`format_function_graph` — ``funcgraph-retval`` style text::

      0)  proc-1   |  do_mmap() {
      0)  proc-1   |    dma_buf_mmap_internal() {
      0)  proc-1   |    } /* dma_buf_mmap_internal = -22 EINVAL */

* :func:`format_jsonl` — one JSON object per event for machines;
* the ``events`` list itself, for tests.

The clock is virtual (one tick per event), so traces are byte-stable.

Simplified: there is one CPU (``0)``); interrupts and preemption do not exist.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from attrs import define, field, frozen

from .errors import errname

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = [
    "KERNEL_FUNCTIONS",
    "KernelFunctionInfo",
    "TraceEvent",
    "Tracer",
    "format_function_graph",
    "format_jsonl",
    "kernel_function",
]

P = ParamSpec("P")
R = TypeVar("R")


@frozen
class KernelFunctionInfo:
    """Where a simulated kernel function lives in Linux."""

    name: str
    file: str
    qualname: str
    doc: str


KERNEL_FUNCTIONS: dict[str, KernelFunctionInfo] = {}
"""Registry of every simulated kernel function by C name (static code metadata)."""


@define(slots=True)
class TraceEvent:
    """One trace record.

    ``kind`` is ``entry``/``exit`` for function boundaries and ``event`` for
    point events (a PTE shot down, a signal delivered, an oops...).
    """

    seq: int
    ts: int
    pid: int
    comm: str
    depth: int
    kind: str
    func: str
    args: str = ""
    ret: Any = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "seq": self.seq,
            "ts": self.ts,
            "pid": self.pid,
            "comm": self.comm,
            "depth": self.depth,
            "kind": self.kind,
            "func": self.func,
        }
        if self.args:
            d["args"] = self.args
        if self.kind == "exit":
            d["ret"] = self.ret if isinstance(self.ret, (int, str, type(None))) else repr(self.ret)
        if self.note:
            d["note"] = self.note
        return d


class Traceable(Protocol):
    @property
    def kernel(self) -> Kernel: ...


def _short(value: Any) -> str:
    name = getattr(value, "trace_name", None)
    if callable(name):
        return str(name())
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return hex(value) if value >= 4096 or value < 0 else str(value)
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return type(value).__name__


def _format_ret(ret: Any) -> tuple[Any, str]:
    """(value for the record, note) — negative ints get their errno name."""
    if isinstance(ret, bool):
        return int(ret), ""
    if isinstance(ret, int):
        if -4095 <= ret < 0:
            return ret, errname(ret)
        return ret, ""
    if ret is None:
        return None, ""
    return _short(ret), ""


_ENABLED_TRACERS: set[int] = set()
"""``id()`` of every :class:`Tracer` that is enabled right now, in any kernel.

While it is empty no :func:`kernel_function` wrapper can have a tracer to report
to, so wrappers call straight through without looking one up.  Kept by the
``enabled`` setter hook, ``__attrs_post_init__`` and ``__del__``; the set is only
mutated, never rebound."""


def _enabled_changed(tracer: Tracer, _attribute: object, value: bool) -> bool:
    """``on_setattr`` hook of :attr:`Tracer.enabled`: keep ``_ENABLED_TRACERS`` in step."""
    if value:
        _ENABLED_TRACERS.add(id(tracer))
    else:
        _ENABLED_TRACERS.discard(id(tracer))
    return value


@define(slots=True, eq=False)
class Tracer:
    """Per-kernel event recorder; off by default, on for a kernel or for a block."""

    kernel: Kernel = field(repr=False)
    enabled: bool = field(default=False, on_setattr=_enabled_changed)
    events: list[TraceEvent] = field(factory=list, repr=False)
    depth: int = 0
    _seq: int = 0
    _clock: int = 0
    limit: int = 1_000_000
    """Keep at most this many events (oldest dropped); a bounded ring like ftrace's."""

    def __attrs_post_init__(self) -> None:
        if self.enabled:
            _ENABLED_TRACERS.add(id(self))

    def __del__(self, _discard: Callable[[int], None] = _ENABLED_TRACERS.discard) -> None:
        # `_discard` is bound at definition time, so this works during interpreter
        # teardown too.  The id must go before it can be reused by a new object.
        _discard(id(self))

    def _current(self) -> tuple[int, str]:
        task = self.kernel.current
        if task is None:
            return 0, "kernel"
        return task.pid, task.comm

    def _record(
        self, kind: str, func: str, args: str = "", ret: Any = None, note: str = ""
    ) -> None:
        self._seq += 1
        self._clock += 1
        pid, comm = self._current()
        ev = TraceEvent(self._seq, self._clock, pid, comm, self.depth, kind, func, args, ret, note)
        if len(self.events) >= self.limit:
            del self.events[: len(self.events) // 2]
        self.events.append(ev)

    def enter(self, func: str, args: tuple[Any, ...]) -> None:
        self._record("entry", func, ", ".join(_short(a) for a in args))
        self.depth += 1

    def exit(self, func: str, ret: Any, note: str = "") -> None:
        self.depth = max(0, self.depth - 1)
        value, errno_note = _format_ret(ret)
        notes = " ".join(n for n in (errno_note, note) if n)
        self._record("exit", func, ret=value, note=notes)

    def event(self, func: str, note: str = "", args: str = "") -> None:
        """A point event (shown as a comment line in function_graph output)."""
        if self.enabled:
            self._record("event", func, args=args, note=note)

    def clear(self) -> None:
        self.events.clear()

    @contextmanager
    def capture(self) -> Iterator[list[TraceEvent]]:
        """Trace a block of code; yields the list the block's events land in."""
        was, start = self.enabled, len(self.events)
        self.enabled = True
        captured: list[TraceEvent] = []
        try:
            yield captured
        finally:
            captured.extend(self.events[start:])
            self.enabled = was


def kernel_function(
    name: str | None = None, *, file: str
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare a simulated kernel function: registry entry plus tracing.

    The owning :class:`~dmabuf_sim.kernel.Kernel` is found as ``.kernel`` of
    the first positional argument that has one (every kernel object does).
    While no tracer is enabled anywhere the wrapper only tests one set and calls
    through; otherwise it looks the tracer up and checks ``enabled``.
    """

    def deco(fn: Callable[P, R]) -> Callable[P, R]:
        cname = name or fn.__name__
        skip = 1 if _is_method(fn) else 0  # don't print `self`
        KERNEL_FUNCTIONS[cname] = KernelFunctionInfo(
            cname, file, fn.__qualname__, (fn.__doc__ or "").strip()
        )

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not _ENABLED_TRACERS:
                return fn(*args, **kwargs)  # no tracer is on anywhere
            tracer = _tracer_of(args)
            if tracer is None or not tracer.enabled:
                return fn(*args, **kwargs)
            tracer.enter(cname, args[skip:])
            try:
                ret = fn(*args, **kwargs)
            except BaseException as exc:
                tracer.exit(cname, None, note=f"raised {type(exc).__name__}")
                raise
            tracer.exit(cname, ret)
            return ret

        wrapper.__kernel_name__ = cname  # type: ignore[attr-defined]
        return wrapper

    return deco


def _tracer_of(args: tuple[Any, ...]) -> Tracer | None:
    """The tracer of the first argument that belongs to a kernel (methods of stateless
    exporter objects find it in their second argument)."""
    for arg in args:
        kernel = getattr(arg, "kernel", None)
        if kernel is not None:
            tracer: Tracer = kernel.tracer
            return tracer
    return None


def _is_method(fn: Callable[..., Any]) -> bool:
    return "." in fn.__qualname__ and "<locals>" not in fn.__qualname__


def format_function_graph(events: list[TraceEvent], *, show_task: bool = True) -> str:
    """Render events like ``trace`` with ``function_graph`` and ``funcgraph-retval``."""
    lines: list[str] = []
    i = 0
    n = len(events)
    while i < n:
        ev = events[i]
        task = f" {ev.comm}-{ev.pid}".ljust(14) if show_task else ""
        prefix = f" 0){task} |  " + "  " * ev.depth
        if ev.kind == "entry":
            nxt = events[i + 1] if i + 1 < n else None
            if nxt is not None and nxt.kind == "exit" and nxt.func == ev.func:
                lines.append(f"{prefix}{ev.func}(); {_retval_comment(nxt, leaf=True)}".rstrip())
                i += 2
                continue
            lines.append(f"{prefix}{ev.func}() {{")
        elif ev.kind == "exit":
            lines.append(f"{prefix}}} {_retval_comment(ev, leaf=False)}")
        else:
            detail = f" {ev.args}" if ev.args else ""
            note = f" {ev.note}" if ev.note else ""
            lines.append(f"{prefix}/* {ev.func}:{detail}{note} */")
        i += 1
    return "\n".join(lines) + ("\n" if lines else "")


def _retval_comment(ev: TraceEvent, *, leaf: bool) -> str:
    ret = ev.ret
    if ret is None and not ev.note:
        return "" if leaf else f"/* {ev.func} */"
    val = hex(ret) if isinstance(ret, int) and ret >= 4096 else str(ret)
    note = f" {ev.note}" if ev.note else ""
    if leaf:
        return f"/* = {val}{note} */"
    return f"/* {ev.func} = {val}{note} */"


def format_jsonl(events: list[TraceEvent]) -> str:
    """One JSON object per line (schema: TraceEvent.as_dict)."""
    return "".join(json.dumps(ev.as_dict(), sort_keys=True) + "\n" for ev in events)
