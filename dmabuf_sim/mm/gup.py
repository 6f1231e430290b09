"""Populating a range of an address space ahead of use (mm/gup.c).

:func:`mm_populate` is what ``MAP_POPULATE`` and ``MAP_LOCKED`` (and a ``VM_LOCKED``
vma that grows) run: ``__mm_populate`` walks the vmas of the range and faults
every page in, as ``populate_vma_page_range`` does through GUP.

Simplified: the pages are faulted in one by one with ``handle_mm_fault`` (GUP's
``faultin_page`` loop without ``follow_page``); no page references are kept.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ..errors import Signal
from ..trace import kernel_function
from .memory import handle_mm_fault
from .page_alloc import PAGE_ALIGN, PAGE_SHIFT, PAGE_SIZE
from .pgtable import pte_write
from .vma import FAULT_FLAG_WRITE, VM_FAULT_ERROR, VM_IO, VM_PFNMAP, VM_SHARED, VM_WRITE

if TYPE_CHECKING:
    from ..process import Process

__all__ = ["mm_populate"]


@kernel_function("__mm_populate", file="mm/gup.c")
def mm_populate(proc: Process, start: int, length: int) -> None:
    """``MAP_POPULATE``: fault every page in now; errors are ignored, as in the kernel.

    A fault that fails (``VM_FAULT_OOM``, ``VM_FAULT_SIGBUS``...) ends the work on
    that vma: ``populate_vma_page_range`` returns the error and ``__mm_populate``,
    ignoring it, continues at the next vma."""
    end = start + PAGE_ALIGN(length)
    mm = proc.mm
    addr = start
    while addr < end:
        vma = mm.vma_lookup(addr)
        if vma is None:
            addr += PAGE_SIZE
            continue
        if vma.vm_flags & (VM_IO | VM_PFNMAP):
            # __mm_populate skips VM_IO|VM_PFNMAP vmas (GUP's check_vma_flags refuses them)
            addr = vma.vm_end
            continue
        # populate_vma_page_range: write-fault private writable mappings to break
        # COW; shared ones are only read-faulted ("would not want to dirty them")
        write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
        pte = mm.pgtable.get(addr >> PAGE_SHIFT)
        if pte is None or (write and not pte_write(pte)):
            ret = VM_FAULT_ERROR
            with contextlib.suppress(Signal):
                ret = handle_mm_fault(vma, addr, FAULT_FLAG_WRITE if write else 0)
            if ret & VM_FAULT_ERROR:
                addr = vma.vm_end
                continue
        addr += PAGE_SIZE
