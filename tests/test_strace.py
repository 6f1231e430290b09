"""Userspace calls in traces, as strace prints them; filters that make traces readable.

Lines are compared whole: the symbolic flags, ioctl names, errno names and
``VM_FAULT_*`` codes are the point.
"""

from __future__ import annotations

import json
import mmap
import os

import pytest

from dmabuf_sim import Kernel, strace
from dmabuf_sim.conformance.scenarios import SCENARIOS, Harness
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device
from dmabuf_sim.dma_buf import (
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_map_attachment_unlocked,
    dma_buf_unmap_attachment_unlocked,
)
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.trace import (
    TraceEvent,
    format_function_graph,
    format_jsonl,
    hide_harness,
    hide_plumbing,
    vm_fault_name,
)
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    POLLIN,
    POLLOUT,
    DmaBufSync,
)

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def heap_process(spec: str = "v6.12") -> tuple[Kernel, object, int]:
    k = Kernel(spec)
    p = k.spawn("app")
    fd = EXPORTERS["system_heap"].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    return k, p, fd


def test_mmap_and_sync_ioctl_read_like_strace() -> None:
    k, p, fd = heap_process()
    with k.trace() as events:
        addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW))
        p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ))
    assert strace.format_strace(events).splitlines() == [
        f"[app-1] mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 1, 0) = {addr:#x}",
        "[app-1] ioctl(1, DMA_BUF_IOCTL_SYNC, {flags=DMA_BUF_SYNC_START|DMA_BUF_SYNC_RW}) = 0",
        "[app-1] ioctl(1, DMA_BUF_IOCTL_SYNC, {flags=DMA_BUF_SYNC_END|DMA_BUF_SYNC_READ}) = 0",
    ]
    # each call heads the kernel lines it caused
    text = format_function_graph(events).splitlines()
    assert text[0].startswith("[app-1] mmap(") and "__x64_sys_mmap() {" in text[1]


def test_failures_read_minus_one_errno_and_its_message() -> None:
    k, p, fd = heap_process()
    with k.trace() as events:
        with pytest.raises(OSError):
            p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)  # R1: past the end
        with pytest.raises(OSError):
            p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, -PAGE)  # R6: the C ABI's huge offset
        with pytest.raises(OSError):
            p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(0x40))  # R43
        with pytest.raises(OSError):
            p.close(99)
    assert strace.format_strace(events, show_task=False).splitlines() == [
        "mmap(NULL, 12288, PROT_READ|PROT_WRITE, MAP_SHARED, 1, 0) = -1 EINVAL (Invalid argument)",
        "mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_SHARED, 1, 0xfffffffffffff000)"
        " = -1 EOVERFLOW (Value too large for defined data type)",
        "ioctl(1, DMA_BUF_IOCTL_SYNC, {flags=DMA_BUF_SYNC_START|0x40})"
        " = -1 EINVAL (Invalid argument)",
        "close(99) = -1 EBADF (Bad file descriptor)",
    ]
    records = [json.loads(line) for line in format_jsonl(events).splitlines()]
    calls = [r for r in records if r["kind"] == "syscall"]
    assert [(r["func"], r["ret"], r["note"]) for r in calls] == [
        ("mmap", -22, "EINVAL"),
        ("mmap", -75, "EOVERFLOW"),
        ("ioctl", -22, "EINVAL"),
        ("close", -9, "EBADF"),
    ]


def test_files_seals_poll_and_memory_accesses() -> None:
    k = Kernel("v6.12")
    p = k.spawn("app")
    with k.trace() as events:
        memfd = p.memfd_create("pixels", 0x0001 | 0x0002)  # MFD_CLOEXEC|MFD_ALLOW_SEALING
        p.ftruncate(memfd, PAGE)
        p.fcntl(memfd, 1024 + 9, 0x0002 | 0x0004)  # F_ADD_SEALS, F_SEAL_SHRINK|F_SEAL_GROW
        sim = p.open("/dev/simmem", os.O_RDWR | os.O_CLOEXEC)
        addr = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_PRIVATE | 0x8000, sim, PAGE)
        p.read_memory(addr, 2)
        with pytest.raises(OSError):
            p.lseek(sim, 0, os.SEEK_END)  # simmem has no llseek
        with pytest.raises(Exception, match="SIGSEGV"):
            p.write_memory(addr, b"no")  # R32: PROT_READ mapping
        p.munmap(addr, PAGE)
    lines = strace.format_strace(events, show_task=False).splitlines()
    assert lines[:4] == [
        'memfd_create("pixels", MFD_CLOEXEC|MFD_ALLOW_SEALING) = 0',
        "ftruncate(0, 4096) = 0",
        "fcntl(0, F_ADD_SEALS, F_SEAL_SHRINK|F_SEAL_GROW) = 0",
        'open("/dev/simmem", O_RDWR|O_CLOEXEC) = 1',
    ]
    assert (
        lines[4] == f"mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_POPULATE, 1, 0x1000) = {addr:#x}"
    )
    assert lines[5].startswith(f"read_memory({addr:#x}, 2) = ")
    assert lines[6] == "lseek(1, 0, SEEK_END) = -1 ESPIPE (Illegal seek)"
    assert lines[7] == (
        f'write_memory({addr:#x}, "no", 2) = ? SIGSEGV {{si_code=SEGV_ACCERR, si_addr={addr:#x}}}'
    )
    assert lines[8] == f"munmap({addr:#x}, 4096) = 0"


def test_poll_and_set_name_on_a_dma_buf() -> None:
    k, p, fd = heap_process()
    with k.trace() as events:
        p.poll(fd, POLLIN | POLLOUT)
        p.ioctl(fd, 0x40086201, "frame")  # DMA_BUF_SET_NAME_B, as libc passes a char *
        with pytest.raises(OSError):
            p.ioctl(fd, 0x40086207, 0)  # nr 7 of 'b': no such dma-buf ioctl (R47)
    assert strace.format_strace(events, show_task=False).splitlines() == [
        "poll([{fd=1, events=POLLIN|POLLOUT}], 1, 0) = 1 ([{fd=1, revents=POLLIN|POLLOUT}])",
        'ioctl(1, DMA_BUF_SET_NAME_B, "frame") = 0',
        "ioctl(1, _IOC(_IOC_WRITE, 0x62, 0x7, 0x8), NULL)"
        " = -1 ENOTTY (Inappropriate ioctl for device)",
    ]


def test_vm_fault_codes_are_named_not_numbered() -> None:
    k = Kernel("v6.12")
    p = k.spawn("app")
    fd = EXPORTERS["cma_heap"].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    with k.trace() as events:
        p.read_memory(addr, 1)  # the CMA heap inserts the page at fault time
    text = format_function_graph(events)
    assert "cma_heap_vm_fault() {" in text
    assert "} /* cma_heap_vm_fault = VM_FAULT_NOPAGE */" in text
    assert "} /* handle_mm_fault = VM_FAULT_NOPAGE */" in text
    assert "= 256" not in text
    exits = [json.loads(x) for x in format_jsonl(events).splitlines()]
    fault = next(r for r in exits if r["kind"] == "exit" and r["func"] == "cma_heap_vm_fault")
    assert fault["ret"] == 0x100 and fault["note"] == "VM_FAULT_NOPAGE"
    assert vm_fault_name(0x102) == "VM_FAULT_SIGBUS|VM_FAULT_NOPAGE"
    assert vm_fault_name(0) == "0" and vm_fault_name(0x8000000) == "0x8000000"


def test_harness_probe_calls_are_hidden_on_request() -> None:
    """Calls made through a harness device (kit-probe) are hidden; the story's own stay."""
    h = Harness.create(EXPORTERS["system_heap"], "v6.12")
    h.kernel.tracer.enabled = True
    SCENARIOS["round-trip"](h)
    probe = Device(h.kernel, "kit-probe", coherent=True)
    dmabuf = h.world.buffers[0].dmabuf
    a = dma_buf_attach(dmabuf, probe)  # a harness looking at the pages behind the story's back
    sgt = dma_buf_map_attachment_unlocked(a, DMA_BIDIRECTIONAL)
    dma_buf_unmap_attachment_unlocked(a, sgt, DMA_BIDIRECTIONAL)
    dma_buf_detach(dmabuf, a)
    events = h.kernel.tracer.events
    assert any("kit-probe" in ev.args for ev in events)
    shown = hide_harness(events)
    assert not any("kit-probe" in f"{ev.args}{ev.ret}" for ev in shown)
    # the story's own device work stays, balanced
    assert [ev.func for ev in shown if ev.kind == "entry" and ev.depth == 0].count(
        "dma_buf_attach"
    ) == 2
    entries = sum(ev.kind == "entry" for ev in shown)
    assert entries == sum(ev.kind == "exit" for ev in shown)


def test_hide_plumbing_drops_refcounting_and_flattens_wrappers() -> None:
    k, p, fd = heap_process()
    with k.trace() as events:
        p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    shown = hide_plumbing(events)
    funcs = [ev.func for ev in shown if ev.kind == "entry"]
    assert "fget" not in funcs and "get_file" not in funcs and "ksys_mmap_pgoff" not in funcs
    assert funcs[:2] == ["__x64_sys_mmap", "do_mmap"]
    depth = {ev.func: ev.depth for ev in shown if ev.kind == "entry"}
    assert depth["do_mmap"] == depth["__x64_sys_mmap"] + 1
    truncated = hide_plumbing(events[:4])  # ends inside fget: nothing after it is lost
    assert [ev.kind for ev in truncated][:2] == ["syscall", "entry"]


def test_tracing_off_formats_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the tracer off no strace record is made or formatted (the hot path pays nothing)."""

    def boom(*_args: object) -> str:
        raise AssertionError("formatted while tracing was off")

    monkeypatch.setattr(strace, "format_args", boom)
    k, p, fd = heap_process()
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"quiet")
    assert p.read_memory(addr, 5) == b"quiet"
    assert k.tracer.events == []


def test_python_misuse_is_marked_not_hidden() -> None:
    k, p, _fd = heap_process()
    with k.trace() as events, pytest.raises(TypeError):
        p.mmap(0, "4096", RW, mmap.MAP_SHARED, 0, 0)  # type: ignore[arg-type]
    (record,) = events
    assert record.kind == "syscall" and record.note == "raised TypeError"
    assert strace.strace_line(record).endswith("= ? raised TypeError")


def test_decode_flags_and_unknown_values() -> None:
    names = ((1, "A"), (2, "B"))
    assert strace.decode_flags(3, names) == "A|B"
    assert strace.decode_flags(0x11, names) == "A|0x10"
    assert strace.decode_flags(0, names, zero="NONE") == "NONE"
    assert strace.ioctl_name(DMA_BUF_IOCTL_SYNC) == "DMA_BUF_IOCTL_SYNC"
    ev = TraceEvent(1, 1, 1, "a", 0, "syscall", "exit_group", "0")
    assert strace.strace_line(ev) == "exit_group(0) = ?"
    k = Kernel("v6.12")
    parent = k.spawn("parent")
    with k.trace() as events:
        child = parent.fork()
        child.exit()
    assert strace.format_strace(events).splitlines() == [
        f"[parent-1] fork() = {child.pid}",
        f"[parent-{child.pid}] exit_group(0) = ?",
    ]
