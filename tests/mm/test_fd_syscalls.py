"""The fd table and generic file syscalls (fs/open.c, fs/file.c, fs/fcntl.c, fs/ioctl.c)."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.uapi import FIOCLEX, FIONBIO, FIONCLEX

O_LARGEFILE = 0o100000  # x86-64 kernel value; Python's os.O_LARGEFILE is 0 there
F_DUPFD_CLOEXEC = 1030


def errno_of(fn: Callable[..., Any], *args: Any) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)
    return int(ei.value.errno)


def proc() -> tuple[Kernel, Any]:
    k = Kernel("v6.12")
    return k, k.spawn()


def test_open_gives_lowest_free_fd_and_close_frees_it() -> None:
    _, p = proc()
    fds = [p.open("/dev/simmem", os.O_RDWR) for _ in range(3)]
    assert fds == [0, 1, 2]
    p.close(1)
    assert p.open("/dev/simmem") == 1
    p.close(1)
    assert 1 not in p.files.fds
    assert errno_of(p.close, 1) == errno.EBADF  # a second close is EBADF


def test_open_missing_path_enoent() -> None:
    _, p = proc()
    assert errno_of(p.open, "/dev/nothing") == errno.ENOENT
    assert p.files.fds == {}


def test_close_releases_file_on_last_reference(make_driver: Callable[..., Any]) -> None:
    k, p = proc()
    drv = make_driver(k, None)
    fd = p.open("/dev/toy", os.O_RDWR)
    f = p.file(fd)
    fd2 = p.dup(fd)
    assert fd2 == fd + 1 and p.file(fd2) is f and f.f_count == 2
    p.close(fd)
    assert f.f_count == 1 and drv.releases == 0
    p.close(fd2)
    assert f.f_count == 0 and f.released and drv.releases == 1
    assert errno_of(p.dup, fd) == errno.EBADF


def test_f_getfl_shows_access_mode_and_largefile_never_cloexec() -> None:
    _, p = proc()
    rw = p.open("/dev/simmem", os.O_RDWR | os.O_CLOEXEC)
    ro = p.open("/dev/simmem", os.O_RDONLY | os.O_NONBLOCK)
    wo = p.open("/dev/simmem", os.O_WRONLY)
    assert p.fcntl(rw, fcntl.F_GETFL) == os.O_RDWR | O_LARGEFILE
    assert p.fcntl(ro, fcntl.F_GETFL) == os.O_RDONLY | os.O_NONBLOCK | O_LARGEFILE
    assert p.fcntl(wo, fcntl.F_GETFL) == os.O_WRONLY | O_LARGEFILE
    again = p.open(f"/proc/self/fd/{rw}", os.O_RDONLY | os.O_CLOEXEC)
    assert p.fcntl(again, fcntl.F_GETFL) == os.O_RDONLY | O_LARGEFILE
    assert p.fcntl(again, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    assert p.file(again) is not p.file(rw)
    assert p.file(again).f_inode is p.file(rw).f_inode
    # fdinfo adds O_CLOEXEC from the fd table (fs/proc/fd.c)
    assert "flags:\t02100002\n" in p.fdinfo(rw)


def test_f_setfl_changes_only_settable_flags() -> None:
    _, p = proc()
    fd = p.open("/dev/simmem", os.O_RDWR)
    p.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK | os.O_WRONLY | os.O_APPEND)
    assert p.fcntl(fd, fcntl.F_GETFL) == os.O_RDWR | os.O_NONBLOCK | os.O_APPEND | O_LARGEFILE
    p.fcntl(fd, fcntl.F_SETFL, 0)
    assert p.fcntl(fd, fcntl.F_GETFL) == os.O_RDWR | O_LARGEFILE


def test_cloexec_via_open_fcntl_and_ioctl() -> None:
    _, p = proc()
    fd = p.open("/dev/simmem", os.O_RDWR | os.O_CLOEXEC)
    assert p.fcntl(fd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    p.fcntl(fd, fcntl.F_SETFD, 0)
    assert p.fcntl(fd, fcntl.F_GETFD) == 0
    p.ioctl(fd, FIOCLEX)
    assert p.fcntl(fd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    p.ioctl(fd, FIONCLEX)
    assert p.fcntl(fd, fcntl.F_GETFD) == 0
    # dup never copies close-on-exec; F_DUPFD_CLOEXEC sets it
    p.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    d = p.dup(fd)
    assert p.fcntl(d, fcntl.F_GETFD) == 0
    d2 = p.fcntl(fd, F_DUPFD_CLOEXEC, 10)
    assert d2 == 10 and p.fcntl(d2, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    d3 = p.fcntl(fd, fcntl.F_DUPFD, 10)
    assert d3 == 11 and p.fcntl(d3, fcntl.F_GETFD) == 0
    assert errno_of(p.fcntl, fd, fcntl.F_DUPFD, 1024) == errno.EINVAL
    assert errno_of(p.fcntl, fd, fcntl.F_DUPFD, -1) == errno.EINVAL
    assert p.file(fd).f_count == 4


def test_fionbio_toggles_o_nonblock() -> None:
    """FIONBIO takes an ``int *`` (here: the bytes of the int it points at)."""
    _, p = proc()
    fd = p.open("/dev/simmem", os.O_RDWR)
    p.ioctl(fd, FIONBIO, (1).to_bytes(4, "little"))
    assert p.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    p.ioctl(fd, FIONBIO, (0).to_bytes(4, "little"))
    assert not p.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK


def test_driver_without_ioctl_read_write() -> None:
    _, p = proc()
    fd = p.open("/dev/simmem", os.O_RDWR)
    wo = p.open("/dev/simmem", os.O_WRONLY)
    assert errno_of(p.ioctl, fd, 0x1234) == errno.ENOTTY
    assert errno_of(p.read, fd, 4) == errno.EINVAL  # no ->read
    assert errno_of(p.write, fd, b"x") == errno.EINVAL  # no ->write
    assert errno_of(p.read, wo, 4) == errno.EBADF  # not open for reading
    ro = p.open("/dev/simmem", os.O_RDONLY)
    assert errno_of(p.write, ro, b"x") == errno.EBADF
    assert errno_of(p.fcntl, fd, 9999) == errno.EINVAL


def test_emfile_past_the_fd_limit() -> None:
    _, p = proc()
    fd = p.open("/dev/simmem", os.O_RDWR)
    for _ in range(1023):
        p.dup(fd)
    assert max(p.files.fds) == 1023
    assert errno_of(p.dup, fd) == errno.EMFILE
    assert errno_of(p.open, "/dev/simmem") == errno.EMFILE
    assert p.file(fd).f_count == 1024
    assert p.files.reserved == {}


def test_lseek_and_unknown_fds() -> None:
    _, p = proc()
    mfd = p.memfd_create("m")
    assert p.lseek(mfd, 10, os.SEEK_SET) == 10
    for fn, args in [
        (p.lseek, (55, 0, os.SEEK_SET)),
        (p.close, (55,)),
        (p.dup, (55,)),
        (p.ioctl, (55, FIOCLEX)),
        (p.fcntl, (55, fcntl.F_GETFL)),
        (p.read, (55, 1)),
        (p.write, (55, b"x")),
        (p.ftruncate, (55, 0)),
        (p.mmap, (0, 4096, 1, 1, 55, 0)),
        (p.file, (55,)),
    ]:
        assert errno_of(fn, *args) == errno.EBADF, fn
    assert errno_of(p.fdinfo, 55) == errno.ENOENT
    assert p.lseek(mfd, 0, os.SEEK_CUR) == 10


def test_proc_self_fd_of_closed_fd_enoent() -> None:
    _, p = proc()
    assert errno_of(p.open, "/proc/self/fd/3") == errno.ENOENT
    assert errno_of(p.open, "/proc/999/fd/0") == errno.ENOENT
