"""Scenarios of the public suites that exercise dma-buf, replayed as a new user would.

Written from what each suite checks (not from its code): IGT's vgem_basic (unload),
vgem_slow (nohang), prime_vgem (fence wait, and its timeout), dmabuf_sync_file (export
and import of sync_files) and the sw_sync tests (timeline ordering, errors on close).
Every wait runs on the virtual clock, so "10 seconds" takes no wall-clock time.
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import re
import struct
from pathlib import Path

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device
from dmabuf_sim.dma_buf import dma_buf_attach, dma_buf_get, dma_buf_map_attachment_unlocked
from dmabuf_sim.dma_buf.device_jobs import device_job_after
from dmabuf_sim.dma_buf.dma_resv import DmaResvUsage
from dmabuf_sim.dma_buf.sw_sync import sync_timeline_signal
from dmabuf_sim.module import request_module
from dmabuf_sim.process import Process
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_WRITE,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_PRIME_HANDLE_TO_FD,
    DRM_IOCTL_VGEM_FENCE_ATTACH,
    DRM_IOCTL_VGEM_FENCE_SIGNAL,
    DRM_RDWR,
    POLLIN,
    POLLOUT,
    SW_SYNC_IOC_CREATE_FENCE,
    SW_SYNC_IOC_INC,
    SW_SYNC_PATH,
    SYNC_IOC_FILE_INFO,
    VGEM_FENCE_WRITE,
    DmaBufExportSyncFile,
    DmaBufImportSyncFile,
    DmaBufSync,
    DrmModeCreateDumb,
    DrmPrimeHandle,
    DrmVgemFenceAttach,
    DrmVgemFenceSignal,
    SwSyncCreateFenceData,
    SyncFenceInfo,
    SyncFileInfo,
)

MODERN = ["v6.1", "v6.12", "latest"]
CARD = "/dev/dri/card0"
MS = 1_000_000
SEC = 1_000_000_000


# -- what IGT's helpers do, through the uapi ---------------------------------------------------
def vgem_create(p: Process, card: int, pages: int = 1) -> DrmModeCreateDumb:
    bo = DrmModeCreateDumb(height=pages, width=1024, bpp=32)
    p.ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, bo)
    return bo


def prime_handle_to_fd(p: Process, card: int, handle: int) -> int:
    prime = DrmPrimeHandle(handle=handle, flags=DRM_RDWR)
    p.ioctl(card, DRM_IOCTL_PRIME_HANDLE_TO_FD, prime)
    return int(prime.fd)


def fence_attach(p: Process, card: int, handle: int, flags: int = 0) -> int:
    arg = DrmVgemFenceAttach(handle=handle, flags=flags)
    p.ioctl(card, DRM_IOCTL_VGEM_FENCE_ATTACH, arg)
    return int(arg.out_fence)


def fence_signal(p: Process, card: int, fence: int) -> int:
    try:
        return p.ioctl(card, DRM_IOCTL_VGEM_FENCE_SIGNAL, DrmVgemFenceSignal(fence=fence))
    except OSError as err:
        return -err.errno


def rmmod_vgem(p: Process) -> int:
    try:
        return p.delete_module("vgem", os.O_NONBLOCK)
    except OSError as err:
        return -err.errno


def dmabuf_busy(p: Process, fd: int, flags: int) -> bool:
    """Busy for a reader (POLLIN) or a writer (POLLOUT), polled without waiting."""
    events = (POLLIN if flags & DMA_BUF_SYNC_READ else 0) | (
        POLLOUT if flags & DMA_BUF_SYNC_WRITE else 0
    )
    return p.poll(fd, events, 0) != events


def export_sync_file(p: Process, fd: int, flags: int) -> int:
    req = DmaBufExportSyncFile(flags=flags)
    p.ioctl(fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, req)
    return int(req.fd)


def sync_file_busy(p: Process, sfd: int) -> bool:
    return p.poll(sfd, POLLIN, 0) == 0


def dmabuf_sync_file_busy(p: Process, fd: int, flags: int) -> bool:
    sfd = export_sync_file(p, fd, flags)
    try:
        return sync_file_busy(p, sfd)
    finally:
        p.close(sfd)


def timeline_fence(p: Process, timeline: int, seqno: int) -> int:
    data = SwSyncCreateFenceData(value=seqno, name="pt")
    p.ioctl(timeline, SW_SYNC_IOC_CREATE_FENCE, data)
    return int(data.fence)


def timeline_inc(p: Process, timeline: int, count: int) -> None:
    p.ioctl(timeline, SW_SYNC_IOC_INC, struct.pack("<I", count))


def fence_status(p: Process, sfd: int) -> int:
    info = SyncFileInfo()
    p.ioctl(sfd, SYNC_IOC_FILE_INFO, info)
    return int(info.status)


def import_timeline_fence(p: Process, fd: int, flags: int, timeline: int, seqno: int) -> None:
    sfd = timeline_fence(p, timeline, seqno)
    p.ioctl(fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, DmaBufImportSyncFile(flags=flags, fd=sfd))
    p.close(sfd)


def igt(spec: str) -> tuple[Kernel, Process, int]:
    k = Kernel(spec)
    p = k.spawn("igt")
    return k, p, p.open(CARD, os.O_RDWR)


# -- vgem_basic: unload ------------------------------------------------------------------------
@pytest.mark.parametrize("spec", MODERN)
def test_vgem_basic_unload(spec: str) -> None:
    """An open card fd, an exported dma-buf, then only a mapping of it each keep vgem
    loaded; once the last goes, rmmod succeeds, the node is gone, modprobe brings it back."""
    k, p, card = igt(spec)
    assert rmmod_vgem(p) == -errno.EWOULDBLOCK  # the open card fd
    vgem_create(p, card)
    p.close(card)
    assert rmmod_vgem(p) == 0  # closing the card frees its objects and references
    with pytest.raises(OSError) as gone:
        p.open(CARD, os.O_RDWR)
    assert gone.value.errno == errno.ENOENT

    assert request_module(k, "vgem") == 0
    card = p.open(CARD, os.O_RDWR)
    dmabuf = prime_handle_to_fd(p, card, vgem_create(p, card).handle)
    p.close(card)
    assert rmmod_vgem(p) == -errno.EWOULDBLOCK  # the dma-buf
    p.close(dmabuf)
    assert rmmod_vgem(p) == 0

    assert request_module(k, "vgem") == 0
    card = p.open(CARD, os.O_RDWR)
    bo = vgem_create(p, card)
    dmabuf = prime_handle_to_fd(p, card, bo.handle)
    p.close(card)
    ptr = p.mmap(0, bo.size, mmap.PROT_WRITE, mmap.MAP_SHARED, dmabuf, 0)
    p.close(dmabuf)
    assert rmmod_vgem(p) == -errno.EWOULDBLOCK  # the mapping keeps buffer and module
    p.write_memory(ptr, struct.pack("<I", 7))
    p.munmap(ptr, bo.size)
    assert rmmod_vgem(p) == 0
    assert [u.leftovers for u in k.module_unloads] == [(), (), ()]


# -- vgem_slow: nohang --------------------------------------------------------------------------
@pytest.mark.parametrize("spec", MODERN)
def test_vgem_slow_nohang(spec: str) -> None:
    """A vgem fence nobody signals expires by itself after 10 s: a writer's poll is busy,
    a 60 s poll returns at the 10 s expiry, and signalling afterwards says ETIMEDOUT."""
    k, p, card = igt(spec)
    bo = vgem_create(p, card)
    fd = prime_handle_to_fd(p, card, bo.handle)
    fence = fence_attach(p, card, bo.handle)
    assert p.poll([(fd, POLLOUT)], timeout_ms=0) == []
    assert p.poll([(fd, POLLOUT)], timeout_ms=60_000) == [(fd, POLLOUT)]
    assert k.clock == 10 * SEC
    assert fence_signal(p, card, fence) == -errno.ETIMEDOUT


# -- prime_vgem: fence wait ---------------------------------------------------------------------
@pytest.mark.parametrize("spec", MODERN)
def test_prime_vgem_fence_wait(spec: str) -> None:
    """A device job on a buffer queued behind a vgem write fence must not run before the
    fence signals: after a 1 s wait the buffer is still zero and busy; once the fence is
    signalled the job runs, and SYNC START (read) sees its data."""
    k, p, card = igt(spec)
    bo = vgem_create(p, card)
    fd = prime_handle_to_fd(p, card, bo.handle)
    fence = fence_attach(p, card, bo.handle, VGEM_FENCE_WRITE)
    assert dmabuf_busy(p, fd, DMA_BUF_SYNC_READ)
    ptr = p.mmap(0, bo.size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)

    gpu = Device(k, "gpu")
    with k.running(p):
        dmabuf = dma_buf_get(k, fd)
    sgt = dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, gpu), DMA_BIDIRECTIONAL)
    pattern = b"".join(struct.pack("<I", i) for i in range(1024))
    deps = list(dmabuf.resv.iter_unsignaled(DmaResvUsage.READ))  # implicit sync
    job = device_job_after(k, deps, 2 * MS, work=lambda: gpu.dma_write(sgt, 0, pattern))

    assert p.poll(fd, POLLIN, 1000) == 0 and k.clock == 1 * SEC  # "sleep(1)"
    assert p.read_memory(ptr, 4096) == bytes(4096)  # not completed early
    assert dmabuf_busy(p, fd, DMA_BUF_SYNC_READ)
    assert fence_signal(p, card, fence) == 0
    dmabuf.resv.add_fence(job, DmaResvUsage.WRITE)  # the job's own implicit fence
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_READ))
    assert k.clock == 1 * SEC + 2 * MS and job.signaled
    assert p.read_memory(ptr, 4096) == pattern
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ))


@pytest.mark.parametrize("spec", MODERN)
def test_prime_vgem_fence_wait_times_out_then_completes(spec: str) -> None:
    """poll with a 10 s timeout: a write fence that nobody signals within 2 s makes a
    2 s poll return 0 at 2 s; the fence's own 10 s expiry ends a 10 s poll exactly then."""
    k, p, card = igt(spec)
    bo = vgem_create(p, card)
    fd = prime_handle_to_fd(p, card, bo.handle)
    fence_attach(p, card, bo.handle, VGEM_FENCE_WRITE)
    assert p.poll(fd, POLLIN, 2000) == 0 and k.clock == 2 * SEC
    assert p.poll(fd, POLLIN, 10_000) == POLLIN and k.clock == 10 * SEC


# -- dmabuf_sync_file: export -------------------------------------------------------------------
@pytest.mark.parametrize("spec", MODERN)
def test_dmabuf_sync_file_export_basic_and_before_signal(spec: str) -> None:
    """A read fence busies writers only, a write fence everyone; a sync_file exported
    before the signal follows the fence it captured."""
    _k, p, card = igt(spec)
    bo = vgem_create(p, card)
    fd = prime_handle_to_fd(p, card, bo.handle)
    for flags in (DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE):
        assert not dmabuf_busy(p, fd, flags) and not dmabuf_sync_file_busy(p, fd, flags)

    fence = fence_attach(p, card, bo.handle, 0)
    read_sf = export_sync_file(p, fd, DMA_BUF_SYNC_READ)
    write_sf = export_sync_file(p, fd, DMA_BUF_SYNC_WRITE)
    assert not dmabuf_busy(p, fd, DMA_BUF_SYNC_READ)
    assert dmabuf_busy(p, fd, DMA_BUF_SYNC_WRITE) and dmabuf_busy(p, fd, DMA_BUF_SYNC_RW)
    assert not sync_file_busy(p, read_sf) and sync_file_busy(p, write_sf)
    assert fence_signal(p, card, fence) == 0
    assert not sync_file_busy(p, write_sf) and not dmabuf_busy(p, fd, DMA_BUF_SYNC_RW)

    fence = fence_attach(p, card, bo.handle, VGEM_FENCE_WRITE)
    for flags in (DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW):
        assert dmabuf_busy(p, fd, flags) and dmabuf_sync_file_busy(p, fd, flags)
    assert fence_signal(p, card, fence) == 0
    for flags in (DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW):
        assert not dmabuf_busy(p, fd, flags) and not dmabuf_sync_file_busy(p, fd, flags)


@pytest.mark.parametrize("spec", MODERN)
def test_dmabuf_sync_file_export_multiwait_and_snapshot(spec: str) -> None:
    """A sync_file waits for every fence present at export (and no later one)."""
    _k, p, card = igt(spec)
    bo = vgem_create(p, card)
    fd = prime_handle_to_fd(p, card, bo.handle)
    f1 = fence_attach(p, card, bo.handle, 0)
    f2 = fence_attach(p, card, bo.handle, 0)
    sf = export_sync_file(p, fd, DMA_BUF_SYNC_WRITE)
    f3 = fence_attach(p, card, bo.handle, 0)
    assert sync_file_busy(p, sf)
    fence_signal(p, card, f1)
    assert sync_file_busy(p, sf)
    fence_signal(p, card, f2)
    assert not sync_file_busy(p, sf)  # f3 came after the export
    assert dmabuf_busy(p, fd, DMA_BUF_SYNC_WRITE)
    fence_signal(p, card, f3)
    assert not dmabuf_busy(p, fd, DMA_BUF_SYNC_WRITE)


@pytest.mark.parametrize("spec", MODERN)
def test_dmabuf_sync_file_wait_on_an_exported_sync_file(spec: str) -> None:
    """Waiting on the exported sync_file (poll with a timeout) ends when the vgem fence
    expires, and its status then reads signalled."""
    k, p, card = igt(spec)
    bo = vgem_create(p, card)
    fd = prime_handle_to_fd(p, card, bo.handle)
    fence_attach(p, card, bo.handle, VGEM_FENCE_WRITE)
    sf = export_sync_file(p, fd, DMA_BUF_SYNC_READ)
    assert fence_status(p, sf) == 0
    assert p.poll(sf, POLLIN, -1) == POLLIN and k.clock == 10 * SEC
    assert fence_status(p, sf) == 1


# -- dmabuf_sync_file: import -------------------------------------------------------------------
@pytest.mark.parametrize("spec", MODERN)
def test_dmabuf_sync_file_import_basic(spec: str) -> None:
    """A timeline fence imported for READ busies writers; for WRITE (or RW) everyone; each
    timeline step releases it."""
    _k, p, card = igt(spec)
    fd = prime_handle_to_fd(p, card, vgem_create(p, card).handle)
    tl = p.open(SW_SYNC_PATH, os.O_RDWR)
    import_timeline_fence(p, fd, DMA_BUF_SYNC_READ, tl, 1)
    assert not dmabuf_busy(p, fd, DMA_BUF_SYNC_READ)
    assert dmabuf_busy(p, fd, DMA_BUF_SYNC_WRITE) and dmabuf_sync_file_busy(p, fd, DMA_BUF_SYNC_RW)
    timeline_inc(p, tl, 1)
    assert not dmabuf_busy(p, fd, DMA_BUF_SYNC_RW)
    for seqno, flags in ((2, DMA_BUF_SYNC_WRITE), (3, DMA_BUF_SYNC_RW)):
        import_timeline_fence(p, fd, flags, tl, seqno)
        assert dmabuf_busy(p, fd, DMA_BUF_SYNC_READ) and dmabuf_busy(p, fd, DMA_BUF_SYNC_WRITE)
        assert dmabuf_sync_file_busy(p, fd, DMA_BUF_SYNC_READ)
        timeline_inc(p, tl, 1)
        assert not dmabuf_busy(p, fd, DMA_BUF_SYNC_RW)
        assert not dmabuf_sync_file_busy(p, fd, DMA_BUF_SYNC_RW)


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("write", [False, True])
def test_dmabuf_sync_file_import_multiple(spec: str, write: bool) -> None:
    """32 read fences from 32 timelines (and maybe one write fence): readers wait only for
    the writer, writers for everyone; releasing the readers in reverse order leaves the
    buffer busy for writers until the last."""
    _k, p, card = igt(spec)
    fd = prime_handle_to_fd(p, card, vgem_create(p, card).handle)
    readers = [p.open(SW_SYNC_PATH, os.O_RDWR) for _ in range(32)]
    for tl in readers:
        import_timeline_fence(p, fd, DMA_BUF_SYNC_READ, tl, 1)
    writer = p.open(SW_SYNC_PATH, os.O_RDWR)
    if write:
        import_timeline_fence(p, fd, DMA_BUF_SYNC_WRITE, writer, 1)
    read_sf = export_sync_file(p, fd, DMA_BUF_SYNC_READ)
    write_sf = export_sync_file(p, fd, DMA_BUF_SYNC_WRITE)
    for tl in reversed(readers):
        assert dmabuf_busy(p, fd, DMA_BUF_SYNC_READ) == write
        assert sync_file_busy(p, read_sf) == write
        assert dmabuf_busy(p, fd, DMA_BUF_SYNC_WRITE) and sync_file_busy(p, write_sf)
        timeline_inc(p, tl, 1)
    assert dmabuf_busy(p, fd, DMA_BUF_SYNC_WRITE) == write
    assert sync_file_busy(p, write_sf) == write
    timeline_inc(p, writer, 1)
    assert not dmabuf_busy(p, fd, DMA_BUF_SYNC_RW) and not sync_file_busy(p, write_sf)


# -- sw_sync --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", MODERN)
def test_sw_sync_timeline_signals_points_in_seqno_order(spec: str) -> None:
    """Points made in any order signal, each step, exactly those at or below the counter;
    a point already reached is born signalled; asking again for a pending seqno gives the
    same fence."""
    k, p, _card = igt(spec)
    tl = p.open(SW_SYNC_PATH, os.O_RDWR)
    order = [5, 1, 4, 2, 3]
    fds = {seqno: timeline_fence(p, tl, seqno) for seqno in order}
    again = timeline_fence(p, tl, 4)
    assert p.file(again).private_data is p.file(fds[4]).private_data
    for value in range(1, 6):
        timeline_inc(p, tl, 1)
        ready = p.poll([(fds[s], POLLIN) for s in order])
        assert sorted(fd for fd, _ in ready) == sorted(fds[s] for s in order if s <= value)
    stamps = [p.file(fds[s]).private_data.timestamp for s in range(1, 6)]
    assert stamps == sorted(stamps) and k.clock == 0
    born = timeline_fence(p, tl, 2)
    assert fence_status(p, born) == 1


@pytest.mark.parametrize("spec", MODERN)
def test_sw_sync_closing_the_timeline_signals_with_enoent(spec: str) -> None:
    _k, p, _card = igt(spec)
    tl = p.open(SW_SYNC_PATH, os.O_RDWR)
    done, pending = timeline_fence(p, tl, 1), timeline_fence(p, tl, 9)
    timeline_inc(p, tl, 1)
    p.close(tl)
    assert fence_status(p, done) == 1
    assert fence_status(p, pending) == -errno.ENOENT
    assert p.poll(pending, POLLIN, 0) == POLLIN  # signalled, with an error


@pytest.mark.parametrize("spec", MODERN)
def test_sw_sync_wait_with_timeout_big_steps_and_wrap(spec: str) -> None:
    """A wait on a pending point times out on the virtual clock; an increment of more than
    INT_MAX (applied in INT_MAX steps) reaches it while a poll sleeps; seqnos compare as
    32-bit fences do, so past 2**31 ahead means behind, and the counter wraps."""
    k, p, _card = igt(spec)
    tl = p.open(SW_SYNC_PATH, os.O_RDWR)
    far = timeline_fence(p, tl, 0x7FFF_FFF0)
    assert p.poll(far, POLLIN, 50) == 0 and k.clock == 50 * MS
    k.schedule(k.clock + 5 * MS, lambda: timeline_inc_kernel(p, tl, 0x9000_0000))
    assert p.poll(far, POLLIN, 1000) == POLLIN and k.clock == 55 * MS
    assert fence_status(p, timeline_fence(p, tl, 0x1000_0000)) == 1  # behind the counter
    ahead = timeline_fence(p, tl, 0x10)  # 0x10 - 0x90000000 is positive as an s32
    assert fence_status(p, ahead) == 0
    timeline_inc(p, tl, 0x7000_0010)  # the counter wraps to 0x10
    assert fence_status(p, ahead) == 1


def timeline_inc_kernel(p: Process, tl: int, count: int) -> None:
    """An event standing for another thread's SW_SYNC_IOC_INC."""
    sync_timeline_signal(p.file(tl).private_data, count)


@pytest.mark.parametrize("spec", MODERN)
def test_sync_file_info_lists_the_fences_of_an_exported_array(spec: str) -> None:
    """SYNC_IOC_FILE_INFO with num_fences 0 counts; with room it fills one sync_fence_info
    per fence at the user pointer; too little room is EINVAL."""
    _k, p, card = igt(spec)
    fd = prime_handle_to_fd(p, card, vgem_create(p, card).handle)
    a, b = (p.open(SW_SYNC_PATH, os.O_RDWR) for _ in range(2))
    import_timeline_fence(p, fd, DMA_BUF_SYNC_WRITE, a, 1)
    import_timeline_fence(p, fd, DMA_BUF_SYNC_READ, b, 1)
    sf = export_sync_file(p, fd, DMA_BUF_SYNC_WRITE)
    info = SyncFileInfo()
    p.ioctl(sf, SYNC_IOC_FILE_INFO, info)
    assert (info.num_fences, info.status) == (2, 0)
    with pytest.raises(OSError) as err:
        p.ioctl(sf, SYNC_IOC_FILE_INFO, SyncFileInfo(num_fences=1))
    assert err.value.errno == errno.EINVAL
    timeline_inc(p, a, 1)
    buf = p.mmap(0, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    info = SyncFileInfo(num_fences=2, sync_fence_info=buf)
    p.ioctl(sf, SYNC_IOC_FILE_INFO, info)
    size = SyncFenceInfo.sizeof()
    got = [SyncFenceInfo.unpack(p.read_memory(buf + i * size, size)) for i in range(2)]
    assert [g.status for g in got] == [1, 0] and info.status == 0
    assert got[0].obj_name.rstrip(b"\0").startswith(b"sw_sync:igt")
    with pytest.raises(OSError) as err:
        p.ioctl(sf, SYNC_IOC_FILE_INFO, SyncFileInfo(flags=1))
    assert err.value.errno == errno.EINVAL


def test_readme_time_waits_and_modules_snippet_prints_what_it_shows() -> None:
    """The README's "Time, waits and modules" snippet runs as printed and prints its output."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Time, waits and modules") :]
    code, shown = re.findall(r"```(?:python|text)\n(.*?)```", section, re.S)[:2]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue() == shown
