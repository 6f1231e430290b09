"""dmabuf_sim.snapshot: what a process holds, compared before and after a call."""

from __future__ import annotations

import mmap
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel, Process, snapshot
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.snapshot import KernelSnapshot, ProcessSnapshot

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def _mapped() -> tuple[Process, int, int]:
    p = Kernel("v6.12").spawn("snap")
    fd = EXPORTERS["system_heap"].make_fd(p, 4 * PAGE, os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"x")
    return p, fd, addr


@given(
    offset=st.integers(min_value=-8, max_value=8).map(lambda n: n * PAGE + 17),
    pages=st.integers(min_value=-1, max_value=6),
    flags=st.sampled_from([0, mmap.MAP_SHARED | mmap.MAP_PRIVATE, mmap.MAP_SHARED]),
)
def test_a_refused_mmap_leaves_the_snapshot_equal(offset: int, pages: int, flags: int) -> None:
    """Charter (bad input) and R1/R5: an mmap the kernel refuses changes nothing a
    snapshot sees — vmas, fds, f_count, PTEs, page counts, the dma-buf's counts."""
    p, fd, _addr = _mapped()
    before = snapshot(p)
    with pytest.raises(OSError):
        p.mmap(0, pages * PAGE, RW, flags, fd, offset)  # an unaligned offset: always refused
    assert snapshot(p) == before
    assert before.diff(snapshot(p)) == []


def test_diff_names_what_changed() -> None:
    p, fd, addr = _mapped()
    before = snapshot(p)
    p.munmap(addr + PAGE, PAGE)
    p.close(fd)
    lines = before.diff(snapshot(p))
    assert any(line.startswith("- fd ") for line in lines)
    assert any(line.startswith("- pte ") is False and "f_count 1" in line for line in lines)
    assert f"- {before.maps[0]}" in lines
    assert [s for s in snapshot(p).maps] == [
        type(before.maps[0])(addr, addr + PAGE, "rw-s", 0, "/dmabuf:", before.maps[0].flags)
    ]


def test_another_file_at_the_same_fd_is_a_change() -> None:
    """close then dup of another dma-buf: the fd number comes back, with the same path
    and flags, on another file."""
    p, a, _addr = _mapped()
    b = EXPORTERS["system_heap"].make_fd(p, 4 * PAGE, os.O_RDWR)
    p.memfd_create("low")  # takes the free fd below a
    before = snapshot(p)
    p.close(a)
    assert p.dup(b) == a  # the lowest free fd
    after = snapshot(p)
    was = next(f for f in before.fds if f.fd == a)
    now = next(f for f in after.fds if f.fd == a)
    assert (was.path, was.f_flags, was.f_pos) == (now.path, now.f_flags, now.f_pos)
    assert now.identity == next(f.identity for f in before.fds if f.fd == b)
    assert was != now and after != before


def test_a_kernel_snapshot_covers_every_process_and_the_dma_bufs() -> None:
    p, fd, _addr = _mapped()
    k = p.kernel
    child = p.fork()
    before = snapshot(k)
    assert isinstance(before, KernelSnapshot)
    assert [s.pid for s in before.processes] == [p.pid, child.pid]
    assert [d.f_count for d in before.dma_bufs] == [4]  # two fds, two mappings
    child.exit()
    p.close(fd)
    lines = before.diff(snapshot(k))
    assert f"- process {child.pid} (snap)" in lines
    assert lines[-1].startswith("+ dma-buf ") and lines[-1].endswith(
        "f_count 1 attachments 0 vmaps 0"
    )
    assert isinstance(snapshot(p), ProcessSnapshot)


def test_misuse_says_what_to_pass() -> None:
    with pytest.raises(TypeError, match="a Process or a Kernel"):
        snapshot("kit")  # type: ignore[call-overload]
    p, _fd, _addr = _mapped()
    with pytest.raises(TypeError, match="another ProcessSnapshot"):
        snapshot(p).diff(snapshot(p.kernel))  # type: ignore[arg-type]
