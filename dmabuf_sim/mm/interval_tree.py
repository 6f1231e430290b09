"""Model of the kernel's ``vma_interval_tree`` (the ``i_mmap`` index).

In Linux, ``struct address_space.i_mmap`` is an augmented red-black tree
(include/linux/interval_tree_generic.h, instantiated for VMAs in
mm/interval_tree.c).  Each VMA is keyed by the closed range of file pages it
maps, ``[vm_pgoff, vm_pgoff + vma_pages(vma) - 1]``, and every node caches the
largest ``last`` in its subtree, so ``vma_interval_tree_foreach(vma, root,
first, last)`` -- used by ``unmap_mapping_range()`` -- finds every VMA that
intersects ``[first, last]`` without scanning the whole file's mappings.

Simplifications in this simulation:

* The balanced tree is a treap (priorities from a per-tree
  ``random.Random(0)``, so runs are reproducible) rather than a red-black
  tree.  The expected cost is the same: O(log n) insert/remove, and
  O(log n + k) to report k overlapping items.
* Items are keyed by ``(start, insertion sequence)``, so items with equal
  starts come out in insertion order (the kernel puts equal keys to the right,
  which gives the same order).
* Items are told apart by identity, never ``==``; a side table keyed by
  ``id(item)`` finds an item's node for O(log n) removal.
* Changing the tree while iterating over it is not supported (as in the
  kernel, where i_mmap_rwsem is held across the walk): an iterator that sees
  the tree changed raises ``RuntimeError``.  Callers that must change the
  tree snapshot first, e.g. ``list(tree.iter_overlap(a, b))``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class _Node(Generic[T]):
    __slots__ = ("item", "last", "left", "max_last", "prio", "right", "seq", "start")

    def __init__(self, start: int, last: int, seq: int, item: T, prio: float) -> None:
        self.start = start
        self.last = last
        self.seq = seq
        self.item = item
        self.prio = prio
        self.max_last = last  # largest ``last`` in this subtree (kernel: __subtree_last)
        self.left: _Node[T] | None = None
        self.right: _Node[T] | None = None

    def update(self) -> None:
        m = self.last
        if self.left is not None and self.left.max_last > m:
            m = self.left.max_last
        if self.right is not None and self.right.max_last > m:
            m = self.right.max_last
        self.max_last = m


def _before(a_start: int, a_seq: int, b: _Node[T]) -> bool:
    """True if key (a_start, a_seq) sorts before node b's key."""
    return a_start < b.start or (a_start == b.start and a_seq < b.seq)


class IntervalTree(Generic[T]):
    """Augmented balanced binary search tree of closed intervals [start, last]."""

    __slots__ = ("_nodes", "_rng", "_root", "_seq", "_version")

    def __init__(self) -> None:
        self._root: _Node[T] | None = None
        self._nodes: dict[int, _Node[T]] = {}  # id(item) -> node
        self._rng = random.Random(0)
        self._seq = 0
        self._version = 0  # bumped on every change; iterators check it

    def insert(self, start: int, last: int, item: T) -> None:
        """Add ``item`` covering the closed range [start, last]."""
        if last < start:
            raise ValueError(f"interval [{start}, {last}] has last < start")
        if item in self:
            raise ValueError(f"item {item!r} is already in the tree")
        node = _Node(start, last, self._seq, item, self._rng.random())
        self._seq += 1
        self._root = self._insert(self._root, node)
        self._nodes[id(item)] = node
        self._version += 1

    def remove(self, item: T) -> None:
        """Remove ``item`` (by identity); KeyError if it is not in the tree."""
        node = self._node_of(item)
        self._root = self._remove(self._root, node)
        del self._nodes[id(item)]
        self._version += 1

    def iter_overlap(self, first: int, last: int) -> Iterator[T]:
        """Yield every item whose interval intersects [first, last].

        Order is ascending (start, insertion order).  An empty query
        (``last < first``) yields nothing.
        """
        return self._overlap(first, last)

    def interval_of(self, item: T) -> tuple[int, int]:
        """Return ``(start, last)`` of ``item``; KeyError if absent."""
        node = self._node_of(item)
        return node.start, node.last

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[T]:
        """Yield all items in ascending (start, insertion order)."""
        return self._overlap(-1, -2, everything=True)

    def __contains__(self, item: object) -> bool:
        node = self._nodes.get(id(item))
        return node is not None and node.item is item

    def _height(self) -> int:
        """Height of the tree (0 when empty); for balance tests only."""
        height = 0
        level = [self._root] if self._root is not None else []
        while level:
            height += 1
            level = [c for n in level for c in (n.left, n.right) if c is not None]
        return height

    # -- internals ---------------------------------------------------------

    def _node_of(self, item: T) -> _Node[T]:
        node = self._nodes.get(id(item))
        if node is None or node.item is not item:
            raise KeyError(item)
        return node

    def _insert(self, root: _Node[T] | None, node: _Node[T]) -> _Node[T]:
        if root is None:
            return node
        if _before(node.start, node.seq, root):
            child = root.left = self._insert(root.left, node)
            if child.prio > root.prio:  # rotate right
                root.left = child.right
                child.right = root
                root.update()
                root = child
        else:
            child = root.right = self._insert(root.right, node)
            if child.prio > root.prio:  # rotate left
                root.right = child.left
                child.left = root
                root.update()
                root = child
        root.update()
        return root

    def _remove(self, root: _Node[T] | None, node: _Node[T]) -> _Node[T] | None:
        assert root is not None, "node indexed but not in tree"
        if root is node:
            return self._merge(node.left, node.right)
        if _before(node.start, node.seq, root):
            root.left = self._remove(root.left, node)
        else:
            root.right = self._remove(root.right, node)
        root.update()
        return root

    def _merge(self, a: _Node[T] | None, b: _Node[T] | None) -> _Node[T] | None:
        """Join two treaps where every key in ``a`` sorts before ``b``."""
        if a is None:
            return b
        if b is None:
            return a
        if a.prio > b.prio:
            a.right = self._merge(a.right, b)
            a.update()
            return a
        b.left = self._merge(a, b.left)
        b.update()
        return b

    def _overlap(self, first: int, last: int, everything: bool = False) -> Iterator[T]:
        if not everything and last < first:
            return
        version = self._version
        stack: list[_Node[T]] = []
        node = self._root
        while True:
            # Descend left, skipping subtrees that end before ``first``.
            while node is not None and (everything or node.max_last >= first):
                stack.append(node)
                node = node.left
            if not stack:
                return
            node = stack.pop()
            if not everything:
                if node.start > last:
                    return  # in-order: every later node starts even later
                if node.last < first:
                    node = node.right
                    continue
            yield node.item
            if self._version != version:
                raise RuntimeError("IntervalTree changed during iteration")
            node = node.right
