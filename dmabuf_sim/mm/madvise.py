"""madvise(2) (mm/madvise.c).

``do_madvise`` checks, in the kernel's order: the advice is one this kernel
knows (``madvise_behavior_valid``, per spec: ``MADV_FREE`` 4.5,
``MADV_WIPEONFORK`` 4.14, ``MADV_COLD``/``PAGEOUT`` 5.4, ``MADV_POPULATE_*``
5.14, ``MADV_DONTNEED_LOCKED`` 5.18, ``MADV_COLLAPSE`` 6.1, guard regions
6.13) else ``EINVAL``; ``start`` page aligned; ``len`` not rounding from a
small negative to 0; no wrap (``EINVAL``); an empty range is 0.  Then
``madvise_walk_vmas`` visits each vma of the range — a hole sets ``ENOMEM``,
returned at the end unless a vma's advice failed first (that error wins, and
the vmas already visited stay advised, as in the kernel).

Per vma (``madvise_vma_behavior``), what dma-buf mappings meet:

* ``MADV_DONTNEED``/``FREE``/``COLD``/``PAGEOUT`` refuse ``VM_PFNMAP`` (and
  ``VM_LOCKED``) vmas — every PFN-mapped dma-buf: ``EINVAL``.  ``DONTNEED`` zaps
  the PTEs of other vmas (shared pages refault from their file, private
  anonymous ones come back zeroed); ``MADV_FREE`` wants anonymous memory;
* ``MADV_REMOVE`` punches a hole through ``vfs_fallocate`` of the vma's file
  (a dma-buf file: ``ENODEV``; a memfd: the pages go) and wants a shared
  mapping that may write (6.7+: ``VM_MAYWRITE``; before: ``VM_WRITE``), else
  ``EACCES``;
* ``MADV_DOFORK`` refuses ``VM_IO``; ``MADV_DODUMP`` refuses ``VM_SPECIAL``;
  ``MADV_WIPEONFORK`` wants private anonymous memory (``EINVAL``);
* ``MADV_POPULATE_*`` faults the range in through GUP, which refuses
  ``VM_IO|VM_PFNMAP`` vmas and missing permissions (``EINVAL``); a fault that
  would SIGBUS is ``EFAULT``; a hole ``ENOMEM``;
* flag advice (``NORMAL``, ``RANDOM``, ``SEQUENTIAL``, ``DONTFORK``,
  ``DONTDUMP``, ``HUGEPAGE``, ...) updates ``vm_flags``, splitting the vma at
  the range's edges (``->may_split`` may veto) — on dma-buf vmas too.

Simplified: no swap, no THP, no KSM merging (``MADV_MERGEABLE`` only sets the
flag where KSM would), no userfaultfd, no mseal.  ``MADV_COLD``/``PAGEOUT``
and ``MADV_FREE`` keep the pages (nothing reclaims memory here, as on an idle
machine).  Raise :class:`NotImplementedError`: ``MADV_HWPOISON``/
``MADV_SOFT_OFFLINE`` (they poison real memory), ``MADV_COLLAPSE`` where a
huge page would actually be collapsed, and installing guard regions.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..fs_open import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, vfs_fallocate
from ..trace import kernel_function
from .memory import handle_mm_fault
from .mmap import split_vma, zap_vma_range
from .page_alloc import PAGE_ALIGN, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from .pgtable import pte_write
from .shmem import is_shmem_file
from .vma import (
    FAULT_FLAG_WRITE,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_FAULT_ERROR,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WIPEONFORK,
    VM_WRITE,
    VmAreaStruct,
)

if TYPE_CHECKING:
    from ..spec import Spec
    from .mmap import MmStruct

__all__ = [
    "MADV_COLD",
    "MADV_COLLAPSE",
    "MADV_DODUMP",
    "MADV_DOFORK",
    "MADV_DONTDUMP",
    "MADV_DONTFORK",
    "MADV_DONTNEED",
    "MADV_DONTNEED_LOCKED",
    "MADV_FREE",
    "MADV_GUARD_INSTALL",
    "MADV_GUARD_REMOVE",
    "MADV_HUGEPAGE",
    "MADV_HWPOISON",
    "MADV_KEEPONFORK",
    "MADV_MERGEABLE",
    "MADV_NOHUGEPAGE",
    "MADV_NORMAL",
    "MADV_PAGEOUT",
    "MADV_POPULATE_READ",
    "MADV_POPULATE_WRITE",
    "MADV_RANDOM",
    "MADV_REMOVE",
    "MADV_SEQUENTIAL",
    "MADV_SOFT_OFFLINE",
    "MADV_UNMERGEABLE",
    "MADV_WILLNEED",
    "MADV_WIPEONFORK",
    "do_madvise",
    "madvise_behavior_valid",
]

# include/uapi/asm-generic/mman-common.h
MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_MERGEABLE = 12
MADV_UNMERGEABLE = 13
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_DONTDUMP = 16
MADV_DODUMP = 17
MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
MADV_COLD = 20
MADV_PAGEOUT = 21
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
MADV_DONTNEED_LOCKED = 24
MADV_COLLAPSE = 25
MADV_HWPOISON = 100
MADV_SOFT_OFFLINE = 101
MADV_GUARD_INSTALL = 102
MADV_GUARD_REMOVE = 103

# include/linux/mm.h vm_flags the advice toggles
VM_SEQ_READ = 0x00008000
VM_RAND_READ = 0x00010000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000
VM_NO_KHUGEPAGED = VM_SPECIAL | VM_HUGETLB
HPAGE_PMD_SIZE = 1 << 21

_ALWAYS = frozenset(
    {
        MADV_NORMAL,
        MADV_RANDOM,
        MADV_SEQUENTIAL,
        MADV_WILLNEED,
        MADV_DONTNEED,
        MADV_REMOVE,
        MADV_DONTFORK,
        MADV_DOFORK,
        MADV_MERGEABLE,  # CONFIG_KSM
        MADV_UNMERGEABLE,
        MADV_HUGEPAGE,  # CONFIG_TRANSPARENT_HUGEPAGE
        MADV_NOHUGEPAGE,
        MADV_DONTDUMP,
        MADV_DODUMP,
        MADV_HWPOISON,  # CONFIG_MEMORY_FAILURE
        MADV_SOFT_OFFLINE,
    }
)


def madvise_behavior_valid(spec: Spec, behavior: int) -> bool:
    """``madvise_behavior_valid``: the advice values this kernel (and Debian's config) knows."""
    if behavior in _ALWAYS:
        return True
    return (
        (behavior == MADV_FREE and spec.madvise_free)
        or (behavior in (MADV_WIPEONFORK, MADV_KEEPONFORK) and spec.madvise_wipeonfork)
        or (behavior in (MADV_COLD, MADV_PAGEOUT) and spec.madvise_cold_pageout)
        or (behavior in (MADV_POPULATE_READ, MADV_POPULATE_WRITE) and spec.madvise_populate)
        or (behavior == MADV_DONTNEED_LOCKED and spec.madvise_dontneed_locked)
        or (behavior == MADV_COLLAPSE and spec.madvise_collapse)
        or (behavior in (MADV_GUARD_INSTALL, MADV_GUARD_REMOVE) and spec.madvise_guard)
    )


@kernel_function("do_madvise", file="mm/madvise.c")
def do_madvise(mm: MmStruct, start: int, len_in: int, behavior: int) -> int:
    """``madvise(start, len_in, behavior)``: 0 or ``-errno``."""
    if not madvise_behavior_valid(mm.kernel.spec, behavior):
        return -errno.EINVAL
    if start & ~PAGE_MASK:
        return -errno.EINVAL
    length = PAGE_ALIGN(len_in)
    if len_in and not length:  # rounded up from a small negative to zero
        return -errno.EINVAL
    end = start + length
    if end >= 1 << 64:
        return -errno.EINVAL
    if end == start:
        return 0
    if behavior in (MADV_HWPOISON, MADV_SOFT_OFFLINE):
        # madvise_inject_error: CAP_SYS_ADMIN (the simulated processes are root) would
        # poison or offline real page frames
        raise NotImplementedError(
            "MADV_HWPOISON/MADV_SOFT_OFFLINE (memory failure) is not modelled"
        )
    if behavior in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        return madvise_populate(mm, start, end, behavior == MADV_POPULATE_WRITE)
    return madvise_walk_vmas(mm, start, end, behavior)


@kernel_function("madvise_walk_vmas", file="mm/madvise.c")
def madvise_walk_vmas(mm: MmStruct, start: int, end: int, behavior: int) -> int:
    """Visit every vma of ``[start, end)``; a hole is ``ENOMEM`` unless a vma failed."""
    unmapped_error = 0
    vma = mm.find_vma(start)
    while True:
        if vma is None:
            return -errno.ENOMEM
        if start < vma.vm_start:
            unmapped_error = -errno.ENOMEM
            start = vma.vm_start
            if start >= end:
                break
        tmp = min(vma.vm_end, end)
        error, prev = madvise_vma_behavior(mm, vma, start, tmp, behavior)
        if error:
            return error
        start = tmp
        if prev is not None and start < prev.vm_end:
            start = prev.vm_end
        if start >= end:
            break
        # madvise_remove/willneed dropped mmap_lock (prev NULL): look up again by address
        vma = mm.find_vma(prev.vm_end if prev is not None else start)
    return unmapped_error


def madvise_vma_behavior(
    mm: MmStruct, vma: VmAreaStruct, start: int, end: int, behavior: int
) -> tuple[int, VmAreaStruct | None]:
    """One vma's share of the advice: ``(0 or -errno, prev)`` as the kernel's ``*prev``."""
    if behavior == MADV_REMOVE:
        return madvise_remove(vma, start, end), None
    if behavior == MADV_WILLNEED:
        return 0, (None if vma.vm_file is not None else vma)  # vfs_fadvise: advice only
    if behavior in (MADV_COLD, MADV_PAGEOUT):
        # madvise_cold/pageout: nothing is reclaimed here, the pages stay where they are
        return (-errno.EINVAL if not _can_madv_lru_vma(vma) else 0), vma
    if behavior in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
        return madvise_dontneed_free(mm, vma, start, end, behavior), vma
    if behavior == MADV_COLLAPSE:
        return madvise_collapse(vma, start, end), vma
    if behavior in (MADV_GUARD_INSTALL, MADV_GUARD_REMOVE):
        return madvise_guard(vma, behavior), vma
    new_flags = vma.vm_flags
    if behavior == MADV_NORMAL:
        new_flags &= ~(VM_RAND_READ | VM_SEQ_READ)
    elif behavior == MADV_SEQUENTIAL:
        new_flags = (new_flags & ~VM_RAND_READ) | VM_SEQ_READ
    elif behavior == MADV_RANDOM:
        new_flags = (new_flags & ~VM_SEQ_READ) | VM_RAND_READ
    elif behavior == MADV_DONTFORK:
        new_flags |= VM_DONTCOPY
    elif behavior == MADV_DOFORK:
        if vma.vm_flags & VM_IO:
            return -errno.EINVAL, vma
        new_flags &= ~VM_DONTCOPY
    elif behavior == MADV_WIPEONFORK:
        # "MADV_WIPEONFORK is only supported on anonymous memory."
        if vma.vm_file is not None or vma.vm_flags & VM_SHARED:
            return -errno.EINVAL, vma
        new_flags |= VM_WIPEONFORK
    elif behavior == MADV_KEEPONFORK:
        new_flags &= ~VM_WIPEONFORK
    elif behavior == MADV_DONTDUMP:
        new_flags |= VM_DONTDUMP
    elif behavior == MADV_DODUMP:
        if new_flags & VM_SPECIAL:
            return -errno.EINVAL, vma
        new_flags &= ~VM_DONTDUMP
    elif behavior == MADV_MERGEABLE:
        # ksm_madvise: vmas KSM cannot merge are left alone, without an error
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE | VM_SPECIAL | VM_HUGETLB):
            new_flags |= VM_MERGEABLE
    elif behavior == MADV_UNMERGEABLE:
        new_flags &= ~VM_MERGEABLE
    elif behavior == MADV_HUGEPAGE:
        new_flags = (new_flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    elif behavior == MADV_NOHUGEPAGE:
        new_flags = (new_flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    error = madvise_update_vma(mm, vma, start, end, new_flags)
    if error == -errno.ENOMEM:
        error = -errno.EAGAIN  # "madvise() returns EAGAIN if kernel resources ... unavailable"
    return error, vma


@kernel_function("madvise_update_vma", file="mm/madvise.c")
def madvise_update_vma(
    mm: MmStruct, vma: VmAreaStruct, start: int, end: int, new_flags: int
) -> int:
    """Give ``[start, end)`` of ``vma`` the new flags, splitting at the edges first."""
    if new_flags == vma.vm_flags:
        return 0
    if start > vma.vm_start:
        err = split_vma(mm, vma, start, new_below=True)
        if err:
            return err
    if end < vma.vm_end:
        err = split_vma(mm, vma, end, new_below=False)
        if err:
            return err
    vma.vm_flags = new_flags
    return 0


def _can_madv_lru_vma(vma: VmAreaStruct) -> bool:
    return not vma.vm_flags & (VM_LOCKED | VM_HUGETLB | VM_PFNMAP)


@kernel_function("madvise_dontneed_free", file="mm/madvise.c")
def madvise_dontneed_free(
    mm: MmStruct, vma: VmAreaStruct, start: int, end: int, behavior: int
) -> int:
    """``DONTNEED`` zaps the range's PTEs; ``FREE`` wants anonymous memory (and keeps it)."""
    forbidden = VM_PFNMAP | VM_HUGETLB
    if behavior != MADV_DONTNEED_LOCKED:
        forbidden |= VM_LOCKED
    if vma.vm_flags & forbidden:
        return -errno.EINVAL
    if behavior == MADV_FREE:
        if vma.vm_ops is not None:  # !vma_is_anonymous
            return -errno.EINVAL
        return 0  # lazily freeable: an idle machine never reclaims them
    zap_vma_range(mm, vma, start, end, even_cows=True)  # zap_page_range_single
    return 0


@kernel_function("madvise_remove", file="mm/madvise.c")
def madvise_remove(vma: VmAreaStruct, start: int, end: int) -> int:
    """Punch a hole in the vma's file: ``vfs_fallocate(PUNCH_HOLE|KEEP_SIZE)``."""
    if vma.vm_flags & VM_LOCKED:
        return -errno.EINVAL
    f = vma.vm_file
    if f is None:
        return -errno.EINVAL
    # 6.7 (e8e17ee90eaf): vma_is_shared_maywrite; before, a shared mapping writable now
    need = VM_MAYWRITE if vma.kernel.spec.madvise_remove_shared_maywrite else VM_WRITE
    if (vma.vm_flags & (VM_SHARED | need)) != VM_SHARED | need:
        return -errno.EACCES
    offset = (start - vma.vm_start) + (vma.vm_pgoff << PAGE_SHIFT)
    return vfs_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, end - start)


@kernel_function("madvise_populate", file="mm/madvise.c")
def madvise_populate(mm: MmStruct, start: int, end: int, write: bool) -> int:
    """Fault every page in through GUP (``faultin_page_range``).

    ``EINVAL`` for ``VM_IO|VM_PFNMAP`` vmas or a missing permission, ``EFAULT`` when
    a fault would SIGBUS/SIGSEGV, ``ENOMEM`` for a hole; pages faulted before the
    error stay faulted.
    """
    addr = start
    while addr < end:
        vma = mm.vma_lookup(addr)
        if vma is None:
            return -errno.ENOMEM
        flags = vma.vm_flags
        # check_vma_flags, reported as EINVAL ("incompatible mappings / permissions")
        if flags & (VM_IO | VM_PFNMAP):
            return -errno.EINVAL
        if write and not flags & VM_WRITE:
            return -errno.EINVAL
        if not write and not flags & VM_READ:
            return -errno.EINVAL
        stop = min(vma.vm_end, end)
        while addr < stop:
            pte = mm.pgtable.get(addr >> PAGE_SHIFT)
            if pte is None or (write and not pte_write(pte)):
                fault = handle_mm_fault(vma, addr, FAULT_FLAG_WRITE if write else 0)
                if fault & VM_FAULT_ERROR:
                    return -errno.EFAULT  # VM_FAULT_SIGBUS or VM_FAULT_SIGSEGV
            addr += PAGE_SIZE
    return 0


@kernel_function("madvise_collapse", file="mm/khugepaged.c")
def madvise_collapse(vma: VmAreaStruct, start: int, end: int) -> int:
    """``EINVAL`` where no PMD-sized huge page fits (``thp_vma_allowable_order``)."""
    if vma.vm_flags & VM_NO_KHUGEPAGED:
        return -errno.EINVAL
    fits = -(-vma.vm_start // HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE + HPAGE_PMD_SIZE <= vma.vm_end
    if not fits:
        return -errno.EINVAL

    if vma.vm_file is not None and not is_shmem_file(vma.vm_file):
        return -errno.EINVAL  # only regular files of filesystems with large folios
    raise NotImplementedError("MADV_COLLAPSE of a range a huge page fits (THP) is not modelled")


@kernel_function("madvise_guard", file="mm/madvise.c")
def madvise_guard(vma: VmAreaStruct, behavior: int) -> int:
    """Guard regions (6.13): refused on ``VM_SPECIAL``/``VM_HUGETLB`` vmas (dma-bufs)."""
    disallowed = VM_SPECIAL | VM_HUGETLB
    if behavior == MADV_GUARD_INSTALL:
        disallowed |= VM_LOCKED
    if vma.vm_flags & disallowed:  # is_valid_guard_vma (file-backed vmas allowed since 6.15)
        return -errno.EINVAL
    if behavior == MADV_GUARD_REMOVE:
        return 0  # no guard marker is ever installed here
    raise NotImplementedError("installing guard regions (MADV_GUARD_INSTALL) is not modelled")
