"""Page-table entries and page protections (arch/x86/include/asm/pgtable_types.h).

A PTE is a plain ``int`` encoded like x86-64's: the pfn in bits 12 and up,
flag bits below.  A process's page table (:class:`PageTable`) is a dict from
virtual page number to PTE holding **present entries only** — a huge mapping
with three touched pages costs three dict entries.

Cache modes follow Linux's PAT setup: write-back is no bits, write-combining
is ``_PAGE_PWT``, uncached-minus is ``_PAGE_PCD``, uncached is both.

Simplified: one level instead of four; no huge pages, no swap entries, no
protection keys.
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import define, field

from .page_alloc import PAGE_SHIFT

__all__ = [
    "CACHE_UC",
    "CACHE_UC_MINUS",
    "CACHE_WB",
    "CACHE_WC",
    "PAGE_NONE",
    "PAGE_READONLY",
    "PAGE_SHARED",
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
    from .vma import VM_EXEC, VM_READ, VM_SHARED, VM_WRITE

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


@define(eq=False, slots=True)
class PageTable:
    """One process's PTEs: virtual page number → PTE, present entries only.

    Range operations cost ``O(min(pages in range, present PTEs))``, never the
    size of the mapping.
    """

    entries: dict[int, int] = field(factory=dict)

    def get(self, vpn: int) -> int | None:
        return self.entries.get(vpn)

    def set(self, vpn: int, pte: int) -> None:
        self.entries[vpn] = pte

    def clear(self, vpn: int) -> int | None:
        return self.entries.pop(vpn, None)

    def __len__(self) -> int:
        return len(self.entries)

    def iter_range(self, start_vpn: int, end_vpn: int) -> Iterator[tuple[int, int]]:
        """Present (vpn, pte) pairs with start_vpn <= vpn < end_vpn, ascending."""
        entries = self.entries
        if end_vpn - start_vpn <= len(entries):
            for vpn in range(start_vpn, end_vpn):
                pte = entries.get(vpn)
                if pte is not None:
                    yield vpn, pte
        else:
            for vpn in sorted(v for v in entries if start_vpn <= v < end_vpn):
                yield vpn, entries[vpn]
