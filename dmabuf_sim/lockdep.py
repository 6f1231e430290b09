"""A lockdep-like record of the locks dma-buf cares about, and their order (R58, R59).

``dma_resv_lockdep()`` teaches lockdep one nesting order at boot (kernel-spec
§4.11): ``mmap_lock`` → ``dma_resv`` → ``fs_reclaim`` → ``i_mmap_rwsem``.
The simulated kernel keeps, per kernel, the stack of these locks currently
held and records any acquisition that goes against that order — for example
``copy_from_user`` (which ``might_fault`` and so takes ``mmap_lock``) while a
``dma_resv`` is held.  Violations are recorded, not raised: lockdep prints a
splat and the kernel goes on; the conformance sanitizers report them.

Simplified: one lock class per name, no read/write distinction in the order,
no cross-task dependency chains.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["LOCK_ORDER", "held", "lock_acquire", "lock_release", "might_fault"]

LOCK_ORDER = ("mmap_lock", "dma_resv", "fs_reclaim", "i_mmap_rwsem")


def lock_acquire(kernel: Kernel, name: str) -> None:
    """Record taking ``name``; an out-of-order acquisition is an R58 violation."""
    rank = LOCK_ORDER.index(name)
    for other in kernel.held_locks:
        if LOCK_ORDER.index(other) > rank:
            msg = (
                f"{name} acquired while holding {other}: the order is"
                f" {' -> '.join(LOCK_ORDER)} (R58)"
            )
            kernel.lock_violations.append(msg)
            kernel.tracer.event("lockdep", msg)
            break
    kernel.held_locks.append(name)


def lock_release(kernel: Kernel, name: str) -> None:
    held_locks = kernel.held_locks
    for i in range(len(held_locks) - 1, -1, -1):
        if held_locks[i] == name:
            del held_locks[i]
            return
    # lockdep's "WARNING: bad unlock balance detected!": recorded, the kernel goes on
    msg = f"bad unlock balance: {name} released but not held (R58)"
    kernel.lock_violations.append(msg)
    kernel.tracer.event("lockdep", msg)


@contextmanager
def held(kernel: Kernel, name: str) -> Iterator[None]:
    lock_acquire(kernel, name)
    try:
        yield
    finally:
        lock_release(kernel, name)


def might_fault(kernel: Kernel) -> None:
    """``might_fault()``: user memory may fault, which takes ``mmap_lock`` (read)."""
    lock_acquire(kernel, "mmap_lock")
    lock_release(kernel, "mmap_lock")
