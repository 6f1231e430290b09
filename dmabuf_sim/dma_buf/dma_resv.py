"""``struct dma_resv``: a buffer's implicit fences and its ww-mutex (drivers/dma-buf/dma-resv.c).

Fences carry a usage.  Usages are ordered KERNEL < WRITE < READ < BOOKKEEP
and a query for one usage includes every lower one, so
:func:`dma_resv_usage_rw` makes a new *write* wait for readers and writers,
and a new *read* only for writers (kernel-spec §4.7).

The lock is a plain owner field: enough for the core to assert who holds it
and for the sanitizers to check the lock order ``mmap_lock → dma_resv``
(R58, R59).  Simplified: no ww acquire contexts, no -EDEADLK backoff.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from attrs import define, field

from ..errors import KernelOops
from ..trace import kernel_function
from .dma_fence import DmaFence, dma_fence_wait

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["DmaResv", "DmaResvUsage", "dma_resv_usage_rw"]


class DmaResvUsage(enum.IntEnum):
    KERNEL = 0
    WRITE = 1
    READ = 2
    BOOKKEEP = 3


def dma_resv_usage_rw(write: bool) -> DmaResvUsage:
    """The usage a new access must wait for: writes wait for READ (and below)."""
    return DmaResvUsage.READ if write else DmaResvUsage.WRITE


@define(eq=False, slots=True)
class DmaResv:
    kernel: Kernel = field(repr=False)
    fences: list[tuple[DmaFence, DmaResvUsage]] = field(factory=list, repr=False)
    holder: Any = field(default=None, repr=False)
    """Who holds the lock (a Process, or the string "kernel"), or None."""

    def trace_name(self) -> str:
        return "resv"

    def lock(self, owner: Any = "kernel") -> None:
        """``dma_resv_lock`` (no contention is modelled: a recursive lock is a deadlock)."""
        if self.holder is not None:
            raise KernelOops("dma_resv_lock", "recursive dma_resv_lock: the task deadlocks")
        self.holder = owner
        from ..lockdep import lock_acquire

        lock_acquire(self.kernel, "dma_resv")

    def unlock(self) -> None:
        if self.holder is None:
            raise KernelOops("dma_resv_unlock", "unlock of an unlocked dma_resv")
        self.holder = None
        from ..lockdep import lock_release

        lock_release(self.kernel, "dma_resv")

    def is_locked(self) -> bool:
        return self.holder is not None

    def add_fence(self, fence: DmaFence, usage: DmaResvUsage) -> None:
        """``dma_resv_add_fence``: replace the first entry that is signalled, or of the same
        context with an old usage >= the new one and an older-or-same seqno; else append.

        dma-resv.c: ``(old->context == fence->context && old_usage >= usage &&
        dma_fence_is_later_or_same(fence, old)) || dma_fence_is_signaled(old)``.  A READ
        fence therefore never replaces a pending WRITE fence of its context (R46, R50).
        """
        for i, (old, old_usage) in enumerate(self.fences):
            if (
                old.context == fence.context and old_usage >= usage and fence.seqno >= old.seqno
            ) or old.signaled:
                self.fences[i] = (fence, usage)
                return
        self.fences.append((fence, usage))

    def iter_unsignaled(self, usage: DmaResvUsage) -> Iterator[DmaFence]:
        for f, u in list(self.fences):
            if u <= usage and not f.signaled:
                yield f

    def test_signaled(self, usage: DmaResvUsage) -> bool:
        """``dma_resv_test_signaled``."""
        return next(self.iter_unsignaled(usage), None) is None

    @kernel_function("dma_resv_wait_timeout", file="drivers/dma-buf/dma-resv.c")
    def wait(self, usage: DmaResvUsage, intr: bool) -> int:
        """Wait (no timeout) for fences of ``usage`` or lower; ``-ERESTARTSYS`` if interrupted."""
        for fence in list(self.iter_unsignaled(usage)):
            ret = dma_fence_wait(fence, intr)
            if ret:
                return ret
        return 0
