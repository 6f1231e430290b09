"""Waits on the virtual clock: fences, dma_resv, SYNC START (R46) and hang reports.

One event loop: a sleeping task runs the pending events in time order and wakes right
after the one that ends its wait, when its timeout passes, or (interruptible) when a
signal is pending.  A hang is only reported when nothing pending can end the wait.
"""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel
from dmabuf_sim.dma_buf import (
    DmaFence,
    DmaResvUsage,
    dma_fence_signal,
    dma_fence_wait,
    dma_fence_wait_timeout,
    dma_resv_wait_timeout,
)
from dmabuf_sim.dma_buf.device_jobs import (
    attach_fence,
    device_job,
    device_job_after,
    interrupt_at,
    signal_at,
)
from dmabuf_sim.dma_buf.dma_fence import dma_fence_array_create, dma_fence_get_status
from dmabuf_sim.errors import ERESTARTSYS, KernelOops, TaskHung
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.jiffies import HZ, MAX_SCHEDULE_TIMEOUT, TICK_NSEC, msecs_to_jiffies
from dmabuf_sim.process import Process
from dmabuf_sim.uapi import DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DmaBufSync

MS = 1_000_000
SEC = 1_000_000_000


def buffer(spec: str = "v6.12") -> tuple[Kernel, Process, int]:
    k = Kernel(spec)
    p = k.spawn("app")
    fd = EXPORTERS["simple"].make_fd(p, 4096, os.O_RDWR)
    return k, p, fd


# -- the event loop --------------------------------------------------------------------------
def test_events_run_in_time_order_then_arming_order() -> None:
    k = Kernel("v6.12", load_drivers=False)
    seen: list[tuple[int, str]] = []
    for at, name in ((30, "c"), (10, "a"), (30, "d"), (20, "b")):
        k.schedule(at, lambda name=name: seen.append((k.clock, name)))
    k.run_until_idle()
    assert seen == [(10, "a"), (20, "b"), (30, "c"), (30, "d")]


def test_a_cancelled_or_moved_timer_runs_once_at_its_new_time() -> None:
    k = Kernel("v6.12", load_drivers=False)
    seen: list[int] = []
    t = k.schedule(50, lambda: seen.append(k.clock))
    gone = k.schedule(60, lambda: seen.append(-1))
    assert k.del_timer(gone) and not k.del_timer(gone)
    assert k.mod_timer(t, 80)
    assert k.next_event_at() == 80 and [e.expires for e in k.pending_events()] == [80]
    k.run_until_idle()
    assert seen == [80] and k.clock == 80


def test_schedule_rejects_what_is_not_a_time() -> None:
    k = Kernel("v6.12", load_drivers=False)
    with pytest.raises(TypeError, match="ns of virtual time"):
        k.schedule(1.5, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        k.schedule(1, None)  # type: ignore[arg-type]
    assert k.pending_events() == []


# -- dma_fence_wait ---------------------------------------------------------------------------
def test_waiter_wakes_when_its_fence_is_signalled_early() -> None:
    """A job due at 1 s, signalled by another event at 300 ms: the waiter wakes at 300 ms,
    not at the job's own time; the job's own completion later changes nothing."""
    k = Kernel("v6.12", load_drivers=False)
    job = DmaFence(k, "gpu", 1, completes_at=SEC)
    signal_at(k, job, 300 * MS)
    assert dma_fence_wait(job, False) == 0
    assert k.clock == 300 * MS and job.timestamp == 300 * MS
    k.run_until_idle()
    assert job.timestamp == 300 * MS and k.clock == SEC


def test_hang_check_cancels_a_job_that_never_completes() -> None:
    """The issue's case: a job with no completion time, and a hang check after 2 s that
    signals it with -ETIMEDOUT: the wait ends at 2 s with the error, no oops."""
    k = Kernel("v6.12", load_drivers=False)
    p = k.spawn("app")
    job = device_job(k, None)
    signal_at(k, job, 2 * SEC, error=-errno.ETIMEDOUT)
    with k.running(p):
        assert dma_fence_wait(job, True) == 0
    assert k.clock == 2 * SEC and dma_fence_get_status(job) == -errno.ETIMEDOUT


def test_a_wait_nothing_can_end_is_a_hang_naming_fence_and_waiter() -> None:
    """Only once every pending event has run (a 5 s timer here) is the hang reported."""
    k = Kernel("v6.12", load_drivers=False)
    p = k.spawn("app")
    unrelated: list[int] = []
    k.schedule(5 * SEC, lambda: unrelated.append(k.clock))
    job = device_job(k, None, context="ring0")
    with k.running(p), pytest.raises(TaskHung) as hung:
        dma_fence_wait(job, False)
    assert isinstance(hung.value, KernelOops)
    assert "fence(ring0#1)" in str(hung.value) and "app-1" in str(hung.value)
    assert unrelated == [5 * SEC]


def test_a_signal_arriving_mid_wait_interrupts_only_interruptible_waits() -> None:
    k = Kernel("v6.12", load_drivers=False)
    p = k.spawn("app")
    job = device_job(k, 3 * SEC)
    interrupt_at(p, SEC)
    with k.running(p):
        assert dma_fence_wait(job, True) == -ERESTARTSYS
        assert k.clock == SEC and not job.signaled
        assert dma_fence_wait(job, False) == 0  # uninterruptible: sleeps on to 3 s
    assert k.clock == 3 * SEC


def test_wait_timeout_counts_jiffies() -> None:
    """dma_fence_wait_timeout: 0 at the deadline (the clock stops there), the jiffies
    left on success, 1 for a zero timeout on a signalled fence, -EINVAL for a negative
    one (with a WARN)."""
    k = Kernel("v6.12", load_drivers=False)
    job = device_job(k, 500 * MS)
    assert dma_fence_wait_timeout(job, False, 0) == 0
    assert dma_fence_wait_timeout(job, False, msecs_to_jiffies(100)) == 0
    assert k.clock == 100 * MS and not job.signaled
    left = dma_fence_wait_timeout(job, False, HZ)  # up to 1 s from 100 ms
    assert k.clock == 500 * MS and left == HZ - (400 * MS) // TICK_NSEC
    assert dma_fence_wait_timeout(job, False, 0) == 1
    assert dma_fence_wait_timeout(job, False, MAX_SCHEDULE_TIMEOUT) == MAX_SCHEDULE_TIMEOUT
    assert dma_fence_wait_timeout(job, False, -1) == -errno.EINVAL
    assert k.warnings == ["dma_fence_wait_timeout: WARN_ON(timeout < 0)"]


@given(
    done=st.lists(st.integers(1, 10_000), min_size=1, max_size=6),
    early=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10_000)), max_size=6),
    target=st.integers(0, 5),
)
def test_property_waiter_wakes_exactly_when_its_fence_signals(
    done: list[int], early: list[tuple[int, int]], target: int
) -> None:
    """Property (issue 11, item 1): whatever other jobs and early signals are pending, a
    wait on a fence returns at the first moment anything signals it — its completion or
    the earliest event that signals it first — and the clock shows that moment."""
    k = Kernel("v6.12", load_drivers=False)
    jobs = [device_job(k, t, context=f"ring{i}") for i, t in enumerate(done)]
    for i, at in early:
        signal_at(k, jobs[i % len(jobs)], at)
    fence = jobs[target % len(jobs)]
    expected = min(
        [done[target % len(jobs)]] + [at for i, at in early if i % len(jobs) == target % len(jobs)]
    )
    assert dma_fence_wait(fence, False) == 0
    assert k.clock == expected == fence.timestamp


# -- dma_resv_wait_timeout and SYNC START -----------------------------------------------------
def test_resv_wait_waits_for_each_fence_of_the_usage() -> None:
    k, p, fd = buffer()
    dmabuf = p.file(fd).private_data
    writer = device_job(k, 200 * MS)
    reader = device_job(k, 700 * MS, context="copy")
    attach_fence(dmabuf, writer, write=True)
    attach_fence(dmabuf, reader, write=False)
    resv = dmabuf.resv
    assert dma_resv_wait_timeout(resv, DmaResvUsage.WRITE, False, 0) == 0
    assert dma_resv_wait_timeout(resv, DmaResvUsage.WRITE, False, HZ) > 0
    assert k.clock == 200 * MS and not reader.signaled
    assert dma_resv_wait_timeout(resv, DmaResvUsage.READ, False, msecs_to_jiffies(100)) == 0
    assert k.clock == 300 * MS
    assert dma_resv_wait_timeout(resv, DmaResvUsage.READ, False, MAX_SCHEDULE_TIMEOUT) > 0
    assert k.clock == 700 * MS
    assert dma_resv_wait_timeout(resv, DmaResvUsage.READ, False, 0) == 1


def test_r46_sync_start_wakes_when_the_writer_is_signalled_early() -> None:
    """R46: SYNC START (read) on a pending write sleeps until the write fence signals —
    here a driver event at 40 ms, long before the job's own 900 ms."""
    k, p, fd = buffer()
    job = device_job(k, 900 * MS)
    attach_fence(p.file(fd).private_data, job, write=True)
    signal_at(k, job, 40 * MS)
    assert p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_READ)) == 0
    assert k.clock == 40 * MS


def test_r46_sync_start_interrupted_mid_wait_is_eintr() -> None:
    k, p, fd = buffer()
    attach_fence(p.file(fd).private_data, device_job(k, SEC), write=True)
    interrupt_at(p, 250 * MS)
    with pytest.raises(OSError) as err:
        p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_WRITE))
    assert err.value.errno == errno.EINTR and k.clock == 250 * MS


def test_r46_sync_start_on_a_hung_writer_is_a_hang() -> None:
    k, p, fd = buffer()
    attach_fence(p.file(fd).private_data, device_job(k, None, context="hung"), write=True)
    with pytest.raises(TaskHung, match=r"app-1 waits interruptibly for fence\(hung#1\)"):
        p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_READ))


def test_device_job_after_waits_for_its_dependencies() -> None:
    """A render job queued behind an implicit write fence starts when that fence signals
    and finishes ``duration`` later; its work runs just before its fence signals."""
    k = Kernel("v6.12", load_drivers=False)
    first = device_job(k, 100 * MS)
    other = device_job(k, 30 * MS, context="copy")
    ran: list[int] = []
    job = device_job_after(k, [first, other], 5 * MS, work=lambda: ran.append(k.clock))
    assert dma_fence_wait(job, False) == 0
    assert ran == [105 * MS] and job.timestamp == 105 * MS
    done = device_job_after(k, [first], 0)
    assert dma_fence_wait(done, False) == 0 and k.clock == 105 * MS


def test_device_job_helpers_validate_their_arguments() -> None:
    k = Kernel("v6.12", load_drivers=False)
    with pytest.raises(TypeError):
        device_job(k, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duration"):
        device_job_after(k, [], -1)
    with pytest.raises(ValueError, match="negative errno"):
        signal_at(k, device_job(k, None), 5, error=errno.EIO)
    k35 = Kernel("v3.5")
    p = k35.spawn("app")
    fd = EXPORTERS["simple"].make_fd(p, 4096, os.O_RDWR)
    with pytest.raises(ValueError, match="no dma_resv"):
        attach_fence(p.file(fd).private_data, device_job(k35, 5), write=True)


def test_fence_array_error_is_the_first_component_error() -> None:
    k = Kernel("v6.12", load_drivers=False)
    a, b = device_job(k, 10), device_job(k, None, context="b")
    array = dma_fence_array_create(k, [a, b])
    signal_at(k, b, 20, error=-errno.EIO)
    assert dma_fence_wait(array, False) == 0
    assert k.clock == 20 and dma_fence_get_status(array) == -errno.EIO
    dma_fence_signal(a)  # already signalled: -EINVAL, nothing changes
    assert a.timestamp == 10
