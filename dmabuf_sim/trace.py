"""The tracer: every kernel function reports here, like ftrace's function_graph.

Kernel functions are declared with :func:`kernel_function`, which records the
C name and source file in a registry (so a reader finds the twin of any kernel
function, and a coverage page falls out of it) and, when the owning kernel's
tracer is on, records an entry and an exit event with the return value.  With
every tracer off a kernel function is just its own code: no wrapper runs (the
code is patched only while some kernel listens, see :func:`kernel_function`).

Events are rendered three ways:

* :func:`format_function_graph` — ``funcgraph-retval`` style text::

      0)  proc-1   |  do_mmap() {
      0)  proc-1   |    dma_buf_mmap_internal() {
      0)  proc-1   |    } /* dma_buf_mmap_internal = -22 EINVAL */

* :func:`format_jsonl` — one JSON object per event for machines;
* the ``events`` list itself, for tests.

Besides the kernel's own ``entry``/``exit``/``event`` records, the userspace
face adds one ``syscall`` record per system call (and one ``access`` record
per load or store) while the tracer is on, printed as ``strace`` would print
the call (see :mod:`dmabuf_sim.strace`)::

    [app-1] mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 1, 0) = 0x7effffffe000
     0) app-1         |  __x64_sys_mmap() {

:func:`hide_plumbing` and :func:`hide_harness` filter a trace for reading:
reference counting and fd bookkeeping, and the calls a test harness makes
for its own bookkeeping (the conformance kit's probe device).

The clock is virtual (one tick per event), so traces are byte-stable.

Simplified: there is one CPU (``0)``); interrupts and preemption do not exist.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from attrs import define, field, frozen

from .errors import errname

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = [
    "FLATTEN",
    "HARNESS_DEVICES",
    "KERNEL_FUNCTIONS",
    "NOTRACE",
    "USER_KINDS",
    "KernelFunctionInfo",
    "TraceEvent",
    "Tracer",
    "acquire_call_tracing",
    "call_tracing_active",
    "format_function_graph",
    "format_jsonl",
    "hide_harness",
    "hide_plumbing",
    "kernel_function",
    "release_call_tracing",
    "strace_line",
    "vm_fault_name",
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
    returns: str = ""
    """The C return type where the trace shows it symbolically: ``vm_fault_t``."""
    module: str = ""
    """The Python module that defines it (``qualname`` is its name there)."""

    @property
    def python_location(self) -> str:
        """Where the twin lives in this package: ``dmabuf_sim/mm/mmap.py:do_mmap``."""
        return f"{self.module.replace('.', '/')}.py:{self.qualname}"


KERNEL_FUNCTIONS: dict[str, KernelFunctionInfo] = {}
"""Registry of every simulated kernel function by C name (static code metadata).

The key is the C name, except where two eras of the kernel keep a function of the
same name in different files (``dma_buf_release``): the older twin is registered
under its own ``key`` (see :func:`kernel_function`), so both are listed."""


def _register(key: str, info: KernelFunctionInfo) -> None:
    """Add ``info`` under ``key``; a second function under the same key is a mistake."""
    old = KERNEL_FUNCTIONS.get(key)
    if old is not None and (old.module, old.qualname) != (info.module, info.qualname):
        raise ValueError(
            f"kernel function {key!r} is already registered by {old.python_location};"
            f" give {info.python_location} its own key= (the same C name in another era)"
        )
    KERNEL_FUNCTIONS[key] = info


@define(slots=True)
class TraceEvent:
    """One trace record.

    ``kind`` is ``entry``/``exit`` for function boundaries, ``event`` for
    point events (a PTE shot down, a signal delivered, an oops...), and
    ``syscall``/``access`` for a userspace call (``func`` is the call's name,
    ``args`` its strace-style arguments, ``ret`` what it returned: ``-errno``
    on failure; ``note`` names the errno or the signal it ended in).
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
        if self.kind in ("exit", "syscall", "access"):
            d["ret"] = self.ret if isinstance(self.ret, (int, str, type(None))) else repr(self.ret)
        note = self.note or (_vm_fault_note(self) if self.kind == "exit" else "")
        if note:
            d["note"] = note
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


USER_KINDS = frozenset({"syscall", "access"})
"""Record kinds the userspace face adds: a system call, a load or store."""


def _enabled_changed(tracer: Tracer, _attribute: object, value: bool) -> bool:
    """``on_setattr`` hook of :attr:`Tracer.enabled`: an enabled tracer watches its kernel."""
    tracer._watch(value)
    return value


@define(slots=True, eq=False)
class Tracer:
    """Per-kernel event recorder; off by default, on for a kernel or for a block.

    An enabled tracer is an observer of its kernel (:mod:`dmabuf_sim.observe`): it
    records the ``entry``/``exit`` of every kernel function, and the point events
    and userspace calls posted to it with :meth:`event` and :meth:`user_call`.
    """

    kernel: Kernel = field(repr=False)
    enabled: bool = field(default=False, on_setattr=_enabled_changed)
    events: list[TraceEvent] = field(factory=list, repr=False)
    depth: int = 0
    _seq: int = 0
    _clock: int = 0
    limit: int = 1_000_000
    """Keep at most this many events (oldest dropped); a bounded ring like ftrace's."""
    _detach: Callable[[], None] | None = field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.enabled:
            self._watch(True)

    def _watch(self, on: bool) -> None:
        if on and self._detach is None:
            self._detach = self.kernel.observers.attach(self)
        elif not on and self._detach is not None:
            self._detach()
            self._detach = None

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

    # the observer hooks: every kernel function call, while enabled
    on_entry = enter
    on_exit = exit

    def user_call(self, kind: str, name: str) -> TraceEvent:
        """Record a userspace call (``syscall`` or ``access``) as it enters the kernel.

        The record goes before the kernel's events for the call; the caller fills in
        ``args``, ``ret`` and ``note`` once the call returns (strace, too, prints a
        call when it has returned).  Only the userspace face calls this, and only
        while the tracer is enabled.
        """
        self._record(kind, name)
        return self.events[-1]

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


# -- kernel functions: the registry, and tracing that costs nothing when off ----------------
#
# A kernel function is the plain function its module defines: no wrapper stands between
# a caller and its code, so an untraced call costs what the call costs.  Tracing patches
# the code instead.  While some kernel in the process listens to ``entry``/``exit`` (its
# tracer is on), each kernel function's ``__code__`` is swapped for a trampoline that
# finds the calling kernel, reports to its listeners and runs the function's own code; the
# function object stays the same, so every reference to it -- a name imported elsewhere,
# a ``vm_operations_struct`` slot, a bound method -- sees the patch.  When the last
# listening kernel stops (or is collected), each function gets its own code back.


class _KernelFunction:
    """One kernel function: its own code, and the trampoline that traces it."""

    __slots__ = ("body", "code", "defaults", "fn", "kwdefaults", "name", "skip", "trampoline")

    def __init__(self, fn: FunctionType, name: str, skip: int) -> None:
        self.fn = fn
        self.name = name
        self.skip = skip  # leading arguments not shown (``self``)
        self.code = fn.__code__
        self.defaults = fn.__defaults__
        self.kwdefaults = fn.__kwdefaults__
        # A twin that always runs the function's own code, with its globals and closure.
        self.body = FunctionType(
            fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
        )
        self.body.__kwdefaults__ = fn.__kwdefaults__
        self.trampoline = _trampoline_code(fn.__code__.co_freevars)

    def patch(self) -> None:
        fn = self.fn
        fn.__code__ = self.trampoline
        fn.__defaults__ = None
        fn.__kwdefaults__ = {"_kernel_function_": self}

    def unpatch(self) -> None:
        fn = self.fn
        fn.__code__ = self.code
        fn.__defaults__ = self.defaults
        fn.__kwdefaults__ = self.kwdefaults

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What a patched kernel function does: report to the calling kernel's listeners."""
        kernel = _kernel_of(args)
        if kernel is None:
            return self.body(*args, **kwargs)
        observers = kernel.observers
        entry, exits = observers.entry, observers.exit
        if not entry and not exits:
            return self.body(*args, **kwargs)  # this kernel is not traced (another one is)
        name = self.name
        shown = args[self.skip :]
        for hook in entry:
            hook(name, shown)
        try:
            ret = self.body(*args, **kwargs)
        except BaseException as exc:
            note = f"raised {type(exc).__name__}"
            for hook in exits:
                hook(name, None, note)
            raise
        for hook in exits:
            hook(name, ret, "")
        return ret


_TRAMPOLINES: dict[tuple[str, ...], CodeType] = {}


def _trampoline_code(freevars: tuple[str, ...]) -> CodeType:
    """The code a patched kernel function runs: ``_kernel_function_.call(args, kwargs)``.

    Python lets a function take new code only with as many free variables as its
    closure has cells, so a function that closes over names (a method that calls
    ``super()`` closes over ``__class__``) gets a trampoline naming the same ones.
    The ``_kernel_function_`` argument comes from the patched ``__kwdefaults__``.
    """
    code = _TRAMPOLINES.get(freevars)
    if code is None:
        lines = ["def _outer():"]
        lines += [f"    {name} = None" for name in freevars]
        lines += [
            "    def trampoline(*args, _kernel_function_, **kwargs):",
            "        return _kernel_function_.call(args, kwargs)",
        ]
        if freevars:  # unreachable, but it makes them free variables of trampoline
            lines.append(f"        ({', '.join(freevars)},)")
        lines.append("    return trampoline")
        namespace: dict[str, Any] = {}
        exec(compile("\n".join(lines), "<kernel_function trampoline>", "exec"), namespace)
        code = namespace["_outer"]().__code__
        _TRAMPOLINES[freevars] = code
    return code


class _CallTracing:
    """The state of the code, shared by every kernel: which kernel functions exist, and
    how many kernels listen to their calls (while any does, each runs its trampoline)."""

    def __init__(self) -> None:
        self.functions: weakref.WeakSet[FunctionType] = weakref.WeakSet()
        """Every function :func:`kernel_function` declared (weakly: a module may go away)."""
        self.listening = 0

    def add(self, kf: _KernelFunction) -> None:
        self.functions.add(kf.fn)
        if self.listening:
            kf.patch()

    def acquire(self) -> None:
        self.listening += 1
        if self.listening == 1:
            for fn in list(self.functions):
                fn.__kernel_function__.patch()  # type: ignore[attr-defined]

    def release(self) -> None:
        self.listening -= 1
        if self.listening == 0:
            for fn in list(self.functions):
                fn.__kernel_function__.unpatch()  # type: ignore[attr-defined]


_CALL_TRACING = _CallTracing()


def acquire_call_tracing() -> None:
    """A kernel has started listening to kernel function calls: patch the code if needed.

    Called by :class:`~dmabuf_sim.observe.Observers`; every call is paired with one
    :func:`release_call_tracing`."""
    _CALL_TRACING.acquire()


def release_call_tracing() -> None:
    """A kernel has stopped listening: the last to stop gives every function its own code."""
    _CALL_TRACING.release()


def call_tracing_active() -> bool:
    """Are kernel functions running their tracing trampoline right now?"""
    return _CALL_TRACING.listening > 0


def kernel_function(
    name: str | None = None, *, file: str, key: str | None = None, hide_first: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare a simulated kernel function: a registry entry, and tracing when asked.

    ``name`` is the C name the trace shows (default: the Python name).  ``key`` is
    the registry key when it must differ from ``name``: only for a function the
    kernel kept under the same C name in another file in another era; the
    registry refuses two functions under one key.  ``hide_first`` leaves the first
    argument out of the trace, as it is for a method's ``self``: the ``mm`` of the
    mm entry points (``do_mmap`` works on ``current->mm``).

    Returns the function itself (no wrapper): while nobody listens to kernel function
    calls, calling it runs its code and nothing else.  While a kernel listens (its
    tracer is on), the function's code is patched to report each call to the calling
    kernel first: the owning :class:`~dmabuf_sim.kernel.Kernel` is found as
    ``.kernel`` of the first positional argument that has one (every kernel object
    does).
    """

    def deco(fn: Callable[P, R]) -> Callable[P, R]:
        if not isinstance(fn, FunctionType):
            raise TypeError(
                f"@kernel_function decorates a plain function or method, not {type(fn).__name__}"
            )
        cname = name or fn.__name__
        skip = 1 if hide_first or _is_method(fn) else 0  # don't print `self`
        info = KernelFunctionInfo(
            cname,
            file,
            fn.__qualname__,
            (fn.__doc__ or "").strip(),
            _returns(cname, fn, skip),
            fn.__module__,
        )
        _register(key or cname, info)
        kf = _KernelFunction(fn, cname, skip)
        fn.__kernel_name__ = cname  # type: ignore[attr-defined]
        fn.__kernel_function__ = kf  # type: ignore[attr-defined]
        _CALL_TRACING.add(kf)
        return fn

    return deco


def _kernel_of(args: tuple[Any, ...]) -> Kernel | None:
    """The kernel of the first argument that belongs to one (methods of stateless
    exporter objects find it in their second argument)."""
    for arg in args:
        kernel = getattr(arg, "kernel", None)
        if kernel is not None:
            return kernel  # type: ignore[no-any-return]
    return None


def _is_method(fn: Callable[..., Any]) -> bool:
    return "." in fn.__qualname__ and "<locals>" not in fn.__qualname__


def _returns(cname: str, fn: Callable[..., Any], skip: int) -> str:
    """``vm_fault_t`` for fault handlers and the ``vmf_*`` helpers, by the kernel's own
    conventions: a handler takes ``struct vm_fault *vmf`` first; ``vmf_`` names the
    helpers that return a ``vm_fault_t`` (since 4.17)."""
    code = getattr(fn, "__code__", None)
    params = code.co_varnames[skip : code.co_argcount] if code is not None else ()
    if cname.startswith("vmf_") or cname == "handle_mm_fault" or params[:1] == ("vmf",):
        return "vm_fault_t"
    return ""


def vm_fault_name(value: int) -> str:
    """A ``vm_fault_t`` as the kernel's names: ``0x100`` → ``VM_FAULT_NOPAGE``."""
    from .mm import vma  # noqa: PLC0415  # cycle: mm.vma imports page_alloc, which imports trace

    if value == 0:
        return "0"
    names = [
        name
        for name, bit in vars(vma).items()
        if name.startswith("VM_FAULT_") and name != "VM_FAULT_ERROR" and value & bit
    ]
    rest = value
    for name in names:
        rest &= ~getattr(vma, name)
    return "|".join(names + ([hex(rest)] if rest else []))


def _vm_fault_note(ev: TraceEvent) -> str:
    info = KERNEL_FUNCTIONS.get(ev.func)
    ret = ev.ret
    if info is None or info.returns != "vm_fault_t" or not isinstance(ret, int) or ret <= 0:
        return ""
    return vm_fault_name(ret)


# -- reading aids: what a human usually does not want to see --------------------------
NOTRACE = frozenset(
    {
        "get_file",
        "fput",
        "__fput",
        "fget",
        "fd_install",
        "get_unused_fd_flags",
        "alloc_pages",
        "__free_pages",
        "cma_alloc",
        "cma_release",
        "shmem_get_folio",
        "copy_page_range",
    }
)
"""Hidden with everything they call (reference counting, fd and page bookkeeping), like
ftrace's ``set_graph_notrace``."""
FLATTEN = frozenset({"ksys_mmap_pgoff", "vm_mmap_pgoff", "call_mmap", "vfs_ioctl"})
"""Hidden themselves; what they call is shown one level up."""
HARNESS_DEVICES = ("kit-probe",)
"""Devices a test harness attaches for its own bookkeeping (the conformance kit learns a
buffer's pages through one); calls naming them are the harness's, not the story's."""


def _reindent(ev: TraceEvent, depth: int) -> TraceEvent:
    if depth == ev.depth:
        return ev
    return TraceEvent(
        ev.seq, ev.ts, ev.pid, ev.comm, depth, ev.kind, ev.func, ev.args, ev.ret, ev.note
    )


def _drop_subtrees(
    events: Iterable[TraceEvent], drop: Callable[[TraceEvent], bool]
) -> list[TraceEvent]:
    """Leave out every call ``drop`` picks, with what it calls and its exit."""
    out: list[TraceEvent] = []
    skip_depth: int | None = None
    for ev in events:
        if skip_depth is not None:
            if ev.kind == "exit" and ev.depth == skip_depth:
                skip_depth = None
                continue
            if ev.kind in USER_KINDS or (ev.kind == "entry" and ev.depth <= skip_depth):
                skip_depth = None  # the capture ended inside the dropped call
            else:
                continue
        if ev.kind == "entry" and drop(ev):
            skip_depth = ev.depth
            continue
        out.append(ev)
    return out


def hide_harness(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """The trace without the calls a harness makes on its own devices (:data:`HARNESS_DEVICES`)."""
    marks = tuple(f"({name})" for name in HARNESS_DEVICES)
    return _drop_subtrees(events, lambda ev: any(m in ev.args for m in marks))


def hide_plumbing(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """Drop :data:`NOTRACE` subtrees and :data:`FLATTEN` frames, re-indenting what remains."""
    out: list[TraceEvent] = []
    flattened: list[int] = []  # depths of the FLATTEN frames we are inside
    for ev in _drop_subtrees(events, lambda ev: ev.func in NOTRACE):
        if ev.func in FLATTEN and ev.kind in ("entry", "exit"):
            if ev.kind == "entry":
                flattened.append(ev.depth)
            elif flattened and flattened[-1] == ev.depth:
                flattened.pop()
            continue
        while flattened and ev.depth <= flattened[-1] and ev.kind != "exit":
            flattened.pop()  # the capture ended inside a flattened frame
        out.append(_reindent(ev, max(0, ev.depth - len(flattened))))
    return out


def format_function_graph(events: list[TraceEvent], *, show_task: bool = True) -> str:
    """Render events like ``trace`` with ``function_graph`` and ``funcgraph-retval``.

    Userspace calls (``syscall``/``access`` records) head the kernel lines they
    caused, as strace prints them: ``[app-1] mmap(NULL, 8192, ...) = 0x7f...``.
    """
    lines: list[str] = []
    i = 0
    n = len(events)
    while i < n:
        ev = events[i]
        task = f" {ev.comm}-{ev.pid}".ljust(14) if show_task else ""
        prefix = f" 0){task} |  " + "  " * ev.depth
        if ev.kind in USER_KINDS:
            who = f"[{ev.comm}-{ev.pid}] " if show_task else ""
            lines.append(who + strace_line(ev))
        elif ev.kind == "entry":
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
    val = _vm_fault_note(ev) or (hex(ret) if isinstance(ret, int) and ret >= 4096 else str(ret))
    if ret is None:  # a void function that raised: only the note says what happened
        val, note = ev.note, ""
    else:
        note = f" {ev.note}" if ev.note else ""
    if leaf:
        return f"/* = {val}{note} */"
    return f"/* {ev.func} = {val}{note} */"


_ADDR_RESULT = frozenset({"mmap", "mremap"})
"""Userspace calls whose result strace prints as an address."""


def strace_line(ev: TraceEvent) -> str:
    """A ``syscall``/``access`` record as strace prints it: ``name(args) = result``.

    Failures read ``= -1 EINVAL (Invalid argument)``; a call that ended in a
    signal or an oops reads ``= ? SIGBUS {si_code=BUS_ADRERR, ...}``; a store
    has no result.
    """
    note, ret = ev.note, ev.ret
    if note.startswith(("SIG", "oops", "raised")):
        result = f"? {note}"
    elif isinstance(ret, int) and not isinstance(ret, bool):
        if ret < 0:
            result = f"-1 {errname(ret)} ({os.strerror(-ret)})"
        else:
            result = hex(ret) if ev.func in _ADDR_RESULT else str(ret)
            result += f" ({note})" if note else ""
    elif ret is None:
        if ev.kind == "access":
            return f"{ev.func}({ev.args})"
        result = "?"
    else:
        result = str(ret)
    return f"{ev.func}({ev.args}) = {result}"


def format_jsonl(events: list[TraceEvent]) -> str:
    """One JSON object per line (schema: TraceEvent.as_dict)."""
    return "".join(json.dumps(ev.as_dict(), sort_keys=True) + "\n" for ev in events)
