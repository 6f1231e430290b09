"""Random programs: each next step is drawn from what the machine allows now.

:func:`generate` drives a live :class:`~.machine.DmaBufMachine` through a
:class:`Recorder`: at every step it lists the steps the protocol allows in the
current state (a read needs a mapping, a device DMA needs a mapped attachment
and no CPU access open ...), weights them towards the transitions where
exporters go wrong — a device keeping the buffer mapped across CPU accesses,
reads right after the other side wrote — and draws one from a
:class:`random.Random` that hypothesis seeds (so its example database can
replay a failing program).  Each
example also switches a random subset of step kinds off ("swarm testing"), so
that long runs of a few kinds happen too.  The recorder keeps the program, so
a failure can be shrunk and printed (:mod:`.program`).
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

from ..device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from ..mm.cache import LINE_SIZE
from ..mm.page_alloc import PAGE_SIZE
from .machine import MAX_CHILDREN, MAX_LIVE_BUFFERS, DmaBufMachine
from .model import AttRef, BufRef, ChildRef, MapRef, VmapRef
from .program import Call, Program, Ref

__all__ = ["KINDS", "Recorder", "generate"]

PAGE = PAGE_SIZE
_REFS = (BufRef, MapRef, AttRef, ChildRef, VmapRef)


class Recorder:
    """Runs steps on a machine and records them as a :data:`~.program.Program`."""

    def __init__(self, state: DmaBufMachine) -> None:
        self.state = state
        self.program: Program = []
        self._refs: dict[int, Ref] = {}
        self.hot: dict[int, list[tuple[int, int]]] = {}
        """Per buffer (by id): byte ranges accessed lately, for accesses to collide on."""

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        def sym(v: Any) -> Any:
            return self._refs[id(v)] if isinstance(v, _REFS) else v

        index = len(self.program)
        self.program.append(
            Call(method, tuple(sym(a) for a in args), tuple((k, sym(v)) for k, v in kwargs.items()))
        )
        result = getattr(self.state, method)(*args, **kwargs)
        values = result if isinstance(result, tuple) else (result,)
        for j, v in enumerate(values):
            if isinstance(v, _REFS):
                self._refs[id(v)] = Ref(index, j)
        return result


def _pattern(seed: int, n: int) -> bytes:
    """Distinctive non-zero bytes: every write leaves a value no other write leaves there."""
    return bytes(((seed * 73 + i * 29) % 251) + 1 for i in range(n))


def _size(data: Random) -> int:
    """Mostly whole pages; a third of the time a size that is not a page multiple."""
    if data.randint(0, 2):
        return data.randint(1, 4) * PAGE
    return data.randint(1, 3) * PAGE + data.choice([1, 100, PAGE // 2, PAGE - 1])


_EDGES = (0, 8, LINE_SIZE - 4, LINE_SIZE, PAGE - 8, PAGE, PAGE + LINE_SIZE, 2 * PAGE - 4)


def _offset(data: Random, limit: int) -> int:
    """An offset in ``[0, limit)``, often on a line or page edge."""
    edges = [e for e in _EDGES if e < limit]
    if edges and (data.random() < 0.5):
        return data.choice(edges)
    return data.randint(0, limit - 1)


def _length(data: Random, room: int) -> int:
    return data.randint(1, max(1, min(room, 2 * LINE_SIZE)))


def _range(r: Recorder, data: Random, buf: BufRef, lo: int, hi: int) -> tuple[int, int]:
    """A byte range of ``buf`` inside ``[lo, hi)``: most often one accessed lately.

    Coherency bugs show only where the two sides' accesses meet, so reads and
    writes mostly go where something was read or written before.
    """
    hot = [(max(lo, a), min(hi, a + n)) for a, n in r.hot.get(id(buf), []) if a < hi and a + n > lo]
    if hot and data.randint(0, 3) != 0:
        start, end = _pick(data, hot)
        offset, n = start, end - start
    else:
        offset = lo + _offset(data, hi - lo)
        n = _length(data, hi - offset)
    recent = r.hot.setdefault(id(buf), [])
    if (offset, n) not in recent:
        recent.append((offset, n))
        del recent[:-6]
    return offset, n


# -- the step kinds: each returns True when it made a step --------------------------------------
Kind = Callable[[Recorder, Random], bool]


def _pick(data: Random, items: list[Any]) -> Any:
    return items[data.randint(0, len(items) - 1)] if len(items) > 1 else items[0]


def k_new_buffer(r: Recorder, data: Random) -> bool:
    s = r.state
    if len(s.live_buffers()) >= MAX_LIVE_BUFFERS:
        return False
    size = max(_size(data), s.caps.min_size)
    r.call("new_buffer", size=size)
    return True


def _with_fd(s: DmaBufMachine) -> list[BufRef]:
    return [b for b in s.live_buffers() if b.fd is not None]


def k_mmap(r: Recorder, data: Random) -> bool:
    bufs = [b for b in _with_fd(r.state) if b.mappable]
    if not bufs:
        return False
    buf = _pick(data, bufs)
    offset = data.randint(0, buf.mappable - 1)
    roll = data.randint(0, 9)
    if roll == 0:  # past the end
        pages = buf.mappable - offset + data.randint(1, 2)
    else:
        pages = data.randint(1, buf.mappable - offset)
    kwargs: dict[str, Any] = {}
    if roll == 1:
        kwargs["private"] = True
    elif roll == 2:
        kwargs["writable"] = False
    r.call("mmap", buf, offset=offset, pages=pages, **kwargs)
    return True


def _owned(s: DmaBufMachine) -> list[MapRef]:
    return [m for m in s.maps if m.owner in m.holders and m.owner.alive]


def k_mmap_after(r: Recorder, data: Random) -> bool:
    s = r.state
    maps = [
        m
        for m in _owned(s)
        if not m.private
        and not m.imported
        and m.buf.fd is not None
        and not s.proc.mm.vmas_in(m.addr + m.pages * PAGE, m.addr + (m.pages + 2) * PAGE)
    ]
    if not maps:
        return False
    r.call("mmap_after", _pick(data, maps), pages=data.randint(1, 2))
    return True


def k_munmap(r: Recorder, data: Random) -> bool:
    maps = _owned(r.state)
    if not maps:
        return False
    r.call("munmap", _pick(data, maps))
    return True


def k_munmap_page(r: Recorder, data: Random) -> bool:
    maps = [m for m in _owned(r.state) if m.pages >= 2]
    if not maps:
        return False
    m = _pick(data, maps)
    r.call("munmap_page", m, page=data.randint(0, m.pages - 1))
    return True


def k_mremap_grow(r: Recorder, data: Random) -> bool:
    maps = _owned(r.state)
    if not maps:
        return False
    r.call("mremap_grow", _pick(data, maps))
    return True


def k_touch_past_end(r: Recorder, data: Random) -> bool:
    maps = [
        m for m in _owned(r.state) if not m.private and 0 <= m.buf.backing - m.first_page < m.pages
    ]
    if not maps:
        return False
    r.call("touch_past_end", _pick(data, maps))
    return True


def k_mprotect(r: Recorder, data: Random) -> bool:
    maps = _owned(r.state)
    if not maps:
        return False
    m = _pick(data, maps)
    r.call("mprotect", m, writable=not m.writable)
    return True


def k_fork(r: Recorder, data: Random) -> bool:
    if len(r.state.children) >= MAX_CHILDREN:
        return False
    r.call("fork")
    return True


def k_exit(r: Recorder, data: Random) -> bool:
    if not r.state.children:
        return False
    r.call("exit", _pick(data, r.state.children))
    return True


def k_close(r: Recorder, data: Random) -> bool:
    bufs = [b for b in _with_fd(r.state) if b.bracket is None or b.bracket.via != "ioctl"]
    if not bufs:
        return False
    r.call("close", _pick(data, bufs))
    return True


def k_sync_start(r: Recorder, data: Random) -> bool:
    s = r.state
    bufs = [b for b in _with_fd(s) if b.bracket is None]
    if not bufs:
        return False
    buf = _pick(data, bufs)
    direction = data.choice(["rw", "read", "write"])
    if s.kernel.spec.has_sync_ioctl and data.randint(0, 3) != 0:
        r.call("sync_start", buf, direction)
    else:
        r.call("sync_start", buf, direction, via="kernel")
    return True


def k_sync_end(r: Recorder, data: Random) -> bool:
    bufs = [
        b
        for b in r.state.live_buffers()
        if b.bracket is not None and (b.bracket.via == "kernel" or b.fd is not None)
    ]
    if not bufs:
        return False
    r.call("sync_end", _pick(data, bufs))
    return True


def k_cpu_write(r: Recorder, data: Random, only: BufRef | None = None) -> bool:
    s = r.state
    maps = [
        m
        for m in s.maps
        if m.writable
        and m.usable
        and (only is None or m.buf is only)
        and m.owner.alive
        and m.owner in m.holders
        and (s.cpu_may_touch(m.buf) if m.private else s.cpu_may_write(m.buf))
    ]
    if not maps:
        return False
    m = _pick(data, maps)
    offset, n = _map_range(r, data, m)
    kwargs = _child(r, data, m)
    r.call("cpu_write", m, offset=offset, data=_pattern(len(r.program), n), **kwargs)
    return True


def _map_range(r: Recorder, data: Random, m: MapRef) -> tuple[int, int]:
    base = m.first_page * PAGE
    offset, n = _range(r, data, m.buf, base, base + m.usable)
    return offset - base, n


def _child(r: Recorder, data: Random, m: MapRef) -> dict[str, Any]:
    if m.private:
        return {}
    kids = [c for c in r.state.children if c.proc in m.holders]
    if kids and data.randint(0, 2) == 0:
        return {"proc": _pick(data, kids)}
    return {}


def k_cpu_read(r: Recorder, data: Random, only: BufRef | None = None) -> bool:
    s = r.state
    maps = [
        m
        for m in s.maps
        if m.usable
        and (only is None or m.buf is only)
        and m.owner.alive
        and m.owner in m.holders
        and s.cpu_may_touch(m.buf)
    ]
    if not maps:
        return False
    m = _pick(data, maps)
    offset, n = _map_range(r, data, m)
    r.call("cpu_read", m, offset=offset, n=n, **_child(r, data, m))
    return True


def k_vmap(r: Recorder, data: Random) -> bool:
    s = r.state
    spec = s.kernel.spec
    if not (spec.has_vmap and spec.vmap_returns_errno):
        return False
    bufs = [b for b in _with_fd(s) if len(b.vmaps) < 2]
    if not bufs:
        return False
    r.call("vmap", _pick(data, bufs))
    return True


def k_vunmap(r: Recorder, data: Random) -> bool:
    if not r.state.vmaps:
        return False
    r.call("vunmap", _pick(data, r.state.vmaps))
    return True


def _read_or_write(
    r: Recorder, data: Random, kind: str, target: Any, buf: BufRef, write: bool
) -> bool:
    """``{kind}_write`` of a pattern, or ``{kind}_read``, over a range of ``buf``."""
    offset, n = _range(r, data, buf, 0, buf.size)
    if write:
        r.call(f"{kind}_write", target, offset=offset, data=_pattern(len(r.program), n))
    else:
        r.call(f"{kind}_read", target, offset=offset, n=n)
    return True


def k_kernel_access(r: Recorder, data: Random, only: BufRef | None = None) -> bool:
    s = r.state
    write = data.random() < 0.5
    if s.kernel.spec.has_kmap:
        bufs = [
            b
            for b in s.live_buffers()
            if b.bracket is not None and (b.bracket.writes or not write) and only in (None, b)
        ]
        if not bufs:
            return False
        buf = _pick(data, bufs)
        return _read_or_write(r, data, "kmap", buf, buf, write)
    vmaps = [
        v
        for v in s.vmaps
        if v.buf.bracket is not None
        and (v.buf.bracket.writes or not write)
        and only in (None, v.buf)
    ]
    if not vmaps:
        return False
    v = _pick(data, vmaps)
    return _read_or_write(r, data, "kernel", v, v.buf, write)


def k_attach(r: Recorder, data: Random) -> bool:
    bufs = [b for b in _with_fd(r.state) if len(b.atts) < 2]
    if not bufs:
        return False
    buf = _pick(data, bufs)
    dev = "dsp" if data.randint(0, 3) == 0 else "gpu"
    r.call("attach", buf, dev=dev)
    return True


def k_map_attachment(r: Recorder, data: Random) -> bool:
    atts = [a for a in r.state.atts if a.sgt is None and a.buf.bracket is None]
    if not atts:
        return False
    direction = data.choice(["bidirectional", "from_device", "to_device"])
    r.call("map_attachment", _pick(data, atts), direction)
    return True


def k_unmap_attachment(r: Recorder, data: Random) -> bool:
    atts = [a for a in r.state.atts if a.sgt is not None and a.buf.bracket is None]
    if not atts:
        return False
    r.call("unmap_attachment", _pick(data, atts))
    return True


def k_detach(r: Recorder, data: Random) -> bool:
    atts = [a for a in r.state.atts if a.sgt is None]
    if not atts:
        return False
    r.call("detach", _pick(data, atts))
    return True


def k_dma(r: Recorder, data: Random, only: BufRef | None = None) -> bool:
    write = data.random() < 0.5
    ok = (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL) if write else (DMA_TO_DEVICE, DMA_BIDIRECTIONAL)
    atts = [
        a
        for a in r.state.atts
        if a.sgt is not None
        and a.buf.bracket is None
        and a.direction in ok
        and only in (None, a.buf)
    ]
    if not atts:
        return False
    a = _pick(data, atts)
    return _read_or_write(r, data, "dma", a, a.buf, write)


def k_dma_job(r: Recorder, data: Random) -> bool:
    bufs = [b for b in _with_fd(r.state) if b.bracket is None]
    if not bufs:
        return False
    buf = _pick(data, bufs)
    offset, n = _range(r, data, buf, 0, buf.size)
    dev = "dsp" if data.randint(0, 3) == 0 else "gpu"
    extra = {} if dev == "gpu" else {"dev": dev}
    if data.random() < 0.5:
        r.call("dma_job", buf, "write", offset=offset, data=_pattern(len(r.program), n), **extra)
    else:
        r.call("dma_job", buf, "read", offset=offset, n=n, **extra)
    return True


def k_add_fence(r: Recorder, data: Random) -> bool:
    bufs = [b for b in _with_fd(r.state) if b.tracked.dmabuf.resv is not None]
    if not bufs:
        return False
    r.call("add_fence", _pick(data, bufs))
    return True


def k_finish(r: Recorder, data: Random) -> bool:
    r.call("finish_device_work")
    return True


def k_import_mmap(r: Recorder, data: Random) -> bool:
    s = r.state
    spec = s.kernel.spec
    if "vgem" not in s.kernel.drivers or not spec.drm_shmem_resv_locking:
        return False
    bufs = [b for b in _with_fd(s) if b.mappable]
    if not bufs:
        return False
    buf = _pick(data, bufs)
    r.call("import_mmap", buf, pages=data.randint(1, buf.mappable))
    return True


def k_rmmod(r: Recorder, data: Random) -> bool:
    if not r.state.exporter.module:
        return False
    r.call("rmmod")
    return True


# -- motifs: several steps that belong together ---------------------------------------------------
def m_keep_mapped(r: Recorder, data: Random) -> bool:
    """A device attaches and keeps the buffer mapped (the RFC's importer that never lets go)."""
    bufs = [b for b in _with_fd(r.state) if len(b.atts) < 2 and b.bracket is None]
    if not bufs:
        return False
    buf = _pick(data, bufs)
    dev = "dsp" if data.randint(0, 3) == 0 else "gpu"
    a = r.call("attach", buf, dev=dev)
    if a is not None:
        direction = data.choice(["bidirectional", "from_device", "to_device"])
        r.call("map_attachment", a, direction)
    return True


def m_cpu_session(r: Recorder, data: Random) -> bool:
    """SYNC START, a few CPU or kernel accesses to the buffer, SYNC END."""
    s = r.state
    bufs = [
        b
        for b in _with_fd(s)
        if b.bracket is None and (b.vmaps or any(m.buf is b and m.usable for m in s.maps))
    ]
    if not bufs:
        return False
    buf = _pick(data, bufs)
    direction = data.choice(["rw", "read", "write"])
    if s.kernel.spec.has_sync_ioctl and data.randint(0, 3) != 0:
        r.call("sync_start", buf, direction)
    else:
        r.call("sync_start", buf, direction, via="kernel")
    for _ in range(data.randint(1, 3)):
        kind = data.randint(0, 3)
        if kind == 0:
            k_kernel_access(r, data, buf)
        elif kind == 1 and direction != "read":
            k_cpu_write(r, data, buf)
        else:
            k_cpu_read(r, data, buf)
    if buf.bracket is not None:
        r.call("sync_end", buf)
    return True


def m_device_session(r: Recorder, data: Random) -> bool:
    """A device that holds the buffer mapped reads and writes it a few times."""
    atts = [a for a in r.state.atts if a.sgt is not None and a.buf.bracket is None]
    if not atts:
        return False
    buf = _pick(data, atts).buf
    for _ in range(data.randint(1, 3)):
        k_dma(r, data, buf)
    return True


#: Step kinds with their weights (how often each is offered when possible).
KINDS: tuple[tuple[str, Kind, int], ...] = (
    ("new_buffer", k_new_buffer, 2),
    ("mmap", k_mmap, 4),
    ("cpu_read", k_cpu_read, 6),
    ("cpu_write", k_cpu_write, 6),
    ("sync_start", k_sync_start, 4),
    ("sync_end", k_sync_end, 4),
    ("attach", k_attach, 2),
    ("map_attachment", k_map_attachment, 3),
    ("dma", k_dma, 5),
    ("dma_job", k_dma_job, 4),
    ("unmap_attachment", k_unmap_attachment, 2),
    ("detach", k_detach, 1),
    ("munmap", k_munmap, 1),
    ("munmap_page", k_munmap_page, 1),
    ("mremap_grow", k_mremap_grow, 1),
    ("touch_past_end", k_touch_past_end, 2),
    ("mmap_after", k_mmap_after, 1),
    ("mprotect", k_mprotect, 1),
    ("fork", k_fork, 1),
    ("exit", k_exit, 1),
    ("close", k_close, 1),
    ("vmap", k_vmap, 1),
    ("vunmap", k_vunmap, 1),
    ("kernel_access", k_kernel_access, 2),
    ("add_fence", k_add_fence, 1),
    ("finish_device_work", k_finish, 1),
    ("import_mmap", k_import_mmap, 1),
    ("rmmod", k_rmmod, 1),
    ("keep_mapped", m_keep_mapped, 2),
    ("cpu_session", m_cpu_session, 5),
    ("device_session", m_device_session, 4),
)
_ALWAYS = ("new_buffer", "mmap", "cpu_read", "cpu_write", "sync_start", "sync_end", "cpu_session")


def _weights(s: DmaBufMachine, kinds: list[tuple[str, Kind, int]]) -> list[str]:
    """The kinds on offer, repeated by weight; the weights follow the state.

    Inside a CPU access the CPU's steps and its end come forward; a device that
    holds the buffer mapped gets to use it; an attachment gets mapped.
    """
    bufs = s.live_buffers()
    open_ = any(b.bracket is not None for b in bufs)
    device_turn = any(a.sgt is not None and a.buf.bracket is None for a in s.atts)
    unmapped = any(a.sgt is None for a in s.atts)
    boost = {
        "cpu_read": 3 if open_ else 1,
        "cpu_write": 3 if open_ else 1,
        "kernel_access": 3 if open_ else 1,
        "sync_end": 2 if open_ else 1,
        "dma": 3 if device_turn else 1,
        "device_session": 3 if device_turn else 1,
        "keep_mapped": 1 if s.atts else 2,
        "sync_start": 2 if device_turn and not open_ else 1,
        "map_attachment": 3 if unmapped else 1,
    }
    return [name for name, _k, w in kinds for _ in range(w * boost.get(name, 1))]


def generate(r: Recorder, data: Random, max_steps: int) -> None:
    """Up to ``max_steps`` steps chosen by hypothesis among those allowed now."""
    optional = [name for name, _k, _w in KINDS if name not in _ALWAYS]
    off = set(data.sample(optional, data.randint(0, len(optional) // 2)))
    kinds = [(name, kind, weight) for name, kind, weight in KINDS if name not in off]
    by_name = {name: kind for name, kind, _w in kinds}
    for _ in range(max_steps):
        if data.randint(0, 39) == 0:
            break
        offered = _weights(r.state, kinds)
        for _attempt in range(8):
            name = data.choice(offered)
            if by_name[name](r, data):
                break
