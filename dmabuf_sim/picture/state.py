"""The state graph: what a :class:`~dmabuf_sim.kernel.Kernel` holds, as nodes and edges.

:func:`snapshot_graph` walks the kernel's objects the way a reader follows
pointers in a crash dump::

    process ──mm──▶ vma ──vm_file──▶ file ──f_inode──▶ inode ──i_mapping──▶ address_space
       │             └──pte──────────────────────────────────────────────────────▶ page
       └──fd N──▶ file                     address_space ──page cache──▶ page
    dma_buf ──file──▶ file          dma_buf ──page i──▶ page

and returns a :class:`Graph`, a plain value the renderers
(:func:`~dmabuf_sim.picture.to_mermaid`, :func:`~dmabuf_sim.picture.to_dot`,
:func:`~dmabuf_sim.picture.to_svg`) draw.  Shared structure stays shared:
every file on the anon inode (the old specs) points at the *one* ``ino`` node,
which is what lets a shoot-down through one buffer reach another (R26).
A dma-buf links to the drawn pages that back it, so a page whose PTE was shot
down still shows whose it is (found through the reference exporters' private
data: sg tables, page lists, contiguous runs, shmem page caches).

The walk is sparse: pages get nodes only when a present PTE maps them, a page
cache holds them, or the CPU cache holds dirty lines of them; a buffer's size
is never iterated.  Node ids are deterministic and safe in Mermaid, DOT and
XML alike: ``p1``, ``p1_vma0``, ``file0``, ``ino9``, ``as9``, ``pfn0x1a3``,
``dmabuf0``.  Pass one :class:`GraphIds` to successive snapshots of a kernel and
a vma, file or dma-buf keeps its id for as long as it lives, so the snapshots
can be compared (what is new, what changed, what went).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from ..device import SgTable
from ..mm.cache import LINE_SIZE
from ..mm.page_alloc import PAGE_SHIFT
from ..mm.pgtable import cache_mode_name, pte_cache_mode, pte_pfn, pte_special, pte_write
from ..mm.vma import vm_flags_str, vma_perms

if TYPE_CHECKING:
    from ..dma_buf.core import DmaBuf
    from ..fs import AddressSpace, File, Inode
    from ..kernel import Kernel
    from ..mm.vma import VmAreaStruct
    from ..process import Process

__all__ = ["NODE_KINDS", "Edge", "Graph", "GraphIds", "Node", "snapshot_graph"]

NODE_KINDS = ("process", "vma", "file", "inode", "address_space", "dma_buf", "page")
"""Node kinds, in the left-to-right order the layouts use."""


@frozen
class Node:
    """One kernel object: ``lines[0]`` is its title, the rest are details.

    ``marks`` flag what a renderer should make stand out: ``dirty`` (a page
    with dirty cache lines), ``shared`` (an inode several files share),
    ``unallocated`` (a page a PTE maps after it was freed), ``zero``,
    ``released``, ``more`` (a stand-in for nodes left out).
    """

    id: str
    kind: str
    lines: tuple[str, ...]
    marks: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return self.lines[0] if self.lines else self.id


@frozen
class Edge:
    """A pointer from ``src`` to ``dst``.

    ``kind`` is ``mm``, ``fd``, ``vm_file``, ``i_mmap``, ``f_inode``, ``i_mapping``,
    ``pte``, ``page_cache``, ``dmabuf_file`` or ``dmabuf_page``; ``label`` is what
    to print on it.
    """

    src: str
    dst: str
    kind: str
    label: str = ""


@frozen
class Graph:
    """A snapshot of kernel state as nodes and edges (a value: compare, store, render)."""

    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def ids(self) -> set[str]:
        return {n.id for n in self.nodes}

    def of_kind(self, kind: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind == kind)

    def successors(self, node_id: str, kind: str | None = None) -> tuple[str, ...]:
        """Targets of the edges leaving ``node_id`` (optionally only edges of ``kind``)."""
        return tuple(
            e.dst for e in self.edges if e.src == node_id and (kind is None or e.kind == kind)
        )


@define
class GraphIds:
    """Node ids that stay put across snapshots of one kernel.

    Without it a snapshot numbers vmas, files and dma-bufs in the order its walk
    meets them; with it each object keeps the id it got first (the object is
    held, so its ``id()`` cannot be reused).
    """

    _names: dict[int, tuple[object, str]] = field(factory=dict)
    _counts: Counter[str] = field(factory=Counter)

    def name(self, obj: object, prefix: str) -> str:
        hit = self._names.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        name = f"{prefix}{self._counts[prefix]}"
        self._counts[prefix] += 1
        self._names[id(obj)] = (obj, name)
        return name


def _page_index(priv: Any) -> Callable[[int], int | None] | None:
    """``pfn -> page index in the buffer`` for the reference exporters' private data.

    Costs grow with the buffer's runs (sg entries) or, for page lists, its pages;
    an exporter whose layout is unknown gets no links.
    """
    if isinstance(getattr(priv, "first_pfn", None), int):
        first = priv.first_pfn
        count = int(getattr(priv, "npages", 0) or getattr(priv, "pagecount", 0))
        return lambda pfn: pfn - first if first <= pfn < first + count else None
    for name in ("sg_table", "sgt", "sg"):
        table = getattr(priv, name, None)
        if isinstance(table, SgTable):
            runs = list(table.entries)

            def in_runs(pfn: int, runs: list[tuple[int, int]] = runs) -> int | None:
                base = 0
                for first, n in runs:
                    if first <= pfn < first + n:
                        return base + pfn - first
                    base += n
                return None

            return in_runs
    for name in ("pfns", "pages"):
        pages = getattr(priv, name, None)
        if isinstance(pages, list):
            where = {pfn: i for i, pfn in enumerate(pages)}
            return where.get
    filp = getattr(priv, "filp", None)
    cache = getattr(getattr(filp, "f_mapping", None), "pages", None)
    if isinstance(cache, dict):
        inverse = {pfn: index for index, pfn in cache.items()}
        return inverse.get
    return None


def _pte_flags(pte: int) -> str:
    bits = ["rw" if pte_write(pte) else "ro"]
    if pte_special(pte):
        bits.append("special")
    bits.append(cache_mode_name(pte_cache_mode(pte)))
    return " ".join(bits)


def _n(count: int, noun: str) -> str:
    """``1 vma``, ``2 vmas``."""
    plural = noun + ("es" if noun.endswith("s") else "s")
    return f"{count} {noun}" if count == 1 else f"{count} {plural}"


@define
class _Builder:
    """Collects nodes and edges in a deterministic order while walking the kernel."""

    kernel: Kernel
    max_pages: int
    dirty: Counter[int]
    """Dirty CPU cache lines per pfn."""
    cached: Counter[int]
    """Cached CPU cache lines per pfn."""
    ids: GraphIds | None = None
    nodes: dict[str, Node] = field(factory=dict)
    edges: dict[tuple[str, str, str], Edge] = field(factory=dict)
    file_ids: dict[int, str] = field(factory=dict)
    files_per_inode: Counter[str] = field(factory=Counter)
    pages: dict[int, None] = field(factory=dict)
    """pfns that get a page node, in the order the walk met them."""
    reached: set[int] = field(factory=set)
    """Every pfn a PTE or page cache of a drawn object points at, drawn or not."""
    buffers: list[tuple[str, DmaBuf]] = field(factory=list)
    """Drawn dma-bufs, to link them to their drawn pages at the end."""

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def link(self, src: str, dst: str, kind: str, label: str = "") -> None:
        self.edges.setdefault((src, dst, label), Edge(src, dst, kind, label))

    def page(self, pfn: int) -> str:
        self.pages.setdefault(pfn)
        return f"pfn{pfn:#x}"

    # -- objects -----------------------------------------------------------------
    def process(self, proc: Process) -> None:
        pid = f"p{proc.pid}"
        vmas = proc.mm.vmas
        fds = sorted(proc.files.fds.items())
        marks = () if proc.alive else ("released",)
        self.add(
            Node(
                pid,
                "process",
                (f"{proc.comm}-{proc.pid}", f"{_n(len(vmas), 'vma')}, {_n(len(fds), 'fd')}"),
                marks,
            )
        )
        for i, vma in enumerate(vmas):
            self.link(pid, self.vma(proc, i, vma), "mm")
        for fd, file in fds:
            self.link(pid, self.file(file), "fd", f"fd {fd}")

    def vma(self, proc: Process, index: int, vma: VmAreaStruct) -> str:
        prefix = f"p{proc.pid}_vma"
        vid = self.ids.name(vma, prefix) if self.ids is not None else f"{prefix}{index}"
        span = (vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT)
        ptes = list(proc.mm.pgtable.iter_range(*span))
        modes = Counter(_pte_flags(pte) for _vpn, pte in ptes)
        lines = [
            f"vma {vma.vm_start:#x}-{vma.vm_end:#x}",
            f"{vma_perms(vma.vm_flags)} pgoff {vma.vm_pgoff:#x} ({_n(vma.pages(), 'page')})",
            f"flags: {vm_flags_str(vma.vm_flags)}",
        ]
        if vma.vm_ops is not None:
            lines.append(f"vm_ops: {vma.vm_ops.owner or 'driver'}")
        lines.append(f"PTEs: {len(ptes)} present")
        lines.extend(f"{n} × {mode}" for mode, n in sorted(modes.items()))
        # over the cap, draw pages holding dirty lines first (the ones a reader looks for)
        keep = sorted(ptes, key=lambda vp: (not self.dirty[pte_pfn(vp[1])], vp[0]))
        drawn = sorted(keep[: self.max_pages])
        pfns = {pte_pfn(pte) for _vpn, pte in ptes}
        self.reached |= pfns
        if len(ptes) > len(drawn):
            lines.append(f"({len(ptes) - len(drawn)} more PTEs not drawn)")
        dirty = sum(self.dirty[pfn] for pfn in pfns)
        if dirty:
            lines.append(f"dirty lines in its pages: {dirty}")
        self.add(Node(vid, "vma", tuple(lines)))
        if vma.vm_file is not None:
            fid = self.file(vma.vm_file)
            self.link(vid, fid, "vm_file", "vm_file")
            linked = vma.i_mmap_of
            if linked is not None and linked is not vma.vm_file.f_mapping:
                self.link(vid, self.address_space(linked), "i_mmap", "in i_mmap of")
        for vpn, pte in drawn:
            off = (vpn << PAGE_SHIFT) - vma.vm_start
            self.link(vid, self.page(pte_pfn(pte)), "pte", f"pte +{off:#x} {_pte_flags(pte)}")
        return vid

    def file(self, file: File) -> str:
        fid = self.file_ids.get(id(file))
        if fid is not None:
            return fid
        fid = self.ids.name(file, "file") if self.ids is not None else f"file{len(self.file_ids)}"
        self.file_ids[id(file)] = fid
        lines = [file.path(), f"f_count {file.f_count}"]
        if file.f_op.owner:
            lines.append(f"f_op: {file.f_op.owner}")
        marks = ("released",) if file.released else ()
        self.add(Node(fid, "file", tuple(lines), marks))
        iid = self.inode(file.f_inode)
        self.files_per_inode[iid] += 1
        self.link(fid, iid, "f_inode", "f_inode")
        return fid

    def inode(self, inode: Inode) -> str:
        iid = f"ino{inode.i_ino}"
        if iid not in self.nodes:
            lines = [f"inode {inode.i_ino}", f"sb {inode.i_sb}"]
            if inode is self.kernel.anon_inode:
                lines.append("the anon inode")
            if inode.i_size:
                lines.append(f"i_size {inode.i_size:#x}")
            self.add(Node(iid, "inode", tuple(lines)))
            self.link(iid, self.address_space(inode.i_mapping), "i_mapping", "i_mapping")
        return iid

    def address_space(self, mapping: AddressSpace) -> str:
        aid = f"as{mapping.host.i_ino}"
        if aid in self.nodes:
            return aid
        cached = sorted(mapping.pages.items())
        lines = [
            f"address_space (ino {mapping.host.i_ino})",
            f"i_mmap: {_n(len(mapping.i_mmap), 'vma')}",
        ]
        if cached:
            lines.append(f"page cache: {_n(len(cached), 'page')}")
        drawn = cached[: self.max_pages]
        self.reached.update(pfn for _index, pfn in cached)
        if len(cached) > len(drawn):
            lines.append(f"({len(cached) - len(drawn)} more pages not drawn)")
        self.add(Node(aid, "address_space", tuple(lines)))
        for index, pfn in drawn:
            self.link(aid, self.page(pfn), "page_cache", f"index {index}")
        return aid

    def dma_buf(self, index: int, dmabuf: DmaBuf) -> None:
        did = self.ids.name(dmabuf, "dmabuf") if self.ids is not None else f"dmabuf{index}"
        self.buffers.append((did, dmabuf))
        lines = [f"dma_buf {dmabuf.exp_name or '?'}"]
        if dmabuf.name:
            lines.append(f"name {dmabuf.name}")
        lines.append(f"size {dmabuf.size:#x} ({_n(-(-dmabuf.size >> PAGE_SHIFT), 'page')})")
        if dmabuf.attachments:
            lines.append(f"{len(dmabuf.attachments)} attachments")
        marks = ("released",) if dmabuf.released else ()
        self.add(Node(did, "dma_buf", tuple(lines), marks))
        if dmabuf.file is not None:
            self.link(did, self.file(dmabuf.file), "dmabuf_file", "file")

    def buffer_pages(self) -> None:
        """Link each drawn dma-buf to the drawn pages that back it (``page i``)."""
        for did, dmabuf in self.buffers:
            index_of = _page_index(dmabuf.priv)
            if index_of is None:
                continue
            for pfn in self.pages:
                index = index_of(pfn)
                if index is not None:
                    self.link(did, self.page(pfn), "dmabuf_page", f"page {index}")

    def page_nodes(self) -> None:
        mem, dirty, cached = self.kernel.mem, self.dirty, self.cached
        for pfn in self.pages:
            lines = [f"pfn {pfn:#x}", f"phys {pfn << PAGE_SHIFT:#x}"]
            marks: list[str] = []
            page = mem.page_if_exists(pfn)
            if page is not None:
                lines.append(f"refcount {page.refcount} mapcount {page.mapcount}")
            if pfn == self.kernel.zero_pfn:
                lines.append("ZERO_PAGE")
                marks.append("zero")
            elif not mem.pfn_allocated(pfn):
                lines.append("NOT ALLOCATED (freed)")
                marks.append("unallocated")
            if cached[pfn]:
                lines.append(f"cached lines: {cached[pfn]}")
            if dirty[pfn]:
                lines.append(f"dirty lines: {dirty[pfn]}")
                marks.append("dirty")
            self.add(Node(f"pfn{pfn:#x}", "page", tuple(lines), tuple(marks)))

    def build(self, title: str) -> Graph:
        nodes = []
        for walked in self.nodes.values():
            node = walked
            if node.kind == "inode" and self.files_per_inode[node.id] > 1:
                n = self.files_per_inode[node.id]
                node = Node(
                    node.id,
                    node.kind,
                    (*node.lines, f"shared by {n} files"),
                    (*node.marks, "shared"),
                )
            nodes.append(node)
        order = {k: i for i, k in enumerate(NODE_KINDS)}
        nodes.sort(key=lambda n: order.get(n.kind, len(order)))  # stable: keeps walk order
        position = {n.id: i for i, n in enumerate(nodes)}
        edges = sorted(self.edges.values(), key=lambda e: position[e.src])  # stable
        return Graph(title, tuple(nodes), tuple(edges))


def _per_page(lines: Iterable[int]) -> Counter[int]:
    return Counter(line >> PAGE_SHIFT for line in lines)


def snapshot_graph(
    kernel: Kernel,
    *,
    processes: Iterable[Process | int] | None = None,
    max_pages: int = 32,
    ids: GraphIds | None = None,
) -> Graph:
    """Describe ``kernel``'s state as a :class:`Graph`.

    ``processes`` limits the picture to some processes (objects or pids) and
    what they reach; by default every process, every live dma-buf and every
    page with dirty cache lines is drawn.  At most ``max_pages`` PTEs per vma
    and page-cache pages per address_space get page nodes; the vma and
    address_space labels still count them all.  ``ids`` keeps node ids stable
    across snapshots (see :class:`GraphIds`).
    """
    if max_pages < 1:
        raise ValueError(f"max_pages must be >= 1, not {max_pages}")
    wanted: set[int] | None = None
    if processes is not None:
        wanted = {p if isinstance(p, int) else p.pid for p in processes}
    dirty = _per_page(kernel.cache.dirty)
    b = _Builder(kernel, max_pages, dirty, _per_page(kernel.cache.lines), ids)
    for pid in sorted(kernel.processes):
        if wanted is None or pid in wanted:
            b.process(kernel.processes[pid])
    for index, dmabuf in enumerate(kernel.dma_bufs):
        if wanted is None or (dmabuf.file is not None and id(dmabuf.file) in b.file_ids):
            b.dma_buf(index, dmabuf)
    if wanted is None:  # dirty pages nothing drawn leads to (freed, or kernel-only)
        orphans = sorted(set(dirty) - b.reached)
        for pfn in orphans[:max_pages]:
            b.page(pfn)
    b.buffer_pages()
    b.page_nodes()
    shown = len(b.nodes)
    title = (
        f"dmabuf_sim state, spec {kernel.spec.name}: {_n(len(kernel.processes), 'process')}"
        f", {_n(len(kernel.dma_bufs), 'dma-buf')}, {_n(len(kernel.cache.dirty), 'dirty line')}"
        f" ({LINE_SIZE}-byte), {_n(shown, 'object')} drawn"
    )
    return b.build(title)
