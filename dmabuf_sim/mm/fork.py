"""fork's half of the mm: ``dup_mmap`` (kernel/fork.c).

For every vma of the parent (kernel-spec §5.6, R18, R40):

* ``VM_DONTCOPY`` vmas are skipped;
* the child's copy takes a reference on ``vm_file`` and is inserted into the
  same ``i_mmap`` right after the parent's (so shoot-downs reach children, R28);
* PTEs are copied only where the vma cannot be refaulted
  (``VM_PFNMAP``/``VM_MIXEDMAP``) or holds anonymous pages (COW, both sides
  write-protected); otherwise the child starts with no PTEs and faults;
* finally ``vm_ops->open(child_vma)``.

Simplified: ``VM_WIPEONFORK`` gets no PTEs; no userfaultfd, no khugepaged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..fs import get_file
from ..trace import kernel_function
from .memory import copy_page_range
from .vma import VM_DONTCOPY, VM_LOCKED, VM_WIPEONFORK, vm_area_dup

if TYPE_CHECKING:
    from .mmap import MmStruct

__all__ = ["dup_mmap"]


@kernel_function("dup_mmap", file="kernel/fork.c")
def dup_mmap(mm: MmStruct, oldmm: MmStruct) -> int:
    for mpnt in oldmm.vmas:
        if mpnt.vm_flags & VM_DONTCOPY:
            continue
        tmp = vm_area_dup(mpnt, mm)
        tmp.vm_flags &= ~VM_LOCKED
        if tmp.vm_file is not None:
            get_file(tmp.vm_file)
        mm.vma_link(tmp)
        if not tmp.vm_flags & VM_WIPEONFORK:
            copy_page_range(tmp, mpnt)
        if tmp.vm_ops is not None and tmp.vm_ops.open is not None:
            tmp.vm_ops.open(tmp)
    return 0
