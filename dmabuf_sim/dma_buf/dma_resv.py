"""``struct dma_resv``: a buffer's implicit fences and its ww-mutex (drivers/dma-buf/dma-resv.c).

Since 5.19 (7bc80a5462c3 "dma-buf: add enum dma_resv_usage v4"; spec
behaviour ``dma_resv_usages``) fences carry a usage.  Usages are ordered
KERNEL < WRITE < READ < BOOKKEEP and a query for one usage includes every
lower one, so :func:`dma_resv_usage_rw` makes a new *write* wait for readers
and writers, and a new *read* only for writers (kernel-spec §4.7).

Before 5.19 a resv had one *exclusive* fence (the last writer) and a list of
*shared* fences (readers): ``dma_resv_add_excl_fence`` replaced the exclusive
fence and dropped every shared one (the writer was ordered after them);
``dma_resv_add_shared_fence`` replaced the shared fence of the same context,
or a signalled one.  A wait "for all" waited for the shared fences — or, when
there were none, for the exclusive one; any other wait only for the exclusive
fence.  On those specs :meth:`DmaResv.add_fence` files a KERNEL/WRITE fence as
exclusive and a READ/BOOKKEEP one as shared, and a query of READ or above is
"all", so the callers (poll, SYNC, vgem) keep one form.  The list view
``fences`` then holds the exclusive fence tagged WRITE and the shared ones
tagged READ.

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
from ..jiffies import MAX_SCHEDULE_TIMEOUT
from ..lockdep import lock_acquire, lock_release
from ..trace import kernel_function
from .dma_fence import DmaFence, dma_fence_wait_timeout

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "DmaResv",
    "DmaResvUsage",
    "dma_resv_add_excl_fence",
    "dma_resv_add_shared_fence",
    "dma_resv_usage_rw",
    "dma_resv_wait_timeout",
]


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
        lock_acquire(self.kernel, "dma_resv")

    def unlock(self) -> None:
        if self.holder is None:
            raise KernelOops("dma_resv_unlock", "unlock of an unlocked dma_resv")
        self.holder = None
        lock_release(self.kernel, "dma_resv")

    def is_locked(self) -> bool:
        return self.holder is not None

    def add_fence(self, fence: DmaFence, usage: DmaResvUsage) -> None:
        """``dma_resv_add_fence``: replace the first entry that is signalled, or of the same
        context with an old usage >= the new one and an older-or-same seqno; else append.

        dma-resv.c: ``(old->context == fence->context && old_usage >= usage &&
        dma_fence_is_later_or_same(fence, old)) || dma_fence_is_signaled(old)``.  A READ
        fence therefore never replaces a pending WRITE fence of its context (R46, R50).
        On specs without usages: :func:`dma_resv_add_excl_fence` for KERNEL/WRITE,
        :func:`dma_resv_add_shared_fence` for READ/BOOKKEEP.
        """
        if not self.kernel.spec.dma_resv_usages:
            if usage <= DmaResvUsage.WRITE:
                dma_resv_add_excl_fence(self, fence)
            else:
                dma_resv_add_shared_fence(self, fence)
            return
        for i, (old, old_usage) in enumerate(self.fences):
            if (
                old.context == fence.context and old_usage >= usage and fence.seqno >= old.seqno
            ) or old.signaled:
                self.fences[i] = (fence, usage)
                return
        self.fences.append((fence, usage))

    def iter_unsignaled(self, usage: DmaResvUsage) -> Iterator[DmaFence]:
        """The unsignalled fences a query of ``usage`` sees (a snapshot)."""
        if not self.kernel.spec.dma_resv_usages:
            yield from self._slots_unsignaled(wait_all=usage >= DmaResvUsage.READ)
            return
        for f, u in list(self.fences):
            if u <= usage and not f.signaled:
                yield f

    def _slots_unsignaled(self, *, wait_all: bool) -> Iterator[DmaFence]:
        """Pre-5.19 ``wait_all``/``test_all``: the shared fences if there are any (signalled
        or not: ``shared_count``), else the exclusive one; otherwise only the exclusive."""
        entries = list(self.fences)
        shared = [f for f, u in entries if u == DmaResvUsage.READ]
        if wait_all and shared:
            yield from (f for f in shared if not f.signaled)
            return
        yield from (f for f, u in entries if u == DmaResvUsage.WRITE and not f.signaled)

    def test_signaled(self, usage: DmaResvUsage) -> bool:
        """``dma_resv_test_signaled``."""
        return next(self.iter_unsignaled(usage), None) is None

    def wait(self, usage: DmaResvUsage, intr: bool) -> int:
        """Wait (no timeout) for fences of ``usage`` or lower; ``-ERESTARTSYS`` if interrupted."""
        ret = dma_resv_wait_timeout(self, usage, intr, MAX_SCHEDULE_TIMEOUT)
        return ret if ret < 0 else 0


@kernel_function("dma_resv_add_excl_fence", file="drivers/dma-buf/dma-resv.c")
def dma_resv_add_excl_fence(obj: DmaResv, fence: DmaFence) -> None:
    """Before 5.19: ``fence`` becomes the exclusive fence and every shared fence is dropped."""
    obj.fences[:] = [(fence, DmaResvUsage.WRITE)]


@kernel_function("dma_resv_add_shared_fence", file="drivers/dma-buf/dma-resv.c")
def dma_resv_add_shared_fence(obj: DmaResv, fence: DmaFence) -> None:
    """Before 5.19: replace the shared fence of the same context, or a signalled one; else
    append.  The exclusive fence stays."""
    for i, (old, usage) in enumerate(obj.fences):
        if usage == DmaResvUsage.READ and (old.context == fence.context or old.signaled):
            obj.fences[i] = (fence, DmaResvUsage.READ)
            return
    obj.fences.append((fence, DmaResvUsage.READ))


@kernel_function("dma_resv_wait_timeout", file="drivers/dma-buf/dma-resv.c")
def dma_resv_wait_timeout(obj: DmaResv, usage: DmaResvUsage, intr: bool, timeout: int) -> int:
    """Wait for every fence ``usage`` selects, one after the other, within ``timeout`` jiffies.

    Returns > 0 on success (the jiffies left, 1 for a zero timeout), 0 on timeout,
    ``-ERESTARTSYS`` if interrupted.  The zero-timeout form only tests, as since "dma-buf:
    fix timeout handling in dma_resv_wait_timeout v2" (2025, Cc stable: in 6.12.y since
    July 2025); the one-jiffy sleep it fixed is not modelled.
    """
    ret = timeout if timeout else 1
    for fence in list(obj.iter_unsignaled(usage)):
        ret = dma_fence_wait_timeout(fence, intr, timeout)
        if ret <= 0:
            break
        if timeout:
            timeout = ret  # "Even for zero timeout the return value is 1"
    return ret
