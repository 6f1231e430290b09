"""Sleeping on the virtual clock (kernel/sched/wait.c, kernel/time/timer.c).

The simulated machine runs one task at a time and its clock moves only while a
task sleeps.  A task that waits — for a fence, for a buffer's implicit fences,
in ``poll`` — runs the pending events (:meth:`Kernel.schedule` timers: device
jobs completing, hang checks, vgem's 10 s expiry, alarms) in time order, one
at a time, and wakes:

* as soon as its condition holds, that is right after the event that made it
  true, at that event's virtual time;
* when its deadline passes (the clock stops exactly at the deadline);
* for an interruptible sleep, when the task has a signal pending
  (``Process.signal_pending``, which an event may set).

If nothing pending can end the wait — no event is left, no deadline was given —
the task would sleep for ever: :class:`~dmabuf_sim.errors.TaskHung` names what
it waits for and who waits.  Since every pending event has run by then, the
report is never premature.

Simplified: no other task runs while one sleeps (events are the only source of
change); a periodic event that re-arms itself for ever would keep an unending
wait running for ever, as it would keep the real machine busy.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import TaskHung

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["WaitStatus", "wait_event", "waiter_name"]


class WaitStatus(enum.Enum):
    DONE = "done"
    """The condition holds."""
    TIMED_OUT = "timed out"
    """The deadline passed first."""
    INTERRUPTED = "interrupted"
    """An interruptible sleep found a signal pending (the caller returns -ERESTARTSYS)."""


def waiter_name(kernel: Kernel) -> str:
    """Who is waiting: the current task (``comm-pid``), or a kernel thread."""
    task = kernel.current
    return task.trace_name() if task is not None else "a kernel thread"


def _signal_pending(kernel: Kernel) -> bool:
    task = kernel.current
    return task is not None and task.signal_pending


def wait_event(
    kernel: Kernel,
    condition: Callable[[], bool],
    *,
    deadline: int | None,
    intr: bool,
    func: str,
    what: Callable[[], str],
) -> WaitStatus:
    """Sleep until ``condition()`` holds, ``deadline`` (virtual ns; None: never) passes,
    or (``intr``) a signal is pending.

    Checks in the kernel's order: before sleeping the condition comes first, then a
    pending signal; after each wake-up a pending signal wins over the condition (as in
    ``dma_fence_default_wait``).  A deadline at or before the current time only
    checks.  ``func`` and ``what()`` name the wait in a hang report.
    """
    kernel.advance_clock_to(kernel.clock)  # events already due have happened
    if condition():
        return WaitStatus.DONE
    if intr and _signal_pending(kernel):
        return WaitStatus.INTERRUPTED
    while True:
        if deadline is not None and deadline <= kernel.clock:
            return WaitStatus.TIMED_OUT
        at = kernel.next_event_at()
        if deadline is not None and (at is None or at > deadline):
            kernel.advance_clock_to(deadline)
            return WaitStatus.TIMED_OUT
        if at is None:
            how, nosig = ("interruptibly", ", no signal will come") if intr else ("", "")
            raise TaskHung(
                func,
                f"{waiter_name(kernel)} waits {how or 'uninterruptibly'} for {what()}; no"
                f" pending event can end the wait{nosig}: the task sleeps for ever",
            )
        kernel.run_next_event()
        if intr and _signal_pending(kernel):
            return WaitStatus.INTERRUPTED
        if condition():
            return WaitStatus.DONE
