"""dma_buf_fd, dma_buf_get/put, get_dma_buf and release (R15-R17). kernel-spec §2.3, §2.4, §4.1."""

from __future__ import annotations

import errno
import fcntl
import os
from types import SimpleNamespace

import pytest

from dmabuf_sim.dma_buf import dma_buf_fd, dma_buf_get, dma_buf_put, get_dma_buf
from dmabuf_sim.dma_buf.dma_fence import DmaFence
from dmabuf_sim.dma_buf.sync_file import sync_file_create
from dmabuf_sim.errors import KernelError
from dmabuf_sim.fs import FileOperations
from dmabuf_sim.fs_file import fd_install, get_unused_fd_flags

ALL = ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"]
MAPPABLE = ["v3.5", "v6.1", "v6.12", "latest"]  # mmap(2) works (no ENODEV, no R61 oops)
PAGE = 4096
RW = 3
SHARED = 1


# -- dma_buf_fd ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
def test_r16_fd_installs_the_export_reference(kit: SimpleNamespace, spec: str) -> None:
    """R16: after export + dma_buf_fd the file count is still 1; the fd is the lowest free."""
    env = kit.new_env(spec)
    assert env.fd == 0
    assert env.file.f_count == 1
    assert env.proc.file(env.fd) is env.file


@pytest.mark.parametrize("spec", ALL)
def test_r16_close_without_mappings_releases_once(kit: SimpleNamespace, spec: str) -> None:
    """R16: close(fd) with no mappings releases: ops->release exactly once, buffer unlisted."""
    env = kit.new_env(spec)
    env.proc.close(env.fd)
    assert env.exp.release_calls == 1
    assert env.dmabuf.release_calls == 1
    assert env.file.f_count == 0 and env.file.released
    assert env.kernel.dma_bufs == []
    assert env.exp.freed


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize(("flags", "cloexec"), [(0, 0), (os.O_CLOEXEC, fcntl.FD_CLOEXEC)])
def test_fd_honours_o_cloexec(kit: SimpleNamespace, spec: str, flags: int, cloexec: int) -> None:
    """§2.3/§4.1: dma_buf_fd(dmabuf, O_CLOEXEC) sets close-on-exec on the new fd."""
    env = kit.new_env(spec, fd_flags=flags)
    assert env.proc.fcntl(env.fd, fcntl.F_GETFD) == cloexec


@pytest.mark.parametrize("spec", ALL)
def test_fd_of_null_dmabuf_is_einval_without_warn(kit: SimpleNamespace, spec: str) -> None:
    """§2.3: !dmabuf || !dmabuf->file → -EINVAL, no WARN, no fd consumed."""
    env = kit.new_env(spec, fd=False)
    with env.kernel.running(env.proc):
        assert dma_buf_fd(None, 0) == -errno.EINVAL
        env.dmabuf.file, saved = None, env.dmabuf.file
        try:
            assert dma_buf_fd(env.dmabuf, 0) == -errno.EINVAL
        finally:
            env.dmabuf.file = saved
        assert env.kernel.warnings == []
        assert dma_buf_fd(env.dmabuf, 0) == 0  # fd 0 was not consumed


@pytest.mark.parametrize("spec", ALL)
def test_fd_emfile_keeps_the_reference_with_the_caller(kit: SimpleNamespace, spec: str) -> None:
    """§2.3 step 2: get_unused_fd_flags fails -EMFILE → returned, nothing installed."""
    env = kit.new_env(spec, fd=False)
    p = env.proc
    with env.kernel.running(p):
        other = kit.new_env(spec)  # something to fill the table with
        for n in range(1024):
            p.files.fds[n] = other.file
        assert dma_buf_fd(env.dmabuf, 0) == -errno.EMFILE
    assert env.file.f_count == 1 and not env.file.released
    assert env.file not in p.files.fds.values()


@pytest.mark.parametrize("spec", ALL)
def test_r16_two_fds_without_get_dma_buf_share_one_reference(
    kit: SimpleNamespace, spec: str
) -> None:
    """§2.3: calling dma_buf_fd twice without get_dma_buf over-shares the single reference:
    closing either fd releases the buffer while the other fd still points at it."""
    env = kit.new_env(spec)
    with env.kernel.running(env.proc):
        fd2 = dma_buf_fd(env.dmabuf, 0)
    assert fd2 == env.fd + 1
    assert env.file.f_count == 1
    env.proc.close(env.fd)
    assert env.exp.release_calls == 1
    assert env.proc.file(fd2) is env.file and env.file.released


# -- dma_buf_get / dma_buf_put / get_dma_buf ---------------------------------------------


@pytest.mark.parametrize("spec", ALL)
def test_r15_get_on_bad_fd_is_ebadf(kit: SimpleNamespace, spec: str) -> None:
    """R15: dma_buf_get on a closed or never-opened fd → ERR_PTR(-EBADF)."""
    env = kit.new_env(spec)
    with env.kernel.running(env.proc):
        for fd in (5, -1, 1023, 2**31 - 1):
            with pytest.raises(KernelError) as ei:
                dma_buf_get(env.kernel, fd)
            assert ei.value.errno == errno.EBADF
    fd = env.fd
    env.proc.close(fd)
    with env.kernel.running(env.proc), pytest.raises(KernelError) as ei:
        dma_buf_get(env.kernel, fd)
    assert ei.value.errno == errno.EBADF


@pytest.mark.parametrize("spec", ALL)
def test_r15_get_on_non_dmabuf_fd_is_einval_and_keeps_refcount(
    kit: SimpleNamespace, spec: str
) -> None:
    """R15: a fd that is not a dma-buf → ERR_PTR(-EINVAL) and its file count is unchanged."""
    env = kit.new_env(spec)
    env.kernel.register_chrdev("/dev/other", FileOperations(owner="other"))
    ofd = env.proc.open("/dev/other", os.O_RDWR)
    other = env.proc.file(ofd)
    assert other.f_count == 1
    with env.kernel.running(env.proc), pytest.raises(KernelError) as ei:
        dma_buf_get(env.kernel, ofd)
    assert ei.value.errno == errno.EINVAL
    assert other.f_count == 1 and not other.released


@pytest.mark.parametrize("spec", ["v3.5", "v6.1", "v6.12", "latest"])
def test_r15_get_on_a_sync_file_fd_is_einval(kit: SimpleNamespace, spec: str) -> None:
    """R15: another anon-inode file (on old specs even the same inode) is still not a dma-buf."""
    env = kit.new_env(spec)
    k, p = env.kernel, env.proc
    with k.running(p):
        sf = sync_file_create(k, DmaFence(k, "ctx", 1, signaled=True))
        sfd = get_unused_fd_flags(p, 0)
        fd_install(p, sfd, sf)
        with pytest.raises(KernelError) as ei:
            dma_buf_get(k, sfd)
    assert ei.value.errno == errno.EINVAL
    assert sf.f_count == 1


@pytest.mark.parametrize("spec", ALL)
def test_get_takes_and_put_drops_a_reference(kit: SimpleNamespace, spec: str) -> None:
    """§2.4: dma_buf_get returns the buffer holding the fget reference; dma_buf_put drops it;
    the buffer outlives the fd while a kernel reference exists."""
    env = kit.new_env(spec)
    with env.kernel.running(env.proc):
        db = dma_buf_get(env.kernel, env.fd)
    assert db is env.dmabuf
    assert env.file.f_count == 2
    env.proc.close(env.fd)
    assert env.exp.release_calls == 0 and env.kernel.dma_bufs == [db]
    dma_buf_put(db)
    assert env.exp.release_calls == 1 and env.kernel.dma_bufs == []


@pytest.mark.parametrize("spec", ALL)
def test_get_dma_buf_is_get_file(kit: SimpleNamespace, spec: str) -> None:
    """§2.4: get_dma_buf() = get_file(dmabuf->file); the export reference can then be put."""
    env = kit.new_env(spec, fd=False)
    get_dma_buf(env.dmabuf)
    assert env.file.f_count == 2
    dma_buf_put(env.dmabuf)
    assert env.file.f_count == 1 and env.exp.release_calls == 0
    dma_buf_put(env.dmabuf)
    assert env.exp.release_calls == 1


@pytest.mark.parametrize("spec", ALL)
def test_put_of_null_file_warns_and_returns(kit: SimpleNamespace, spec: str) -> None:
    """§2.4: dma_buf_put with !dmabuf->file → WARN and return (no fput)."""
    env = kit.new_env(spec)
    saved, env.dmabuf.file = env.dmabuf.file, None
    try:
        dma_buf_put(env.dmabuf)
    finally:
        env.dmabuf.file = saved
    assert any("dma_buf_put" in w for w in env.kernel.warnings)
    assert env.file.f_count == 1
    dma_buf_put(None)  # WARN_ON(!dmabuf): no kernel to report to, nothing happens
    assert env.file.f_count == 1


# -- R17: vmas hold references -----------------------------------------------------------


@pytest.mark.parametrize("spec", MAPPABLE)
@pytest.mark.parametrize("mode", ["remap", "fault"])
def test_r17_close_after_mmap_does_not_release_final_munmap_does(
    kit: SimpleNamespace, spec: str, mode: str
) -> None:
    """R17: each vma holds one file reference; close(fd) after mmap keeps the buffer alive,
    the last munmap releases it and ops->release runs exactly once."""
    env = kit.new_env(spec, 4 * PAGE, mode=mode)
    p, f = env.proc, env.file
    a = p.mmap(0, 2 * PAGE, RW, SHARED, env.fd, 0)
    b = p.mmap(0, 2 * PAGE, RW, SHARED, env.fd, 2 * PAGE)
    assert f.f_count == 3
    p.close(env.fd)
    assert f.f_count == 2 and env.exp.release_calls == 0
    p.write_memory(b, b"still here")
    p.munmap(a, 2 * PAGE)
    assert f.f_count == 1 and env.exp.release_calls == 0
    assert p.read_memory(b, 10) == b"still here"
    p.munmap(b, 2 * PAGE)
    assert f.f_count == 0 and env.exp.release_calls == 1
    assert env.kernel.dma_bufs == []


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r17_split_vma_pieces_each_hold_a_reference(kit: SimpleNamespace, spec: str) -> None:
    """R17/R19: munmap of the middle page splits the vma; both pieces hold a reference."""
    env = kit.new_env(spec, 4 * PAGE)
    p, f = env.proc, env.file
    a = p.mmap(0, 3 * PAGE, RW, SHARED, env.fd, 0)
    p.close(env.fd)
    assert f.f_count == 1
    p.munmap(a + PAGE, PAGE)
    assert len(p.mm.vmas) == 2 and f.f_count == 2
    p.munmap(a, PAGE)
    assert f.f_count == 1 and env.exp.release_calls == 0
    p.munmap(a + 2 * PAGE, PAGE)
    assert f.f_count == 0 and env.exp.release_calls == 1


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r17_exit_of_last_holder_releases(kit: SimpleNamespace, spec: str) -> None:
    """R17/R18: a forked child's vma copy holds a reference; the buffer goes with the
    last process to exit, once."""
    env = kit.new_env(spec, 2 * PAGE)
    p, f = env.proc, env.file
    p.mmap(0, 2 * PAGE, RW, SHARED, env.fd, 0)
    child = p.fork()
    assert f.f_count == 4  # two fds, two vmas
    p.exit()
    assert f.f_count == 2 and env.exp.release_calls == 0
    child.exit()
    assert f.f_count == 0 and env.exp.release_calls == 1
