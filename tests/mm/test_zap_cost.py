"""Zaps scale: zap_vma_ptes, unmap_mapping_range, munmap and exit cost in proportion to
present PTEs plus touched tables.

"Costs grow with the work done, never with buffer size or with unrelated state."  The
worst spread for a page table is one present PTE per 512-entry table: every zapped PTE
then empties a table.  These tests build 1,000, 10,000 and 100,000 such PTEs and count
the work each teardown does — never its time:

* ``PageTable.visits``: page-table pages and PTE slots the range walks examined;
* the elements every mutation of the sorted list of populated tables shifts (what the
  ``memmove`` of a list insert or delete costs), counted by a list that records them.

Removing each emptied table's key from the front of that list used to shift every key
after it: quadratic, 1.2, 2.4 and 4.7 µs per PTE at 1k, 10k and 40k PTEs.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, SupportsIndex

import pytest

from dmabuf_sim import Kernel, Process
from dmabuf_sim.fs import File, FileOperations
from dmabuf_sim.mm.memory import unmap_mapping_range, vmf_insert_pfn, zap_vma_ptes
from dmabuf_sim.mm.page_alloc import PAGE_SIZE
from dmabuf_sim.mm.pgtable import PTRS_PER_PTE
from dmabuf_sim.mm.vma import VM_DONTEXPAND, VM_PFNMAP, VmAreaStruct, VmOperationsStruct

RW = mmap.PROT_READ | mmap.PROT_WRITE
SIZES = (1_000, 10_000, 100_000)
SPAN = PTRS_PER_PTE * PAGE_SIZE
"""One PTE every 512 pages: each in its own page-table page."""


class ShiftCountingList(list[int]):
    """A list that counts the elements each insert or delete shifts (its memmove)."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self.shifted = 0

    def _index(self, i: SupportsIndex) -> int:
        j = i.__index__()
        return j + len(self) if j < 0 else j

    def insert(self, i: SupportsIndex, value: int) -> None:
        self.shifted += max(0, len(self) - self._index(i))
        super().insert(i, value)

    def pop(self, i: SupportsIndex = -1) -> int:
        self.shifted += len(self) - self._index(i) - 1
        return super().pop(i)

    def __delitem__(self, i: SupportsIndex | slice) -> None:
        self.shifted += len(self) if isinstance(i, slice) else len(self) - self._index(i) - 1
        super().__delitem__(i)

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            self.shifted += len(self)  # a slice assignment may move everything
        super().__setitem__(i, value)


def pfnmap(file: File, vma: VmAreaStruct) -> int:
    vma.vm_flags |= VM_PFNMAP | VM_DONTEXPAND
    vma.vm_ops = VmOperationsStruct(owner="sparse")
    return 0


def sparse(n: int) -> tuple[Process, int, int, ShiftCountingList]:
    """A process with one ``VM_PFNMAP`` vma of ``n`` * 512 pages and one PTE per table."""
    k = Kernel("latest")
    k.register_chrdev("/dev/sparse", FileOperations(owner="sparse", mmap=pfnmap))
    p = k.spawn("sparse")
    fd = p.open("/dev/sparse", os.O_RDWR)
    addr = p.mmap(0, n * SPAN, RW, mmap.MAP_SHARED, fd, 0)
    vma = p.mm.vma_lookup(addr)
    assert vma is not None
    table = p.mm.pgtable
    keys = ShiftCountingList(table._table_keys)
    table._table_keys = keys
    for i in range(n):
        vmf_insert_pfn(vma, addr + i * SPAN, 0x1000 + i)  # ascending: appended, no shifts
    assert len(table) == n and len(keys) == n
    table.visits = 0
    keys.shifted = 0
    return p, fd, addr, keys


def teardown(op: str, n: int) -> tuple[int, int]:
    """(PageTable.visits, list elements shifted) of one teardown of ``n`` sparse PTEs."""
    p, fd, addr, keys = sparse(n)
    table = p.mm.pgtable
    if op == "unmap_mapping_range":
        assert unmap_mapping_range(p.file(fd).f_mapping, 0, 0, 1) == n
    elif op == "zap_vma_ptes":
        vma = p.mm.vma_lookup(addr)
        assert vma is not None
        assert zap_vma_ptes(vma, addr, n * SPAN) == 0
    elif op == "munmap":
        p.munmap(addr, n * SPAN)
    else:
        p.exit()
    assert len(table) == 0
    if op != "exit":
        table.check_index()
    assert table._table_keys is keys  # the counting list saw every change
    return table.visits, keys.shifted


@pytest.mark.parametrize("op", ["zap_vma_ptes", "unmap_mapping_range", "munmap", "exit"])
def test_teardown_work_is_linear_in_sparse_ptes(op: str) -> None:
    work = {n: teardown(op, n) for n in SIZES}
    for n, (visits, shifted) in work.items():
        assert visits <= 2 * n, (n, visits)  # each PTE, and the one table it sits in
        assert shifted <= 2 * n, (n, shifted)  # compactions: at most 2 per emptied table
    per_pte = [(visits + shifted) / n for n, (visits, shifted) in work.items()]
    assert max(per_pte) <= min(per_pte) * 1.01, per_pte  # flat from 1k to 100k


def test_the_old_way_would_have_shifted_quadratically() -> None:
    """The counting list does see a delete from the front: the measure can fail."""
    keys = ShiftCountingList(range(1000))
    for _ in range(1000):
        del keys[0]
    assert keys.shifted == 999 * 1000 // 2
