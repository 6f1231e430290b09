"""The machine: one :class:`Kernel` owns every piece of simulated state.

Physical memory, the CPU cache, the shared anon inode, device nodes,
processes, dma-bufs and the tracer hang off a ``Kernel`` instance; nothing is
module-global, so tests and hypothesis examples create thousands of
independent kernels::

    >>> from dmabuf_sim import Kernel
    >>> k = Kernel(spec="v6.12")
    >>> p = k.spawn("demo")
    >>> p.pid
    1
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from attrs import define, field

from .fs import S_IFCHR, FileOperations, Inode, SuperBlock, mount_builtin_filesystems
from .kstate import Registry
from .mm.cache import CpuCache
from .mm.page_alloc import PhysicalMemory
from .observe import Observers
from .spec import Spec, get_spec
from .trace import TraceEvent, Tracer

if TYPE_CHECKING:
    from .module import Module, ModuleUnload
    from .process import Process

__all__ = ["AccessObserver", "BadPage", "ChrDev", "Kernel", "Timer"]


class AccessObserver(Protocol):
    """Sees every access an *agent* (a CPU or a device) makes to physical memory.

    ``pa``/``data`` describe one physically contiguous piece.  Cache
    write-backs are not agent accesses and are not reported.  ``origin``
    says who did it, e.g. ``"pid 3 va 0x7f..."`` or ``"kernel vmap"``.

    The older spelling of the ``cpu_access``, ``device_access`` and
    ``memory_reset`` events of :mod:`dmabuf_sim.observe`, for
    :meth:`Kernel.add_observer`; new observers define ``on_<event>`` methods and
    attach with :meth:`Kernel.observe`.
    """

    def cpu_access(self, pa: int, data: bytes, write: bool, origin: str) -> None: ...

    def device_access(self, dev: Any, pa: int, data: bytes, write: bool) -> None: ...

    def memory_reset(self, pfn: int, npages: int) -> None:
        """Pages were (re)allocated zeroed: forget what they held."""


@define(frozen=True, slots=True)
class BadPage:
    """A page-state bug the simulated kernel noticed (``bad_page()`` in mm/page_alloc.c)."""

    pfn: int
    reason: str


@define(eq=False, slots=True)
class ChrDev:
    """A device node: ``open(path)`` makes a file with these file_operations."""

    path: str
    fops: FileOperations
    inode: Inode
    driver: Any = None
    """The driver object (for tests and pictures)."""


@define(eq=False, slots=True)
class Timer:
    """An event pending on the virtual clock (the kernel's ``timer_list``/``hrtimer``).

    ``function`` runs when the clock reaches ``expires`` (nanoseconds).  Made by
    :meth:`Kernel.schedule`; :meth:`Kernel.del_timer` cancels it, :meth:`Kernel.mod_timer`
    moves it.  ``name`` says what it stands for in hang reports.
    """

    expires: int
    function: Callable[[], None] = field(repr=False)
    name: str = ""
    pending: bool = True
    seq: int = field(default=-1, repr=False)
    """Sequence number of the live heap entry; older entries of a re-armed timer are stale."""

    def trace_name(self) -> str:
        return f"timer({self.name or getattr(self.function, '__name__', 'fn')}@{self.expires})"


@define(eq=False, slots=True, init=False, repr=False)
class Kernel:
    """A simulated Linux machine running one spec version.

    Parameters: ``spec`` — a spec name (``"v6.12"``) or :class:`~dmabuf_sim.spec.Spec`;
    ``ram_pages`` — physical memory size in pages; ``cache_lines`` — CPU cache
    capacity; ``seed`` — seeds the (deterministic) page allocator scatter;
    ``trace`` — start with the tracer on.
    """

    spec: Spec
    mem: PhysicalMemory = field(repr=False)
    cache: CpuCache = field(repr=False)
    tracer: Tracer = field(repr=False)
    observers: Observers = field(repr=False)
    """Who watches this kernel (the tracer while it is on, checkers, instruments):
    see :mod:`dmabuf_sim.observe`."""
    processes: dict[int, Process] = field(repr=False)
    current: Process | None = field(repr=False)
    anon_inode: Inode = field(repr=False)
    superblocks: dict[str, SuperBlock] = field(repr=False)
    """The mounted filesystems by name (what an inode's ``i_sb`` names)."""
    chrdevs: dict[str, ChrDev] = field(repr=False)
    dma_bufs: list[Any] = field(repr=False)
    """Every live dma-buf (the kernel's ``db_list`` used by debugfs bufinfo)."""
    bad_pages: list[BadPage] = field(repr=False)
    zero_pfn: int
    drivers: Registry = field(repr=False)
    """The loaded drivers, each under the typed :class:`~dmabuf_sim.kstate.Key` its module
    defines (``kernel.drivers[SIMMEM]`` is the ``/dev/simmem`` driver)."""
    subsys: Registry = field(repr=False)
    """What subsystems keep in C statics (dma-buf's fops, sync_file's ...), by typed key."""
    warnings: list[str] = field(repr=False)
    """WARN_ON()s that fired, in order."""
    tainted: bool
    """Set when the kernel oopsed: state after an oops is undefined, as on real hardware."""
    held_locks: list[str] = field(repr=False)
    """Locks of lockdep's dma-buf order currently held (see :mod:`dmabuf_sim.lockdep`)."""
    lock_violations: list[str] = field(repr=False)
    """Acquisitions against that order (R58)."""
    in_fault: int
    """Nesting depth of handle_mm_fault (a fault handler is running when > 0)."""
    fault_waits: list[str] = field(repr=False)
    """Waits for device work that happened inside a fault handler (R55 forbids them)."""
    clock: int
    """Virtual time in nanoseconds; advances only while a task sleeps (see :mod:`.wait`)."""
    modules: dict[str, Module] = field(repr=False)
    """Loaded modules by name (see :mod:`.module`)."""
    module_unloads: list[ModuleUnload] = field(repr=False)
    """Every module unloaded so far, with what still used its code at that moment."""
    events_run: int
    """How many pending events have run so far (a sleeper's wake-up count)."""
    _timers: list[tuple[int, int, Timer]] = field(repr=False)
    _timer_seq: Iterator[int] = field(repr=False)
    _pids: Iterator[int] = field(repr=False)
    _inos: Iterator[int] = field(repr=False)

    def __init__(
        self,
        spec: str | Spec = "latest",
        *,
        ram_pages: int = 1 << 24,
        cache_lines: int = 4096,
        seed: int = 0,
        trace: bool = False,
        load_drivers: bool = True,
    ) -> None:
        from .drivers import load_builtin_drivers  # noqa: PLC0415  # cycle: booting the drivers (layer 7) reaches up; they register against this kernel

        if not isinstance(ram_pages, int) or ram_pages < 1 << 12:
            raise ValueError(f"ram_pages must be an int >= 4096 (16 MiB), not {ram_pages!r}")
        if not isinstance(cache_lines, int) or cache_lines < 1:
            raise ValueError(f"cache_lines must be a positive int, not {cache_lines!r}")
        self.spec = get_spec(spec)
        self.observers = Observers()
        self.mem = PhysicalMemory(self, nr_pages=ram_pages, seed=seed)
        self.cache = CpuCache(self.mem, capacity=cache_lines)
        self.tracer = Tracer(self, enabled=trace)
        self.processes = {}
        self.current = None
        self._pids = itertools.count(1)
        self._inos = itertools.count(1)
        self.superblocks = mount_builtin_filesystems(self)
        # anon_inode_init: the one inode every anon_inode_getfile() file shares
        self.anon_inode = Inode(self, self.next_ino(), 0o600, "anon_inodefs")
        self.chrdevs = {}
        self.dma_bufs = []
        self.bad_pages = []
        self.drivers = Registry("driver")
        self.subsys = Registry("subsystem state")
        self.warnings = []
        self.tainted = False
        self.clock = 0
        self.in_fault = 0
        self.held_locks = []
        self.lock_violations = []
        self.fault_waits = []
        self.events_run = 0
        self.modules = {}
        self.module_unloads = []
        self._timers = []
        self._timer_seq = itertools.count()
        self.zero_pfn = self.mem.alloc_pages(0)  # ZERO_PAGE(0)
        if load_drivers:
            load_builtin_drivers(self)

    @property
    def kernel(self) -> Kernel:
        """Kernel objects expose ``.kernel``; the kernel is its own."""
        return self

    def trace_name(self) -> str:
        return f"kernel({self.spec.name})"

    def __repr__(self) -> str:
        procs, bufs = len(self.processes), len(self.dma_bufs)
        return (
            f"<Kernel spec={self.spec.name!r}: {procs} process{'es' if procs != 1 else ''},"
            f" {bufs} dma-buf{'s' if bufs != 1 else ''}>"
        )

    def _repr_svg_(self) -> str:
        """The state picture: a kernel at the end of a notebook cell draws itself."""
        from .picture import snapshot_graph, to_svg_fallback  # noqa: PLC0415  # cycle: the pictures (layer 8) draw kernels

        return to_svg_fallback(snapshot_graph(self))

    # -- ids ------------------------------------------------------------------------
    def next_ino(self) -> int:
        return next(self._inos)

    # -- processes ------------------------------------------------------------------
    def spawn(self, comm: str = "proc") -> Process:
        """Create a new process with an empty address space and fd table."""
        from .process import Process  # noqa: PLC0415  # cycle: process.py (layer 5) builds on the machine

        if not isinstance(comm, str):
            raise TypeError(f"comm must be a str, not {type(comm).__name__}")
        proc = Process(self, next(self._pids), comm[:15])
        self.processes[proc.pid] = proc
        return proc

    def _new_pid(self) -> int:
        return next(self._pids)

    @contextmanager
    def running(self, proc: Process | None) -> Iterator[None]:
        """Run kernel code on behalf of ``proc`` (sets ``current``)."""
        prev = self.current
        self.current = proc
        try:
            yield
        finally:
            self.current = prev

    # -- device nodes ---------------------------------------------------------------
    def register_chrdev(self, path: str, fops: FileOperations, driver: Any = None) -> ChrDev:
        """Add a device node (``misc_register``/``device_create``) at ``path``."""
        if path in self.chrdevs:
            raise ValueError(f"device node {path} already exists")

        inode = Inode(self, self.next_ino(), S_IFCHR | 0o666, "devtmpfs", i_fop=fops)
        dev = ChrDev(path, fops, inode, driver)
        self.chrdevs[path] = dev
        return dev

    def unregister_chrdev(self, path: str) -> None:
        """Remove a device node (``misc_deregister``/``device_destroy``): opens fail ENOENT."""
        self.chrdevs.pop(path, None)

    # -- observers ----------------------------------------------------------------------
    def observe(self, observer: object) -> Callable[[], None]:
        """Watch this kernel: ``observer.on_<event>`` is called for each event it has a
        method for (the events are listed in :mod:`dmabuf_sim.observe`).

        Returns a function that detaches it.
        """
        return self.observers.attach(observer)

    def add_instrument(self, instrument: Any) -> Callable[[], None]:
        """The older name of :meth:`observe`."""
        return self.observers.attach(instrument)

    def emit(self, event: str, *args: Any) -> None:
        """Deliver ``event`` to every observer watching it."""
        self.observers.emit(event, *args)

    # -- virtual time ---------------------------------------------------------------
    # One event loop: every pending event is a Timer in one heap ordered by (expires,
    # arming order).  Nothing runs by itself; a task that sleeps (wait.py) runs the
    # events in time order until it wakes, and advance_clock_to/run_until_idle let a
    # test move time by hand.
    def schedule(self, at: int, fn: Callable[[], None], name: str = "") -> Timer:
        """Run ``fn`` when the virtual clock reaches ``at`` (ns); returns the :class:`Timer`.

        ``at`` may lie in the past: the event is then due and runs at the next
        chance (the next sleep, poll or clock advance), as an expired kernel timer
        fires at the next tick.
        """
        if isinstance(at, bool) or not isinstance(at, int):
            raise TypeError(f"at must be an int (ns of virtual time), not {type(at).__name__}")
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        timer = Timer(at, fn, name)
        self._arm(timer)
        return timer

    def _arm(self, timer: Timer) -> None:
        timer.seq = next(self._timer_seq)
        timer.pending = True
        heapq.heappush(self._timers, (timer.expires, timer.seq, timer))

    def mod_timer(self, timer: Timer, at: int) -> bool:
        """``mod_timer``: (re)arm ``timer`` for ``at``; True if it was pending."""
        was = timer.pending
        timer.expires = at
        self._arm(timer)
        return was

    def del_timer(self, timer: Timer) -> bool:
        """``timer_delete``: cancel ``timer``; True if it was pending."""
        was = timer.pending
        timer.pending = False
        return was

    def _peek(self) -> Timer | None:
        """The earliest live timer (stale heap entries are dropped on the way)."""
        heap = self._timers
        while heap:
            _at, seq, timer = heap[0]
            if timer.pending and timer.seq == seq:
                return timer
            heapq.heappop(heap)
        return None

    def next_event_at(self) -> int | None:
        """When the earliest pending event is due, or None if nothing is pending."""
        timer = self._peek()
        return None if timer is None else timer.expires

    def pending_events(self) -> list[Timer]:
        """The pending events, earliest first."""
        live = [t for _at, seq, t in self._timers if t.pending and t.seq == seq]
        return sorted(live, key=lambda t: (t.expires, t.seq))

    def run_next_event(self) -> bool:
        """Advance the clock to the earliest pending event and run it; False if none."""
        timer = self._peek()
        if timer is None:
            return False
        heapq.heappop(self._timers)
        timer.pending = False
        self.clock = max(self.clock, timer.expires)
        self.events_run += 1
        timer.function()
        return True

    def advance_clock_to(self, t: int) -> None:
        """Advance virtual time to ``t``, running every event due on the way, in order."""
        while True:
            at = self.next_event_at()
            if at is None or at > t:
                break
            self.run_next_event()
        self.clock = max(self.clock, t)

    def run_until_idle(self) -> None:
        """Let every pending event run (device work finishes, timers fire)."""
        while self.run_next_event():
            pass

    # -- diagnostics ----------------------------------------------------------------
    def warn(self, func: str, condition: str) -> None:
        """``WARN_ON(condition)`` fired in ``func``: recorded, traced, execution goes on."""
        self.warnings.append(f"{func}: WARN_ON({condition})")
        self.tracer.event("WARN_ON", f"{func}: {condition}")

    def report_bad_page(self, pfn: int, reason: str) -> None:
        self.bad_pages.append(BadPage(pfn, reason))
        self.tracer.event("bad_page", f"pfn {pfn:#x}: {reason}")

    def trace_events(self) -> list[TraceEvent]:
        return self.tracer.events

    def trace(self) -> Any:
        """``with kernel.trace() as events:`` traces a block of code."""
        return self.tracer.capture()

    def add_observer(self, observer: AccessObserver) -> Callable[[], None]:
        """Watch memory accesses with an :class:`AccessObserver` (methods without the
        ``on_`` prefix); returns a function that detaches it.  See :meth:`observe`."""
        return self.observers.attach(_AccessObserverHooks(observer))


class _AccessObserverHooks:
    """An :class:`AccessObserver` seen through the ``on_<event>`` names of :mod:`.observe`."""

    def __init__(self, observer: AccessObserver) -> None:
        self.on_cpu_access = observer.cpu_access
        self.on_device_access = observer.device_access
        self.on_memory_reset = observer.memory_reset
