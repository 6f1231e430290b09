"""``struct dma_fence`` (drivers/dma-buf/dma-fence.c), on the kernel's virtual clock.

A fence stands for device work.  Something signals it: a timer when the
simulated device finishes (``completes_at``: :class:`DmaFence` then arms one
at construction), a driver (vgem's ``VGEM_FENCE_SIGNAL`` and its 10 s expiry,
a sw_sync timeline), a hang check, or a test calling :func:`dma_fence_signal`.
Signalling runs the fence's ``work`` (e.g. the device's DMA writes), marks it
signalled with a ``timestamp``, then runs its callbacks.

Waiting (:func:`dma_fence_wait_timeout`, :func:`dma_fence_wait`) sleeps on the
virtual clock (:mod:`dmabuf_sim.wait`): pending events run in time order and
the waiter wakes right after the one that signals its fence, when its timeout
expires, or — interruptible waits — when a signal is pending
(``-ERESTARTSYS``).  A wait that nothing pending can ever end is reported as
:class:`~dmabuf_sim.errors.TaskHung`, naming the fence and the waiter.

Simplified: no ``dma_fence_ops`` (every fence uses the default wait and is
signalled eagerly, so ``->signaled`` and ``->enable_signaling`` have nothing to
do); contexts are names, not numbers; no deadlines; no RCU or refcounting.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import define, field

from ..errors import ERESTARTSYS
from ..jiffies import MAX_SCHEDULE_TIMEOUT, TICK_NSEC, jiffies
from ..trace import kernel_function
from ..wait import WaitStatus, wait_event

if TYPE_CHECKING:
    from ..kernel import Kernel, Timer

__all__ = [
    "DmaFence",
    "dma_fence_array_create",
    "dma_fence_get_status",
    "dma_fence_set_error",
    "dma_fence_signal",
    "dma_fence_wait",
    "dma_fence_wait_timeout",
]

MAX_ERRNO = 4095


@define(eq=False, slots=True)
class DmaFence:
    """A one-shot completion signal for device work.

    ``DmaFence(kernel, context, seqno, completes_at=t)`` is a job the device
    finishes at virtual time ``t`` (ns): a timer signals it then, unless
    something signals it first.  Without ``completes_at`` only an explicit
    :func:`dma_fence_signal` (from a driver, a timer or a test) signals it.
    """

    kernel: Kernel = field(repr=False)
    context: str
    seqno: int
    completes_at: int | None = None
    signaled: bool = False
    error: int = 0
    callbacks: list[Callable[[DmaFence], None]] = field(factory=list, repr=False)
    work: list[Callable[[], None]] = field(factory=list, repr=False)
    """What the device does when the job completes (runs just before signalling)."""
    components: list[DmaFence] = field(factory=list, repr=False)
    """For a ``dma_fence_array``: the fences it stands for (it signals when all have)."""
    timestamp: int | None = None
    """Virtual time of the signal (``fence->timestamp``); None while unsignalled."""
    timer: Timer | None = field(default=None, repr=False)
    """The device's completion event for ``completes_at``."""

    def __attrs_post_init__(self) -> None:
        if self.completes_at is not None and not self.signaled:
            self.timer = self.kernel.schedule(
                self.completes_at, self._device_done, name=f"{self.trace_name()} completes"
            )

    def _device_done(self) -> None:
        if not self.signaled:
            dma_fence_signal(self)

    def trace_name(self) -> str:
        return f"fence({self.context}#{self.seqno})"

    def add_callback(self, cb: Callable[[DmaFence], None]) -> bool:
        """``dma_fence_add_callback``: False if already signalled (cb not added)."""
        if self.signaled:
            return False
        self.callbacks.append(cb)
        return True


@kernel_function("dma_fence_signal", file="drivers/dma-buf/dma-fence.c")
def dma_fence_signal(fence: DmaFence) -> int:
    """Run the fence's work, mark it signalled (with a timestamp), then run the callbacks."""
    if fence.signaled:
        return -errno.EINVAL  # already signalled
    work, fence.work = fence.work, []
    for job in work:
        job()
    fence.signaled = True
    fence.timestamp = fence.kernel.clock
    callbacks, fence.callbacks = fence.callbacks, []
    for cb in callbacks:
        cb(fence)
    return 0


@kernel_function("dma_fence_set_error", file="include/linux/dma-fence.h")
def dma_fence_set_error(fence: DmaFence, error: int) -> None:
    """Record why the work failed, before signalling (WARN if signalled or not -errno)."""
    if fence.signaled:
        fence.kernel.warn("dma_fence_set_error", "test_bit(DMA_FENCE_FLAG_SIGNALED_BIT)")
    if error >= 0 or error < -MAX_ERRNO:
        fence.kernel.warn("dma_fence_set_error", "error >= 0 || error < -MAX_ERRNO")
    fence.error = error


def dma_fence_get_status(fence: DmaFence) -> int:
    """0 while pending, 1 once signalled without error, else the (negative) error."""
    if not fence.signaled:
        return 0
    return fence.error if fence.error else 1


def dma_fence_array_create(kernel: Kernel, fences: list[DmaFence]) -> DmaFence:
    """``dma_fence_array_create(..., signal_on_any=false)``: one fence for several.

    It signals once every component has signalled, carrying the first error one
    of them reported (``dma_fence_array_set_pending_error``).
    """
    array = DmaFence(kernel, "dma_fence_array", 1, components=list(fences))
    for f in fences:
        if f.signaled and f.error and not array.error:
            array.error = f.error
    pending = [f for f in fences if not f.signaled]
    if not pending:
        array.signaled = True
        array.timestamp = kernel.clock
        return array

    def one_done(f: DmaFence) -> None:
        if f.error and not array.error:
            array.error = f.error
        if all(c.signaled for c in array.components) and not array.signaled:
            dma_fence_signal(array)

    for f in pending:
        f.add_callback(one_done)
    return array


@kernel_function("dma_fence_wait_timeout", file="drivers/dma-buf/dma-fence.c")
def dma_fence_wait_timeout(fence: DmaFence, intr: bool, timeout: int) -> int:
    """Sleep until the fence signals or ``timeout`` jiffies pass.

    Returns the jiffies left (at least 1 when ``timeout`` is 0 and the fence has
    signalled), 0 on timeout, ``-ERESTARTSYS`` if interrupted, ``-EINVAL`` (with a
    WARN) for a negative timeout; ``MAX_SCHEDULE_TIMEOUT`` never expires.
    """
    kernel = fence.kernel
    if timeout < 0:
        kernel.warn("dma_fence_wait_timeout", "timeout < 0")
        return -errno.EINVAL
    if not fence.signaled and kernel.in_fault:
        # The RFC: "Exporters that shoot down mappings ... shall not do any
        # synchronization at fault time with outstanding device operations" (R55).
        kernel.fault_waits.append(f"wait on {fence.trace_name()} inside a page fault")
        kernel.tracer.event("fault_wait", f"{fence.trace_name()} waited on at fault time [R55]")
    return dma_fence_default_wait(fence, intr, timeout)


def dma_fence_default_wait(fence: DmaFence, intr: bool, timeout: int) -> int:
    """``dma_fence_default_wait``: the sleep itself, in the kernel's order of checks."""
    kernel = fence.kernel
    ret = timeout if timeout else 1
    if fence.signaled:
        return ret
    task = kernel.current
    if intr and task is not None and task.signal_pending:
        return -ERESTARTSYS
    if not timeout:
        return 0
    forever = timeout >= MAX_SCHEDULE_TIMEOUT
    expire = jiffies(kernel) + timeout  # schedule_timeout: expire = timeout + jiffies
    status = wait_event(
        kernel,
        lambda: fence.signaled,
        deadline=None if forever else expire * TICK_NSEC,
        intr=intr,
        func="dma_fence_wait",
        what=fence.trace_name,
    )
    if status is WaitStatus.INTERRUPTED:
        return -ERESTARTSYS
    if status is WaitStatus.TIMED_OUT:
        return 0
    return MAX_SCHEDULE_TIMEOUT if forever else max(expire - jiffies(kernel), 0)


def dma_fence_wait(fence: DmaFence, intr: bool) -> int:
    """``dma_fence_wait``: no timeout; 0 once signalled, ``-ERESTARTSYS`` if interrupted."""
    ret = dma_fence_wait_timeout(fence, intr, MAX_SCHEDULE_TIMEOUT)
    return ret if ret < 0 else 0
