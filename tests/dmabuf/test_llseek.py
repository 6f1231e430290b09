"""lseek on a dma-buf fd (R41, R42, R62).  kernel-spec §2.10, §4.4."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest

OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
SEEK_DATA, SEEK_HOLE = 3, 4


def pos_of(env: SimpleNamespace) -> str:
    return env.proc.fdinfo(env.fd).splitlines()[0]


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("size", [1, 6000, 4 * PAGE, 64 * PAGE + 7])
def test_r41_seek_end_returns_size_seek_set_returns_zero(
    kit: SimpleNamespace, spec: str, size: int
) -> None:
    """R41: lseek(fd, 0, SEEK_END) = size (not page-rounded); lseek(fd, 0, SEEK_SET) = 0;
    f_pos is never updated."""
    env = kit.new_env(spec, size)
    p = env.proc
    assert p.lseek(env.fd, 0, os.SEEK_END) == size
    assert env.file.f_pos == 0 and pos_of(env) == "pos:\t0"
    assert p.lseek(env.fd, 0, os.SEEK_SET) == 0
    assert p.lseek(env.fd, 0, os.SEEK_END) == size  # repeatable: nothing moved


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("offset", "whence"),
    [
        (0, os.SEEK_CUR),
        (5, os.SEEK_CUR),
        (-1, os.SEEK_CUR),
        (1, os.SEEK_SET),
        (PAGE, os.SEEK_SET),
        (-1, os.SEEK_END),
        (1, os.SEEK_END),
        (-(2**63), os.SEEK_END),
        (0, SEEK_DATA),
        (0, SEEK_HOLE),
        (0, 5),
        (0, -1),
        (0, 2**31 - 1),
    ],
)
def test_r41_everything_else_is_einval(
    kit: SimpleNamespace, spec: str, offset: int, whence: int
) -> None:
    """R41: SEEK_CUR (any offset), any nonzero offset, any other whence → EINVAL; the file
    position is not changed."""
    env = kit.new_env(spec, 4 * PAGE)
    with pytest.raises(OSError) as ei:
        env.proc.lseek(env.fd, offset, whence)
    assert ei.value.errno == errno.EINVAL
    assert env.file.f_pos == 0


@pytest.mark.parametrize("spec", MODERN)
def test_r41_works_through_a_dup_and_after_mmap(kit: SimpleNamespace, spec: str) -> None:
    """R41: the answer is the buffer's, whatever fd names the file."""
    env = kit.new_env(spec, 3 * PAGE)
    fd2 = env.proc.dup(env.fd)
    env.proc.mmap(0, PAGE, 3, 1, env.fd, 0)
    assert env.proc.lseek(fd2, 0, os.SEEK_END) == 3 * PAGE


@pytest.mark.parametrize("spec", OLD)
@pytest.mark.parametrize(
    ("offset", "whence"),
    [(0, os.SEEK_END), (0, os.SEEK_SET), (0, os.SEEK_CUR), (7, os.SEEK_SET), (0, SEEK_HOLE)],
)
def test_r42_r62_old_specs_seek_is_espipe(
    kit: SimpleNamespace, spec: str, offset: int, whence: int
) -> None:
    """R42/R62: no .llseek and no FMODE_LSEEK on the anon file → ESPIPE for every whence."""
    env = kit.new_env(spec, 4 * PAGE)
    with pytest.raises(OSError) as ei:
        env.proc.lseek(env.fd, offset, whence)
    assert ei.value.errno == errno.ESPIPE
    assert env.file.f_pos == 0


@pytest.mark.parametrize("spec", OLD + MODERN)
def test_seek_whence_past_seek_max_is_einval_before_the_file(
    kit: SimpleNamespace, spec: str
) -> None:
    """fs/read_write.c: whence > SEEK_MAX is EINVAL in the syscall, before vfs_llseek, so even
    the old specs answer EINVAL rather than ESPIPE."""
    env = kit.new_env(spec, 4 * PAGE)
    with pytest.raises(OSError) as ei:
        env.proc.lseek(env.fd, 0, SEEK_HOLE + 1)
    assert ei.value.errno == errno.EINVAL


@pytest.mark.parametrize("spec", OLD + MODERN)
def test_seek_on_bad_fd_is_ebadf(kit: SimpleNamespace, spec: str) -> None:
    env = kit.new_env(spec, PAGE)
    env.proc.close(env.fd)
    with pytest.raises(OSError) as ei:
        env.proc.lseek(env.fd, 0, os.SEEK_END)
    assert ei.value.errno == errno.EBADF
