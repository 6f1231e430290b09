"""DMA_BUF_IOCTL_SYNC and unknown ioctls (R43-R47, R62).  kernel-spec §4.5, §4.8, §2.10."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim.device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from dmabuf_sim.dma_buf import DmaFence, DmaResvUsage, dma_buf_begin_cpu_access
from dmabuf_sim.errors import ERESTARTSYS
from dmabuf_sim.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE
from dmabuf_sim.uapi import (
    _IO,
    _IOW,
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SET_NAME,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
    FIOCLEX,
    FIONBIO,
    FIONCLEX,
    DmaBufExportSyncFile,
    DmaBufSync,
)

ALL = ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"]
OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
READ, WRITE, RW, END = DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW, DMA_BUF_SYNC_END


def sync(env: SimpleNamespace, flags: int) -> int:
    return int(env.proc.ioctl(env.fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags)))


def sync_err(env: SimpleNamespace, arg: Any) -> int:
    with pytest.raises(OSError) as ei:
        env.proc.ioctl(env.fd, DMA_BUF_IOCTL_SYNC, arg)
    return int(ei.value.errno)


def cpu_calls(env: SimpleNamespace) -> list[tuple[Any, ...]]:
    return [c for c in env.exp.calls if c[0] in ("begin_cpu_access", "end_cpu_access")]


# -- R43: flags and pointer ----------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("flags", [0, 4, 8, 9, 15, 16, 2**63, 2**64 - 1, 0x100 | READ])
def test_r43_invalid_flags_are_einval(kit: SimpleNamespace, spec: str, flags: int) -> None:
    """R43: a bit outside 0x7 → EINVAL; neither READ nor WRITE (0, END) → EINVAL; the
    exporter is never called."""
    env = kit.new_env(spec)
    assert sync_err(env, DmaBufSync(flags)) == errno.EINVAL
    assert cpu_calls(env) == []


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("flags", [1, 2, 3, 5, 6, 7])
def test_r43_valid_flags_succeed(kit: SimpleNamespace, spec: str, flags: int) -> None:
    """R43: READ/WRITE/RW, with or without END, are accepted."""
    env = kit.new_env(spec)
    assert sync(env, flags) == 0
    assert len(cpu_calls(env)) == 1


@pytest.mark.parametrize("spec", MODERN)
def test_r43_bad_pointer_is_efault(kit: SimpleNamespace, spec: str) -> None:
    """R43: an unreadable argument → EFAULT: NULL, a low address, an unmapped address, a
    struct running off the end of a mapping, and a too-short buffer."""
    env = kit.new_env(spec)
    p = env.proc
    page = p.mmap(0, PAGE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    for arg in (0, 8, 0x1000_0000, page + PAGE - 4, page + PAGE, b"\x01\0\0\0"):
        assert sync_err(env, arg) == errno.EFAULT, arg
    assert cpu_calls(env) == []


@pytest.mark.parametrize("spec", MODERN)
def test_r43_pointer_into_user_memory(kit: SimpleNamespace, spec: str) -> None:
    """R43: a user address holding a valid struct works, holding a bad one gives EINVAL."""
    env = kit.new_env(spec)
    p = env.proc
    page = p.mmap(0, PAGE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    p.write_memory(page + PAGE - 8, DmaBufSync(RW).pack())
    assert p.ioctl(env.fd, DMA_BUF_IOCTL_SYNC, page + PAGE - 8) == 0
    assert cpu_calls(env) == [("begin_cpu_access", DMA_BIDIRECTIONAL)]
    p.write_memory(page, DmaBufSync(8).pack())
    assert sync_err(env, page) == errno.EINVAL
    assert p.ioctl(env.fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(READ).pack()) == 0


# -- R44 / R45: what reaches the exporter ----------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("flags", "call"),
    [
        (DMA_BUF_SYNC_START | READ, ("begin_cpu_access", DMA_FROM_DEVICE)),
        (DMA_BUF_SYNC_START | WRITE, ("begin_cpu_access", DMA_TO_DEVICE)),
        (DMA_BUF_SYNC_START | RW, ("begin_cpu_access", DMA_BIDIRECTIONAL)),
        (END | READ, ("end_cpu_access", DMA_FROM_DEVICE)),
        (END | WRITE, ("end_cpu_access", DMA_TO_DEVICE)),
        (END | RW, ("end_cpu_access", DMA_BIDIRECTIONAL)),
    ],
)
def test_r44_direction_mapping(
    kit: SimpleNamespace, spec: str, flags: int, call: tuple[Any, ...]
) -> None:
    """R44: READ→DMA_FROM_DEVICE, WRITE→DMA_TO_DEVICE, RW→DMA_BIDIRECTIONAL; END selects
    end_cpu_access, its absence begin_cpu_access."""
    env = kit.new_env(spec)
    assert sync(env, flags) == 0
    assert cpu_calls(env) == [call]


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("err", [errno.EAGAIN, errno.EINTR, errno.ENOMEM, errno.EIO])
def test_r44_exporter_errors_are_returned_unchanged(
    kit: SimpleNamespace, spec: str, err: int
) -> None:
    """R44 (ERR16): begin's and end's return values reach userspace unchanged."""
    env = kit.new_env(spec, begin_ret=-err, end_ret=-err - 1)
    assert sync_err(env, DmaBufSync(READ)) == err
    assert sync_err(env, DmaBufSync(END | READ)) == err + 1


@pytest.mark.parametrize("spec", MODERN)
def test_r44_ops_without_cpu_access_hooks_succeed(kit: SimpleNamespace, spec: str) -> None:
    """§4.8: both hooks are optional; without them SYNC succeeds."""
    env = kit.new_env(spec, missing=("begin_cpu_access", "end_cpu_access"))
    assert sync(env, READ) == 0
    assert sync(env, END | WRITE) == 0


@pytest.mark.parametrize("spec", MODERN)
def test_r45_core_keeps_no_sync_state(kit: SimpleNamespace, spec: str) -> None:
    """R45: END without START, double START and mismatched directions are all passed on."""
    env = kit.new_env(spec)
    assert sync(env, END | READ) == 0
    assert sync(env, READ) == 0
    assert sync(env, READ) == 0
    assert sync(env, END | WRITE) == 0
    assert sync(env, END | RW) == 0
    assert cpu_calls(env) == [
        ("end_cpu_access", DMA_FROM_DEVICE),
        ("begin_cpu_access", DMA_FROM_DEVICE),
        ("begin_cpu_access", DMA_FROM_DEVICE),
        ("end_cpu_access", DMA_TO_DEVICE),
        ("end_cpu_access", DMA_BIDIRECTIONAL),
    ]


# -- R46: SYNC_START waits for implicit fences ---------------------------------------------


def fenced(
    kit: SimpleNamespace, spec: str, *fences: tuple[DmaResvUsage, int | None], **kw: Any
) -> tuple[SimpleNamespace, list[DmaFence]]:
    env = kit.new_env(spec, **kw)
    out = []
    for i, (usage, at) in enumerate(fences):
        f = DmaFence(env.kernel, f"ctx{i}", 1, completes_at=at)
        env.dmabuf.resv.add_fence(f, usage)
        out.append(f)
    return env, out


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("flags", [READ, WRITE, RW])
@pytest.mark.parametrize("usage", [DmaResvUsage.KERNEL, DmaResvUsage.WRITE])
def test_r46_start_waits_for_write_and_kernel_fences(
    kit: SimpleNamespace, spec: str, flags: int, usage: DmaResvUsage
) -> None:
    """R46: SYNC_START (any direction) waits for KERNEL and WRITE fences: the virtual clock
    advances to the fence's completion and the fence is signalled."""
    env, (f,) = fenced(kit, spec, (usage, 1000))
    assert sync(env, flags) == 0
    assert f.signaled and env.kernel.clock == 1000


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(("flags", "waits"), [(READ, False), (WRITE, True), (RW, True)])
def test_r46_read_fences_block_only_writers(
    kit: SimpleNamespace, spec: str, flags: int, waits: bool
) -> None:
    """R46: READ fences are waited for by WRITE/RW access, not by READ access."""
    env, (f,) = fenced(kit, spec, (DmaResvUsage.READ, 500))
    assert sync(env, flags) == 0
    assert f.signaled is waits
    assert env.kernel.clock == (500 if waits else 0)


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("flags", [READ, WRITE, RW])
def test_r46_bookkeep_fences_are_ignored(kit: SimpleNamespace, spec: str, flags: int) -> None:
    """R46: BOOKKEEP fences are never waited for."""
    env, (f,) = fenced(kit, spec, (DmaResvUsage.BOOKKEEP, 700))
    assert sync(env, flags) == 0
    assert not f.signaled and env.kernel.clock == 0


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("flags", [END | READ, END | WRITE, END | RW])
def test_r46_sync_end_never_waits(kit: SimpleNamespace, spec: str, flags: int) -> None:
    """R46: SYNC_END never waits, whatever is pending."""
    env, fs = fenced(
        kit, spec, (DmaResvUsage.KERNEL, 100), (DmaResvUsage.WRITE, 200), (DmaResvUsage.READ, 300)
    )
    assert sync(env, flags) == 0
    assert env.kernel.clock == 0 and not any(f.signaled for f in fs)


@pytest.mark.parametrize("spec", MODERN)
def test_r46_waits_for_all_fences(kit: SimpleNamespace, spec: str) -> None:
    """R46: every fence of the usage is waited for; a later START does not wait again."""
    env, fs = fenced(
        kit,
        spec,
        (DmaResvUsage.WRITE, 300),
        (DmaResvUsage.KERNEL, 100),
        (DmaResvUsage.READ, 900),
        (DmaResvUsage.BOOKKEEP, 5000),
    )
    assert sync(env, READ) == 0
    assert [f.signaled for f in fs] == [True, True, False, False]
    assert env.kernel.clock == 300
    assert sync(env, RW) == 0
    assert [f.signaled for f in fs] == [True, True, True, False]
    assert env.kernel.clock == 900
    assert sync(env, RW) == 0 and env.kernel.clock == 900


@pytest.mark.parametrize("spec", MODERN)
def test_r46_exporter_hook_runs_first_and_its_error_skips_the_wait(
    kit: SimpleNamespace, spec: str
) -> None:
    """R46: begin_cpu_access runs before the wait; if it fails, nothing is waited for."""
    env, (f,) = fenced(kit, spec, (DmaResvUsage.WRITE, 1000), begin_ret=-errno.EAGAIN)
    seen: list[tuple[int, bool]] = []
    hook = env.exp.begin_cpu_access

    def spy(dmabuf: Any, *args: Any) -> int:
        seen.append((env.kernel.clock, f.signaled))
        return int(hook(dmabuf, *args))

    env.exp.begin_cpu_access = spy
    assert sync_err(env, DmaBufSync(READ)) == errno.EAGAIN
    assert seen == [(0, False)] and not f.signaled and env.kernel.clock == 0
    env.exp.begin_ret = 0
    assert sync(env, READ) == 0
    assert seen == [(0, False), (0, False)] and f.signaled and env.kernel.clock == 1000


@pytest.mark.parametrize("spec", MODERN)
def test_r46_interrupted_wait_is_eintr(kit: SimpleNamespace, spec: str) -> None:
    """R46: a pending signal interrupts the wait: the kernel returns -ERESTARTSYS, userspace
    sees EINTR, the fence stays pending and no time passes; after the signal the restarted
    ioctl waits."""
    env, (f,) = fenced(kit, spec, (DmaResvUsage.WRITE, 1000))
    env.proc.signal_pending = True
    assert sync_err(env, DmaBufSync(READ)) == errno.EINTR
    assert not f.signaled and env.kernel.clock == 0
    with env.kernel.running(env.proc):
        assert dma_buf_begin_cpu_access(env.dmabuf, DMA_FROM_DEVICE) == -ERESTARTSYS
    assert sync(env, END | READ) == 0  # END does not wait, so it is not interrupted
    env.proc.signal_pending = False
    assert sync(env, READ) == 0 and f.signaled


@pytest.mark.parametrize("spec", MODERN)
def test_r46_signal_does_not_matter_without_pending_fences(kit: SimpleNamespace, spec: str) -> None:
    """R46: an interruptible wait with nothing to wait for returns 0 even with a signal."""
    env, (f,) = fenced(kit, spec, (DmaResvUsage.READ, 100))
    env.proc.signal_pending = True
    assert sync(env, READ) == 0
    assert not f.signaled


@pytest.mark.parametrize("spec", MODERN)
def test_r46_same_context_read_fence_does_not_hide_a_write_fence(
    kit: SimpleNamespace, spec: str
) -> None:
    """R46 with dma_resv_add_fence's replacement rule: a fence replaces a same-context one
    only if the old usage is >= the new one (dma-resv.c); a later READ fence must not
    replace a pending WRITE fence, so SYNC_START|READ still waits for the write."""
    env = kit.new_env(spec)
    k, resv = env.kernel, env.dmabuf.resv
    w = DmaFence(k, "gpu", 1, completes_at=400)
    r = DmaFence(k, "gpu", 2, completes_at=800)
    resv.add_fence(w, DmaResvUsage.WRITE)
    resv.add_fence(r, DmaResvUsage.READ)
    assert sync(env, READ) == 0
    assert w.signaled and not r.signaled and k.clock == 400


@pytest.mark.parametrize("spec", MODERN)
def test_r46_same_context_later_fence_replaces_an_older_one(
    kit: SimpleNamespace, spec: str
) -> None:
    """dma_resv_add_fence: a later fence of the same context and a lower-or-equal usage
    replaces the old entry (it completes after it on the same timeline)."""
    env = kit.new_env(spec)
    k, resv = env.kernel, env.dmabuf.resv
    old = DmaFence(k, "gpu", 1, completes_at=100)
    new = DmaFence(k, "gpu", 2, completes_at=200)
    resv.add_fence(old, DmaResvUsage.READ)
    resv.add_fence(new, DmaResvUsage.WRITE)
    assert [f for f, _ in resv.fences] == [new]


# -- R47 / R62: unknown ioctls -------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize(
    "cmd",
    [0x1234, _IO("b", 0), _IOW("b", 4, 8), _IOW("b", 0, 4), _IOW("d", 0, 8), 0xFFFFFFFF],
)
def test_r47_unknown_ioctl_is_enotty(kit: SimpleNamespace, spec: str, cmd: int) -> None:
    """R47: any unknown ioctl on a dma-buf fd → ENOTTY (size/direction are part of the cmd)."""
    env = kit.new_env(spec)
    with pytest.raises(OSError) as ei:
        env.proc.ioctl(env.fd, cmd, 0)
    assert ei.value.errno == errno.ENOTTY
    assert env.exp.calls == []


@pytest.mark.parametrize("spec", OLD)
@pytest.mark.parametrize(
    ("cmd", "arg"),
    [
        (DMA_BUF_IOCTL_SYNC, DmaBufSync(READ)),
        (DMA_BUF_SET_NAME, "name"),
        (DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DmaBufExportSyncFile(READ)),
    ],
)
def test_r47_r62_old_specs_have_no_dmabuf_ioctls(
    kit: SimpleNamespace, spec: str, cmd: int, arg: Any
) -> None:
    """R47/R62: in the 3.x era every dma-buf ioctl fails ENOTTY (no unlocked_ioctl)."""
    env = kit.new_env(spec)
    with pytest.raises(OSError) as ei:
        env.proc.ioctl(env.fd, cmd, arg)
    assert ei.value.errno == errno.ENOTTY
    assert env.exp.calls == []


@pytest.mark.parametrize("spec", ALL)
def test_r47_generic_vfs_ioctls_still_work(kit: SimpleNamespace, spec: str) -> None:
    """R47: FIOCLEX/FIONBIO are handled by the VFS before the file's ioctl, on every spec."""
    env = kit.new_env(spec)
    p = env.proc
    assert p.ioctl(env.fd, FIOCLEX, 0) == 0
    assert p.fcntl(env.fd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    assert p.ioctl(env.fd, FIONCLEX, 0) == 0
    assert p.fcntl(env.fd, fcntl.F_GETFD) == 0
    on = p.mmap(0, PAGE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    p.write_memory(on, struct.pack("<i", 1))
    assert p.ioctl(env.fd, FIONBIO, on) == 0  # the argument is an int __user *
    assert env.file.f_flags & os.O_NONBLOCK
    assert env.exp.calls == []


@pytest.mark.parametrize("spec", ["v3.5", "v6.12"])
def test_fionbio_reads_its_int_through_the_pointer(kit: SimpleNamespace, spec: str) -> None:
    env = kit.new_env(spec)
    p = env.proc
    buf = p.mmap(0, PAGE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    p.write_memory(buf, struct.pack("<i", 1))
    assert p.ioctl(env.fd, FIONBIO, buf) == 0
    assert env.file.f_flags & os.O_NONBLOCK
    p.write_memory(buf, struct.pack("<i", 0))
    assert p.ioctl(env.fd, FIONBIO, buf) == 0
    assert not env.file.f_flags & os.O_NONBLOCK
    with pytest.raises(OSError) as ei:
        p.ioctl(env.fd, FIONBIO, 8)
    assert ei.value.errno == errno.EFAULT


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_cmd_is_an_unsigned_int(kit: SimpleNamespace, spec: str) -> None:
    """fs/ioctl.c: the cmd is unsigned int; high bits of the 64-bit register are dropped."""
    env = kit.new_env(spec)
    assert env.proc.ioctl(env.fd, DMA_BUF_IOCTL_SYNC | (1 << 40), DmaBufSync(READ)) == 0
    assert cpu_calls(env) == [("begin_cpu_access", DMA_FROM_DEVICE)]


@pytest.mark.parametrize("spec", ALL)
def test_ioctl_on_bad_fd_is_ebadf(kit: SimpleNamespace, spec: str) -> None:
    env = kit.new_env(spec)
    with pytest.raises(OSError) as ei:
        env.proc.ioctl(env.fd + 1, DMA_BUF_IOCTL_SYNC, DmaBufSync(READ))
    assert ei.value.errno == errno.EBADF
