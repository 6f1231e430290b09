"""Page-table entries and page protections (arch/x86/include/asm/pgtable_types.h).

A PTE is a plain ``int`` encoded like x86-64's: the pfn in bits 12 and up,
flag bits below.  A process's page table (:class:`PageTable`) is a dict from
virtual page number to PTE holding **present entries only** — a huge mapping
with three touched pages costs three dict entries.

Cache modes follow Linux's PAT setup: write-back is no bits, write-combining
is ``_PAGE_PWT``, uncached-minus is ``_PAGE_PCD``, uncached is both.

Simplified: one flat dict instead of four levels (plus a secondary index of
populated 512-entry "page-table pages" for range walks); no huge pages, no
swap entries, no protection keys.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence

from attrs import define, field

from .page_alloc import PAGE_SHIFT
from .vma import VM_EXEC, VM_READ, VM_SHARED, VM_WRITE

__all__ = [
    "CACHE_UC",
    "CACHE_UC_MINUS",
    "CACHE_WB",
    "CACHE_WC",
    "PAGE_NONE",
    "PAGE_READONLY",
    "PAGE_SHARED",
    "PTE_TABLE_SHIFT",
    "PTRS_PER_PTE",
    "PageTable",
    "cache_mode_name",
    "mk_pte",
    "pgprot_noncached",
    "pgprot_writecombine",
    "pte_cache_mode",
    "pte_pfn",
    "pte_special",
    "pte_write",
    "vm_get_page_prot",
]

_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_SPECIAL = 1 << 9  # software bit: no struct page refcount / rmap behind it

_CACHE_MASK = _PAGE_PWT | _PAGE_PCD
CACHE_WB = 0
CACHE_WC = _PAGE_PWT
CACHE_UC_MINUS = _PAGE_PCD
CACHE_UC = _PAGE_PCD | _PAGE_PWT

PAGE_NONE = _PAGE_PRESENT | _PAGE_ACCESSED  # no _PAGE_USER: userspace cannot touch it
PAGE_READONLY = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED
PAGE_SHARED = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | _PAGE_RW

_FLAG_MASK = (1 << PAGE_SHIFT) - 1


def cache_mode_name(mode: int) -> str:
    return {CACHE_WB: "WB", CACHE_WC: "WC", CACHE_UC_MINUS: "UC-", CACHE_UC: "UC"}[
        mode & _CACHE_MASK
    ]


def vm_get_page_prot(vm_flags: int) -> int:
    """``vm_get_page_prot``: the protection_map entry for these vm_flags.

    Private writable mappings get a read-only protection so the first write
    faults and copies (COW); shared writable ones are writable.
    """
    if not vm_flags & (VM_READ | VM_WRITE | VM_EXEC):
        return PAGE_NONE
    if vm_flags & VM_WRITE and vm_flags & VM_SHARED:
        return PAGE_SHARED
    return PAGE_READONLY


def pgprot_writecombine(prot: int) -> int:
    return (prot & ~_CACHE_MASK) | CACHE_WC


def pgprot_noncached(prot: int) -> int:
    return (prot & ~_CACHE_MASK) | CACHE_UC_MINUS


def mk_pte(pfn: int, prot: int, *, special: bool = False) -> int:
    """Build a present PTE for ``pfn`` with the protection bits of ``prot``."""
    pte = (pfn << PAGE_SHIFT) | (prot & _FLAG_MASK)
    if special:
        pte |= _PAGE_SPECIAL
    return pte


def pte_pfn(pte: int) -> int:
    return pte >> PAGE_SHIFT


def pte_write(pte: int) -> bool:
    return bool(pte & _PAGE_RW)


def pte_special(pte: int) -> bool:
    return bool(pte & _PAGE_SPECIAL)


def pte_cache_mode(pte: int) -> int:
    return pte & _CACHE_MASK


def pte_mkwrite(pte: int) -> int:
    return pte | _PAGE_RW | _PAGE_DIRTY


def pte_wrprotect(pte: int) -> int:
    return pte & ~_PAGE_RW


def pte_modify(pte: int, newprot: int) -> int:
    """``pte_modify``: keep the pfn and the ``_PAGE_CHG_MASK`` bits, take the rest from newprot.

    x86's ``_PAGE_CHG_MASK`` keeps special, accessed, dirty *and the cache bits*
    (PCD/PWT) of the old PTE, so a PTE a driver remapped write-combining stays
    write-combining across mprotect even if ``vma->vm_page_prot`` is write-back.
    """
    chg = _PAGE_SPECIAL | _PAGE_DIRTY | _PAGE_ACCESSED | _CACHE_MASK
    keep = pte & ~_FLAG_MASK | (pte & chg)
    return keep | (newprot & _FLAG_MASK & ~chg)


def pte_user_access_ok(pte: int, write: bool) -> bool:
    """Would the MMU let a user-mode access through this PTE without faulting?"""
    if not pte & _PAGE_USER:
        return False
    return not write or bool(pte & _PAGE_RW)


def pte_describe(pte: int) -> str:
    bits = []
    bits.append("rw" if pte & _PAGE_RW else "ro")
    if pte & _PAGE_SPECIAL:
        bits.append("special")
    if pte & _PAGE_DIRTY:
        bits.append("dirty")
    bits.append(cache_mode_name(pte))
    return f"pfn={pte_pfn(pte):#x} " + ",".join(bits)


PTE_TABLE_SHIFT = 9
"""log2 of the vpns one "page-table page" of the range index covers (x86's PTRS_PER_PTE)."""
PTRS_PER_PTE = 1 << PTE_TABLE_SHIFT
_DIRECT_PROBE_MAX = 16
"""Ranges of at most this many pages are walked by probing ``entries`` directly."""


@define(eq=False, slots=True)
class PageTable:
    """One process's PTEs: virtual page number → PTE, present entries only.

    ``entries`` (vpn → PTE) is the authoritative store: the fault path reads it
    directly in ``O(1)``.  Beside it lives a secondary index for range walks,
    shaped like the PMD level of a real page table: the populated
    "page-table pages" (``vpn >> PTE_TABLE_SHIFT``, 512 vpns each) as a sorted
    key list, and for each one the sorted list of its present vpns.  So
    :meth:`iter_range` costs ``O(log tables + tables in range + PTEs in
    range)`` — never the size of the range, nor PTEs elsewhere in the process.

    Keys may be added to or removed from ``entries`` **only** through
    :meth:`set` and :meth:`clear`, which keep the index in step.  Changing the
    value of a key that is already present (say, setting the dirty bit) may
    write ``entries[vpn]`` directly.
    """

    entries: dict[int, int] = field(factory=dict)
    _tables: dict[int, list[int]] = field(init=False, factory=dict, repr=False)
    """Page-table page number → its present vpns, ascending."""
    _table_keys: list[int] = field(init=False, factory=list, repr=False)
    """The keys of ``_tables``, ascending (bisected by range walks), plus the keys of
    tables emptied since the last compaction (``_stale``), which walks skip."""
    _stale: set[int] = field(init=False, factory=set, repr=False)
    """Keys still in ``_table_keys`` whose table was emptied: removing a key from the
    sorted list at once would cost the length of the list, so an emptied table only
    marks its key, and the list is compacted once half of it is stale (amortised
    ``O(1)`` per emptied table, at any spread)."""
    _nindexed: int = field(init=False, default=0, repr=False)
    visits: int = field(init=False, default=0, repr=False)
    """Diagnostics counter: page-table pages and PTE slots that range walks
    (:meth:`iter_range`, :meth:`first_present`) examined, summed over all calls.
    Tests read it to check that a walk's cost follows the work done; nothing else
    depends on it."""
    compacted: int = field(init=False, default=0, repr=False)
    """Diagnostics counter: table keys the compactions of ``_table_keys`` copied (at
    most twice the tables emptied so far).  Like :attr:`visits`, for tests only."""

    def __attrs_post_init__(self) -> None:
        if self.entries:
            self._reindex()

    def get(self, vpn: int) -> int | None:
        return self.entries.get(vpn)

    def set(self, vpn: int, pte: int) -> None:
        entries = self.entries
        if vpn not in entries:
            key = vpn >> PTE_TABLE_SHIFT
            table = self._tables.get(key)
            if table is None:
                self._tables[key] = [vpn]
                self._add_key(key)
            elif vpn > table[-1]:
                table.append(vpn)  # ascending fills (faults, remaps, fork) append
            else:
                insort(table, vpn)
            self._nindexed += 1
        entries[vpn] = pte

    def set_range(self, start_vpn: int, ptes: Sequence[int]) -> None:
        """Install ``ptes`` at consecutive vpns from ``start_vpn``, none yet present.

        The bulk form of :meth:`set` for eager fills (``remap_pfn_range``):
        entries go in ascending order, as a loop of :meth:`set` would put them,
        for ``O(len(ptes))`` work done in C.  Raises ``ValueError`` (changing
        nothing) if a PTE in the range is already present.
        """
        n = len(ptes)
        if n == 1:  # one page (remap_pfn_range page by page): what set() does
            if start_vpn in self.entries:
                raise ValueError(
                    f"set_range over present PTEs in [{start_vpn:#x}, {start_vpn + 1:#x})"
                )
            self.set(start_vpn, ptes[0])
            return
        if not n:
            return
        end_vpn = start_vpn + n
        if self.first_present(start_vpn, end_vpn) is not None:
            raise ValueError(f"set_range over present PTEs in [{start_vpn:#x}, {end_vpn:#x})")
        self.entries.update(zip(range(start_vpn, end_vpn), ptes, strict=True))
        tables = self._tables
        new_keys = []
        for key in range(start_vpn >> PTE_TABLE_SHIFT, ((end_vpn - 1) >> PTE_TABLE_SHIFT) + 1):
            lo = max(start_vpn, key << PTE_TABLE_SHIFT)
            hi = min(end_vpn, (key + 1) << PTE_TABLE_SHIFT)
            table = tables.get(key)
            if table is None:
                tables[key] = list(range(lo, hi))
                new_keys.append(key)
            elif table[-1] < lo:
                table.extend(range(lo, hi))
            elif hi <= table[0]:
                table[0:0] = range(lo, hi)
            else:
                table.extend(range(lo, hi))
                table.sort()
        if new_keys:
            stale = self._stale
            if stale and not stale.isdisjoint(new_keys):
                for key in new_keys:
                    self._add_key(key)  # some are still listed: revive those one by one
            else:
                keys = self._table_keys
                i = bisect_left(keys, new_keys[0])
                if i == len(keys) or keys[i] > new_keys[-1]:
                    keys[i:i] = new_keys  # the usual case: no populated table in between
                else:
                    keys.extend(new_keys)
                    keys.sort()
        self._nindexed += n

    def _add_key(self, key: int) -> None:
        """List a newly populated table (its key may still be listed, stale)."""
        stale = self._stale
        if key in stale:
            stale.discard(key)
            return
        keys = self._table_keys
        if not keys or key > keys[-1]:
            keys.append(key)  # ascending fills append
        else:
            insort(keys, key)

    def first_present(self, start_vpn: int, end_vpn: int) -> int | None:
        """The lowest present vpn in ``[start_vpn, end_vpn)``, or None (``O(log tables)``)."""
        if end_vpn - start_vpn <= _DIRECT_PROBE_MAX:  # a few pages: probe them directly
            entries = self.entries
            self.visits += max(0, end_vpn - start_vpn)
            for vpn in range(start_vpn, end_vpn):
                if vpn in entries:
                    return vpn
            return None
        for vpn, _pte in self.iter_range(start_vpn, end_vpn):
            return vpn
        return None

    def clear(self, vpn: int) -> int | None:
        pte = self.entries.pop(vpn, None)
        if pte is not None:
            key = vpn >> PTE_TABLE_SHIFT
            table = self._tables[key]
            if len(table) == 1:
                del self._tables[key]
                self._drop_key(key)
            elif vpn == table[-1]:
                table.pop()
            else:
                del table[bisect_left(table, vpn)]
            self._nindexed -= 1
        return pte

    def _drop_key(self, key: int) -> None:
        """A table was emptied: mark its key stale; compact once half the list is stale."""
        stale = self._stale
        stale.add(key)
        keys = self._table_keys
        if len(stale) * 2 > len(keys):
            self.compacted += len(keys)
            keys[:] = [k for k in keys if k not in stale]
            stale.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def _reindex(self) -> None:
        """Rebuild the range index from ``entries`` (``O(n log n)``)."""
        tables: dict[int, list[int]] = {}
        for vpn in sorted(self.entries):
            key = vpn >> PTE_TABLE_SHIFT
            table = tables.get(key)
            if table is None:
                tables[key] = [vpn]
            else:
                table.append(vpn)
        self._tables = tables
        self._table_keys = sorted(tables)
        self._stale = set()
        self._nindexed = len(self.entries)

    def check_index(self) -> None:
        """Assert that the range index matches ``entries`` exactly (for tests)."""
        listed = [key for key in self._table_keys if key not in self._stale]
        indexed = [vpn for key in listed for vpn in self._tables[key]]
        assert indexed == sorted(self.entries), "page-table range index out of step"
        assert sorted(self._tables) == listed
        assert self._table_keys == sorted(set(self._table_keys)), "table keys out of order"
        assert self._stale <= set(self._table_keys), "a stale key is not listed"
        assert not self._stale & set(self._tables), "a populated table is marked stale"
        assert all(self._tables.values()), "empty page-table page left in the index"
        assert self._nindexed == len(self.entries)

    def iter_range(self, start_vpn: int, end_vpn: int) -> Iterator[tuple[int, int]]:
        """Present (vpn, pte) pairs with start_vpn <= vpn < end_vpn, ascending.

        Cost: ``O(log tables + tables in range + PTEs in range)``.  The table
        may be changed while the iterator is live (callers zap as they go):
        each vpn's PTE is read when it is reached, and a vpn cleared before
        then is skipped.
        """
        if end_vpn <= start_vpn:
            return
        entries = self.entries
        if end_vpn - start_vpn <= _DIRECT_PROBE_MAX:
            self.visits += end_vpn - start_vpn
            for vpn in range(start_vpn, end_vpn):
                pte = entries.get(vpn)
                if pte is not None:
                    yield vpn, pte
            return
        if self._nindexed != len(entries):
            self._reindex()  # someone added/removed keys behind set()/clear(): heal
        keys = self._table_keys
        first = start_vpn >> PTE_TABLE_SHIFT
        last = (end_vpn - 1) >> PTE_TABLE_SHIFT
        lo = bisect_left(keys, first)
        hi = bisect_left(keys, last + 1, lo)
        tables = self._tables
        for key in keys[lo:hi]:
            table = tables.get(key)
            self.visits += 1
            if table is None:
                continue  # emptied (a stale key, or while the iterator was suspended)
            i = bisect_left(table, start_vpn) if key == first else 0
            j = bisect_left(table, end_vpn, i) if key == last else len(table)
            vpns = table[i:j]
            self.visits += len(vpns)
            for vpn in vpns:
                pte = entries.get(vpn)
                if pte is not None:
                    yield vpn, pte
