"""Process.poll with poll(2)'s timeout and several fds, on the virtual clock (R50).

A zero timeout checks once; a positive one sleeps at most that long, letting pending
events run, and returns as soon as an fd is ready; -1 (or None) waits for ever.
"""

from __future__ import annotations

import errno
import os

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.dma_buf import DmaFence
from dmabuf_sim.dma_buf.device_jobs import attach_fence, device_job, interrupt_at, signal_at
from dmabuf_sim.errors import TaskHung
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.process import Process
from dmabuf_sim.uapi import POLLIN, POLLNVAL, POLLOUT

MS = 1_000_000


def setup(spec: str = "v6.12", n: int = 1) -> tuple[Kernel, Process, list[int]]:
    k = Kernel(spec)
    p = k.spawn("app")
    fds = [EXPORTERS["simple"].make_fd(p, 4096, os.O_RDWR) for _ in range(n)]
    return k, p, fds


def busy(p: Process, fd: int, done_at: int | None, *, write: bool = True, k: Kernel) -> DmaFence:
    job = device_job(k, done_at)
    attach_fence(p.file(fd).private_data, job, write=write)
    return job


def test_r50_poll_returns_when_the_fence_signals_not_at_the_timeout() -> None:
    k, p, (fd,) = setup()
    busy(p, fd, 30 * MS, k=k)
    assert p.poll(fd, POLLIN, 0) == 0 and k.clock == 0
    assert p.poll(fd, POLLIN, 1000) == POLLIN
    assert k.clock == 30 * MS


def test_r50_poll_times_out_exactly_at_its_deadline() -> None:
    k, p, (fd,) = setup()
    job = busy(p, fd, 5000 * MS, k=k)
    assert p.poll(fd, POLLIN | POLLOUT, 250) == 0
    assert k.clock == 250 * MS and not job.signaled


def test_r50_infinite_timeout_waits_for_the_fence() -> None:
    k, p, (fd,) = setup()
    busy(p, fd, 7000 * MS, k=k)
    assert p.poll(fd, POLLOUT, -1) == POLLOUT and k.clock == 7000 * MS
    busy(p, fd, 9000 * MS, k=k)
    assert p.poll(fd, POLLOUT, None) == POLLOUT and k.clock == 9000 * MS


def test_poll_for_ever_on_what_nothing_will_signal_is_a_hang() -> None:
    k, p, (fd,) = setup()
    busy(p, fd, None, k=k)
    with pytest.raises(TaskHung, match="app-1 waits interruptibly for fds 0"):
        p.poll(fd, POLLIN, -1)


def test_several_fds_return_the_ready_ones_like_select_poll() -> None:
    """A read fence leaves POLLIN ready (R50); a closed fd gives POLLNVAL; a negative fd is
    ignored; only non-zero revents are returned, in the order given."""
    k, p, (a, b, c) = setup(n=3)
    busy(p, a, 40 * MS, k=k)
    busy(p, b, 10 * MS, write=False, k=k)
    p.close(c)
    got = p.poll([(a, POLLIN), (b, POLLIN | POLLOUT), (c, POLLIN), (-1, POLLIN)])
    assert got == [(b, POLLIN), (c, POLLNVAL)] and k.clock == 0
    assert p.poll([(a, POLLIN), (b, POLLOUT)], timeout_ms=100) == [(b, POLLOUT)]
    assert k.clock == 10 * MS  # woke when b's reader finished
    assert p.poll([(a, POLLIN), (-5, POLLIN)], None, 100) == [(a, POLLIN)]
    assert k.clock == 40 * MS


def test_an_empty_poll_sleeps_its_timeout() -> None:
    k, p, _ = setup(n=0)
    assert p.poll([], timeout_ms=15) == [] and k.clock == 15 * MS


def test_poll_with_a_signal_pending_and_nothing_ready_is_eintr() -> None:
    """do_poll checks for a signal only when no fd is ready — even with a zero timeout."""
    k, p, (fd,) = setup()
    busy(p, fd, 100 * MS, k=k)
    p.signal_pending = True
    with pytest.raises(OSError) as err:
        p.poll(fd, POLLIN, 0)
    assert err.value.errno == errno.EINTR and k.clock == 0
    p.signal_pending = False
    k.advance_clock_to(100 * MS)
    p.signal_pending = True
    assert p.poll(fd, POLLIN, 0) == POLLIN  # ready wins over the signal


def test_a_signal_arriving_during_poll_ends_it_with_eintr_then() -> None:
    k, p, (fd,) = setup()
    busy(p, fd, 900 * MS, k=k)
    interrupt_at(p, 60 * MS)
    with pytest.raises(OSError) as err:
        p.poll(fd, POLLIN, -1)
    assert err.value.errno == errno.EINTR and k.clock == 60 * MS


def test_an_early_signal_of_the_fence_wakes_poll() -> None:
    k, p, (fd,) = setup()
    job = busy(p, fd, 900 * MS, k=k)
    signal_at(k, job, 3 * MS)
    assert p.poll(fd, POLLIN, 1000) == POLLIN and k.clock == 3 * MS


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((0, None), {}, TypeError, "events must be an int mask"),
        ((0,), {}, TypeError, "events must be an int mask"),
        ((0, "POLLIN"), {}, TypeError, "events must be an int mask"),
        ((0, True), {}, TypeError, "events must be an int mask"),
        ((0, 0x10000), {}, ValueError, "16-bit"),
        ((0, -1), {}, ValueError, "16-bit"),
        ((0, POLLIN, 1 << 70), {}, ValueError, "C int"),
        ((0, POLLIN, 1 << 31), {}, ValueError, "C int"),
        ((0, POLLIN, 1.5), {}, TypeError, "timeout_ms must be an int"),
        (("0", POLLIN), {}, TypeError, "fd must be an int"),
        (([(0, POLLIN)], 100), {}, TypeError, r"timeout_ms=100"),
        (([0],), {}, TypeError, "entry 0 must be an \\(fd, events\\) pair"),
        (([(0, POLLIN, 0)],), {}, TypeError, "pair"),
        (([("x", POLLIN)],), {}, TypeError, "fd of entry 0"),
    ],
)
def test_bad_arguments_raise_before_the_kernel_runs(
    args: tuple[object, ...], kwargs: dict[str, object], exc: type[Exception], match: str
) -> None:
    k, p, (fd,) = setup()
    busy(p, fd, 10 * MS, k=k)
    with pytest.raises(exc, match=match):
        p.poll(*args, **kwargs)
    assert k.clock == 0 and p.file(fd).f_count == 1  # nothing armed, no time passed


def test_more_entries_than_rlimit_nofile_is_einval() -> None:
    _k, p, (fd,) = setup()
    with pytest.raises(OSError) as err:
        p.poll([(fd, POLLIN)] * 1025)
    assert err.value.errno == errno.EINVAL
    assert p.poll([(fd, POLLIN)] * 1024) == [(fd, POLLIN)] * 1024
