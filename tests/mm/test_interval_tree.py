"""Tests for dmabuf_sim.mm.interval_tree (model of the kernel's vma_interval_tree)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmabuf_sim.mm.interval_tree import IntervalTree

U64_MAX = 2**64 - 1


class Item:
    """An item that equals every other item and is unhashable: only identity tells them apart."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return f"Item({self.name})"


def ids(items: Any) -> list[int]:
    return [id(x) for x in items]


# -- property test against a brute-force model --------------------------------

coord = st.one_of(st.integers(0, 64), st.integers(U64_MAX - 64, U64_MAX))
op = st.one_of(
    st.tuples(st.just("insert"), coord, st.integers(0, 40)),
    st.tuples(st.just("remove"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("query"), coord, coord),
)


@settings(deadline=None, max_examples=300)
@given(st.lists(op, max_size=120))
def test_matches_brute_force(ops: list[tuple[str, int, int]]) -> None:
    tree: IntervalTree[Item] = IntervalTree()
    model: list[tuple[int, int, Item]] = []  # in insertion order
    removed: list[Item] = []
    for n, (kind, a, b) in enumerate(ops):
        if kind == "insert":
            start, last = a, min(a + b, U64_MAX)
            item = Item(str(n))
            tree.insert(start, last, item)
            model.append((start, last, item))
        elif kind == "remove" and model:
            _, _, item = model.pop(a % len(model))
            tree.remove(item)
            removed.append(item)
        elif kind == "query":
            first, last = min(a, b), max(a, b)
            # sorted() is stable, so equal starts keep insertion order.
            by_start = sorted(model, key=lambda t: t[0])
            want = [it for s, e, it in by_start if s <= last and e >= first]
            assert ids(tree.iter_overlap(first, last)) == ids(want)
        # Invariants after every step.
        assert len(tree) == len(model)
        assert ids(tree) == ids(it for _, _, it in sorted(model, key=lambda t: t[0]))
        for s, e, it in model:
            assert it in tree
            assert tree.interval_of(it) == (s, e)
        for it in removed:
            assert it not in tree


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10)), max_size=60),
    st.integers(0, 45),
    st.integers(0, 45),
)
def test_query_any_range(spans: list[tuple[int, int]], a: int, b: int) -> None:
    tree: IntervalTree[Item] = IntervalTree()
    items = [Item(str(i)) for i in range(len(spans))]
    for (s, length), it in zip(spans, items, strict=True):
        tree.insert(s, s + length, it)
    got = ids(tree.iter_overlap(a, b))
    if b < a:
        assert got == []  # an empty query intersects nothing
    else:
        order = sorted(range(len(spans)), key=lambda i: spans[i][0])
        want = [items[i] for i in order if spans[i][0] <= b and spans[i][0] + spans[i][1] >= a]
        assert got == ids(want)


# -- unit tests ------------------------------------------------------------------


def test_closed_interval_edges() -> None:
    tree: IntervalTree[Item] = IntervalTree()
    x = Item("x")
    tree.insert(10, 20, x)
    assert ids(tree.iter_overlap(20, 30)) == [id(x)]  # touches at last
    assert ids(tree.iter_overlap(0, 10)) == [id(x)]  # touches at start
    assert ids(tree.iter_overlap(15, 15)) == [id(x)]
    assert list(tree.iter_overlap(21, 30)) == []
    assert list(tree.iter_overlap(0, 9)) == []
    single = Item("single")
    tree.insert(5, 5, single)  # one-page interval
    assert ids(tree.iter_overlap(5, 5)) == [id(single)]
    assert ids(tree.iter_overlap(0, U64_MAX)) == [id(single), id(x)]


def test_full_u64_range() -> None:
    tree: IntervalTree[Item] = IntervalTree()
    whole, top = Item("whole"), Item("top")
    tree.insert(0, U64_MAX, whole)
    tree.insert(U64_MAX, U64_MAX, top)
    assert ids(tree.iter_overlap(U64_MAX, U64_MAX)) == [id(whole), id(top)]
    assert ids(tree.iter_overlap(0, 0)) == [id(whole)]


def test_duplicate_intervals_distinct_items() -> None:
    tree: IntervalTree[Item] = IntervalTree()
    items = [Item(str(i)) for i in range(5)]
    for it in items:
        tree.insert(3, 7, it)
    assert len(tree) == 5
    assert ids(tree.iter_overlap(7, 9)) == ids(items)  # insertion order
    tree.remove(items[2])
    assert items[2] not in tree and items[1] in tree
    assert ids(tree) == ids(items[:2] + items[3:])
    tree.insert(3, 7, items[2])  # re-inserted: now last among equal starts
    assert ids(tree) == ids(items[:2] + items[3:] + [items[2]])


def test_errors() -> None:
    tree: IntervalTree[Item] = IntervalTree()
    a, b = Item("a"), Item("b")
    with pytest.raises(ValueError):
        tree.insert(5, 4, a)
    assert len(tree) == 0 and a not in tree
    tree.insert(1, 2, a)
    with pytest.raises(ValueError):
        tree.insert(1, 2, a)  # same object, same interval
    with pytest.raises(ValueError):
        tree.insert(8, 9, a)  # same object, other interval
    with pytest.raises(KeyError):
        tree.remove(b)  # b == a, but it is a different object
    with pytest.raises(KeyError):
        tree.interval_of(b)
    tree.remove(a)
    with pytest.raises(KeyError):
        tree.remove(a)
    assert len(tree) == 0 and list(tree) == []
    assert "not an item" not in tree


def test_mutation_during_iteration_is_detected() -> None:
    tree: IntervalTree[Item] = IntervalTree()
    items = [Item(str(i)) for i in range(4)]
    for i, it in enumerate(items):
        tree.insert(i, i + 10, it)
    with pytest.raises(RuntimeError):
        for it in tree.iter_overlap(0, 100):
            tree.remove(it)
    # Snapshotting first is the supported way.
    tree2: IntervalTree[Item] = IntervalTree()
    for i, it in enumerate(items):
        tree2.insert(i, i + 10, it)
    for it in list(tree2.iter_overlap(0, 100)):
        tree2.remove(it)
    assert len(tree2) == 0


def test_stays_balanced() -> None:
    n = 10_000
    tree: IntervalTree[Item] = IntervalTree()
    items = [Item(str(i)) for i in range(n)]
    for i, it in enumerate(items):  # sorted insertion: worst case for a plain BST
        tree.insert(i, i + 3, it)
    assert len(tree) == n
    assert tree._height() < 4 * math.log2(n)
    for it in items[::2]:
        tree.remove(it)
    assert tree._height() < 4 * math.log2(n // 2)
    assert ids(tree.iter_overlap(100, 103)) == ids(items[97:104:2])
    assert IntervalTree()._height() == 0
