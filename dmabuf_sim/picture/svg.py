"""The state graph as SVG: Graphviz when installed, else a pure-Python column layout.

:func:`to_svg` runs ``dot -Tsvg`` on :func:`~dmabuf_sim.picture.dot.to_dot`'s
text when ``shutil.which("dot")`` finds Graphviz.  Otherwise (or if ``dot``
fails) it draws the graph itself:

* one column per node kind, left to right: process, vma, file, inode,
  address_space, page, dma_buf; boxes coloured by kind, title line in bold;
* within a column, boxes are ordered and placed near the average height of
  the boxes pointing at them, so most edges run nearly straight;
* edges to the next column are short polylines; edges that skip columns (a
  vma's PTEs to pages, a process's fds to files) travel along a horizontal
  track that avoids every box in between; the dma_buf→file edge goes round
  over the top.  Edge labels sit on the last stretch before the arrowhead;
* pages with dirty cache lines have a thick red border, shared inodes a
  thick one, freed-but-mapped pages a dashed red one; a legend explains it,
  and the ``VmFlags`` codes the vmas show;
* ``changed`` node ids get an amber halo and ``new_edges`` amber lines: the
  step-through view marks what a call changed this way.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict

from attrs import define

from ._svg import CHAR_W, FONT, LINE_H, SMALL, SMALL_W, Svg, fit
from .dot import to_dot
from .state import NODE_KINDS, Edge, Graph, Node

__all__ = ["VMFLAG_MEANINGS", "to_svg", "to_svg_fallback"]

VMFLAG_MEANINGS = {
    "rd": "readable",
    "wr": "writable",
    "ex": "executable",
    "sh": "shared",
    "mr": "may read",
    "mw": "may write",
    "me": "may execute",
    "ms": "may share",
    "gd": "grows down",
    "pf": "PFN map (no struct page)",
    "lo": "locked",
    "io": "I/O memory",
    "dc": "not copied on fork",
    "de": "cannot grow (mremap)",
    "rv": "reserved (3.x)",
    "ac": "accounted",
    "nr": "no swap reserve",
    "wf": "wiped on fork",
    "dd": "not in core dumps",
    "mm": "mixed map (pfns and pages)",
}
"""The two-letter ``VmFlags`` codes of /proc/PID/smaps, as the legend explains them."""
HIGHLIGHT = "#f59e0b"

STYLE = {  # kind -> (fill, stroke)
    "process": ("#dbeafe", "#1d4ed8"),
    "vma": ("#e0f2fe", "#0369a1"),
    "file": ("#fef9c3", "#a16207"),
    "inode": ("#ffedd5", "#c2410c"),
    "address_space": ("#fce7f3", "#be185d"),
    "page": ("#dcfce7", "#15803d"),
    "dma_buf": ("#ede9fe", "#6d28d9"),
}
PAD = 6
MAX_W = 360
VGAP = 20
PORT_GAP = 14
"""Vertical room per edge entering or leaving a box side (keeps labels apart)."""
MARGIN = 20
TITLE_H = 34
DOT_TIMEOUT = 30.0
LEGEND_W = 1000.0


def to_svg(graph: Graph) -> str:
    """SVG text for ``graph``: Graphviz ``dot`` if on PATH, else :func:`to_svg_fallback`."""
    dot = shutil.which("dot")
    if dot is not None:
        try:
            done = subprocess.run(
                [dot, "-Tsvg"],
                input=to_dot(graph),
                capture_output=True,
                text=True,
                timeout=DOT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and "<svg" in done.stdout:
            return done.stdout
    return to_svg_fallback(graph)


@define
class _Box:
    node: Node
    col: int
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h


@define
class _Layout:
    graph: Graph
    boxes: dict[str, _Box]
    columns: list[list[_Box]]
    col_x: list[float]
    col_w: list[float]
    top: float
    width: float = 0.0
    height: float = 0.0


def _label_w(text: str) -> float:
    return len(text) * SMALL_W


def _layout(graph: Graph) -> _Layout:
    kinds = [k for k in NODE_KINDS if any(n.kind == k for n in graph.nodes)]
    kinds += sorted({n.kind for n in graph.nodes} - set(kinds))
    col_of = {k: i for i, k in enumerate(kinds)}
    boxes = {n.id: _Box(n, col_of[n.kind]) for n in graph.nodes}
    degree_in: Counter[str] = Counter(e.dst for e in graph.edges)
    degree_out: Counter[str] = Counter(e.src for e in graph.edges)
    columns: list[list[_Box]] = [[] for _ in kinds]
    for box in boxes.values():
        box.w = min(MAX_W, (max(len(t) for t in box.node.lines) + 1) * CHAR_W + 2 * PAD)
        box.h = len(box.node.lines) * LINE_H + 2 * PAD
        ports = max(degree_in[box.node.id], degree_out[box.node.id])
        box.h = max(box.h, ports * PORT_GAP + 2 * PAD)
        columns[box.col].append(box)
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for e in graph.edges:
        if e.src in boxes and e.dst in boxes:
            preds[e.dst].append(e.src)
            succs[e.src].append(e.dst)
    back = sum(1 for e in graph.edges if _is_back(boxes, e))
    top: float = TITLE_H + MARGIN + 10 * back
    # columns left to right: x from the widest box and the labels of incoming edges
    col_w = [max(b.w for b in col) for col in columns]
    col_x: list[float] = []
    x: float = MARGIN
    for i in range(len(columns)):
        labels = [
            _label_w(e.label)
            for e in graph.edges
            if e.dst in boxes and boxes[e.dst].col == i and not _is_back(boxes, e)
        ]
        if i:
            x += max(70.0, min(250.0, max(labels, default=0.0) + 50))
        col_x.append(x)
        x += col_w[i]
    # rows: order by the average position of neighbours already placed, then pack
    for i, col in enumerate(columns):
        wants = {id(b): _wanted_y(b, boxes, preds, succs) for b in col}
        order = {id(b): k for k, b in enumerate(col)}
        col.sort(key=lambda b: (wants[id(b)], order[id(b)]))
        cursor = top
        for box in col:
            box.x = col_x[i]
            w = wants[id(box)]
            box.y = max(cursor, w - box.h / 2) if w != float("inf") else cursor
            cursor = box.bottom + VGAP
    layout = _Layout(graph, boxes, columns, col_x, col_w, top)
    layout.width = x + MARGIN + 12 * back
    layout.height = max((b.bottom for b in boxes.values()), default=top)
    return layout


def _wanted_y(
    box: _Box, boxes: dict[str, _Box], preds: dict[str, list[str]], succs: dict[str, list[str]]
) -> float:
    """The mean centre of the already placed boxes pointing at ``box`` (or it points at)."""
    near = [boxes[p].cy for p in preds[box.node.id] if boxes[p].col < box.col]
    if not near:
        near = [boxes[s].cy for s in succs[box.node.id] if boxes[s].col < box.col]
    return sum(near) / len(near) if near else float("inf")


def _is_back(boxes: dict[str, _Box], e: Edge) -> bool:
    return e.src in boxes and e.dst in boxes and boxes[e.dst].col <= boxes[e.src].col


def _ports(layout: _Layout) -> tuple[dict[int, float], dict[int, float]]:
    """y of each forward edge where it leaves its source and enters its target."""
    boxes = layout.boxes
    outs: dict[str, list[tuple[float, int]]] = defaultdict(list)
    ins: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for k, e in enumerate(layout.graph.edges):
        if e.src in boxes and e.dst in boxes and not _is_back(boxes, e):
            outs[e.src].append((boxes[e.dst].cy, k))
            ins[e.dst].append((boxes[e.src].cy, k))
    out_y: dict[int, float] = {}
    in_y: dict[int, float] = {}
    for table, result in ((outs, out_y), (ins, in_y)):
        for nid, items in table.items():
            box = boxes[nid]
            items.sort()
            for j, (_y, k) in enumerate(items):
                result[k] = box.y + box.h * (j + 1) / (len(items) + 1)
    return out_y, in_y


def _track(layout: _Layout, c0: int, c1: int, wanted: list[float], used: list[float]) -> float:
    """A y for a horizontal run across columns c0 < col < c1 that hits no box."""
    blocked = [(b.y - 6, b.bottom + 6) for col in layout.columns[c0 + 1 : c1] for b in col]

    def free(y: float) -> bool:
        return all(not lo <= y <= hi for lo, hi in blocked) and all(abs(y - u) >= 4 for u in used)

    candidates = list(wanted) + [lo - 1 for lo, _ in blocked] + [hi + 1 for _, hi in blocked]
    for _ in range(200):
        ok = [y for y in candidates if free(y) and y > layout.top - 8]
        if ok:
            return min(ok, key=lambda y: abs(y - wanted[0]))
        candidates = [y + 5 for y in candidates]
    return max((hi for _, hi in blocked), default=wanted[0]) + 8 + 5 * len(used)


def to_svg_fallback(
    graph: Graph,
    *,
    changed: frozenset[str] = frozenset(),
    new_edges: frozenset[tuple[str, str, str]] = frozenset(),
) -> str:
    """Draw ``graph`` without Graphviz (see the module docstring); valid, self-contained SVG.

    ``changed`` (node ids) and ``new_edges`` (``(src, dst, label)``) are drawn
    highlighted, in amber.
    """
    layout = _layout(graph)
    boxes = layout.boxes
    out_y, in_y = _ports(layout)
    polylines: list[tuple[list[tuple[float, float]], Edge]] = []
    labels: list[tuple[float, float, str]] = []
    used: list[float] = []
    nback = 0
    for k, e in enumerate(graph.edges):
        if e.src not in boxes or e.dst not in boxes:
            continue
        s, d = boxes[e.src], boxes[e.dst]
        if _is_back(boxes, e):
            lane = TITLE_H + MARGIN + 10 * nback - 4
            out_x = layout.col_x[s.col] + layout.col_w[s.col] + 10 + 12 * nback
            ch_x = layout.col_x[d.col] + layout.col_w[d.col] + 14 + 6 * nback
            yd = d.y + min(10.0, d.h / 2)
            pts = [
                (s.right, s.cy),
                (out_x, s.cy),
                (out_x, lane),
                (ch_x, lane),
                (ch_x, yd),
                (d.right, yd),
            ]
            polylines.append((pts, e))
            if e.label:
                labels.append((ch_x + 4, lane - 3, e.label))
            nback += 1
            continue
        ys, yd = out_y[k], in_y[k]
        gap = d.x - (layout.col_x[d.col - 1] + layout.col_w[d.col - 1])
        approach = max(18.0, min(gap - 26, _label_w(e.label) + 14))
        col_right = layout.col_x[s.col] + layout.col_w[s.col]
        pts = [(s.right, ys), (col_right + 8, ys)]  # clear of the wider boxes in the column
        if d.col > s.col + 1:
            y = _track(layout, s.col, d.col, [yd, ys], used)
            used.append(y)
            nxt = layout.col_x[s.col + 1]
            pts += [(max(col_right + 10, nxt - 12), y), (d.x - approach - 10, y)]
        pts += [(d.x - approach, yd), (d.x, yd)]
        polylines.append((pts, e))
        if e.label:
            labels.append((d.x - approach + 3, yd - 4, fit(e.label, approach - 6, SMALL_W)))
    flag_lines = _vmflag_legend(graph)
    svg = Svg(max(layout.width, LEGEND_W), layout.height + 120 + 14 * len(flag_lines), graph.title)
    svg.text(svg.root, MARGIN, MARGIN + 6, graph.title, font_weight="bold", font_size="14")
    g_edges = svg.group(id="edges")
    for pts, e in polylines:
        style = {"stroke_width": "2.2"} if e.kind == "dmabuf_file" else {}
        if (e.src, e.dst, e.label) in new_edges:
            style = {"stroke": HIGHLIGHT, "stroke_width": "2.6", "class": "new-edge"}
        dashed = e.kind in ("fd", "i_mmap", "dmabuf_page")
        svg.line(g_edges, pts, dashed=dashed, style=style)
    g_nodes = svg.group(id="nodes")
    for box in boxes.values():
        _draw_box(svg, g_nodes, box, box.node.id in changed)
    g_labels = svg.group(id="edge-labels", font_size=str(SMALL), fill="#334155")
    for x, y, text in labels:
        svg.text(g_labels, x, y, text, stroke="#ffffff", stroke_width="3", paint_order="stroke")
    _legend(svg, graph, layout.height + 30, flag_lines, highlighted=bool(changed or new_edges))
    return svg.to_string()


def _draw_box(svg: Svg, parent: ET.Element, box: _Box, changed: bool = False) -> None:
    node = box.node
    fill, stroke = STYLE.get(node.kind, ("#f1f5f9", "#475569"))
    attrs = {"rx": "6", "fill": fill, "stroke": stroke, "stroke_width": "1.3"}
    if "shared" in node.marks:
        attrs["stroke_width"] = "3"
    if "dirty" in node.marks:
        attrs |= {"fill": "#fee2e2", "stroke": "#b91c1c", "stroke_width": "3"}
    if "unallocated" in node.marks or "released" in node.marks:
        attrs |= {"stroke": "#b91c1c", "stroke_dasharray": "5 3"}
    g = svg.group(parent, id=node.id, **{"class": node.kind + (" changed" if changed else "")})
    if changed:
        halo = {"fill": "none", "stroke": HIGHLIGHT, "stroke_width": "5", "rx": "9"}
        svg.rect(g, box.x - 4, box.y - 4, box.w + 8, box.h + 8, **halo)
    svg.rect(g, box.x, box.y, box.w, box.h, **attrs)
    for i, line in enumerate(node.lines):
        weight = {"font_weight": "bold"} if i == 0 else {}
        colour = "#b91c1c" if line.startswith(("dirty lines", "NOT ALLOCATED")) else "#0f172a"
        svg.text(
            g,
            box.x + PAD,
            box.y + PAD + FONT + i * LINE_H - 2,
            fit(line, box.w - 2 * PAD),
            fill=colour,
            **weight,
        )


def _legend(
    svg: Svg, graph: Graph, y: float, flag_lines: list[str], *, highlighted: bool = False
) -> None:
    g = svg.group(id="legend", font_size=str(SMALL))
    svg.text(g, MARGIN, y, "Legend", font_weight="bold")
    x = float(MARGIN)
    y += 10
    kinds = [k for k in NODE_KINDS if any(n.kind == k for n in graph.nodes)]
    for kind in kinds:
        fill, stroke = STYLE[kind]
        svg.rect(g, x, y, 14, 12, fill=fill, stroke=stroke, rx="3")
        svg.text(g, x + 18, y + 10, kind)
        x += 26 + len(kind) * SMALL_W
    svg.rect(g, x, y, 14, 12, fill="#fee2e2", stroke="#b91c1c", stroke_width="3", rx="3")
    svg.text(g, x + 18, y + 10, "page with dirty CPU cache lines")
    if highlighted:
        x += 40 + len("page with dirty CPU cache lines") * SMALL_W
        svg.rect(g, x, y, 14, 12, fill="none", stroke=HIGHLIGHT, stroke_width="3", rx="3")
        svg.text(g, x + 18, y + 10, "new or changed in this step")
    y += 26
    x = float(MARGIN)
    samples: tuple[tuple[str, bool, dict[str, str]], ...] = (
        ("pointer (mm, vm_file, f_inode, i_mapping, pte, page cache)", False, {}),
        ("fd table entry / i_mmap link / a dma-buf's page", True, {}),
        ("dma_buf → its file", False, {"stroke_width": "2.2"}),
    )
    for text, dashed, style in samples:
        svg.line(g, [(x, y), (x + 36, y)], dashed=dashed, style=style)
        svg.text(g, x + 42, y + 4, text)
        x += 70 + len(text) * SMALL_W
    svg.text(
        g,
        MARGIN,
        y + 22,
        "pte labels: offset in the vma, rw/ro, special (no struct page), cache mode (WB/WC/UC-/UC)",
    )
    for i, line in enumerate(flag_lines):
        svg.text(g, MARGIN, y + 40 + i * 14, line)


def _vmflag_legend(graph: Graph) -> list[str]:
    """Legend lines explaining the VmFlags codes the vmas in ``graph`` show."""
    seen: set[str] = set()
    for node in graph.of_kind("vma"):
        for line in node.lines:
            if line.startswith("flags: "):
                seen.update(line[len("flags: ") :].split())
    if not seen:
        return []
    codes = [code for code in VMFLAG_MEANINGS if code in seen]
    codes += sorted(seen - VMFLAG_MEANINGS.keys())
    text = "VmFlags: " + ", ".join(f"{c} {VMFLAG_MEANINGS.get(c, '?')}" for c in codes)
    return _wrap(text, int((LEGEND_W - 2 * MARGIN) // SMALL_W))


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return lines + ([current] if current else [])
