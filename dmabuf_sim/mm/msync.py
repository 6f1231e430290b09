"""msync(2) (mm/msync.c).

Flags within ``MS_ASYNC|MS_INVALIDATE|MS_SYNC``, ``start`` page aligned, not
both ``MS_ASYNC`` and ``MS_SYNC`` (``EINVAL``); a wrapping range ``ENOMEM``;
an empty one 0.  Then each vma of the range: a hole makes the result
``ENOMEM`` (at once for a plain ``MS_ASYNC``); ``MS_INVALIDATE`` on a
``VM_LOCKED`` vma is ``EBUSY``; ``MS_SYNC`` on a shared file mapping calls
``vfs_fsync_range`` on the vma's file — which has no ``->fsync`` for a dma-buf
(``EINVAL``), and is a no-op for shmem/memfd (``noop_fsync``).

Simplified: there is no writeback to speak of: a shared mapping's stores are
already in the page cache.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..fs_sync import vfs_fsync_range
from ..trace import kernel_function
from .page_alloc import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from .vma import VM_LOCKED, VM_SHARED

if TYPE_CHECKING:
    from .mmap import MmStruct

__all__ = ["MS_ASYNC", "MS_INVALIDATE", "MS_SYNC", "sys_msync"]

# include/uapi/asm-generic/mman-common.h
MS_ASYNC = 1
MS_INVALIDATE = 2
MS_SYNC = 4


@kernel_function("__x64_sys_msync", file="mm/msync.c")
def sys_msync(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """``msync(start, length, flags)``: 0 or ``-errno``."""
    if flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC):
        return -errno.EINVAL
    if start & ~PAGE_MASK:
        return -errno.EINVAL
    if flags & MS_ASYNC and flags & MS_SYNC:
        return -errno.EINVAL
    length = (length + PAGE_SIZE - 1) & PAGE_MASK
    end = start + length
    if end >= 1 << 64:
        return -errno.ENOMEM
    if end == start:
        return 0
    # "If the interval [start,end) covers some unmapped address ranges, just ignore
    # them, but return -ENOMEM at the end."
    unmapped_error = 0
    vma = mm.find_vma(start)
    while True:
        if vma is None:
            return -errno.ENOMEM
        if start < vma.vm_start:
            if flags == MS_ASYNC:
                return -errno.ENOMEM
            start = vma.vm_start
            if start >= end:
                return -errno.ENOMEM
            unmapped_error = -errno.ENOMEM
        if flags & MS_INVALIDATE and vma.vm_flags & VM_LOCKED:
            return -errno.EBUSY
        file = vma.vm_file
        fstart = (start - vma.vm_start) + (vma.vm_pgoff << PAGE_SHIFT)
        fend = fstart + (min(end, vma.vm_end) - start) - 1
        start = vma.vm_end
        if flags & MS_SYNC and file is not None and vma.vm_flags & VM_SHARED:
            error = vfs_fsync_range(file, fstart, fend, 1)
            if error or start >= end:
                return error or unmapped_error
            vma = mm.find_vma(start)
        else:
            if start >= end:
                return unmapped_error
            vma = mm.find_vma(vma.vm_end)
