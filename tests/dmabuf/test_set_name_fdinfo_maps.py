"""DMA_BUF_SET_NAME, fdinfo and /proc/pid/maps names (R48, R49).  kernel-spec §4.5, §4.6."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim.dma_buf import (
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_fd,
    dma_buf_get,
    dma_buf_put,
    get_dma_buf,
)
from dmabuf_sim.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE
from dmabuf_sim.uapi import DMA_BUF_SET_NAME, DMA_BUF_SET_NAME_A, DMA_BUF_SET_NAME_B

OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
RW, SHARED = 3, 1


def set_name(env: SimpleNamespace, arg: Any, cmd: int = DMA_BUF_SET_NAME) -> int:
    return int(env.proc.ioctl(env.fd, cmd, arg))


def set_name_err(env: SimpleNamespace, arg: Any) -> int:
    with pytest.raises(OSError) as ei:
        env.proc.ioctl(env.fd, DMA_BUF_SET_NAME, arg)
    return int(ei.value.errno)


def maps_name(env: SimpleNamespace) -> str:
    return env.proc.maps().splitlines()[0].split()[-1]


# -- R48 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("length", [1, 5, 31])
def test_r48_names_up_to_31_chars_are_accepted(
    kit: SimpleNamespace, spec: str, length: int
) -> None:
    """R48: a name of at most 31 characters (plus the NUL) is set; maps shows
    /dmabuf:<name> and fdinfo a name: line."""
    env = kit.new_env(spec)
    name = "abcdefghijklmnopqrstuvwxyz01234"[:length]
    env.proc.mmap(0, PAGE, RW, SHARED, env.fd, 0)
    assert set_name(env, name) == 0
    assert env.dmabuf.name == name
    assert maps_name(env) == f"/dmabuf:{name}"
    assert env.file.path() == f"/dmabuf:{name}"
    assert env.proc.fdinfo(env.fd).endswith(f"name:\t{name}\n")


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("length", [32, 40, 4096])
def test_r48_names_of_32_or_more_chars_are_einval(
    kit: SimpleNamespace, spec: str, length: int
) -> None:
    """R48: no NUL within DMA_BUF_NAME_LEN (32) bytes → EINVAL; the old name stays."""
    env = kit.new_env(spec)
    assert set_name(env, "keep") == 0
    assert set_name_err(env, "x" * length) == errno.EINVAL
    assert env.dmabuf.name == "keep"


@pytest.mark.parametrize("spec", MODERN)
def test_r48_bad_pointer_is_efault(kit: SimpleNamespace, spec: str) -> None:
    """R48: an unreadable pointer → EFAULT (NULL, low, unmapped, or a string that runs into
    unmapped memory before its NUL)."""
    env = kit.new_env(spec)
    p = env.proc
    page = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    p.write_memory(page + PAGE - 3, b"abc")  # no NUL before the end of the mapping
    for arg in (0, 8, 0x2000_0000, page + PAGE - 3):
        assert set_name_err(env, arg) == errno.EFAULT, arg
    assert env.dmabuf.name is None


@pytest.mark.parametrize("spec", MODERN)
def test_r48_names_from_user_memory(kit: SimpleNamespace, spec: str) -> None:
    """R48 through a real user pointer: the NUL ends the name; 32 bytes without NUL → EINVAL
    even if readable memory follows; a NUL at byte 31 right before unmapped memory is fine."""
    env = kit.new_env(spec)
    p = env.proc
    page = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    p.write_memory(page, b"frame-buffer\0junk")
    assert set_name(env, page) == 0 and env.dmabuf.name == "frame-buffer"
    p.write_memory(page + 100, b"y" * 64)
    assert set_name_err(env, page + 100) == errno.EINVAL
    p.write_memory(page + PAGE - 32, b"z" * 31 + b"\0")
    assert set_name(env, page + PAGE - 32) == 0 and env.dmabuf.name == "z" * 31


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("cmd", [DMA_BUF_SET_NAME_A, DMA_BUF_SET_NAME_B])
def test_r48_both_set_name_numbers_work(kit: SimpleNamespace, spec: str, cmd: int) -> None:
    """§4.5: DMA_BUF_SET_NAME_A (32-bit) and _B (64-bit) are both accepted."""
    env = kit.new_env(spec)
    assert set_name(env, "n", cmd) == 0 and env.dmabuf.name == "n"


@pytest.mark.parametrize("spec", MODERN)
def test_r48_rename_allowed_while_attached(kit: SimpleNamespace, spec: str) -> None:
    """R48: no EBUSY while attached in v6.1+ (the 5.3-era refusal was removed)."""
    env = kit.new_env(spec)
    dma_buf_attach(env.dmabuf, kit.Device(env.kernel, "gpu"))
    assert set_name(env, "first") == 0
    assert set_name(env, "second") == 0
    assert env.dmabuf.name == "second"


def test_r48_what_if_ebusy_when_attached(kit: SimpleNamespace) -> None:
    """R48's history as a custom spec: with set_name_ebusy_when_attached the rename is refused
    with EBUSY while a device is attached and allowed again after detach."""
    env = kit.new_env(kit.custom("v6.1", set_name_ebusy_when_attached=True))
    att = dma_buf_attach(env.dmabuf, kit.Device(env.kernel, "gpu"))
    assert set_name_err(env, "busy") == errno.EBUSY
    assert env.dmabuf.name is None
    dma_buf_detach(env.dmabuf, att)
    assert set_name(env, "free") == 0


@pytest.mark.parametrize("spec", MODERN)
def test_r48_rename_shows_in_existing_mappings(kit: SimpleNamespace, spec: str) -> None:
    """R48: maps reads the name when printed (d_dname), so existing mappings show a rename;
    the empty name shows as /dmabuf:."""
    env = kit.new_env(spec)
    env.proc.mmap(0, PAGE, RW, SHARED, env.fd, 0)
    assert maps_name(env) == "/dmabuf:"
    set_name(env, "one")
    assert maps_name(env) == "/dmabuf:one"
    set_name(env, "two")
    assert maps_name(env) == "/dmabuf:two"
    set_name(env, "")
    assert maps_name(env) == "/dmabuf:"


# -- R49 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_r49_fdinfo_exact_text(kit: SimpleNamespace, spec: str) -> None:
    """R49: after the generic lines, size, count (= file count - 1: procfs's own reference
    is not counted), exp_name, and name only once set."""
    env = kit.new_env(spec, 6000, fd_flags=os.O_CLOEXEC)
    ino = env.file.f_inode.i_ino
    text = env.proc.fdinfo(env.fd)
    head = text.splitlines()[:4]
    assert head[0] == "pos:\t0"
    assert head[1] == f"flags:\t0{os.O_RDWR | os.O_CLOEXEC:o}"
    assert head[2].startswith("mnt_id:\t")
    assert head[3] == f"ino:\t{ino}"
    tail = "".join(line + "\n" for line in text.splitlines()[4:])
    assert tail == f"size:\t6000\ncount:\t1\nexp_name:\t{kit.EXP_NAME}\n"
    set_name(env, "scanout")
    tail = "".join(line + "\n" for line in env.proc.fdinfo(env.fd).splitlines()[4:])
    assert tail == f"size:\t6000\ncount:\t1\nexp_name:\t{kit.EXP_NAME}\nname:\tscanout\n"


@pytest.mark.parametrize("spec", MODERN)
def test_r49_empty_name_is_printed(kit: SimpleNamespace, spec: str) -> None:
    """R49: fdinfo prints the name line whenever a name is set (dmabuf->name != NULL), so
    SET_NAME("") gives an empty 'name:' line."""
    env = kit.new_env(spec)
    set_name(env, "")
    assert env.proc.fdinfo(env.fd).endswith("name:\t\n")


def _count(env: SimpleNamespace) -> int:
    line = [x for x in env.proc.fdinfo(env.fd).splitlines() if x.startswith("count:")]
    return int(line[0].split("\t")[1])


@pytest.mark.parametrize("spec", MODERN)
def test_r49_count_follows_every_holder(kit: SimpleNamespace, spec: str) -> None:
    """R49: count = holders: fds, vmas, kernel references, fork copies."""
    env = kit.new_env(spec)
    p = env.proc
    assert _count(env) == 1
    fd2 = p.dup(env.fd)
    assert _count(env) == 2
    addr = p.mmap(0, 2 * PAGE, RW, SHARED, env.fd, 0)
    assert _count(env) == 3
    p.munmap(addr + PAGE, PAGE)
    p.mmap(0, PAGE, RW, SHARED, env.fd, 0)
    assert _count(env) == 4
    get_dma_buf(env.dmabuf)
    with env.kernel.running(p):
        dma_buf_get(env.kernel, env.fd)
    assert _count(env) == 6
    child = p.fork()  # 2 fds + 2 vmas more
    assert _count(env) == 10
    child.exit()
    dma_buf_put(env.dmabuf)
    dma_buf_put(env.dmabuf)
    p.close(fd2)
    assert _count(env) == 3
    assert env.file.f_count == 3  # procfs's reference is gone again


@pytest.mark.parametrize("spec", MODERN)
def test_r49_exp_name_is_the_exporters(kit: SimpleNamespace, spec: str) -> None:
    """R49: exp_name comes from the export info."""
    k = kit.make_kernel(spec)
    p = k.spawn()
    db = kit.export(k, kit.TestExporter(k, PAGE), PAGE, exp_name="system")

    with k.running(p):
        fd = dma_buf_fd(db, 0)
    assert "exp_name:\tsystem\n" in p.fdinfo(fd)


@pytest.mark.parametrize("spec", OLD)
def test_r49_old_specs_have_no_dmabuf_fdinfo(kit: SimpleNamespace, spec: str) -> None:
    """R49 (5.3+ only): the 3.x fdinfo has only the generic lines of its time (mnt_id came
    in 3.15, ino in 5.14)."""
    env = kit.new_env(spec)
    lines = env.proc.fdinfo(env.fd).splitlines()
    assert [x.split(":")[0] for x in lines] == ["pos", "flags"]


@pytest.mark.parametrize("spec", MODERN)
def test_proc_fd_reopen_of_a_dmabuf_is_enxio(kit: SimpleNamespace, spec: str) -> None:
    """research-6.12 §5f: the dmabuf inode's i_fop is no_open: /proc/self/fd/N → ENXIO."""
    env = kit.new_env(spec)
    with pytest.raises(OSError) as ei:
        env.proc.open(f"/proc/self/fd/{env.fd}", os.O_RDWR)
    assert ei.value.errno == errno.ENXIO
    assert env.file.f_count == 1
