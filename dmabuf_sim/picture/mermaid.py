"""Mermaid text for GitHub markdown: the state graph as a ``flowchart LR``, traces as a
``sequenceDiagram``.

Labels are escaped with Mermaid's numeric entity codes (``#34;`` for ``"``,
``#59;`` for ``;``...), so kernel names, paths like ``anon_inode:dmabuf`` and
values like ``-22 EINVAL`` survive the parser; multi-line labels use ``<br/>``.
Node ids come from :class:`~dmabuf_sim.picture.state.Graph` unchanged (they
are plain ``[A-Za-z0-9_]`` words).  Each node kind gets a ``classDef``
(``process``, ``vma``, ``file``, ``inode``, ``mapping``, ``page``, ``dmabuf``)
and pages with dirty cache lines also get ``dirty``.
"""

from __future__ import annotations

from .sequence import Call, Note, Return, Sequence
from .state import Graph

__all__ = ["mermaid_escape", "sequence_to_mermaid", "to_mermaid"]

# Node kind -> Mermaid class name.
CLASS_OF = {
    "process": "process",
    "vma": "vma",
    "file": "file",
    "inode": "inode",
    "address_space": "mapping",
    "page": "page",
    "dma_buf": "dmabuf",
}

CLASS_DEFS = {
    "process": "fill:#dbeafe,stroke:#1d4ed8,color:#0f172a",
    "vma": "fill:#e0f2fe,stroke:#0369a1,color:#0f172a",
    "file": "fill:#fef9c3,stroke:#a16207,color:#0f172a",
    "inode": "fill:#ffedd5,stroke:#c2410c,color:#0f172a",
    "mapping": "fill:#fce7f3,stroke:#be185d,color:#0f172a",
    "page": "fill:#dcfce7,stroke:#15803d,color:#0f172a",
    "dmabuf": "fill:#ede9fe,stroke:#6d28d9,color:#0f172a",
    "dirty": "fill:#fee2e2,stroke:#b91c1c,stroke-width:3px,color:#0f172a",
    "shared": "stroke-width:3px",
    "warn": "stroke:#b91c1c,stroke-dasharray:4 2",
}

_EDGE_ARROW = {"fd": "-.->", "i_mmap": "-.->", "dmabuf_page": "-.->", "dmabuf_file": "==>"}

_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:/+-_=()[]{}*!?'@$%")


def mermaid_escape(text: str) -> str:
    """Escape ``text`` for a quoted Mermaid label: anything unusual becomes ``#NN;``."""
    return "".join(c if c in _SAFE else f"#{ord(c)};" for c in text)


def _label(lines: tuple[str, ...]) -> str:
    return "<br/>".join(mermaid_escape(line) for line in lines)


def to_mermaid(graph: Graph) -> str:
    """The state graph as Mermaid ``flowchart LR`` text (no code fence)."""
    out = ["flowchart LR", f"  %% {mermaid_escape(graph.title)}"]
    for node in graph.nodes:
        out.append(f'  {node.id}["{_label(node.lines)}"]')
    for edge in graph.edges:
        arrow = _EDGE_ARROW.get(edge.kind, "-->")
        text = f'|"{mermaid_escape(edge.label)}"|' if edge.label else ""
        out.append(f"  {edge.src} {arrow}{text} {edge.dst}")
    for name, style in CLASS_DEFS.items():
        out.append(f"  classDef {name} {style}")
    members: dict[str, list[str]] = {}
    for node in graph.nodes:
        members.setdefault(CLASS_OF.get(node.kind, "file"), []).append(node.id)
        for mark in node.marks:
            if mark in {"dirty", "shared"}:
                members.setdefault(mark, []).append(node.id)
            elif mark in ("unallocated", "released"):
                members.setdefault("warn", []).append(node.id)
    for name, ids in members.items():
        out.append(f"  class {','.join(ids)} {name}")
    return "\n".join(out) + "\n"


def sequence_to_mermaid(seq: Sequence) -> str:
    """The sequence as Mermaid ``sequenceDiagram`` text (no code fence).

    Calls are ``->>`` arrows that activate the callee, returns ``-->>`` arrows
    that end the activation; failing returns are marked with ``✗``.
    """
    out = ["sequenceDiagram", f"  %% {mermaid_escape(seq.title)}"]
    for line in seq.lifelines:
        title = line.label + (" (user)" if line.kind == "task" else "")
        out.append(f"  participant {line.id} as {mermaid_escape(title)}")
    for step in seq.steps:
        if isinstance(step, Call) and step.returned is not None:
            mark = "✗ " if step.error else ""
            out.append(f"  {step.src}->>{step.dst}: {mermaid_escape(mark + _short(step.text))}")
        elif isinstance(step, Call):
            out.append(f"  {step.src}->>+{step.dst}: {mermaid_escape(_short(step.text))}")
        elif isinstance(step, Return):
            mark = "✗ " if step.error else ""
            out.append(f"  {step.src}-->>-{step.dst}: {mermaid_escape(mark + step.text)}")
        elif isinstance(step, Note):
            mark = "⚠ " if step.alert else ""
            out.append(f"  Note over {step.over}: {mermaid_escape(mark + _short(step.text))}")
    return "\n".join(out) + "\n"


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
