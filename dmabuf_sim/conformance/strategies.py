"""Public hypothesis strategies for dma-buf conformance tests.

Values are biased toward the edges the kernel checks: page boundaries, the
floored page count of odd sizes, and the 64-bit wrap of ``pgoff + pages``.
Bounds are keyword-only and checked eagerly, with a message that says how
to fix the call.

    >>> from hypothesis import given
    >>> from dmabuf_sim.conformance.strategies import buffer_sizes, mmap_requests
    >>> @given(buffer_sizes(max_pages=4), mmap_requests(size_pages=4))
    ... def test_something(size, req): ...                  # doctest: +SKIP
"""

from __future__ import annotations

import mmap as _mmap

from attrs import frozen
from hypothesis import strategies as st

from ..exporters.registry import EXPORTERS
from ..spec import SPECS

__all__ = [
    "MmapRequest",
    "buffer_sizes",
    "exporter_names",
    "map_flags",
    "mmap_lengths",
    "mmap_requests",
    "page_offsets",
    "prot_flags",
    "spec_names",
]

PAGE = 4096
U64 = 1 << 64


def _check_pages(name: str, value: int, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, not {value!r}")


def buffer_sizes(*, min_pages: int = 1, max_pages: int = 64) -> st.SearchStrategy[int]:
    """Buffer sizes in bytes: whole pages, and odd sizes just above/below page multiples.

    >>> buffer_sizes(max_pages=8).example()                 # doctest: +SKIP
    12288
    """
    _check_pages("min_pages", min_pages, minimum=0)
    _check_pages("max_pages", max_pages)
    if min_pages > max_pages:
        raise ValueError(f"min_pages ({min_pages}) must not exceed max_pages ({max_pages})")
    pages = st.integers(min_pages, max_pages)
    whole = pages.map(lambda n: n * PAGE)
    odd = st.tuples(pages, st.integers(1, PAGE - 1)).map(lambda t: t[0] * PAGE + t[1])
    return st.one_of(whole, odd).filter(lambda s: s > 0)


def page_offsets(*, size_pages: int | None = None) -> st.SearchStrategy[int]:
    """Byte offsets for mmap: page multiples near the buffer, unaligned ones, and 2**64 edges.

    >>> page_offsets(size_pages=4).example()                # doctest: +SKIP
    8192
    """
    edges = st.sampled_from([0, PAGE, U64 - PAGE, (1 << 63) - PAGE, 1 << 44, -PAGE, 1, 100])
    if size_pages is None:
        near: st.SearchStrategy[int] = st.integers(0, 1 << 20).map(lambda n: n * PAGE)
    else:
        _check_pages("size_pages", size_pages)
        near = st.integers(0, size_pages + 2).map(lambda n: n * PAGE)
    return st.one_of(near, near, edges, st.integers(-(1 << 63), U64 - 1))


def mmap_lengths(*, size_pages: int | None = None) -> st.SearchStrategy[int]:
    """Lengths: whole pages around the buffer size, off-by-one bytes, 0, and huge values.

    >>> mmap_lengths(size_pages=2).example()                # doctest: +SKIP
    4097
    """
    if size_pages is None:
        around: st.SearchStrategy[int] = st.integers(1, 64).map(lambda n: n * PAGE)
    else:
        _check_pages("size_pages", size_pages)
        around = st.integers(1, size_pages + 2).map(lambda n: n * PAGE)
    fuzz = st.tuples(around, st.sampled_from([-1, 0, 1])).map(lambda t: max(0, t[0] + t[1]))
    edges = st.sampled_from([0, 1, U64 - 1, U64 - PAGE, 1 << 47])
    return st.one_of(around, fuzz, edges)


def prot_flags() -> st.SearchStrategy[int]:
    """``PROT_NONE``, ``PROT_READ``, ``PROT_READ|PROT_WRITE`` (and ``PROT_WRITE`` alone)."""
    r, w = _mmap.PROT_READ, _mmap.PROT_WRITE
    return st.sampled_from([0, r, r | w, w])


def map_flags(*, private: bool = True) -> st.SearchStrategy[int]:
    """``MAP_SHARED`` (and ``MAP_PRIVATE`` unless ``private=False``)."""
    choices = [_mmap.MAP_SHARED] + ([_mmap.MAP_PRIVATE] if private else [])
    return st.sampled_from(choices)


@frozen
class MmapRequest:
    """One ``mmap(0, length, prot, flags, fd, offset)`` call."""

    length: int
    prot: int
    flags: int
    offset: int


def mmap_requests(
    *, size_pages: int | None = None, private: bool = True
) -> st.SearchStrategy[MmapRequest]:
    """Whole mmap requests around a buffer of ``size_pages`` pages.

    >>> mmap_requests(size_pages=4).example()               # doctest: +SKIP
    MmapRequest(length=8192, prot=3, flags=1, offset=4096)
    """
    return st.builds(
        MmapRequest,
        length=mmap_lengths(size_pages=size_pages),
        prot=prot_flags(),
        flags=map_flags(private=private),
        offset=page_offsets(size_pages=size_pages),
    )


def spec_names(*, with_mmap: bool = True, include_rfc: bool = False) -> st.SearchStrategy[str]:
    """Spec names: those where dma-buf mmap exists (by default), without ``rfc-2012``.

    Every mmap oopses under the RFC as posted (R61); ask for it with
    ``include_rfc=True`` when that is what a test is about.
    """
    names = [
        n
        for n, s in SPECS.items()
        if (s.has_mmap_fop or not with_mmap)
        and (include_rfc or not s.mmap_internal_reads_uninitialised_dmabuf)
    ]
    return st.sampled_from(names)


def exporter_names(*, kind: str | None = "reference") -> st.SearchStrategy[str]:
    """Registered exporter names (``kind``: reference, teaching, or None for all)."""
    names = [n for n, e in EXPORTERS.items() if kind is None or e.kind == kind]
    if not names:
        raise ValueError(f"no exporter of kind {kind!r}; use reference, teaching or None")
    return st.sampled_from(names)


def exporters_and_specs(
    *, kind: str | None = "reference", include_rfc: bool = False
) -> st.SearchStrategy[tuple[str, str]]:
    """``(exporter name, spec name)`` pairs that exist together (the exporter is there).

    >>> exporters_and_specs().example()                      # doctest: +SKIP
    ('udmabuf', 'v6.12')
    """
    pairs = [
        (name, spec_name)
        for name, info in EXPORTERS.items()
        if kind is None or info.kind == kind
        for spec_name, spec in SPECS.items()
        if info.available(spec) is None
        and (include_rfc or not spec.mmap_internal_reads_uninitialised_dmabuf)
    ]
    if not pairs:
        raise ValueError(f"no exporter of kind {kind!r} exists on any spec")
    return st.sampled_from(pairs)


# -- whole operation sequences -----------------------------------------------------------
@frozen
class Operation:
    """One step of :func:`run_operations`: a state-machine rule and its arguments.

    Buffers, mappings and children are referred to by index into the ones made
    so far (taken modulo their number; a step whose objects do not exist yet
    is skipped), so any list of operations is valid input.
    """

    rule: str
    args: tuple[tuple[str, object], ...] = ()

    def __repr__(self) -> str:
        return f"Operation({self.rule!r}, {dict(self.args)!r})"


def _op(rule: str, **args: st.SearchStrategy[object]) -> st.SearchStrategy[Operation]:
    keys = sorted(args)
    return st.tuples(*(args[k] for k in keys)).map(
        lambda vals: Operation(rule, tuple(zip(keys, vals, strict=True)))
    )


def operation_sequences(
    *, min_size: int = 1, max_size: int = 20, max_pages: int = 4
) -> st.SearchStrategy[list[Operation]]:
    """Lists of machine steps on buffers, mappings, processes, CPU access and devices.

    Feed them to :func:`dmabuf_sim.conformance.machine.run_operations` with any
    exporter; a step whose objects do not exist yet, or that the protocol does
    not allow at that point (a CPU write outside SYNC, a DMA inside it), is left
    out, so any list is valid input and hypothesis shrinks to the shortest list
    that breaks a rule.

    >>> operation_sequences(max_size=3).example()            # doctest: +SKIP
    [Operation('new_buffer', {'size': 8192}), Operation('mmap', {...})]
    """
    _check_pages("max_pages", max_pages)
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size} and {max_size}")
    idx = st.integers(0, 3)
    offs = st.one_of(st.sampled_from([0, 8, 64, PAGE - 8, PAGE]), st.integers(0, 4 * PAGE))
    data = st.binary(min_size=1, max_size=16).map(lambda b: bytes(x | 1 for x in b))
    n = st.integers(1, 16)
    direction = st.sampled_from(["rw", "read", "write"])
    dev_dir = st.sampled_from(["bidirectional", "from_device", "to_device"])
    size = buffer_sizes(max_pages=max_pages)
    ops = st.one_of(
        _op("new_buffer", size=size),
        _op(
            "mmap",
            buf=idx,
            offset=st.integers(0, max_pages - 1),
            pages=st.integers(1, max_pages),
            private=st.booleans(),
        ),
        _op("munmap", m=idx),
        _op("munmap_page", m=idx, page=st.integers(0, max_pages - 1)),
        _op("mremap_grow", m=idx),
        _op("touch_past_end", m=idx),
        _op("sync_start", buf=idx, direction=direction),
        _op("sync_end", buf=idx),
        _op("cpu_write", m=idx, offset=offs, data=data),
        _op("cpu_read", m=idx, offset=offs, n=n),
        _op("attach", buf=idx),
        _op("map_attachment", a=idx, direction=dev_dir),
        _op("dma_write", a=idx, offset=offs, data=data),
        _op("dma_read", a=idx, offset=offs, n=n),
        _op("unmap_attachment", a=idx),
        _op("detach", a=idx),
        _op("dma_job", buf=idx, op=st.just("write"), offset=offs, data=data),
        _op("dma_job", buf=idx, op=st.just("read"), offset=offs, n=n),
        _op("fork"),
        _op("exit", child=idx),
        _op("close", buf=idx),
        _op("add_fence", buf=idx),
        _op("finish_device_work"),
    )
    first = _op("new_buffer", size=size)
    rest = st.lists(ops, min_size=max(0, min_size - 1), max_size=max(0, max_size - 1))
    # every sequence starts with a buffer, so the operations after it have something to do
    return st.tuples(first, rest).map(lambda t: [t[0], *t[1]])


__all__ += ["Operation", "exporters_and_specs", "operation_sequences"]
