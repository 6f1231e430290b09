"""dma_resv before and after 5.19 (spec behaviour ``dma_resv_usages``; R46, R50).

Since 7bc80a5462c3 "dma-buf: add enum dma_resv_usage v4" every fence keeps its usage.
Before, a resv had one exclusive (write) fence and a list of shared (read) fences: a new
exclusive fence dropped the shared ones, a shared fence replaced the one of its context,
and a wait "for all" looked at the shared fences only when there were any.  The same
userspace steps then wake at different virtual times.
"""

from __future__ import annotations

import errno
import os

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.dma_buf import DmaFence, DmaResvUsage
from dmabuf_sim.dma_buf.device_jobs import attach_fence, device_job
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.process import Process
from dmabuf_sim.spec import SPECS
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_WRITE,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_VGEM_FENCE_ATTACH,
    POLLIN,
    POLLOUT,
    VGEM_FENCE_WRITE,
    DmaBufSync,
    DrmModeCreateDumb,
    DrmVgemFenceAttach,
)

MS = 1_000_000
USAGES, SLOTS = True, False


def setup(usages: bool) -> tuple[Kernel, Process, int]:
    k = Kernel(SPECS["v6.12"].replace(dma_resv_usages=usages))
    p = k.spawn("app")
    return k, p, EXPORTERS["simple"].make_fd(p, 4096, os.O_RDWR)


def job(k: Kernel, p: Process, fd: int, done_ms: int, *, write: bool, ctx: str) -> DmaFence:
    fence = device_job(k, done_ms * MS, context=ctx)
    attach_fence(p.file(fd).private_data, fence, write=write)
    return fence


def test_the_built_in_specs_say_which_form_they_have() -> None:
    assert [SPECS[n].dma_resv_usages for n in ("v3.5", "v6.1", "v6.12", "latest")] == [
        False,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(("usages", "ready_ms"), [(USAGES, 500), (SLOTS, 100)])
def test_a_new_writer_drops_the_readers_before_5_19(usages: bool, ready_ms: int) -> None:
    """Reader (500 ms) then writer (100 ms): before 5.19 the exclusive fence replaced the
    shared list, so a new writer's poll waits for the writer alone."""
    k, p, fd = setup(usages)
    job(k, p, fd, 500, write=False, ctx="copy")
    job(k, p, fd, 100, write=True, ctx="gpu")
    assert len(p.file(fd).private_data.resv.fences) == (2 if usages else 1)
    assert p.poll(fd, POLLOUT, 1000) == POLLOUT and k.clock == ready_ms * MS


@pytest.mark.parametrize(("usages", "out_ms"), [(USAGES, 800), (SLOTS, 100)])
def test_waiting_for_all_looks_at_the_shared_fences_first(usages: bool, out_ms: int) -> None:
    """Writer (800 ms) then reader (100 ms): a writer's wait_all used to see only the shared
    fences while there were any (the exclusive one was assumed older); a reader waits for
    the writer in both forms.  SYNC_START(write) follows the same rule (R46)."""
    k, p, fd = setup(usages)
    job(k, p, fd, 800, write=True, ctx="gpu")
    job(k, p, fd, 100, write=False, ctx="copy")
    assert p.poll(fd, POLLOUT, 1000) == POLLOUT and k.clock == out_ms * MS
    assert p.poll(fd, POLLIN, 1000) == POLLIN and k.clock == 800 * MS

    k, p, fd = setup(usages)
    job(k, p, fd, 800, write=True, ctx="gpu")
    job(k, p, fd, 100, write=False, ctx="copy")
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_WRITE))
    assert k.clock == out_ms * MS


@pytest.mark.parametrize(("usages", "ready_ms"), [(USAGES, 900), (SLOTS, 100)])
def test_a_shared_fence_replaces_its_context_whatever_its_seqno(
    usages: bool, ready_ms: int
) -> None:
    """Two readers on one context, the second with an older seqno: the shared slot was
    simply replaced; with usages only a later-or-same seqno replaces."""
    k, p, fd = setup(usages)
    resv = p.file(fd).private_data.resv
    newer = DmaFence(k, "gpu", 2, completes_at=900 * MS)
    older = DmaFence(k, "gpu", 1, completes_at=100 * MS)
    resv.add_fence(newer, DmaResvUsage.READ)
    resv.add_fence(older, DmaResvUsage.READ)
    assert p.poll(fd, POLLOUT, 2000) == POLLOUT and k.clock == ready_ms * MS


@pytest.mark.parametrize("usages", [USAGES, SLOTS])
def test_vgem_conflict_check_agrees_in_both_forms(usages: bool) -> None:
    """vgem's EBUSY check tests "all" for a writer and the writer for a reader."""
    k = Kernel(SPECS["v6.12"].replace(dma_resv_usages=usages))
    p = k.spawn("igt")
    card = p.open("/dev/dri/card0", os.O_RDWR)
    bo = DrmModeCreateDumb(height=1, width=1024, bpp=32)
    p.ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, bo)
    p.ioctl(card, DRM_IOCTL_VGEM_FENCE_ATTACH, DrmVgemFenceAttach(handle=bo.handle))
    p.ioctl(card, DRM_IOCTL_VGEM_FENCE_ATTACH, DrmVgemFenceAttach(handle=bo.handle))
    with pytest.raises(OSError) as err:
        write = DrmVgemFenceAttach(handle=bo.handle, flags=VGEM_FENCE_WRITE)
        p.ioctl(card, DRM_IOCTL_VGEM_FENCE_ATTACH, write)
    assert err.value.errno == errno.EBUSY
