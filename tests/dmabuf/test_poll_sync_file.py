"""poll() on a dma-buf and the sync_file ioctls (R50, R51).  kernel-spec §4.5, §4.7."""

from __future__ import annotations

import errno
import fcntl
from types import SimpleNamespace

import pytest

from dmabuf_sim.dma_buf import DmaFence, DmaResvUsage, dma_buf_fd, dma_fence_signal
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_WRITE,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    POLLRDNORM,
    POLLWRNORM,
    DmaBufExportSyncFile,
    DmaBufImportSyncFile,
    DmaBufSync,
)

OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
INOUT = POLLIN | POLLOUT


def with_fence(
    kit: SimpleNamespace, spec: str, usage: DmaResvUsage | None
) -> tuple[SimpleNamespace, DmaFence | None]:
    env = kit.new_env(spec)
    if usage is None:
        return env, None
    f = DmaFence(env.kernel, "gpu", 1, completes_at=100)
    env.dmabuf.resv.add_fence(f, usage)
    return env, f


# -- R50 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("usage", "ready"),
    [
        (None, INOUT),
        (DmaResvUsage.KERNEL, 0),
        (DmaResvUsage.WRITE, 0),
        (DmaResvUsage.READ, POLLIN),
        (DmaResvUsage.BOOKKEEP, INOUT),
    ],
)
def test_r50_poll_readiness_by_fence_usage(
    kit: SimpleNamespace, spec: str, usage: DmaResvUsage | None, ready: int
) -> None:
    """R50: POLLIN iff no unsignalled KERNEL/WRITE fence; POLLOUT iff no unsignalled
    KERNEL/WRITE/READ fence; BOOKKEEP fences are ignored."""
    env, _ = with_fence(kit, spec, usage)
    assert env.proc.poll(env.fd, INOUT) == ready
    assert env.proc.poll(env.fd, POLLIN) == ready & POLLIN


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("events", [0, POLLPRI, POLLRDNORM | POLLWRNORM])
def test_r50_requesting_neither_in_nor_out_gives_zero(
    kit: SimpleNamespace, spec: str, events: int
) -> None:
    """R50: only EPOLLIN/EPOLLOUT are considered; asking for neither returns 0."""
    env, _ = with_fence(kit, spec, None)
    assert env.proc.poll(env.fd, events) == 0


@pytest.mark.parametrize("spec", MODERN)
def test_r50_armed_callback_holds_a_file_reference(kit: SimpleNamespace, spec: str) -> None:
    """§4.7: not-ready directions arm a fence callback that holds a file reference; a second
    poll while armed withholds the bits without new references; the signal releases them."""
    env, f = with_fence(kit, spec, DmaResvUsage.WRITE)
    assert f is not None
    p = env.proc
    assert p.poll(env.fd, INOUT) == 0
    assert env.file.f_count == 3
    assert p.poll(env.fd, INOUT) == 0
    assert env.file.f_count == 3
    dma_fence_signal(f)
    assert env.file.f_count == 1
    assert p.poll(env.fd, INOUT) == INOUT
    assert env.file.f_count == 1


@pytest.mark.parametrize("spec", MODERN)
def test_r50_armed_poll_keeps_the_buffer_alive_past_close(kit: SimpleNamespace, spec: str) -> None:
    """§4.7 consequence: closing the last fd while a poll callback is armed does not
    release; the fence's signal drops the last reference and releases once."""
    env, f = with_fence(kit, spec, DmaResvUsage.READ)
    assert f is not None
    assert env.proc.poll(env.fd, POLLOUT) == 0
    env.proc.close(env.fd)
    assert env.exp.release_calls == 0 and env.file.f_count == 1
    dma_fence_signal(f)
    assert env.exp.release_calls == 1


@pytest.mark.parametrize("spec", MODERN)
def test_r50_signalled_fence_is_ready(kit: SimpleNamespace, spec: str) -> None:
    """R50: only unsignalled fences count."""
    env, f = with_fence(kit, spec, DmaResvUsage.WRITE)
    assert f is not None
    dma_fence_signal(f)
    assert env.proc.poll(env.fd, INOUT) == INOUT
    assert env.file.f_count == 1


@pytest.mark.parametrize("spec", OLD)
@pytest.mark.parametrize(
    ("events", "mask"),
    [
        (INOUT, INOUT),
        (POLLIN, POLLIN),
        (POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM),
        (POLLPRI, 0),
    ],
)
def test_r50_old_specs_poll_default_mask(
    kit: SimpleNamespace, spec: str, events: int, mask: int
) -> None:
    """R50: in the v3.5 era there is no .poll: the fd always polls readable and writable
    (DEFAULT_POLLMASK filtered by the requested events)."""
    env = kit.new_env(spec)
    assert env.proc.poll(env.fd, events) == mask
    assert env.file.f_count == 1


@pytest.mark.parametrize("spec", OLD + MODERN)
def test_poll_closed_fd_is_pollnval(kit: SimpleNamespace, spec: str) -> None:
    env = kit.new_env(spec)
    env.proc.close(env.fd)
    assert env.proc.poll(env.fd, INOUT) == POLLNVAL


# -- R51 -----------------------------------------------------------------------------------


def export_sf(env: SimpleNamespace, flags: int) -> int:
    arg = DmaBufExportSyncFile(flags, -1)
    assert env.proc.ioctl(env.fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, arg) == 0
    return int(arg.fd)


def ioctl_err(env: SimpleNamespace, cmd: int, arg: object) -> int:
    with pytest.raises(OSError) as ei:
        env.proc.ioctl(env.fd, cmd, arg)
    return int(ei.value.errno)


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("flags", [0, 4, 8, 0x80000000, DMA_BUF_SYNC_READ | 4])
@pytest.mark.parametrize(
    ("cmd", "cls"),
    [
        (DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DmaBufExportSyncFile),
        (DMA_BUF_IOCTL_IMPORT_SYNC_FILE, DmaBufImportSyncFile),
    ],
)
def test_r51_bad_flags_are_einval(
    kit: SimpleNamespace, spec: str, flags: int, cmd: int, cls: type
) -> None:
    """R51: flags 0, or with bits other than READ|WRITE → EINVAL; no fd is created."""
    env = kit.new_env(spec)
    assert ioctl_err(env, cmd, cls(flags, 0)) == errno.EINVAL
    assert list(env.proc.files.fds) == [env.fd]


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("cmd", [DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DMA_BUF_IOCTL_IMPORT_SYNC_FILE])
def test_r51_bad_pointer_is_efault(kit: SimpleNamespace, spec: str, cmd: int) -> None:
    env = kit.new_env(spec)
    for arg in (0, 8, 0x3000_0000):
        assert ioctl_err(env, cmd, arg) == errno.EFAULT
    assert list(env.proc.files.fds) == [env.fd]


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("flags", [DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW])
def test_r51_export_without_fences_is_signalled(
    kit: SimpleNamespace, spec: str, flags: int
) -> None:
    """R51: EXPORT on a buffer with no fences returns an already-signalled sync_file, as a new
    O_CLOEXEC fd written back into the struct."""
    env = kit.new_env(spec)
    sfd = export_sf(env, flags)
    assert sfd == env.fd + 1
    assert env.proc.poll(sfd, POLLIN) == POLLIN
    assert env.proc.fcntl(sfd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    assert env.proc.file(sfd).f_count == 1


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("usage", "flags", "pending"),
    [
        (DmaResvUsage.WRITE, DMA_BUF_SYNC_READ, True),
        (DmaResvUsage.WRITE, DMA_BUF_SYNC_WRITE, True),
        (DmaResvUsage.READ, DMA_BUF_SYNC_READ, False),
        (DmaResvUsage.READ, DMA_BUF_SYNC_WRITE, True),
        (DmaResvUsage.BOOKKEEP, DMA_BUF_SYNC_RW, False),
    ],
)
def test_r51_export_carries_the_fences_a_new_access_waits_for(
    kit: SimpleNamespace, spec: str, usage: DmaResvUsage, flags: int, pending: bool
) -> None:
    """R51/§4.5: the exported fence is dma_resv_usage_rw(write): readers wait for writers,
    writers for everyone; it signals with the buffer's fence."""
    env, f = with_fence(kit, spec, usage)
    assert f is not None
    sfd = export_sf(env, flags)
    assert env.proc.poll(sfd, POLLIN) == (0 if pending else POLLIN)
    dma_fence_signal(f)
    assert env.proc.poll(sfd, POLLIN) == POLLIN


@pytest.mark.parametrize("spec", MODERN)
def test_r51_export_into_readonly_memory_is_efault_and_leaks_nothing(
    kit: SimpleNamespace, spec: str
) -> None:
    """§4.5: copy_to_user of the fd failing → EFAULT; the sync_file and fd are released."""
    env = kit.new_env(spec)
    arg = DmaBufExportSyncFile(DMA_BUF_SYNC_READ, 0).pack()  # bytes: read-only memory
    assert ioctl_err(env, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, arg) == errno.EFAULT
    assert list(env.proc.files.fds) == [env.fd]
    assert env.proc.files.reserved == {}


@pytest.mark.parametrize("spec", MODERN)
def test_r51_import_needs_a_sync_file(kit: SimpleNamespace, spec: str) -> None:
    """R51: IMPORT with an fd that is not a sync_file (the dma-buf itself, a closed fd)
    → EINVAL; no fence is added."""
    env = kit.new_env(spec)
    for fd in (env.fd, 99, -1):
        arg = DmaBufImportSyncFile(DMA_BUF_SYNC_WRITE, fd)
        assert ioctl_err(env, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, arg) == errno.EINVAL
    assert env.dmabuf.resv.fences == []


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("flags", "ready"),
    [(DMA_BUF_SYNC_WRITE, 0), (DMA_BUF_SYNC_RW, 0), (DMA_BUF_SYNC_READ, POLLIN)],
)
def test_r51_import_adds_an_implicit_fence(
    kit: SimpleNamespace, spec: str, flags: int, ready: int
) -> None:
    """R51/§4.5: an imported fence becomes a WRITE fence if SYNC_WRITE is set, else READ;
    poll on the importing buffer follows it.  The fence is exported from another buffer."""
    src, f = with_fence(kit, spec, DmaResvUsage.WRITE)
    assert f is not None
    sfd = export_sf(src, DMA_BUF_SYNC_READ)
    k = src.kernel
    dst = kit.export(k, kit.TestExporter(k, 4096), 4096)

    with k.running(src.proc):
        dfd = dma_buf_fd(dst, 0)
    arg = DmaBufImportSyncFile(flags, sfd)
    assert src.proc.ioctl(dfd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, arg) == 0
    assert src.proc.poll(dfd, INOUT) == ready
    dma_fence_signal(f)
    assert src.proc.poll(dfd, INOUT) == INOUT
    assert src.proc.poll(dfd, POLLERR | POLLHUP) == 0


@pytest.mark.parametrize("spec", MODERN)
def test_r51_export_of_several_fences_signals_when_all_have(
    kit: SimpleNamespace, spec: str
) -> None:
    """§4.5: EXPORT_SYNC_FILE uses dma_resv_get_singleton: with several pending fences the
    sync_file holds a fence array that signals only once every fence has, whichever order
    they complete in."""
    env = kit.new_env(spec)
    k = env.kernel
    slow = DmaFence(k, "gpu", 1, completes_at=300)
    fast = DmaFence(k, "copy", 1, completes_at=100)
    env.dmabuf.resv.add_fence(slow, DmaResvUsage.WRITE)
    env.dmabuf.resv.add_fence(fast, DmaResvUsage.WRITE)
    sfd = export_sf(env, DMA_BUF_SYNC_READ)
    assert env.proc.poll(sfd, POLLIN) == 0
    dma_fence_signal(fast)
    assert env.proc.poll(sfd, POLLIN) == 0
    dma_fence_signal(slow)
    assert env.proc.poll(sfd, POLLIN) == POLLIN


@pytest.mark.parametrize("spec", MODERN)
def test_r51_import_of_a_fence_array_adds_every_fence_and_waits_for_all(
    kit: SimpleNamespace, spec: str
) -> None:
    """§4.5: IMPORT_SYNC_FILE unwraps fence containers and adds each fence; a SYNC_START on
    the importing buffer then waits for the latest of them (and each one is signalled)."""
    src = kit.new_env(spec)
    k = src.kernel
    fences = [DmaFence(k, f"ring{i}", 1, completes_at=t) for i, t in enumerate((70, 250, 40))]
    for f in fences:
        src.dmabuf.resv.add_fence(f, DmaResvUsage.WRITE)
    sfd = export_sf(src, DMA_BUF_SYNC_READ)
    dst = kit.export(k, kit.TestExporter(k, 4096), 4096)
    with k.running(src.proc):
        dfd = dma_buf_fd(dst, 0)
    p = src.proc
    assert (
        p.ioctl(dfd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, DmaBufImportSyncFile(DMA_BUF_SYNC_WRITE, sfd))
        == 0
    )
    assert sorted(f.context for f, _ in dst.resv.fences) == ["ring0", "ring1", "ring2"]
    assert p.ioctl(dfd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_READ)) == 0
    assert all(f.signaled for f in fences) and k.clock == 250
    assert p.poll(sfd, POLLIN) == POLLIN
