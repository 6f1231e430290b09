"""Watching a kernel: one registry of observers per :class:`~dmabuf_sim.kernel.Kernel`.

An *observer* is any object.  :meth:`Observers.attach` (``kernel.observe(obj)``)
looks for an ``on_<event>`` method for each event below and calls it every time
the event happens in that kernel, in the order observers were attached, until
the function ``attach`` returned is called.  The tracer, the coherency checker,
the conformance kit's sanitizers and the step-through view all watch this way:

=================== ===================================== ==========================================
event               arguments                             when
=================== ===================================== ==========================================
``entry``           ``func, args``                        a kernel function is called (its C name,
                                                          the arguments after ``self``)
``exit``            ``func, ret, note``                   ... and returns ``ret``; or raises, and
                                                          ``note`` says what (``raised SIGBUS``)
``cpu_access``      ``pa, data, write, origin``           a CPU load or store reached physical
                                                          memory (one contiguous piece)
``device_access``   ``dev, pa, data, write``              a device's DMA read or wrote memory
``memory_reset``    ``pfn, npages``                       frames were handed out zeroed
``fault``           ``vma, addr``                         a fault installed a PTE
``zap``             ``mapping, vma, start, end, n``       unmap_mapping_range zapped ``n`` PTEs
``vmap``/``vunmap`` ``mapping``                           a kernel mapping came or went
``vma_dup``         ``orig, new``                         a vma was copied (split, fork, mremap)
``user_call_entry`` ``record``                            a traced userspace call begins; its
``user_call_exit``  ``record``                            ``TraceEvent`` is filled in at its end
=================== ===================================== ==========================================

Nothing is watched unless someone asks: the code that raises an event reads one
tuple of hooks (``kernel.observers.cpu_access``) and does nothing more when it
is empty.  ``entry``/``exit`` cost nothing at all while no kernel in the process
has a listener for them: kernel functions then run their own code, without a
wrapper (see :func:`dmabuf_sim.trace.kernel_function`).

State is per kernel.  The one thing shared by every kernel in the process is the
code itself: while any kernel has an ``entry``/``exit`` listener, the kernel
functions run a tracing trampoline that asks the calling kernel whether anyone
listens (:mod:`dmabuf_sim.trace` keeps that patch and its count of listening
kernels; a kernel collected while listening gives its share back).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from .trace import acquire_call_tracing, release_call_tracing

__all__ = ["EVENTS", "Hook", "Observers"]

Hook = Callable[..., None]

EVENTS = (
    "entry",
    "exit",
    "cpu_access",
    "device_access",
    "memory_reset",
    "fault",
    "zap",
    "vmap",
    "vunmap",
    "vma_dup",
    "user_call_entry",
    "user_call_exit",
)
"""Every event an observer may watch (``on_<event>`` methods)."""


class Observers:
    """Who watches one kernel: for each event, the hooks to call, in attach order.

    Each event is an attribute holding a tuple of bound hooks (empty when nobody
    watches), so the code raising an event pays one attribute read while it is
    unwatched.  Tuples are replaced, never changed: an event being delivered
    goes to the hooks attached when it started.
    """

    __slots__ = (*EVENTS, "__weakref__", "_calls", "_observers")

    entry: tuple[Hook, ...]
    exit: tuple[Hook, ...]
    cpu_access: tuple[Hook, ...]
    device_access: tuple[Hook, ...]
    memory_reset: tuple[Hook, ...]
    fault: tuple[Hook, ...]
    zap: tuple[Hook, ...]
    vmap: tuple[Hook, ...]
    vunmap: tuple[Hook, ...]
    vma_dup: tuple[Hook, ...]
    user_call_entry: tuple[Hook, ...]
    user_call_exit: tuple[Hook, ...]

    def __init__(self) -> None:
        for event in EVENTS:
            setattr(self, event, ())
        self._observers: list[object] = []
        self._calls: weakref.finalize[Any, Any] | None = None
        """While someone here listens to ``entry``/``exit``: this kernel's share of the
        process-wide tracing patch, given back on detach or when the kernel is collected."""

    def attach(self, observer: object) -> Callable[[], None]:
        """Call ``observer.on_<event>`` for every event it has a method for.

        Returns a function that detaches it (calling it again does nothing).
        An object with no ``on_<event>`` method at all is a mistake: ``TypeError``.
        """
        hooks = {event: getattr(observer, "on_" + event, None) for event in EVENTS}
        found = {event: hook for event, hook in hooks.items() if callable(hook)}
        if not found:
            raise TypeError(
                f"{type(observer).__name__} has no on_<event> method; it would observe"
                f" nothing (events: {', '.join(EVENTS)})"
            )
        for event, hook in found.items():
            setattr(self, event, (*getattr(self, event), hook))
        self._observers.append(observer)
        self._calls_changed()

        def detach() -> None:
            self._detach(observer, found)

        return detach

    def _detach(self, observer: object, found: dict[str, Hook]) -> None:
        for i, obj in enumerate(self._observers):
            if obj is observer:
                del self._observers[i]
                break
        else:
            return  # already detached
        for event, hook in found.items():
            hooks = list(getattr(self, event))
            hooks.remove(hook)  # bound methods compare by their object and function
            setattr(self, event, tuple(hooks))
        self._calls_changed()

    def _calls_changed(self) -> None:
        listening = bool(self.entry or self.exit)
        if listening and self._calls is None:
            acquire_call_tracing()
            self._calls = weakref.finalize(self, release_call_tracing)
            self._calls.atexit = False
        elif not listening and self._calls is not None:
            self._calls()  # runs release_call_tracing once, and detaches the finalizer
            self._calls = None

    def emit(self, event: str, *args: Any) -> None:
        """Deliver ``event`` to every hook attached for it."""
        for hook in getattr(self, event):
            hook(*args)

    def __contains__(self, observer: object) -> bool:
        return any(obj is observer for obj in self._observers)

    def __len__(self) -> int:
        return len(self._observers)

    def __repr__(self) -> str:
        watched = ", ".join(event for event in EVENTS if getattr(self, event)) or "nothing"
        return f"<Observers: {len(self._observers)} attached, watching {watched}>"
