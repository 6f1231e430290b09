"""The tracer: function_graph text and JSON lines of the mmap path."""

from __future__ import annotations

import contextlib
import json
import mmap
import os

import pytest

from dmabuf_sim import Kernel, load_everything
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.trace import KERNEL_FUNCTIONS, format_function_graph, format_jsonl, kernel_function

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH = mmap.MAP_SHARED


def traced_mmap(spec: str = "v6.12", offset: int = 0) -> tuple[Kernel, list, int | None]:
    k = Kernel(spec)
    p = k.spawn("tracee")
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = None
    with k.trace() as events, contextlib.suppress(OSError):
        addr = p.mmap(0, 2 * PAGE, R | W, SH, fd, offset)
    return k, events, addr


def test_function_graph_names_do_mmap_mmap_region_call_mmap_in_order() -> None:
    _, events, addr = traced_mmap()
    text = format_function_graph(events)
    lines = text.splitlines()

    def first(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    i_do, i_region, i_call, i_drv = (
        first("do_mmap() {"),
        first("mmap_region() {"),
        first("call_mmap() {"),
        first("simmem_mmap(); /* = 0 */"),
    )
    assert i_do < i_region < i_call < i_drv
    indent = [len(lines[i]) - len(lines[i].lstrip(" ")) for i in (i_do, i_region, i_call)]
    body = [lines[i].split("|", 1)[1] for i in (i_do, i_region, i_call, i_drv)]
    depth = [len(b) - len(b.lstrip(" ")) for b in body]
    assert depth[0] < depth[1] < depth[2] < depth[3]
    assert indent == sorted(indent)
    assert f"}} /* do_mmap = {addr:#x} */" in text
    # the userspace call heads its kernel lines, as strace prints it
    assert (
        lines[0]
        == f"[tracee-1] mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 0, 0) = {addr:#x}"
    )
    assert all(" tracee-1 " in line for line in lines[1:])
    assert text.endswith("\n")


def test_function_graph_shows_errno_of_failure() -> None:
    _, events, addr = traced_mmap(offset=16 * PAGE)
    assert addr is None
    text = format_function_graph(events)
    assert "simmem_mmap(); /* = -22 EINVAL */" in text
    assert "} /* mmap_region = -22 EINVAL */" in text
    assert "} /* __x64_sys_mmap = -22 EINVAL */" in text
    _, events, _ = traced_mmap(offset=-PAGE)
    text = format_function_graph(events)
    assert "do_mmap(); /* = -75 EOVERFLOW */" in text  # a leaf: file_mmap_ok said no
    assert "mmap_region" not in text


def test_jsonl_lines_parse_and_balance() -> None:
    _, events, addr = traced_mmap()
    text = format_jsonl(events)
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == len(events) > 0
    assert [r["seq"] for r in records] == sorted({r["seq"] for r in records})
    assert all({"seq", "ts", "pid", "comm", "depth", "kind", "func"} <= r.keys() for r in records)
    stack: list[str] = []
    for r in records:
        if r["kind"] == "entry":
            stack.append(r["func"])
        elif r["kind"] == "exit":
            assert stack.pop() == r["func"]
            assert "ret" in r
    assert stack == []
    do_mmap_exit = next(r for r in records if r["kind"] == "exit" and r["func"] == "do_mmap")
    assert do_mmap_exit["ret"] == addr
    funcs = [r["func"] for r in records if r["kind"] == "entry"]
    assert funcs.index("do_mmap") < funcs.index("mmap_region") < funcs.index("call_mmap")


def test_tracer_off_outside_capture_and_on_from_boot() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    p.open("/dev/simmem", os.O_RDWR)
    assert k.tracer.events == []
    k2 = Kernel("v6.12", trace=True)
    p2 = k2.spawn()
    p2.open("/dev/simmem", os.O_RDWR)
    assert "do_sys_open" in [e.func for e in k2.tracer.events]


def test_registry_knows_the_mm_functions_and_their_files() -> None:
    load_everything()
    for name, path in [
        ("do_mmap", "mm/mmap.c"),
        ("mmap_region", "mm/mmap.c"),
        ("remap_pfn_range", "mm/memory.c"),
        ("unmap_mapping_range", "mm/memory.c"),
        ("vma_set_file", "mm/util.c"),
        ("dup_mmap", "kernel/fork.c"),
    ]:
        assert KERNEL_FUNCTIONS[name].file == path


def test_registry_refuses_a_second_function_under_one_kernel_name() -> None:
    """Two Python functions claiming one C name would silently hide one of them."""
    load_everything()
    before = dict(KERNEL_FUNCTIONS)

    def do_mmap() -> None: ...

    with pytest.raises(ValueError, match=r"'do_mmap' is already registered by .*own key="):
        kernel_function("do_mmap", file="mm/mmap.c")(do_mmap)
    assert before == KERNEL_FUNCTIONS


def test_both_dma_buf_release_twins_are_registered_with_their_files() -> None:
    """3.x freed the buffer in f_op->release (drivers/base/dma-buf.c); since 5.x the dentry's
    d_release does (drivers/dma-buf/dma-buf.c): one C name, two registry entries, both traced
    as ``dma_buf_release``."""
    load_everything()
    twins = sorted(
        (info.file, info.python_location)
        for info in KERNEL_FUNCTIONS.values()
        if info.name == "dma_buf_release"
    )
    assert twins == [
        ("drivers/base/dma-buf.c", "dmabuf_sim/dma_buf/core.py:dma_buf_release_3x"),
        ("drivers/dma-buf/dma-buf.c", "dmabuf_sim/dma_buf/core.py:dma_buf_release"),
    ]
    for spec in ("v3.5", "v6.12"):
        k = Kernel(spec)
        p = k.spawn("tracee")
        fd = EXPORTERS["simple"].make_fd(p, PAGE, os.O_RDWR)
        with k.trace() as events:
            p.close(fd)
        assert [e.func for e in events if e.kind == "entry"].count("dma_buf_release") == 1, spec


def test_every_registered_function_names_where_its_python_twin_lives() -> None:
    load_everything()
    # (functions the tests declare for themselves, tests/test_observe.py's, live elsewhere)
    for info in [i for i in KERNEL_FUNCTIONS.values() if i.module.startswith("dmabuf_sim")]:
        path, _, qualname = info.python_location.partition(":")
        assert path.startswith("dmabuf_sim/") and path.endswith(".py"), info
        assert qualname == info.qualname, info


def test_mm_entry_points_trace_without_the_mm_and_the_old_methods_forward() -> None:
    """do_mmap & co. are functions over mm (as in mm/mmap.c); the trace leaves the mm
    out of their arguments, as it left out ``self`` when they were methods."""
    k = Kernel("v6.12")
    p = k.spawn("tracee")
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, R | W, SH, fd, 0)
    with k.trace() as events:
        assert p.mm.do_munmap(addr, PAGE) == 0  # the method forwards to do_munmap(mm, ...)
    entries = [e for e in events if e.kind == "entry" and e.func == "do_munmap"]
    assert len(entries) == 1
    assert entries[0].args == f"{addr:#x}, {PAGE:#x}"
