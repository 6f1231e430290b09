"""The step-through view: frames cut at userspace calls, narration, changes, the page.

The browser test (test_stepview_browser.py) clicks through a page; these tests
check what the page is made of, without a browser.
"""

from __future__ import annotations

import doctest
import json
import mmap
import os
import re
from html.parser import HTMLParser

import pytest

from dmabuf_sim import Kernel, narrate, stepview, strace, trace
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.picture import snapshot_graph
from dmabuf_sim.picture.state import GraphIds
from dmabuf_sim.runs import run_named, suggest_exporter
from dmabuf_sim.spec import DEFAULT_SPEC, SPECS
from dmabuf_sim.stepview import Recorder, walkthrough
from dmabuf_sim.tour import tour_steps, tour_walkthrough
from dmabuf_sim.uapi import DMA_BUF_IOCTL_SYNC, DmaBufSync

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def recorded(spec: str = "v6.12") -> tuple[Kernel, Recorder, int]:
    k = Kernel(spec)
    p = k.spawn("app")
    fd = EXPORTERS["cma_heap"].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    rec = Recorder.attach(k)
    k.tracer.enabled = True
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr + PAGE, b"hi")
    p.munmap(addr, PAGE)
    with pytest.raises(OSError):
        p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)  # R1
    rec.finish()
    return k, rec, addr


def test_one_frame_per_userspace_call_with_narration_and_changes() -> None:
    _k, rec, addr = recorded()
    mmap_f, store, unmap, failed = rec.frames
    assert mmap_f.call == f"mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 1, 0) = {addr:#x}"
    assert mmap_f.narration == (
        f"app-1 maps 8192 bytes of fd 1 (PROT_READ|PROT_WRITE, MAP_SHARED);"
        f" the mapping starts at {addr:#x}."
    )
    assert mmap_f.effects == ("vmas 0 → 1",)  # the CMA heap maps nothing until a fault
    assert "p1_vma0" in mmap_f.changed and "cma_heap_mmap()" in mmap_f.trace
    # the store faults into the exporter's handler, which answers in vm_fault_t
    assert store.kind == "access"
    assert store.narration == (
        f"app-1 stores 2 bytes at {addr + PAGE:#x}. The access faulted:"
        " cma_heap_vm_fault answered VM_FAULT_NOPAGE."
    )
    assert store.effects == ("PTEs 0 → 1", "dirty cache lines 0 → 1")
    page = next(n for n in store.graph.nodes if n.kind == "page") if store.graph else None
    assert page is not None and page.id in store.changed and "dirty" in page.marks
    assert ("dmabuf0", page.id, "page 1") in store.new_edges  # the buffer's page, linked
    # munmap of the first, never touched, page: __split_vma leaves a new vma, no PTE goes
    assert unmap.effects == () and "p1_vma1" in unmap.changed
    assert unmap.gone == (f"vma {addr:#x}-{addr + 2 * PAGE:#x}",)
    assert failed.alert and failed.call.endswith("= -1 EINVAL (Invalid argument)")
    assert failed.narration == (
        "app-1 calls mmap, which fails with EINVAL (Invalid argument)."
        " dma_buf_mmap_internal returned it."
    )


def test_graph_ids_stay_put_across_snapshots() -> None:
    k = Kernel("v6.12")
    p = k.spawn("app")
    fds = [EXPORTERS["system_heap"].make_fd(p, PAGE, os.O_RDWR) for _ in range(2)]
    ids = GraphIds()
    before = snapshot_graph(k, ids=ids)
    p.close(fds[0])  # the first buffer goes: without stable ids the second would move
    after = snapshot_graph(k, ids=ids)
    assert {n.id for n in before.of_kind("dma_buf")} == {"dmabuf0", "dmabuf1"}
    assert [n.id for n in after.of_kind("dma_buf")] == ["dmabuf1"]
    assert [n.id for n in snapshot_graph(k).of_kind("dma_buf")] == ["dmabuf0"]  # default


def test_walkthrough_runs_every_spec_and_says_why_one_cannot() -> None:
    view = walkthrough("round-trip")
    assert list(view.runs) == list(SPECS) and view.default_spec == DEFAULT_SPEC
    skipped = view.runs["v3.5"]
    assert skipped.status == "skipped"
    assert skipped.ending == (
        "round-trip [system_heap, spec v3.5]: skipped (spec v3.5 has no dma-heaps)",
        "  try --exporter simple, which exists on v3.5",
    )
    (note,) = skipped.frames
    assert note.kind == "note" and "try --exporter simple" in note.narration
    ran = view.runs["v6.12"]
    calls = [f.call.split("(")[0] for f in ran.frames]
    assert calls[:4] == ["open", "ioctl", "close", "mmap"]
    device = [f for f in ran.frames if f.kind == "kernel"]
    assert device and device[0].narration == (
        "Kernel side, no system call: the device gpu maps the buffer, reads it by DMA, then"
        " unmaps it; the device gpu maps the buffer, writes it by DMA, then unmaps it."
    )
    assert not any("kit-probe" in f.trace for f in ran.frames)  # the harness's own calls


def test_page_is_self_contained_and_carries_every_run() -> None:
    view = walkthrough("no-fault-handler", specs=["v3.5", "v6.12"])
    page = view.to_html()
    ids: list[str] = []
    sources: list[str] = []

    class Ids(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if found.get("id"):
                ids.append(str(found["id"]))
            for key in ("src", "href"):
                if found.get(key):
                    sources.append(str(found[key]))

    Ids().feed(page)
    for needed in ("spec", "prev", "next", "counter", "call", "narration", "trace", "picture"):
        assert needed in ids
    assert sources == []  # no script, style, font or image is fetched
    blob = re.search(
        r'<script type="application/json" id="walkthrough-data">(.*?)</script>', page, re.S
    )
    assert blob is not None
    data = json.loads(blob.group(1))
    assert data["specs"] == ["v3.5", "v6.12"] and data["default"] == "v6.12"
    v612 = data["runs"]["v6.12"]["frames"]
    assert [f["kind"] for f in v612] == ["kernel", "syscall", "access", "access"]
    assert v612[2]["call"].endswith("= ? SIGBUS {si_code=BUS_ADRERR, si_addr=0x7effffffe000}")
    assert v612[2]["alert"] is True
    assert v612[2]["narration"] == (
        "story-1's load at 0x7effffffe000 ends in SIGBUS. The access faulted; there is no"
        " fault handler, so do_fault answered VM_FAULT_SIGBUS."
    )
    v35 = data["runs"]["v3.5"]["frames"]
    assert v35[2]["call"] == 'read_memory(0x7effffffe000, 1) = "\\0"'
    assert "no driver's fault handler ran: do_anonymous_page" in v35[2]["narration"]
    svg = data["svgs"][v612[1]["svg"]]
    assert svg.startswith("<svg") and 'class="vma changed"' in svg
    assert data["runs"]["v3.5"]["ending"][2] == "  read first byte: ok: 00"


def test_tour_walkthrough_has_chapters_and_notes_per_spec() -> None:
    view = tour_walkthrough(specs=["v3.4", "v6.12"])
    frames = view.runs["v6.12"].frames
    chapters = list(dict.fromkeys(f.chapter for f in frames))
    assert chapters == [f"Step {i}: {s.title}" for i, s in enumerate(tour_steps(), 1)]
    assert any(f.call.startswith("mmap(NULL, 16384") for f in frames)
    assert view.runs["v6.12"].ending == ("tour on v6.12: 8 of 8 steps ran",)
    old = view.runs["v3.4"]
    assert old.ending[0] == "tour on v3.4: 1 of 8 steps ran"
    assert old.ending[1].startswith("Steps 2-8: v3.4 has no dma-buf mmap (it arrived in 3.5)")
    assert any("mmap fails: No such device (ENODEV)" in f.narration for f in old.frames)


def test_notebook_forms() -> None:
    view = walkthrough("rfc-uninitialised-read", specs=["rfc-2012"])
    assert repr(view) == (
        "<Walkthrough 'rfc-uninitialised-read: the RFC as posted reads an uninitialised"
        " pointer': rfc-2012 (ran, 2 steps)>"
    )
    frame = view.runs["rfc-2012"].frames[1]
    assert frame.alert and "oops in dma_buf_mmap_internal" in frame.call
    assert view._repr_html_().startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;')
    run = run_named("mmap-bounds", "v3.4")
    assert repr(run) == "<NamedRun mmap-bounds [spec v3.4]: ran>"
    assert "<li>mmap 2 pages at 0: ENODEV</li>" in run._repr_html_()


def test_suggestions_name_something_that_works() -> None:
    assert suggest_exporter("v3.5") == "try --exporter simple, which exists on v3.5"
    assert suggest_exporter("v3.4") == "no exporter can be mapped on v3.4; try --spec v3.5"
    assert suggest_exporter("rfc-2012").endswith("(where every mmap of a dma-buf oopses: R61)")
    assert suggest_exporter("v6.12", exclude="system_heap").startswith("try --exporter simple")


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(stepview)
    assert result.attempted >= 3 and result.failed == 0


def _literal_lines(doc: str, which: int = 0) -> list[str]:
    """The lines of a docstring's ``which``-th ``::`` literal block, stripped."""
    block = doc.split("::\n\n")[which + 1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()]


def test_docstring_examples_are_what_the_code_prints() -> None:
    _k, rec, addr = recorded()
    assert addr == 0x7EFFFFFFE000
    narrations = [rec.frames[2].narration, rec.frames[3].narration]
    assert _literal_lines(narrate.__doc__ or "") == narrations
    k = Kernel("v6.12")
    p = k.spawn("app")
    fd = EXPORTERS["system_heap"].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    with k.trace() as events:
        p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(3))  # START|RW
        with pytest.raises(OSError):
            p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    printed = strace.format_strace(events, show_task=False).splitlines()
    assert _literal_lines(strace.__doc__ or "") == printed
    graph = [line.strip() for line in trace.format_function_graph(events).splitlines()[:2]]
    assert _literal_lines(trace.__doc__ or "", 1) == graph
