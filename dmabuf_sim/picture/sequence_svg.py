"""A :class:`~dmabuf_sim.picture.sequence.Sequence` drawn as SVG, in pure Python.

Lifelines are columns with a header box and a dashed line down the page;
every step takes one row: a call is a solid arrow to the callee (a loop when
a subsystem calls itself), a return a dashed arrow back with the value (red
when it is an error), a point event a yellow note over its lifeline (red
border for hazards: oops, signals, stale reads).  Narrow bars show which
calls are active, nested bars offset to the right.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ._svg import CHAR_W, SMALL, SMALL_W, Svg, fit
from .sequence import Call, Note, Return, Sequence

__all__ = ["sequence_to_svg"]

ROW = 24
HEAD_H = 34
MARGIN = 20
TOP = 56
FILL = {
    "task": "#dbeafe",
    "mm": "#e0f2fe",
    "vfs": "#fef9c3",
    "dmabuf": "#ede9fe",
    "exporter": "#dcfce7",
    "device": "#ffedd5",
    "kernel": "#f1f5f9",
}


def _spacing(seq: Sequence) -> float:
    longest = max(
        [len(s.text) for s in seq.steps if not isinstance(s, Note)]
        + [len(line.label) + 7 for line in seq.lifelines]
        + [10],
    )
    return max(170.0, min(300.0, longest * SMALL_W * 0.75 + 40))


def sequence_to_svg(seq: Sequence) -> str:
    """SVG text of the sequence diagram; valid, self-contained XML."""
    space = _spacing(seq)
    x_of = {line.id: MARGIN + space / 2 + i * space for i, line in enumerate(seq.lifelines)}
    width = max(2 * MARGIN + space * (max(1, len(seq.lifelines)) + 0.6), 480)
    body_top = TOP + HEAD_H + 14
    height = body_top + ROW * (len(seq.steps) + 1) + MARGIN
    svg = Svg(width, height, seq.title)
    svg.text(svg.root, MARGIN, 24, seq.title, font_weight="bold", font_size="14")
    summary = f"{seq.calls} calls" + (f", {seq.omitted} not drawn" if seq.omitted else "")
    svg.text(svg.root, MARGIN, 42, summary, font_size=str(SMALL), fill="#475569")
    heads = svg.group(id="lifelines")
    for line in seq.lifelines:
        x = x_of[line.id]
        label = line.label + (" (user)" if line.kind == "task" else "")
        w = min(space - 16, len(label) * CHAR_W + 16)
        svg.line(
            heads,
            [(x, TOP + HEAD_H), (x, height - MARGIN)],
            arrow=False,
            style={"stroke": "#94a3b8", "stroke_dasharray": "4 4"},
        )
        svg.rect(
            heads,
            x - w / 2,
            TOP,
            w,
            HEAD_H,
            rx="5",
            fill=FILL.get(line.kind, "#f1f5f9"),
            stroke="#334155",
        )
        svg.text(heads, x, TOP + 21, fit(label, w - 8), text_anchor="middle", font_weight="bold")
    bars = svg.group(id="activations")
    arrows = svg.group(id="steps", font_size=str(SMALL))
    active: dict[str, list[float]] = {line.id: [] for line in seq.lifelines}

    def side(lid: str, level: int, toward: float) -> float:
        """x of ``lid``'s activation bar at nesting ``level``, on the side facing ``toward``."""
        x = x_of[lid] + 4 * level
        return x - 4 if toward < x else x + 4

    for row, step in enumerate(seq.steps):
        y = body_top + ROW * row + ROW / 2
        if isinstance(step, Call):
            src_level = max(0, len(active[step.src]) - 1)
            dst_level = len(active[step.dst])
            if step.returned is not None:  # a leaf in one row: no activation bar
                text = ("✗ " if step.error else "") + step.text
                fill = "#b91c1c" if step.error else "#0f172a"
                if step.src == step.dst:
                    x0 = side(step.src, src_level, float("inf"))
                    _loop(svg, arrows, x0, x0, y, text, space, dashed=False, error=step.error)
                    continue
                x0 = side(step.src, src_level, x_of[step.dst])
                x1 = side(step.dst, dst_level, x_of[step.src])
                svg.line(arrows, [(x0, y), (x1, y)], red=step.error)
                _label(svg, arrows, x0, x1, y, text, fill=fill)
                continue
            active[step.dst].append(y)
            if step.src == step.dst:
                x0 = side(step.src, src_level, float("inf"))
                x1 = side(step.dst, dst_level, float("inf"))
                _loop(svg, arrows, x0, x1, y, step.text, space, dashed=False, error=False)
                continue
            x0 = side(step.src, src_level, x_of[step.dst])
            x1 = side(step.dst, dst_level, x_of[step.src])
            svg.line(arrows, [(x0, y), (x1, y)])
            _label(svg, arrows, x0, x1, y, step.text)
        elif isinstance(step, Return):
            start = active[step.src].pop() if active[step.src] else y
            level = len(active[step.src])
            svg.rect(
                bars,
                x_of[step.src] - 4 + 4 * level,
                start,
                8,
                max(4.0, y - start),
                fill="#ffffff",
                stroke="#64748b",
            )
            text = ("✗ " if step.error else "") + step.text
            dst_level = max(0, len(active[step.dst]) - 1)
            if step.src == step.dst:
                x0 = side(step.src, level, float("inf"))
                x1 = side(step.dst, dst_level, float("inf"))
                _loop(svg, arrows, x0, x1, y, text, space, dashed=True, error=step.error)
                continue
            x0 = side(step.src, level, x_of[step.dst])
            x1 = side(step.dst, dst_level, x_of[step.src])
            svg.line(arrows, [(x0, y), (x1, y)], red=step.error, dashed=True)
            _label(svg, arrows, x0, x1, y, text, fill="#b91c1c" if step.error else "#334155")
        elif isinstance(step, Note):
            _note(svg, arrows, step, x_of[step.over], y, space, width)
    return svg.to_string()


def _loop(
    svg: Svg,
    g: ET.Element,
    x0: float,
    x1: float,
    y: float,
    text: str,
    space: float,
    *,
    dashed: bool,
    error: bool,
) -> None:
    """A self-call (or its return): out to the right and back, label beside it."""
    right = max(x0, x1) + 22
    svg.line(
        g, [(x0, y - 5), (right, y - 5), (right, y + 4), (x1, y + 4)], red=error, dashed=dashed
    )
    fill = "#b91c1c" if error else "#0f172a"
    svg.text(g, right + 4, y + 1, fit(text, space - 44, SMALL_W), fill=fill)


def _label(
    svg: Svg, g: ET.Element, x0: float, x1: float, y: float, text: str, **attrs: str
) -> None:
    room = abs(x1 - x0) - 12
    svg.text(g, (x0 + x1) / 2, y - 4, fit(text, room, SMALL_W), text_anchor="middle", **attrs)


def _note(
    svg: Svg, g: ET.Element, step: Note, x: float, y: float, space: float, width: float
) -> None:
    text = ("⚠ " if step.alert else "") + step.text
    w = min(space * 1.8, len(text) * SMALL_W + 14)
    x = min(max(x, MARGIN + w / 2), width - MARGIN - w / 2)  # keep the note on the page
    stroke = "#b91c1c" if step.alert else "#a16207"
    svg.rect(g, x - w / 2, y - ROW / 2 + 3, w, ROW - 6, fill="#fef3c7", stroke=stroke, rx="3")
    svg.text(g, x, y + 4, fit(text, w - 10, SMALL_W), text_anchor="middle")
