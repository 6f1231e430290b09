"""sw_sync timelines (drivers/dma-buf/sw_sync.c): ordering, errors and the uapi's checks."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel
from dmabuf_sim.dma_buf.dma_fence import dma_fence_get_status
from dmabuf_sim.dma_buf.sw_sync import (
    sync_pt_create,
    sync_timeline_create,
    sync_timeline_release,
    sync_timeline_signal,
)
from dmabuf_sim.uapi import (
    SW_SYNC_IOC_CREATE_FENCE,
    SW_SYNC_IOC_INC,
    SW_SYNC_PATH,
    SwSyncCreateFenceData,
)


@given(
    seqnos=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    steps=st.lists(st.integers(0, 15), min_size=1, max_size=6),
)
def test_property_points_signal_exactly_when_reached_and_in_seqno_order(
    seqnos: list[int], steps: list[int]
) -> None:
    """Property (sw_sync): after any increments, the signalled points are exactly those
    with seqno <= the counter, and they signalled in seqno order (never a later point
    before an earlier one)."""
    k = Kernel("v6.12", load_drivers=False)
    tl = sync_timeline_create(k, "prop")
    points = [sync_pt_create(tl, s) for s in seqnos]
    order: list[int] = []
    for pt in {id(p): p for p in points}.values():
        pt.add_callback(lambda f: order.append(f.seqno))
    value = 0
    for step in steps:
        sync_timeline_signal(tl, step)
        value += step
        assert all(pt.signaled == (pt.seqno <= value) for pt in points)
    assert order == sorted(order)
    assert len({id(p) for p in points}) == len(set(seqnos))  # one fence per pending seqno


def test_release_signals_the_pending_points_with_enoent_only() -> None:
    k = Kernel("v6.12", load_drivers=False)
    tl = sync_timeline_create(k, "t")
    a, b = sync_pt_create(tl, 1), sync_pt_create(tl, 2)
    sync_timeline_signal(tl, 1)
    sync_timeline_release(tl)
    assert (dma_fence_get_status(a), dma_fence_get_status(b)) == (1, -errno.ENOENT)
    assert k.warnings == []


def test_uapi_checks() -> None:
    k = Kernel("v6.12")
    p = k.spawn("app")
    tl = p.open(SW_SYNC_PATH, os.O_RDWR)
    for cmd, arg in ((SW_SYNC_IOC_CREATE_FENCE, b"short"), (SW_SYNC_IOC_INC, 0)):
        with pytest.raises(OSError) as err:
            p.ioctl(tl, cmd, arg)
        assert err.value.errno == errno.EFAULT
    assert sorted(p.files.fds) == [0]  # the failed create released its fd
    with pytest.raises(OSError) as err:
        p.ioctl(tl, SW_SYNC_IOC_INC + 7, 0)
    assert err.value.errno == errno.ENOTTY
    data = SwSyncCreateFenceData(value=1)
    p.ioctl(tl, SW_SYNC_IOC_CREATE_FENCE, data)
    assert data.fence == 1 and 1 in p.files.cloexec


def test_no_sw_sync_before_4_9() -> None:
    p = Kernel("v3.5").spawn("app")
    with pytest.raises(OSError) as err:
        p.open(SW_SYNC_PATH, os.O_RDWR)
    assert err.value.errno == errno.ENOENT
