"""``struct dma_fence`` (drivers/dma-buf/dma-fence.c), on a virtual clock.

A fence stands for device work that completes at a virtual time
(``completes_at``).  Waiting on an unsignalled fence advances the kernel's
virtual clock to that time and signals it — the simulated device finishes
its job, running the work attached to the fence (e.g. its DMA writes) at
that moment.  A fence with ``completes_at = None`` never completes by
itself: a wait on it is interrupted if the task has a pending signal
(``-ERESTARTSYS``), and otherwise reported as a hang (``KernelOops``).

Simplified: no fence contexts ordering, no deadlines, no error propagation
beyond an ``error`` field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import define, field

from ..errors import ERESTARTSYS, KernelOops
from ..trace import kernel_function

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["DmaFence", "dma_fence_array_create", "dma_fence_signal", "dma_fence_wait"]


@define(eq=False, slots=True)
class DmaFence:
    """A one-shot completion signal for device work."""

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
    """Run the fence's work, mark it signalled, then run the callbacks."""
    if fence.signaled:
        return -22  # -EINVAL: already signalled
    work, fence.work = fence.work, []
    for job in work:
        job()
    fence.signaled = True
    callbacks, fence.callbacks = fence.callbacks, []
    for cb in callbacks:
        cb(fence)
    return 0


def dma_fence_array_create(kernel: Kernel, fences: list[DmaFence]) -> DmaFence:
    """``dma_fence_array_create(..., signal_on_any=false)``: one fence for several.

    It signals once every component has signalled; waiting on it waits on each
    component (so their device work runs at its own completion time).
    """
    array = DmaFence(kernel, "dma_fence_array", 1, components=list(fences))
    pending = [f for f in fences if not f.signaled]
    if not pending:
        array.signaled = True
        return array

    def one_done(_f: DmaFence) -> None:
        if all(c.signaled for c in array.components) and not array.signaled:
            dma_fence_signal(array)

    for f in pending:
        f.add_callback(one_done)
    return array


@kernel_function("dma_fence_wait_timeout", file="drivers/dma-buf/dma-fence.c")
def dma_fence_wait(fence: DmaFence, intr: bool) -> int:
    """Wait without a timeout: 0 once signalled, ``-ERESTARTSYS`` if interrupted."""
    if fence.signaled:
        return 0
    if fence.components:  # dma_fence_array: its wait is the wait for every component
        for component in fence.components:
            ret = dma_fence_wait(component, intr)
            if ret:
                return ret
        return 0
    kernel = fence.kernel
    if kernel.in_fault:
        # The RFC: "Exporters that shoot down mappings ... shall not do any
        # synchronization at fault time with outstanding device operations" (R55).
        kernel.fault_waits.append(f"wait on {fence.trace_name()} inside a page fault")
        kernel.tracer.event("fault_wait", f"{fence.trace_name()} waited on at fault time [R55]")
    task = kernel.current
    if intr and task is not None and task.signal_pending:
        return -ERESTARTSYS
    if fence.completes_at is None:
        raise KernelOops(
            "dma_fence_wait", f"{fence.trace_name()} never completes: the task hangs forever"
        )
    kernel.advance_clock_to(fence.completes_at)
    if not fence.signaled:
        dma_fence_signal(fence)
    return 0
