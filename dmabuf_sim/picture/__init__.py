"""Pictures of the simulator: kernel state as a graph, traces as sequence diagrams.

State (:mod:`.state`): :func:`snapshot_graph` turns a kernel into a
:class:`Graph` of processes, vmas, files, inodes, address spaces, pages and
dma-bufs; :func:`to_mermaid`, :func:`to_dot` and :func:`to_svg` draw it.

Traces (:mod:`.sequence`): :func:`sequence_from_trace` turns the events of
``with kernel.trace() as events:`` into a :class:`Sequence` across subsystem
lifelines; :func:`sequence_to_mermaid` and :func:`sequence_to_svg` draw it.

:func:`write_picture` picks the format from a file name (``.svg``, ``.mmd``,
``.md``, ``.dot``/``.gv``), for the command line's ``--picture FILE``::

    >>> import mmap, os
    >>> from dmabuf_sim import Kernel
    >>> from dmabuf_sim.picture import snapshot_graph, to_mermaid
    >>> k = Kernel("v6.12")
    >>> p = k.spawn("demo")
    >>> fd = p.open("/dev/simmem", os.O_RDWR)
    >>> addr = p.mmap(0, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    >>> print(to_mermaid(snapshot_graph(k)).splitlines()[2])
      p1["demo-1<br/>1 vma, 1 fd"]
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..trace import hide_harness, hide_plumbing
from .dot import to_dot
from .mermaid import sequence_to_mermaid, to_mermaid
from .sequence import Sequence, sequence_from_trace
from .sequence_svg import sequence_to_svg
from .state import Edge, Graph, Node, snapshot_graph
from .svg import to_svg, to_svg_fallback

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..trace import TraceEvent

__all__ = [
    "Edge",
    "Graph",
    "Node",
    "Sequence",
    "render",
    "sequence_from_trace",
    "sequence_to_mermaid",
    "sequence_to_svg",
    "snapshot_graph",
    "to_dot",
    "to_mermaid",
    "to_svg",
    "to_svg_fallback",
    "write_picture",
]

FORMATS = {
    ".svg": "svg",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".md": "markdown",
    ".dot": "dot",
    ".gv": "dot",
}
"""File suffix -> output format."""


def render(
    fmt: str,
    kernel: Kernel | None = None,
    events: Iterable[TraceEvent] | None = None,
    *,
    kind: str = "state",
    compact: bool = False,
) -> str:
    """The picture as text: ``fmt`` is ``svg``, ``mermaid``, ``markdown`` or ``dot``.

    ``compact`` (sequence pictures) leaves out plumbing and a harness's own calls
    (:func:`~dmabuf_sim.trace.hide_plumbing`, :func:`~dmabuf_sim.trace.hide_harness`)
    and draws each leaf call in one row.
    """
    if fmt not in {"svg", "mermaid", "markdown", "dot"}:
        raise ValueError(f"unknown picture format {fmt!r}: use svg, mermaid, markdown or dot")
    if kind == "state":
        if kernel is None:
            raise ValueError("a state picture needs kernel=")
        graph = snapshot_graph(kernel)
        if fmt == "svg":
            return to_svg(graph)
        if fmt == "dot":
            return to_dot(graph)
        text = to_mermaid(graph)
    elif kind == "sequence":
        if events is None:
            raise ValueError("a sequence picture needs events= (from `with kernel.trace()`)")
        if compact:
            events = hide_plumbing(hide_harness(events))
        seq = sequence_from_trace(events, merge_leaves=compact)
        if fmt == "svg":
            return sequence_to_svg(seq)
        if fmt == "dot":
            raise ValueError("sequence diagrams have no DOT form: use .svg, .mmd or .md")
        text = sequence_to_mermaid(seq)
    else:
        raise ValueError(f"kind must be 'state' or 'sequence', not {kind!r}")
    return f"```mermaid\n{text}```\n" if fmt == "markdown" else text


def write_picture(
    path: str | Path,
    kernel: Kernel | None = None,
    events: Iterable[TraceEvent] | None = None,
    *,
    kind: str = "state",
    compact: bool = False,
) -> Path:
    """Write a state (``kind="state"``, needs ``kernel``) or sequence (``kind="sequence"``,
    needs ``events``) picture to ``path``; the suffix picks the format: ``.svg``,
    ``.mmd``/``.mermaid`` (Mermaid text), ``.md`` (Mermaid in a fenced block) or
    ``.dot``/``.gv`` (Graphviz, state only).  Returns the path written.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the picture format of {path.name!r}: use one of {', '.join(FORMATS)}"
        )
    path.write_text(render(fmt, kernel, events, kind=kind, compact=compact), encoding="utf-8")
    return path
