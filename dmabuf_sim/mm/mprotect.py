"""mprotect(2) (mm/mprotect.c).

``do_mprotect_pkey`` walks the vmas of the range in order; for each it
computes the new flags and refuses to add a permission whose ``VM_MAY*`` bit
is clear (``EACCES``, R7: a read-only shared mapping of a file opened without
``FMODE_WRITE`` can never become writable).  ``mprotect_fixup`` splits the
vma at the edges (new pieces get a file reference and ``->open``, R19) and
rewrites the present PTEs with the new protection.

As in the kernel, a failure part-way leaves the vmas already processed
changed: mprotect is not atomic across vmas.

Simplified: no pkeys, no re-merging after the change.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..trace import kernel_function
from .mmap import (
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    calc_vm_prot_bits,
    split_vma,
)
from .page_alloc import PAGE_ALIGN, PAGE_MASK, PAGE_SHIFT
from .pgtable import _PAGE_RW, pte_modify, vm_get_page_prot
from .vma import VM_EXEC, VM_GROWSDOWN, VM_READ, VM_SHARED, VM_WRITE, VmAreaStruct

if TYPE_CHECKING:
    from .mmap import MmStruct

__all__ = ["do_mprotect_pkey"]

_CACHE_BITS = 0x18  # _PAGE_PWT | _PAGE_PCD: kept across protection changes (pgprot_modify)


@kernel_function("do_mprotect_pkey", file="mm/mprotect.c")
def do_mprotect_pkey(mm: MmStruct, start: int, length: int, prot: int) -> int:
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == PROT_GROWSDOWN | PROT_GROWSUP:  # can't be both
        return -errno.EINVAL
    if start & ~PAGE_MASK:
        return -errno.EINVAL
    if not length:
        return 0
    length = PAGE_ALIGN(length)
    end = start + length
    if end <= start:
        return -errno.ENOMEM
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
        return -errno.EINVAL
    vma = mm.find_vma(start)
    if vma is None:
        return -errno.ENOMEM
    if grows:
        # PROT_GROWSDOWN extends the change to the start of a VM_GROWSDOWN vma;
        # x86 has no VM_GROWSUP, so PROT_GROWSUP is always EINVAL here.
        if grows == PROT_GROWSDOWN and vma.vm_start >= end:
            return -errno.ENOMEM
        if grows == PROT_GROWSUP and vma.vm_start > start:
            return -errno.ENOMEM
        if grows == PROT_GROWSUP or not vma.vm_flags & VM_GROWSDOWN:
            return -errno.EINVAL
        start = vma.vm_start
    if vma.vm_start > start:
        return -errno.ENOMEM
    nstart = start
    while True:
        newflags = calc_vm_prot_bits(prot) | (vma.vm_flags & ~(VM_READ | VM_WRITE | VM_EXEC))
        # a permission may only be added where its VM_MAY* bit (4 bits up) is set
        if (newflags & ~(newflags >> 4)) & (VM_READ | VM_WRITE | VM_EXEC):
            return -errno.EACCES
        tmp = min(vma.vm_end, end)
        err = mprotect_fixup(mm, vma, nstart, tmp, newflags)
        if err:
            return err
        nstart = tmp
        if nstart >= end:
            return 0
        nxt = mm.find_vma(nstart)
        if nxt is None or nxt.vm_start != nstart:
            return -errno.ENOMEM
        vma = nxt


@kernel_function("mprotect_fixup", file="mm/mprotect.c")
def mprotect_fixup(mm: MmStruct, vma: VmAreaStruct, start: int, end: int, newflags: int) -> int:
    if newflags == vma.vm_flags:
        return 0
    # __split_vma asks ->may_split: a veto at the end edge leaves the start edge
    # already split, as mprotect_fixup's split_vma calls do.
    if start > vma.vm_start:
        err = split_vma(mm, vma, start, new_below=True)
        if err:
            return err
    if end < vma.vm_end:
        err = split_vma(mm, vma, end, new_below=False)
        if err:
            return err
    vma.vm_flags = newflags
    cache = vma.vm_page_prot & _CACHE_BITS
    vma.vm_page_prot = (vm_get_page_prot(newflags) & ~_CACHE_BITS) | cache
    change_protection(mm, vma)
    return 0


def change_protection(mm: MmStruct, vma: VmAreaStruct) -> None:
    """Rewrite present PTEs; private mappings stay read-only so writes still COW."""
    table = mm.pgtable
    shared_write = vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE
    for vpn, pte in list(table.iter_range(vma.vm_start >> PAGE_SHIFT, vma.vm_end >> PAGE_SHIFT)):
        new = pte_modify(pte, vma.vm_page_prot)
        if not vma.vm_flags & VM_WRITE:
            new &= ~_PAGE_RW
        elif shared_write:
            new |= _PAGE_RW
        elif pte & _PAGE_RW:
            new |= _PAGE_RW  # an exclusive COW copy stays writable
        table.set(vpn, new)
