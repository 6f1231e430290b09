"""Misuse of the Python API around the dma-buf core: clear TypeError/ValueError, no state change.

Kernel-side bad input (NULL pointers, bad fds, bad user pointers) is tested with each rule;
here the simulator must refuse calls no C program could make, naming what is wrong, and
leave every count as it was.
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.device import DMA_TO_DEVICE
from dmabuf_sim.dma_buf import (
    DmaBufExportInfo,
    dma_buf_begin_cpu_access,
    dma_buf_end_cpu_access,
    dma_buf_export,
    dma_buf_fd,
    dma_buf_get,
    dma_buf_mmap,
    dma_buf_vmap,
)
from dmabuf_sim.mm.vma import VmAreaStruct
from dmabuf_sim.spec import SPECS, get_spec
from dmabuf_sim.uapi import DMA_BUF_IOCTL_SYNC, DmaBufSync

ALL = ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"]
OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096


@pytest.mark.parametrize("spec", ALL)
def test_export_in_the_wrong_form_is_a_type_error(kit: SimpleNamespace, spec: str) -> None:
    """dma_buf_export(kernel, exp_info) on modern specs, (priv, ops, size, flags) on 3.x:
    the other form is a TypeError naming the right one; nothing is created or warned."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, PAGE)
    wrong: tuple[Any, ...]
    if k.spec.export_info_form:
        wrong = (exp, exp, PAGE, os.O_RDWR)
    else:
        wrong = (DmaBufExportInfo(ops=exp, size=PAGE, priv=exp),)
    with pytest.raises(TypeError, match="dma_buf_export"):
        dma_buf_export(k, *wrong)
    assert k.dma_bufs == [] and k.warnings == []


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("size", [-1, -PAGE, 1.5, "4096", None])
def test_export_size_must_be_a_non_negative_int(kit: SimpleNamespace, spec: str, size: Any) -> None:
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, PAGE)
    with pytest.raises(ValueError, match="size"):
        kit.export(k, exp, size)
    assert k.dma_bufs == [] and k.warnings == []


@pytest.mark.parametrize("spec", ALL)
def test_fd_and_get_need_a_current_task(kit: SimpleNamespace, spec: str) -> None:
    """dma_buf_fd/dma_buf_get act on current's fd table: without one, a ValueError that says
    so; the export reference stays with the caller."""
    env = kit.new_env(spec, PAGE, fd=False)
    with pytest.raises(ValueError, match="current task"):
        dma_buf_fd(env.dmabuf, 0)
    with pytest.raises(ValueError, match="current task"):
        dma_buf_get(env.kernel, 0)
    assert env.file.f_count == 1 and env.proc.files.fds == {}


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.5", "v6.1", "v6.12", "latest"])
@pytest.mark.parametrize("pgoff", [-1, 2**64, True, "0", 1.0])
def test_dma_buf_mmap_pgoff_must_be_an_unsigned_long(
    kit: SimpleNamespace, spec: str, pgoff: Any
) -> None:
    env = kit.new_env(spec, PAGE)
    ifile = env.file  # any file will do as the vma's file
    vma = VmAreaStruct(env.proc.mm, 0x10000, 0x11000, 0x3B, 0, 7, vm_file=ifile)
    with pytest.raises(ValueError, match="pgoff"):
        dma_buf_mmap(env.dmabuf, vma, pgoff)
    assert vma.vm_file is ifile and vma.vm_pgoff == 7 and ifile.f_count == 1


@pytest.mark.parametrize("spec", ALL)
def test_cpu_access_arity_follows_the_spec(kit: SimpleNamespace, spec: str) -> None:
    """3.x: (dmabuf, start, len, dir); modern: (dmabuf, dir) — the other is a TypeError and
    the exporter is not called."""
    env = kit.new_env(spec, PAGE, fd=False)
    wrong: tuple[Any, ...] = (DMA_TO_DEVICE,) if spec in OLD else (0, PAGE, DMA_TO_DEVICE)
    with pytest.raises(TypeError, match="begin_cpu_access"):
        dma_buf_begin_cpu_access(env.dmabuf, *wrong)
    with pytest.raises(TypeError, match="end_cpu_access"):
        dma_buf_end_cpu_access(env.dmabuf, *wrong)
    assert env.exp.calls == []


@pytest.mark.parametrize("spec", MODERN)
def test_modern_vmap_needs_an_iosys_map(kit: SimpleNamespace, spec: str) -> None:
    env = kit.new_env(spec, PAGE, fd=False)
    with pytest.raises(TypeError, match="IosysMap"):
        dma_buf_vmap(env.dmabuf)
    assert env.exp.vmap_calls == 0 and env.dmabuf.vmapping_counter == 0


@pytest.mark.parametrize("spec", ["v3.5", "v6.12"])
@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((0, PAGE, 3, 1, 0, "0"), TypeError),
        ((0, PAGE, 3, 1, 0, 2**64), ValueError),
        ((0, PAGE, 3, 1, 0, -(2**63) - 1), ValueError),
        ((0, "4096", 3, 1, 0, 0), TypeError),
        ((0, PAGE, 3, 1, 2**32, 0), ValueError),
        ((0, PAGE, 3, 1, 0.0, 0), TypeError),
        ((None, PAGE, 3, 1, 0, 0), TypeError),
    ],
)
def test_process_mmap_rejects_impossible_arguments(
    kit: SimpleNamespace, spec: str, args: tuple[Any, ...], exc: type
) -> None:
    """Process.mmap takes C-sized ints; anything else is a Python error and the kernel is
    not entered (no vma, no reference, no ->mmap)."""
    env = kit.new_env(spec, 4 * PAGE)
    with pytest.raises(exc):
        env.proc.mmap(*args)
    assert env.proc.mm.vmas == () and env.file.f_count == 1 and env.exp.mmap_calls == []


@pytest.mark.parametrize("spec", MODERN)
def test_process_ioctl_and_lseek_reject_impossible_arguments(
    kit: SimpleNamespace, spec: str
) -> None:
    env = kit.new_env(spec, PAGE)
    p = env.proc
    with pytest.raises(TypeError):
        p.ioctl(env.fd, "sync", DmaBufSync(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        p.ioctl(env.fd, 2**64, DmaBufSync(1))
    with pytest.raises(ValueError):
        p.lseek(env.fd, 2**64, os.SEEK_SET)
    with pytest.raises(TypeError):
        p.lseek(env.fd, 0.0, os.SEEK_SET)  # type: ignore[arg-type]
    assert env.exp.calls == [] and env.file.f_count == 1 and env.file.f_pos == 0


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_with_a_non_pointer_argument_is_efault(kit: SimpleNamespace, spec: str) -> None:
    """An argument that is neither a struct, bytes nor an address is an unreadable pointer."""
    env = kit.new_env(spec, PAGE)
    for arg in (None, 1.5, [1], {"flags": 1}):
        with pytest.raises(OSError) as ei:
            env.proc.ioctl(env.fd, DMA_BUF_IOCTL_SYNC, arg)
        assert ei.value.errno == errno.EFAULT
    assert env.exp.calls == []


def test_unknown_spec_names_and_fields() -> None:
    with pytest.raises(ValueError, match="unknown spec"):
        Kernel("v2.6")
    with pytest.raises(TypeError):
        get_spec(35)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SPECS["v3.5"].replace(no_such_knob=True)
    with pytest.raises(ValueError):
        SPECS["v3.5"].replace(dma_buf_mmap_swap="sometimes")
    with pytest.raises(TypeError):
        SPECS["v3.5"].replace(per_buffer_inode="yes")
    assert SPECS["v3.5"].replace(per_buffer_inode=True).name == "v3.5+custom"


@pytest.mark.parametrize("spec", ["v3.5", "v6.12"])
def test_exited_process_cannot_make_syscalls(kit: SimpleNamespace, spec: str) -> None:
    """After exit the fd is gone (the buffer released) and the process refuses calls."""
    env = kit.new_env(spec, PAGE)
    env.proc.exit()
    assert env.exp.release_calls == 1
    with pytest.raises(ValueError, match="exited"):
        env.proc.mmap(0, PAGE, 3, 1, env.fd, 0)
