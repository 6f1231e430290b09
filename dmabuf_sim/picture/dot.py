"""Graphviz DOT text for the state graph (``dot -Tsvg`` lays it out).

Nodes are filled boxes coloured by kind, one ``rank=same`` group per kind so
processes, vmas, files, inodes, address spaces and pages stand in columns
(``rankdir=LR``); fd and i_mmap edges are dashed, the dma_buf→file edge bold.
Pages with dirty cache lines get a thick red border.
"""

from __future__ import annotations

from .state import NODE_KINDS, Graph

__all__ = ["dot_quote", "to_dot"]

FILL = {
    "process": "#dbeafe",
    "vma": "#e0f2fe",
    "file": "#fef9c3",
    "inode": "#ffedd5",
    "address_space": "#fce7f3",
    "page": "#dcfce7",
    "dma_buf": "#ede9fe",
}
_EDGE_STYLE = {"fd": "dashed", "i_mmap": "dashed", "dmabuf_page": "dashed", "dmabuf_file": "bold"}


def dot_quote(text: str) -> str:
    """A DOT double-quoted string (backslashes and quotes escaped, newlines as ``\\n``)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def _label(lines: tuple[str, ...]) -> str:
    # "\l" ends a left-justified line; build the escaped text first, then join.
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\l".join(escaped) + '\\l"'


def to_dot(graph: Graph) -> str:
    """The state graph as a Graphviz ``digraph``."""
    out = [
        "digraph dmabuf_sim {",
        f"  label={dot_quote(graph.title)}; labelloc=t; rankdir=LR; nodesep=0.25; ranksep=0.9;",
        '  graph [fontname="monospace", fontsize=11];',
        '  node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];',
        '  edge [fontname="monospace", fontsize=9, color="#475569"];',
    ]
    for kind in NODE_KINDS:
        members = [n for n in graph.nodes if n.kind == kind]
        if not members:
            continue
        out.append(f"  subgraph {dot_quote('kind_' + kind)} {{ rank=same;")
        for n in members:
            attrs = [f"label={_label(n.lines)}", f'fillcolor="{FILL.get(n.kind, "#f1f5f9")}"']
            if "dirty" in n.marks:
                attrs += ['color="#b91c1c"', "penwidth=3"]
            elif "shared" in n.marks:
                attrs += ["penwidth=2.5"]
            if "unallocated" in n.marks or "released" in n.marks:
                attrs += ['style="rounded,filled,dashed"', 'color="#b91c1c"']
            out.append(f"    {dot_quote(n.id)} [{', '.join(attrs)}];")
        out.append("  }")
    for e in graph.edges:
        attrs = []
        if e.label:
            attrs.append(f"label={dot_quote(e.label)}")
        style = _EDGE_STYLE.get(e.kind)
        if style:
            attrs.append(f"style={style}")
        tail = f" [{', '.join(attrs)}]" if attrs else ""
        out.append(f"  {dot_quote(e.src)} -> {dot_quote(e.dst)}{tail};")
    out.append("}")
    return "\n".join(out) + "\n"
