"""R58, R59: the dma_resv lock order and the locks held around ops->mmap.

Linux primes lockdep with mmap_lock -> dma_resv -> fs_reclaim -> i_mmap_rwsem
(``dma_resv_lockdep``).  The simulator records the locks of that order a task
holds and reports any acquisition against it.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, ClassVar

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.conformance.sanitizers import World
from dmabuf_sim.exporters.registry import kernel_side
from dmabuf_sim.exporters.teaching import SimpleExporter
from dmabuf_sim.lockdep import LOCK_ORDER, held, lock_release
from dmabuf_sim.uaccess import copy_from_user
from dmabuf_sim.uapi import DmaBufSync

MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096


class Recording(SimpleExporter):
    """Records, inside ops->mmap, which locks are held and whether the resv is locked."""

    seen: ClassVar[list[tuple[list[str], bool]]] = []

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        Recording.seen.append((list(dmabuf.kernel.held_locks), dmabuf.resv.is_locked()))
        return super().mmap(dmabuf, vma)


class LocksInMmap(SimpleExporter):
    """An exporter that takes its own resv lock in mmap (allowed since 6.4)."""

    def mmap(self, dmabuf: Any, vma: Any) -> int:
        dmabuf.resv.lock()
        try:
            return super().mmap(dmabuf, vma)
        finally:
            dmabuf.resv.unlock()


@pytest.mark.parametrize("spec", MODERN)
def test_r59_mmap_runs_with_mmap_lock_held_and_the_resv_unlocked(spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    Recording.seen = []
    fd = kernel_side(Recording)(p, PAGE, os.O_RDWR)
    p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert Recording.seen == [(["mmap_lock"], False)]
    assert k.held_locks == []


@pytest.mark.parametrize("spec", MODERN)
def test_r58_an_exporter_may_take_dma_resv_under_mmap_lock(spec: str) -> None:
    """mmap_lock -> dma_resv is the primed order: no report."""
    k = Kernel(spec)
    p = k.spawn()
    fd = kernel_side(LocksInMmap)(p, PAGE, os.O_RDWR)
    p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert k.lock_violations == []


@pytest.mark.parametrize("spec", MODERN)
def test_r58_copy_from_user_under_dma_resv_is_a_lock_order_violation(spec: str) -> None:
    """copy_from_user might fault (mmap_lock) — forbidden while holding dma_resv."""
    k = Kernel(spec)
    p = k.spawn()
    fd = kernel_side(SimpleExporter)(p, PAGE, os.O_RDWR)
    dmabuf = p.file(fd).private_data
    world = World(k)
    with k.running(p):
        dmabuf.resv.lock()
        copy_from_user(k, DmaBufSync(3).pack(), DmaBufSync)  # bytes: no real fault needed
        copy_from_user(k, 0x1000, DmaBufSync)  # a user pointer: might_fault
        dmabuf.resv.unlock()
    assert len(k.lock_violations) == 1
    assert "mmap_lock acquired while holding dma_resv" in k.lock_violations[0]
    findings = world.check(("R58",))
    assert [f.rule for f in findings] == ["R58"]
    assert world.check(("R58",)) == []  # reported once


def test_lock_order_constant_matches_the_primed_order() -> None:
    assert LOCK_ORDER == ("mmap_lock", "dma_resv", "fs_reclaim", "i_mmap_rwsem")


def test_releasing_a_lock_not_held_is_recorded_as_bad_unlock_balance() -> None:
    """lockdep warns ("bad unlock balance detected!") and the kernel goes on (R58)."""
    k = Kernel("v6.12")
    with held(k, "mmap_lock"):
        assert k.held_locks == ["mmap_lock"]
    lock_release(k, "dma_resv")
    assert k.held_locks == []
    assert k.lock_violations == ["bad unlock balance: dma_resv released but not held (R58)"]
