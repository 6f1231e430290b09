"""Small SVG toolkit shared by the pure-Python renderers.

Everything is built with :mod:`xml.etree.ElementTree`, so text is escaped and
the result is well-formed XML by construction.  Output is self-contained:
presentation attributes only, the generic ``monospace`` font family, arrow
markers in ``<defs>``; no external CSS, fonts or images.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

__all__ = [
    "CHAR_W",
    "FONT",
    "LINE_H",
    "Svg",
    "fit",
]

FONT = 12
"""Font size (px) of box text."""
CHAR_W = 7.3
"""Advance width of one monospace character at :data:`FONT` (conservative)."""
LINE_H = 15
"""Line height (px) of box text."""
SMALL = 10
SMALL_W = 6.1

_NS = "http://www.w3.org/2000/svg"


def fit(text: str, width: float, char_w: float = CHAR_W) -> str:
    """``text`` cut with an ellipsis so it fits in ``width`` pixels."""
    n = max(1, int(width // char_w))
    return text if len(text) <= n else text[: n - 1] + "…"


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


class Svg:
    """An SVG document under construction; :meth:`to_string` serialises it."""

    def __init__(self, width: float, height: float, title: str) -> None:
        self.root = ET.Element(
            "svg",
            {
                "xmlns": _NS,
                "width": _num(width),
                "height": _num(height),
                "viewBox": f"0 0 {_num(width)} {_num(height)}",
                "font-family": "monospace",
                "font-size": str(FONT),
            },
        )
        ET.SubElement(self.root, "title").text = title
        defs = ET.SubElement(self.root, "defs")
        for name, colour in (("arrow", "#475569"), ("arrow-red", "#b91c1c")):
            marker = ET.SubElement(
                defs,
                "marker",
                {
                    "id": name,
                    "viewBox": "0 0 10 10",
                    "refX": "10",
                    "refY": "5",
                    "markerWidth": "8",
                    "markerHeight": "8",
                    "orient": "auto-start-reverse",
                    "markerUnits": "userSpaceOnUse",
                },
            )
            ET.SubElement(marker, "path", {"d": "M0,0 L10,5 L0,10 z", "fill": colour})
        ET.SubElement(
            self.root,
            "rect",
            {"x": "0", "y": "0", "width": _num(width), "height": _num(height), "fill": "#ffffff"},
        )

    def group(self, parent: ET.Element | None = None, **attrs: str) -> ET.Element:
        return ET.SubElement(self.root if parent is None else parent, "g", _attrs(attrs))

    def rect(
        self, parent: ET.Element, x: float, y: float, w: float, h: float, **attrs: str
    ) -> ET.Element:
        base = {"x": _num(x), "y": _num(y), "width": _num(w), "height": _num(h)}
        return ET.SubElement(parent, "rect", base | _attrs(attrs))

    def text(self, parent: ET.Element, x: float, y: float, text: str, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, "text", {"x": _num(x), "y": _num(y)} | _attrs(attrs))
        el.text = text
        return el

    def line(
        self,
        parent: ET.Element,
        points: list[tuple[float, float]],
        *,
        red: bool = False,
        arrow: bool = True,
        dashed: bool = False,
        style: dict[str, str] | None = None,
    ) -> ET.Element:
        """A polyline through ``points``; arrowhead at the end unless ``arrow=False``."""
        colour = "#b91c1c" if red else "#475569"
        base = {
            "points": " ".join(f"{_num(x)},{_num(y)}" for x, y in points),
            "fill": "none",
            "stroke": colour,
            "stroke-width": "1.3",
        }
        if dashed:
            base["stroke-dasharray"] = "5 3"
        if arrow:
            base["marker-end"] = "url(#arrow-red)" if red else "url(#arrow)"
        return ET.SubElement(parent, "polyline", base | _attrs(style or {}))

    def to_string(self) -> str:
        ET.indent(self.root, space=" ")
        body = ET.tostring(self.root, encoding="unicode")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _attrs(attrs: dict[str, str]) -> dict[str, str]:
    """Python keyword names to SVG attribute names (``stroke_width`` → ``stroke-width``)."""
    return {k.replace("_", "-"): v for k, v in attrs.items()}
