"""The CPU cache: write-back lines, clean/invalidate/flush, bounded capacity, steerable eviction.

The simulated CPU is not coherent with DMA, so these semantics are what every
coherency rule (R46, R55, SAN-STALE-READ) rests on.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel
from dmabuf_sim.mm.cache import LINE_SIZE, CpuCache


def _cache(capacity: int = 8) -> tuple[Kernel, CpuCache]:
    k = Kernel("v6.12", cache_lines=capacity, load_drivers=False)
    return k, k.cache


def test_a_store_stays_in_the_cache_until_cleaned() -> None:
    k, c = _cache()
    pa = k.mem.alloc_pages(0) << 12
    c.store(pa, b"cpu")
    assert k.mem.read(pa, 3) == b"\0\0\0"  # DRAM has not seen it: a device would read 0
    assert c.load(pa, 3) == b"cpu"
    assert c.dirty_lines_in(pa, 4096) == [pa]
    assert c.clean_range(pa, 4096) == 1
    assert k.mem.read(pa, 3) == b"cpu" and c.cached_lines_in(pa, 4096) == [pa]
    assert c.dirty_lines_in(pa, 4096) == []


def test_invalidate_drops_lines_and_loses_dirty_data() -> None:
    k, c = _cache()
    pa = k.mem.alloc_pages(0) << 12
    c.store(pa, b"lost")
    assert c.invalidate_range(pa, 64) == 1
    assert c.load(pa, 4) == b"\0\0\0\0"  # refilled from DRAM


def test_flush_is_clean_then_invalidate() -> None:
    k, c = _cache()
    pa = k.mem.alloc_pages(0) << 12
    c.store(pa + LINE_SIZE, b"kept")
    assert c.flush_range(pa, 4096) == 1
    assert c.cached_lines_in(pa, 4096) == []
    assert k.mem.read(pa + LINE_SIZE, 4) == b"kept"


def test_a_stale_line_hides_a_device_write_until_invalidated() -> None:
    k, c = _cache()
    pa = k.mem.alloc_pages(0) << 12
    c.load(pa, 8)  # the CPU caches the line
    k.mem.write(pa, b"device")  # a non-coherent device writes DRAM
    assert c.load(pa, 6) == b"\0" * 6  # stale
    c.invalidate_range(pa, 64)
    assert c.load(pa, 6) == b"device"


def test_coherent_agents_snoop() -> None:
    k, c = _cache()
    pa = k.mem.alloc_pages(0) << 12
    c.store(pa, b"dirty")
    assert c.snoop_read(pa, 5) == b"dirty"  # a coherent device sees dirty lines
    c.snoop_write(pa, b"DEV")  # and its writes drop the CPU's copies
    assert c.cached_lines_in(pa, 64) == [] and c.load(pa, 5) == b"DEVty"


def test_lru_eviction_writes_back_the_victim() -> None:
    k, c = _cache(capacity=2)
    base = k.mem.alloc_pages(1) << 12
    c.store(base, b"a")
    c.store(base + LINE_SIZE, b"b")
    c.load(base, 1)  # base is now the most recently used
    c.store(base + 2 * LINE_SIZE, b"c")  # evicts the least recently used: line 1
    assert c.evictions == 1 and c.writebacks == 1
    assert k.mem.read(base + LINE_SIZE, 1) == b"b"
    assert sorted(c.lines) == [base, base + 2 * LINE_SIZE]


def test_eviction_policy_can_be_steered_and_is_checked() -> None:
    k, c = _cache(capacity=2)
    base = k.mem.alloc_pages(1) << 12
    c.choose_victim = lambda cache: max(cache.lines)  # evict the highest address
    c.store(base, b"a")
    c.store(base + LINE_SIZE, b"b")
    c.store(base + 2 * LINE_SIZE, b"c")
    assert sorted(c.lines) == [base, base + 2 * LINE_SIZE]
    c.choose_victim = lambda cache: 12345
    with pytest.raises(ValueError, match="not a cached line"):
        c.store(base + 3 * LINE_SIZE, b"d")


@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 4 * 4096 - 8), st.binary(min_size=1, max_size=8)),
        max_size=60,
    ),
    victims=st.lists(st.integers(0, 7), max_size=60),
    capacity=st.integers(1, 8),
)
def test_the_cache_is_transparent_to_the_cpu_whatever_it_evicts(
    ops: list[tuple[bool, int, bytes]], victims: list[int], capacity: int
) -> None:
    """With any capacity and any (hypothesis-chosen) eviction order, CPU loads return
    the last CPU stores, and after flush_all DRAM holds exactly the same bytes."""
    k, c = _cache(capacity)
    base = k.mem.alloc_pages(2) << 12
    picks = iter(victims)
    c.choose_victim = lambda cache: list(cache.lines)[next(picks, 0) % len(cache.lines)]
    model = bytearray(4 * 4096)
    for is_store, off, data in ops:
        if is_store:
            c.store(base + off, data)
            model[off : off + len(data)] = data
        else:
            assert c.load(base + off, len(data)) == bytes(model[off : off + len(data)])
    c.flush_all()
    assert k.mem.read(base, len(model)) == bytes(model)
    assert len(c.lines) == 0
