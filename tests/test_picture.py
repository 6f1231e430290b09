"""Pictures: state graphs (Mermaid, DOT, SVG) and trace sequence diagrams.

States are built with the public API only, and checked against the kernel's
objects read directly (page tables, the CPU cache, the anon inode).
"""

from __future__ import annotations

import doctest
import mmap
import os
import re
import shutil
import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from dmabuf_sim import SIGSEGV, Kernel, KernelOops, Process, picture
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import pte_pfn
from dmabuf_sim.picture import (
    Graph,
    Sequence,
    sequence_from_trace,
    sequence_to_mermaid,
    sequence_to_svg,
    snapshot_graph,
    to_dot,
    to_mermaid,
    to_svg,
    to_svg_fallback,
    write_picture,
)
from dmabuf_sim.picture.sequence import Call, Note, Return
from dmabuf_sim.replay import make_buffer
from dmabuf_sim.trace import TraceEvent
from dmabuf_sim.uapi import DMA_BUF_SET_NAME

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
SVG_NS = "{http://www.w3.org/2000/svg}"


# -- states ---------------------------------------------------------------------------
class HeapState:
    """v6.12: a 4-page system-heap buffer mapped shared, 200 bytes written at +100."""

    def __init__(self) -> None:
        self.k = Kernel("v6.12")
        self.p = self.k.spawn("demo")
        self.fd = make_buffer(self.p, "system_heap", 4)
        with self.k.trace() as events:
            self.addr = self.p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, self.fd, 0)
        self.mmap_events: list[TraceEvent] = events
        self.p.write_memory(self.addr + 100, b"x" * 200)
        self.file = self.p.file(self.fd)
        self.vma = self.p.mm.vmas[0]
        self.pfns = [pte_pfn(pte) for _vpn, pte in sorted(self.p.mm.pgtable.entries.items())]


@pytest.fixture
def heap() -> HeapState:
    return HeapState()


def old_spec_two_buffers(exporters: tuple[str, str]) -> tuple[Kernel, Process, list[int]]:
    """v3.5: two kernel-side buffers, each mapped shared and written once."""
    k = Kernel("v3.5")
    p = k.spawn("old")
    fds = [EXPORTERS[name].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC) for name in exporters]
    addrs = [p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0) for fd in fds]
    for a in addrs:
        p.write_memory(a, b"y" * 10)
    return k, p, addrs


def svg_text(svg: str) -> str:
    root = ET.fromstring(svg)
    assert root.tag == SVG_NS + "svg"
    return "\n".join("".join(el.itertext()) for el in root.iter(SVG_NS + "text"))


@pytest.fixture
def no_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None)


# -- the graph ------------------------------------------------------------------------
def test_graph_follows_pointers_from_process_to_pages(heap: HeapState) -> None:
    g = snapshot_graph(heap.k)
    ino = heap.file.f_inode.i_ino
    assert {"p1", "p1_vma0", "file0", f"ino{ino}", f"as{ino}", "dmabuf0"} <= g.ids()
    assert g.successors("p1", "mm") == ("p1_vma0",)
    assert g.successors("p1", "fd") == ("file0",)
    assert g.successors("p1_vma0", "vm_file") == ("file0",)
    assert g.successors("file0", "f_inode") == (f"ino{ino}",)
    assert g.successors(f"ino{ino}", "i_mapping") == (f"as{ino}",)
    assert g.successors("dmabuf0", "dmabuf_file") == ("file0",)
    assert g.successors("p1_vma0", "pte") == tuple(f"pfn{pfn:#x}" for pfn in heap.pfns)
    assert g.node("p1").title == "demo-1"
    assert g.node("file0").title == "/dmabuf:"
    vma = g.node("p1_vma0")
    assert vma.title == f"vma {heap.vma.vm_start:#x}-{heap.vma.vm_end:#x}"
    assert "PTEs: 4 present" in vma.lines
    assert "4 × rw special WB" in vma.lines  # system heap: remap_pfn_range, write-back


def test_pte_edges_name_offset_and_flags(heap: HeapState) -> None:
    g = snapshot_graph(heap.k)
    labels = [e.label for e in g.edges if e.kind == "pte"]
    assert labels == [f"pte +{i * PAGE:#x} rw special WB" for i in range(4)]


def test_dirty_lines_are_counted_on_their_page(heap: HeapState) -> None:
    g = snapshot_graph(heap.k)
    first = g.node(f"pfn{heap.pfns[0]:#x}")
    expected = len(heap.k.cache.dirty_lines_in(heap.pfns[0] << PAGE_SHIFT, PAGE))
    assert expected == 4  # bytes 100..299 of the first page span lines 1..4
    assert f"dirty lines: {expected}" in first.lines
    assert "dirty" in first.marks
    second = g.node(f"pfn{heap.pfns[1]:#x}")
    assert "dirty" not in second.marks
    assert not any(line.startswith("dirty lines") for line in second.lines)


def test_graph_is_a_deterministic_value() -> None:
    a, b = HeapState(), HeapState()
    ga, gb = snapshot_graph(a.k), snapshot_graph(b.k)
    assert ga == gb
    assert to_mermaid(ga) == to_mermaid(gb)
    assert to_svg_fallback(ga) == to_svg_fallback(gb)


def test_graph_is_sparse_for_a_huge_lazily_faulted_buffer() -> None:
    k = Kernel("v6.12")
    p = k.spawn("huge")
    size = 1 << 30  # 262144 pages, two of them touched
    fd = EXPORTERS["cma_heap"].make_fd(p, size, os.O_RDWR | os.O_CLOEXEC)
    a = p.mmap(0, size, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(a + 12345 * PAGE, b"x")
    p.read_memory(a + size // 2, 1)
    g = snapshot_graph(k)
    assert len(g.of_kind("page")) == 2
    assert "PTEs: 2 present" in g.node("p1_vma0").lines


def test_pages_over_the_cap_are_counted_not_drawn() -> None:
    k = Kernel("v6.12")
    p = k.spawn("big")
    fd = make_buffer(p, "system_heap", 40)
    a = p.mmap(0, 40 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(a + 39 * PAGE, b"last page")
    g = snapshot_graph(k, max_pages=8)
    pages = g.of_kind("page")
    assert len(pages) == 8
    assert "(32 more PTEs not drawn)" in g.node("p1_vma0").lines
    assert any("dirty" in n.marks for n in pages)  # the dirty page is drawn first


def test_processes_filter_keeps_what_they_reach(heap: HeapState) -> None:
    other = heap.k.spawn("other")
    fd = make_buffer(other, "system_heap", 1)
    other.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    everything = snapshot_graph(heap.k)
    mine = snapshot_graph(heap.k, processes=[heap.p])
    assert {"p1", "p2"} <= everything.ids()
    assert "p1" in mine.ids() and "p2" not in mine.ids()
    assert len(mine.of_kind("dma_buf")) == 1  # only the buffer p1's file belongs to
    assert snapshot_graph(heap.k, processes=[2]).successors("p2", "mm") == ("p2_vma0",)


def test_old_spec_dma_buf_files_share_one_anon_inode_node() -> None:
    k, _p, _addrs = old_spec_two_buffers(("shared_file_zap", "shared_file_zap"))
    g = snapshot_graph(k)
    anon = f"ino{k.anon_inode.i_ino}"
    files = [g.successors(f"p1_vma{i}", "vm_file")[0] for i in range(2)]
    assert files[0] != files[1]  # two buffers, two files ...
    assert [g.successors(f, "f_inode") for f in files] == [(anon,), (anon,)]  # ... one inode
    assert [n.id for n in g.of_kind("inode")] == [anon]
    assert len(g.of_kind("address_space")) == 1
    assert "shared" in g.node(anon).marks
    assert "i_mmap: 2 vmas" in g.node(f"as{k.anon_inode.i_ino}").lines
    assert all(n.title == "anon_inode:dmabuf" for n in g.of_kind("file"))


def test_old_spec_shootdown_swaps_in_its_own_file() -> None:
    k, p, _addrs = old_spec_two_buffers(("shootdown", "shared_file_zap"))
    g = snapshot_graph(k)
    anon = f"ino{k.anon_inode.i_ino}"
    dmabuf_files = [g.successors(n.id, "dmabuf_file")[0] for n in g.of_kind("dma_buf")]
    assert [g.successors(f, "f_inode") for f in dmabuf_files] == [(anon,), (anon,)]
    own = p.mm.vmas[1].vm_file
    assert own is not None and own.f_inode.i_sb == "shmem"  # R25: the vma holds the own file
    vma_file = g.successors("p1_vma1", "vm_file")[0]
    assert g.successors(vma_file, "f_inode") == (f"ino{own.f_inode.i_ino}",)
    mapped = set(g.successors("p1_vma1", "pte"))
    cached = set(g.successors(f"as{own.f_inode.i_ino}", "page_cache"))
    assert mapped and mapped <= cached  # the shmem page cache holds what the PTE maps


def test_freed_pages_still_mapped_are_flagged() -> None:
    k = Kernel("v6.12")
    p = k.spawn("uaf")
    fd = EXPORTERS["frees_while_mapped"].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    a = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.munmap(a, PAGE)  # the split-off vma closes and the exporter frees every page
    g = snapshot_graph(k)
    pages = g.of_kind("page")
    assert pages and all("unallocated" in n.marks for n in pages)
    assert "NOT ALLOCATED (freed)" in pages[0].lines


# -- Mermaid and DOT ------------------------------------------------------------------
_NODE_LINE = re.compile(r'^  (\w+)\["([^"]*)"\]$')


def test_mermaid_flowchart_has_ids_edges_and_classes(heap: HeapState) -> None:
    text = to_mermaid(snapshot_graph(heap.k))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    ino = heap.file.f_inode.i_ino
    dirty = f"pfn{heap.pfns[0]:#x}"
    for edge in (
        "  p1 --> p1_vma0",
        '  p1 -.->|"fd 1"| file0',
        '  p1_vma0 -->|"vm_file"| file0',
        f'  file0 -->|"f_inode"| ino{ino}',
        f'  ino{ino} -->|"i_mapping"| as{ino}',
        f'  p1_vma0 -->|"pte +0x0 rw special WB"| {dirty}',
        '  dmabuf0 ==>|"file"| file0',
    ):
        assert edge in lines
    defined = {m.group(1) for line in lines if (m := _NODE_LINE.match(line))}
    assert {"p1", "p1_vma0", "file0", f"ino{ino}", f"as{ino}", dirty, "dmabuf0"} <= defined
    for name in ("process", "vma", "file", "inode", "mapping", "page", "dmabuf", "dirty"):
        assert any(line.startswith(f"  classDef {name} ") for line in lines)
    assert f"  class {dirty} dirty" in lines


def test_mermaid_escapes_labels() -> None:
    k = Kernel("v6.12")
    p = k.spawn("esc")
    fd = make_buffer(p, "system_heap", 1)
    p.ioctl(fd, DMA_BUF_SET_NAME, 'a"b<c>#;|`')
    text = to_mermaid(snapshot_graph(k))
    node_lines = [line for line in text.splitlines() if '["' in line]
    assert node_lines and all(_NODE_LINE.match(line) for line in node_lines)
    assert "/dmabuf:a#34;b#60;c#62;#35;#59;#124;#96;" in text
    edge_lines = [line for line in text.splitlines() if "|" in line and "-->" in line]
    assert all(line.count("|") == 2 for line in edge_lines)


def test_dot_text_quotes_and_columns(heap: HeapState) -> None:
    text = to_dot(snapshot_graph(heap.k))
    assert text.startswith("digraph dmabuf_sim {")
    assert text.rstrip().endswith("}")
    assert '"p1" -> "p1_vma0";' in text
    assert '"p1_vma0" -> "file0" [label="vm_file"];' in text
    assert 'subgraph "kind_page" { rank=same;' in text
    assert "penwidth=3" in text  # the dirty page
    quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    assert any(q.startswith("demo-1\\l") for q in quoted)


# -- SVG --------------------------------------------------------------------------------
def test_svg_fallback_names_the_objects(heap: HeapState, no_dot: None) -> None:
    svg = to_svg(snapshot_graph(heap.k))
    text = svg_text(svg)
    for needle in (
        "demo-1",
        f"vma {heap.vma.vm_start:#x}-{heap.vma.vm_end:#x}",
        "/dmabuf:",
        f"inode {heap.file.f_inode.i_ino}",
        f"pfn {heap.pfns[0]:#x}",
        "dirty lines: 4",
        "Legend",
    ):
        assert needle in text
    ids = {el.get("id") for el in ET.fromstring(svg).iter(SVG_NS + "g")}
    assert {"p1", "p1_vma0", "file0", f"pfn{heap.pfns[0]:#x}", "legend"} <= ids


def test_svg_fallback_old_spec_shows_one_anon_inode(no_dot: None) -> None:
    k, _p, _addrs = old_spec_two_buffers(("shootdown", "shared_file_zap"))
    svg = to_svg(snapshot_graph(k))
    text = svg_text(svg)
    assert "anon_inode:dmabuf" in text
    assert text.count(f"inode {k.anon_inode.i_ino}\n") == 1
    assert "dirty lines: 1" in text


def test_svg_fallback_is_self_contained(heap: HeapState) -> None:
    svg = to_svg_fallback(snapshot_graph(heap.k))
    root = ET.fromstring(svg)
    assert not list(root.iter(SVG_NS + "style"))
    assert not list(root.iter(SVG_NS + "image"))
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert "@import" not in svg and "@font-face" not in svg


def _boxes(svg: str) -> list[tuple[float, float, float, float]]:
    root = ET.fromstring(svg)
    out = []
    for g in root.iter(SVG_NS + "g"):
        if g.get("class") is None:
            continue
        rect = g.find(SVG_NS + "rect")
        assert rect is not None
        out.append(tuple(float(rect.get(a, "0")) for a in ("x", "y", "width", "height")))
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("spec_state", ["heap", "old", "fork"])
def test_svg_fallback_boxes_do_not_overlap_and_fit(spec_state: str) -> None:
    if spec_state == "heap":
        k = HeapState().k
    elif spec_state == "old":
        k = old_spec_two_buffers(("shootdown", "shared_file_zap"))[0]
    else:
        k = Kernel("v6.12")
        p = k.spawn("parent")
        fd = make_buffer(p, "udmabuf", 3)
        a = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        p.write_memory(a, b"p")
        p.fork().write_memory(a + PAGE, b"c")
    svg = to_svg_fallback(snapshot_graph(k))
    root = ET.fromstring(svg)
    width, height = float(root.get("width", "0")), float(root.get("height", "0"))
    boxes = _boxes(svg)
    assert boxes
    for i, (x, y, w, h) in enumerate(boxes):
        assert x >= 0 and y >= 0
        assert x + w <= width and y + h <= height
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def test_empty_kernel_draws(no_dot: None) -> None:
    g = snapshot_graph(Kernel("v6.12"))
    assert g.nodes == ()
    ET.fromstring(to_svg(g))
    assert to_mermaid(g).startswith("flowchart LR\n")


def _fake_dot(tmp_path: Path, body: str) -> str:
    script = tmp_path / "dot"
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_to_svg_runs_dot_when_on_path(
    heap: HeapState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_dot(
        tmp_path,
        "import sys\n"
        "assert sys.argv[1:] == ['-Tsvg']\n"
        "src = sys.stdin.read()\n"
        "first = src.splitlines()[0]\n"
        "ns = 'http://www.w3.org/2000/svg'\n"
        "print(f'<svg xmlns=\"{ns}\"><text>fake dot: {first}</text></svg>')\n",
    )
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: fake if name == "dot" else None)
    svg = to_svg(snapshot_graph(heap.k))
    assert svg_text(svg) == "fake dot: digraph dmabuf_sim {"


def test_to_svg_falls_back_when_dot_fails(
    heap: HeapState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_dot(tmp_path, "import sys\nsys.exit(3)\n")
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: fake if name == "dot" else None)
    assert "demo-1" in svg_text(to_svg(snapshot_graph(heap.k)))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
def test_to_svg_with_real_graphviz(heap: HeapState) -> None:
    svg = to_svg(snapshot_graph(heap.k))
    text = svg_text(svg)
    assert "demo-1" in text and "dirty lines: 4" in text


# -- sequence diagrams -----------------------------------------------------------------------
def _calls(seq: Sequence) -> list[Call]:
    return [s for s in seq.steps if isinstance(s, Call)]


def _returns(seq: Sequence) -> dict[str, Return]:
    return {s.func: s for s in seq.steps if isinstance(s, Return)}


def test_mmap_sequence_crosses_subsystems_in_order(heap: HeapState) -> None:
    seq = sequence_from_trace(heap.mmap_events)
    assert [line.label for line in seq.lifelines] == [
        "demo-1",
        "mm",
        "vfs",
        "dma-buf core",
        "exporter",
    ]
    calls = _calls(seq)
    names = [c.func for c in calls]
    order = ["do_mmap", "mmap_region", "dma_buf_mmap_internal", "system_heap_mmap"]
    positions = [names.index(n) for n in order]
    assert positions == sorted(positions)
    by_name = {c.func: c for c in calls}
    assert (calls[0].src, calls[0].dst) == ("t1", "mm")
    assert (by_name["call_mmap"].src, by_name["call_mmap"].dst) == ("mm", "vfs")
    assert (by_name["dma_buf_mmap_internal"].src, by_name["dma_buf_mmap_internal"].dst) == (
        "vfs",
        "dmabuf",
    )
    assert (by_name["system_heap_mmap"].src, by_name["system_heap_mmap"].dst) == (
        "dmabuf",
        "exporter",
    )
    assert (by_name["remap_pfn_range"].src, by_name["remap_pfn_range"].dst) == ("exporter", "mm")
    rets = _returns(seq)
    assert rets["do_mmap"].value == hex(heap.addr)
    assert rets["dma_buf_mmap_internal"].value == "0"
    assert rets["system_heap_mmap"].value == "0"
    assert (rets["__x64_sys_mmap"].src, rets["__x64_sys_mmap"].dst) == ("mm", "t1")
    assert not any(r.error for r in rets.values())


def test_mmap_sequence_mermaid(heap: HeapState) -> None:
    text = sequence_to_mermaid(sequence_from_trace(heap.mmap_events))
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    assert "  participant t1 as demo-1 (user)" in lines
    wanted = [
        "  t1->>+mm: __x64_sys_mmap(",
        "  mm->>+mm: do_mmap(",
        "  mm->>+mm: mmap_region(",
        "  vfs->>+dmabuf: dma_buf_mmap_internal(",
        "  dmabuf->>+exporter: system_heap_mmap(",
        "  exporter-->>-dmabuf: system_heap_mmap = 0",
        "  dmabuf-->>-vfs: dma_buf_mmap_internal = 0",
        f"  mm-->>-mm: do_mmap = {heap.addr:#x}",
        f"  mm-->>-t1: __x64_sys_mmap = {heap.addr:#x}",
    ]
    at = [next(i for i, line in enumerate(lines) if line.startswith(w)) for w in wanted]
    assert at == sorted(at)
    assert text.count("->>+") == text.count("-->>-")


def test_failing_mmap_returns_errno_names() -> None:
    k = Kernel("v6.12")
    p = k.spawn("bad")
    fd = make_buffer(p, "system_heap", 4)
    with k.trace() as events, pytest.raises(OSError):
        p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 8 * PAGE)  # past the end of the buffer
    seq = sequence_from_trace(events)
    ret = _returns(seq)["dma_buf_mmap_internal"]
    assert ret.value == "-22 EINVAL" and ret.error
    text = sequence_to_mermaid(seq)
    assert "  dmabuf-->>-vfs: ✗ dma_buf_mmap_internal = -22 EINVAL" in text.replace("#10007;", "✗")
    assert "__x64_sys_mmap = -22 EINVAL" in text


def test_point_events_become_notes() -> None:
    k = Kernel("v6.12")
    p = k.spawn("segv")
    with k.trace() as events, pytest.raises(SIGSEGV):
        p.read_memory(0x1000, 1)
    seq = sequence_from_trace(events)
    notes = [s for s in seq.steps if isinstance(s, Note)]
    assert any(n.text.startswith("force_sig_fault") and n.alert for n in notes)
    assert "Note over mm: " in sequence_to_mermaid(seq)


def test_oops_is_an_alert_note_and_raised_returns() -> None:
    k = Kernel("rfc-2012")
    p = k.spawn("rfc")
    fd = EXPORTERS["simple"].make_fd(p, PAGE, os.O_RDWR | os.O_CLOEXEC)
    with k.trace() as events, pytest.raises(KernelOops):
        p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    seq = sequence_from_trace(events)
    oops = [s for s in seq.steps if isinstance(s, Note) and s.text.startswith("oops")]
    assert len(oops) == 1 and oops[0].alert and oops[0].over == "dmabuf"
    ret = _returns(seq)["dma_buf_mmap_internal"]
    assert ret.value == "raised KernelOops" and ret.error
    svg = sequence_to_svg(seq)
    assert "⚠ oops: dma_buf_mmap_internal" in svg_text(svg)


def test_long_traces_are_capped_and_stay_balanced() -> None:
    k = Kernel("v6.12")
    p = k.spawn("long")
    fd = make_buffer(p, "system_heap", 2)
    with k.trace() as events:
        for _ in range(30):
            p.munmap(p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0), 2 * PAGE)
    seq = sequence_from_trace(events, max_calls=50)
    calls = sum(1 for e in events if e.kind == "entry")
    assert seq.calls == calls and seq.omitted == calls - 50
    assert len(_calls(seq)) == 50
    assert len(_calls(seq)) == sum(isinstance(s, Return) for s in seq.steps)
    more = [s for s in seq.steps if isinstance(s, Note) and s.text.startswith("…")]
    assert [m.text for m in more] == [f"… {calls - 50} more calls not drawn (first 50 shown)"]
    text = sequence_to_mermaid(seq)
    assert text.count("->>+") == text.count("-->>-") == 50
    assert len(sequence_from_trace(events).steps) < len(events)  # default cap: 200 calls
    with pytest.raises(ValueError, match="max_calls"):
        sequence_from_trace(events, max_calls=0)


def test_trace_captured_mid_call_is_tolerated(heap: HeapState) -> None:
    assert heap.mmap_events[0].kind == "syscall"  # the strace record heads the trace
    late = sequence_from_trace(heap.mmap_events[4:])  # starts inside fget: its exit is dropped
    assert "fget" not in _returns(late)
    early = sequence_from_trace(heap.mmap_events[:-2])  # ends before the syscall returns
    ended = _returns(early)
    assert ended["__x64_sys_mmap"].text == "__x64_sys_mmap (trace ended)"
    assert ended["ksys_mmap_pgoff"].value == "(trace ended)"
    for seq in (late, early):
        ET.fromstring(sequence_to_svg(seq))
        calls = sum(isinstance(s, Call) for s in seq.steps)
        assert calls == sum(isinstance(s, Return) for s in seq.steps)


def test_sequence_svg_is_valid_and_labelled(heap: HeapState) -> None:
    svg = sequence_to_svg(sequence_from_trace(heap.mmap_events))
    text = svg_text(svg)
    for needle in (
        "demo-1 (user)",
        "dma-buf core",
        "exporter",
        "do_mmap(",
        "dma_buf_mmap_internal = 0",
        f"__x64_sys_mmap = {heap.addr:#x}",
    ):
        assert needle in text


def test_compact_sequence_draws_leaf_calls_in_one_row(heap: HeapState) -> None:
    full = sequence_from_trace(heap.mmap_events)
    compact = sequence_from_trace(heap.mmap_events, merge_leaves=True)
    leaves = [s for s in compact.steps if isinstance(s, Call) and s.returned is not None]
    assert [s.text.split("(")[0] for s in leaves].count("remap_pfn_range") == 4
    assert all(s.text.endswith(") = 0") for s in leaves if s.func == "remap_pfn_range")
    calls = sum(isinstance(s, Call) for s in compact.steps)
    returns = sum(isinstance(s, Return) for s in compact.steps)
    assert calls == returns + len(leaves) and len(compact.steps) < len(full.steps)
    assert "->>system_heap" not in sequence_to_mermaid(compact)  # Mermaid still parses ids
    assert "remap_pfn_range(" in svg_text(sequence_to_svg(compact))


def test_fault_handlers_return_vm_fault_names_in_sequences() -> None:
    k = Kernel("v6.12")
    p = k.spawn("faulter")
    fd = EXPORTERS["cma_heap"].make_fd(p, PAGE, os.O_RDWR | os.O_CLOEXEC)
    a = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    with k.trace() as events:
        p.read_memory(a, 1)
    returns = _returns(sequence_from_trace(events))
    assert returns["cma_heap_vm_fault"].value == "VM_FAULT_NOPAGE"
    note = sequence_from_trace(events).steps[0]
    assert isinstance(note, Note) and note.text.startswith(f"read_memory({a:#x}, 1) = ")


# -- dma-bufs own their pages; the legend explains the codes --------------------------------
def test_dma_buf_links_to_the_pages_backing_it(heap: HeapState) -> None:
    g = snapshot_graph(heap.k)
    links = [(e.dst, e.label) for e in g.edges if e.kind == "dmabuf_page"]
    assert links == [(f"pfn{pfn:#x}", f"page {i}") for i, pfn in enumerate(heap.pfns)]
    heap.p.munmap(heap.addr, 4 * PAGE)  # no PTE left; the dirty lines keep page 0 drawn
    g = snapshot_graph(heap.k)
    dirty = f"pfn{heap.pfns[0]:#x}"
    assert dirty in g.ids() and not g.successors("p1_vma0")
    assert [e.label for e in g.edges if e.dst == dirty] == ["page 0"]  # not floating alone


@pytest.mark.parametrize("exporter", ["cma_heap", "udmabuf", "vgem", "shootdown", "simple"])
def test_every_reference_exporter_links_its_pages(exporter: str) -> None:
    k = Kernel("v6.12")
    p = k.spawn("linker")
    fd = EXPORTERS[exporter].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    a = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(a + PAGE, b"!")
    g = snapshot_graph(k)
    (pte,) = [e.dst for e in g.edges if e.kind == "pte" and e.label.startswith("pte +0x1000")]
    assert tuple(e.label for e in g.edges if e.kind == "dmabuf_page" and e.dst == pte) == (
        "page 1",
    )


def test_legend_explains_the_vmflags_codes_shown(heap: HeapState, no_dot: None) -> None:
    text = svg_text(to_svg(snapshot_graph(heap.k)))
    assert "flags: rd wr sh mr mw me ms pf io de dd" in text
    legend = " ".join(line for line in text.splitlines() if "VmFlags" in line or "grow" in line)
    for code, meaning in (
        ("pf", "PFN map (no struct page)"),
        ("de", "cannot grow (mremap)"),
        ("dd", "not in core dumps"),
        ("io", "I/O memory"),
    ):
        assert f"{code} {meaning}" in legend.replace("\n", " ")


def test_changes_are_outlined(heap: HeapState) -> None:
    g = snapshot_graph(heap.k)
    edge = next((e.src, e.dst, e.label) for e in g.edges if e.kind == "pte")
    svg = to_svg_fallback(g, changed=frozenset({"p1_vma0"}), new_edges=frozenset({edge}))
    root = ET.fromstring(svg.split("\n", 1)[1])
    marked = [
        el.get("id") for el in root.iter(SVG_NS + "g") if "changed" in (el.get("class") or "")
    ]
    assert marked == ["p1_vma0"]
    assert len([el for el in root.iter(SVG_NS + "polyline") if el.get("class") == "new-edge"]) == 1
    assert "new or changed in this step" in svg_text(svg)
    assert "new or changed" not in svg_text(to_svg_fallback(g))


# -- files --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kind", "check"),
    [
        ("state.svg", "state", lambda t: ET.fromstring(t.split("\n", 1)[1]) is not None),
        ("state.mmd", "state", lambda t: t.startswith("flowchart LR\n")),
        ("state.md", "state", lambda t: t.startswith("```mermaid\nflowchart LR\n")),
        ("state.dot", "state", lambda t: t.startswith("digraph")),
        ("state.gv", "state", lambda t: t.startswith("digraph")),
        ("seq.svg", "sequence", lambda t: "do_mmap" in t),
        ("seq.mmd", "sequence", lambda t: t.startswith("sequenceDiagram\n")),
        ("seq.md", "sequence", lambda t: t.rstrip().endswith("```")),
    ],
)
def test_write_picture_picks_format_by_suffix(
    heap: HeapState, tmp_path: Path, no_dot: None, name: str, kind: str, check: Any
) -> None:
    out = write_picture(tmp_path / name, heap.k, heap.mmap_events, kind=kind)
    assert out == tmp_path / name
    assert check(out.read_text(encoding="utf-8"))


def test_write_picture_refuses_what_it_cannot_draw(heap: HeapState, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="picture format"):
        write_picture(tmp_path / "x.png", heap.k)
    with pytest.raises(ValueError, match="no DOT form"):
        write_picture(tmp_path / "x.dot", events=heap.mmap_events, kind="sequence")
    with pytest.raises(ValueError, match="needs kernel"):
        write_picture(tmp_path / "x.svg")
    with pytest.raises(ValueError, match="needs events"):
        write_picture(tmp_path / "x.svg", heap.k, kind="sequence")
    with pytest.raises(ValueError, match="kind must be"):
        write_picture(tmp_path / "x.svg", heap.k, kind="movie")
    assert not list(tmp_path.iterdir())


def test_package_docstring_example_runs() -> None:
    failed, attempted = doctest.testmod(picture)
    assert attempted > 0 and failed == 0


def test_graph_type_is_exported() -> None:
    assert isinstance(snapshot_graph(Kernel("v6.12")), Graph)
