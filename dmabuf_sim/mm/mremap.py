"""mremap(2) (mm/mremap.c).

The check order of the kernel (kernel-spec §5.6): flag validation and
alignment (``EINVAL``; ``MREMAP_FIXED`` and ``MREMAP_DONTUNMAP`` need
``MREMAP_MAYMOVE``, ``DONTUNMAP`` an unchanged length); since 5.16 the old vma
is looked up next (``EFAULT``).  Then:

* **moves to a given address** (``MREMAP_FIXED``/``MREMAP_DONTUNMAP``,
  ``mremap_to``): the new range must be aligned, within ``TASK_SIZE`` and not
  overlap the old one (``EINVAL``); ``MREMAP_FIXED`` unmaps whatever is at the
  destination **first** — a later failure leaves that hole, as in the kernel;
  then ``vma_to_resize`` and ``move_vma``;
* **shrinking** is a plain munmap of the tail;
* **growing** goes through ``vma_to_resize``: no vma at the address or a range
  crossing the vma end → ``EFAULT``; pgoff wrap → ``EINVAL``; ``VM_DONTEXPAND``
  or ``VM_PFNMAP`` → ``EFAULT`` (R33); in place if the space after the vma is
  free, else (``MREMAP_MAYMOVE``) moved.  A grown vma is *not* passed to
  ``f_op->mmap`` again, which is how a dma-buf mapping without
  ``VM_DONTEXPAND`` can reach past the buffer (R34).

``vma_to_resize`` also refuses ``old_len == 0`` ("duplicate" a mapping) for
private mappings (``EINVAL``) — a shared one gets a second vma over the same
pages — and ``MREMAP_DONTUNMAP`` of ``VM_DONTEXPAND|VM_PFNMAP`` vmas (5.13+,
``EINVAL``; 5.7-5.12 allowed it only for private anonymous vmas).
``move_vma`` copies the vma, moves its PTEs, calls ``vm_ops->mremap`` and then
unmaps the old range — except with ``MREMAP_DONTUNMAP``, which leaves the old
vma in place, empty (it refaults from its file, or reads zeros if anonymous)
and no longer ``VM_LOCKED``.  A ``VM_LOCKED`` vma populates what it gained.

6.16-6.17 reworked the file around ``struct vma_remap_struct``
(``Spec.mremap_remap_move``): ``check_mremap_params`` runs every ``EINVAL``
check before the vma is looked up, ``check_prep_vma`` checks the source before
anything is unmapped (so a failing source no longer costs the ``MREMAP_FIXED``
target its mapping), and a same-length ``MREMAP_FIXED`` move walks every vma
in the old range (``remap_move``), keeping the gaps between them.

Simplified: no hugetlb, userfaultfd, mseal, accounting or map-count limits; no
simulated file has ``f_op->get_unmapped_area``, so every vma may join a
multi-vma move (``vma_multi_allowed``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..fs import get_file
from ..trace import kernel_function
from .gup import mm_populate
from .mmap import MAP_FIXED, MAP_SHARED, TASK_SIZE, do_munmap
from .page_alloc import PAGE_ALIGN, PAGE_MASK, PAGE_SHIFT, ULONG_MAX
from .vma import (
    VM_DONTEXPAND,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
    VmAreaStruct,
    vm_area_dup,
)

if TYPE_CHECKING:
    from .mmap import MmStruct

__all__ = ["MREMAP_DONTUNMAP", "MREMAP_FIXED", "MREMAP_MAYMOVE", "do_mremap"]

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4


def _populate(mm: MmStruct, start: int, length: int) -> None:
    """``mm_populate`` of what a ``VM_LOCKED`` vma gained."""
    owner = mm.owner
    if owner is not None and length > 0:
        mm_populate(owner, start, length)


@kernel_function("do_mremap", file="mm/mremap.c")
def do_mremap(
    mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    spec = mm.kernel.spec
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return -errno.EINVAL
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        return -errno.EINVAL
    # "MREMAP_DONTUNMAP is always a move and it does not allow resizing in the process."
    if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
        return -errno.EINVAL
    if addr & ~PAGE_MASK:
        return -errno.EINVAL
    old_len = PAGE_ALIGN(old_len)
    new_len = PAGE_ALIGN(new_len)
    # "We allow a zero old-len as a special case for DOS-emu "duplicate shm area"
    # thing. But a zero new-len is nonsensical."
    if not new_len:
        return -errno.EINVAL
    if spec.mremap_remap_move:
        return _do_mremap_vrm(mm, addr, old_len, new_len, flags, new_addr)
    if spec.mremap_vma_lookup_first and mm.vma_lookup(addr) is None:
        return -errno.EFAULT  # 5.16+ (550a7d60bd5e): before anything else is looked at
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
        return mremap_to(mm, addr, old_len, new_addr, new_len, flags)
    if old_len >= new_len:
        if old_len > new_len:
            ret = do_munmap(mm, addr + new_len, old_len - new_len)
            if ret:
                return ret
        return addr
    vma_or_err = vma_to_resize(mm, addr, old_len, new_len, flags)
    if isinstance(vma_or_err, int):
        return vma_or_err
    return expand_vma(mm, vma_or_err, addr, old_len, new_len, flags)


@kernel_function("expand_vma", file="mm/mremap.c")
def expand_vma(
    mm: MmStruct, vma: VmAreaStruct, addr: int, old_len: int, new_len: int, flags: int
) -> int:
    """Grow in place when the range ends the vma and the space after it is free,
    else (``MREMAP_MAYMOVE``) move it somewhere that fits; else ``ENOMEM``.
    (The function got its name in 6.16; before, this was the tail of ``do_mremap``.)"""
    delta = new_len - old_len
    if old_len == vma.vm_end - addr and _vma_expandable(mm, vma, delta):
        mm.vma_adjust(vma, vma.vm_start, addr + new_len, vma.vm_pgoff)
        if vma.vm_flags & VM_LOCKED:
            _populate(mm, addr + old_len, delta)
        return addr
    if not flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    map_flags = MAP_SHARED if vma.vm_flags & VM_MAYSHARE else 0
    new_addr = mm.get_unmapped_area(vma.vm_file, 0, new_len, map_flags)
    if new_addr < 0:
        return new_addr
    return move_vma(mm, vma, addr, old_len, new_len, new_addr, flags)


def _do_mremap_vrm(
    mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    """``do_mremap`` after the 6.16-6.17 rework; lengths are page aligned, the flags,
    ``addr`` alignment and a zero ``new_len`` already checked by the caller."""
    err = check_mremap_params(addr, old_len, new_len, flags, new_addr)
    if err:
        return err
    if flags & MREMAP_FIXED and old_len == new_len:  # vrm_move_only
        return remap_move(mm, addr, old_len, new_addr, flags)
    vma = mm.vma_lookup(addr)
    err = check_prep_vma(mm, vma, addr, old_len, new_len, flags)
    if err:
        return err
    assert vma is not None  # check_prep_vma returned EFAULT otherwise
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):  # vrm_implies_new_addr
        return mremap_to(mm, addr, old_len, new_addr, new_len, flags)
    # mremap_at
    if old_len == new_len:
        return addr
    if old_len > new_len:
        ret = do_munmap(mm, addr + new_len, old_len - new_len)
        return ret if ret else addr
    return expand_vma(mm, vma, addr, old_len, new_len, flags)


@kernel_function("check_mremap_params", file="mm/mremap.c")
def check_mremap_params(addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    """6.16+: the parameter checks, all ``EINVAL``, before the mmap lock is taken.
    The flag, alignment and zero-length checks ran in :func:`do_mremap`; their
    order among ``EINVAL`` checks is not observable."""
    if new_len > TASK_SIZE:
        return -errno.EINVAL
    if not flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
        return 0
    if new_addr > TASK_SIZE - new_len or new_addr & ~PAGE_MASK:
        return -errno.EINVAL
    # "Target VMA must not overlap source VMA."
    if addr + old_len > new_addr and new_addr + new_len > addr:
        return -errno.EINVAL
    return 0


@kernel_function("check_prep_vma", file="mm/mremap.c")
def check_prep_vma(
    mm: MmStruct,
    vma: VmAreaStruct | None,
    addr: int,
    old_len: int,
    new_len: int,
    flags: int,
) -> int:
    """6.17+: what ``vma_to_resize`` checked, now before anything is unmapped.
    Only a request that expands or moves is checked beyond the vma's existence."""
    if vma is None:
        return -errno.EFAULT
    if not flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) and new_len <= old_len:
        return 0  # shrink or no-op in place: !vrm_will_map_new
    if not old_len and not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        return -errno.EINVAL
    if (
        flags & MREMAP_DONTUNMAP
        and mm.kernel.spec.mremap_dontunmap_special_einval
        and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP)
    ):
        return -errno.EINVAL
    # a shrink may unmap across vma ends; only the kept part has to fit its vma
    old_len = min(old_len, new_len)
    if old_len > vma.vm_end - addr:
        return -errno.EFAULT  # "We can't remap across the end of VMAs"
    if new_len == old_len:
        return 0
    pgoff = ((addr - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff
    if pgoff + (new_len >> PAGE_SHIFT) > ULONG_MAX:
        return -errno.EINVAL
    if vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        return -errno.EFAULT  # R33
    return 0


@kernel_function("remap_move", file="mm/mremap.c")
def remap_move(mm: MmStruct, addr: int, length: int, new_addr: int, flags: int) -> int:
    """6.17+: a same-length ``MREMAP_FIXED`` move of every vma in ``[addr, addr +
    length)``, each one checked and moved on its own, the gaps between them kept.

    The range must start inside a vma (``EFAULT``); a gap after the first vma is
    skipped.  A failure part way leaves the vmas already moved where they went, as
    in the kernel.  Returns where the first vma went.
    """
    start, end = addr, addr + length
    target = new_addr
    res = -errno.EFAULT
    seen = False
    last_end = 0
    cursor = start
    while True:
        vma = mm.find_vma(cursor)
        if vma is None or vma.vm_start >= end:
            return res
        piece = max(vma.vm_start, start)
        size = min(end, vma.vm_end) - piece
        if not seen and start < vma.vm_start:
            return -errno.EFAULT  # "No gap permitted at the start of the range."
        offset = vma.vm_start - last_end if seen else 0
        last_end = cursor = vma.vm_end
        err = check_prep_vma(mm, vma, piece, size, size, flags)
        moved = err or mremap_to(mm, piece, size, target + offset, size, flags)
        if moved < 0:
            return moved
        if not seen:
            res = moved
        seen = True
        target = moved + size


@kernel_function("mremap_to", file="mm/mremap.c")
def mremap_to(
    mm: MmStruct, addr: int, old_len: int, new_addr: int, new_len: int, flags: int
) -> int:
    """Move (and resize) to ``new_addr`` (``MREMAP_FIXED``) or anywhere (``DONTUNMAP``).

    Since the 6.16-6.17 rework its caller has checked the new range
    (``check_mremap_params``) and the source (``check_prep_vma``) already.
    """
    reworked = mm.kernel.spec.mremap_remap_move
    if not reworked:
        if new_addr & ~PAGE_MASK:
            return -errno.EINVAL
        if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
            return -errno.EINVAL
        # "Ensure the old/new locations do not overlap"
        if addr + old_len > new_addr and new_addr + new_len > addr:
            return -errno.EINVAL
    if flags & MREMAP_FIXED:
        # "VMA is moved to dst address, and munmap dst first."  A failure below leaves
        # this hole: the kernel does not undo it.
        ret = do_munmap(mm, new_addr, new_len)
        if ret:
            return ret
    if old_len > new_len:
        ret = do_munmap(mm, addr + new_len, old_len - new_len)
        if ret:
            return ret
        old_len = new_len
    if reworked:
        found = mm.vma_lookup(addr)
        assert found is not None  # check_prep_vma found it; the unmaps above spare it
        vma = found
    else:
        vma_or_err = vma_to_resize(mm, addr, old_len, new_len, flags)
        if isinstance(vma_or_err, int):
            return vma_or_err
        vma = vma_or_err
    map_flags = MAP_FIXED if flags & MREMAP_FIXED else 0
    if vma.vm_flags & VM_MAYSHARE:
        map_flags |= MAP_SHARED
    ret = mm.get_unmapped_area(vma.vm_file, new_addr, new_len, map_flags)
    if ret < 0:
        return ret
    if not flags & MREMAP_FIXED:
        new_addr = ret  # "We got a new mapping"
    return move_vma(mm, vma, addr, old_len, new_len, new_addr, flags)


@kernel_function("vma_to_resize", file="mm/mremap.c")
def vma_to_resize(
    mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int = 0
) -> VmAreaStruct | int:
    spec = mm.kernel.spec
    vma = mm.vma_lookup(addr)
    if vma is None:
        return -errno.EFAULT
    # "!old_len is a special case where an attempt is made to 'duplicate' a mapping.
    # This makes no sense for private mappings ..."
    if not old_len and not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        return -errno.EINVAL
    if flags & MREMAP_DONTUNMAP:
        if spec.mremap_dontunmap_anon_only and (vma.vm_ops is not None or vma.vm_flags & VM_SHARED):
            return -errno.EINVAL  # 5.7-5.12: private anonymous vmas only
        if spec.mremap_dontunmap_special_einval and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
            return -errno.EINVAL
    if old_len > vma.vm_end - addr:
        return -errno.EFAULT  # can't remap across vm area boundaries
    if new_len == old_len:
        return vma
    pgoff = ((addr - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff
    if pgoff + (new_len >> PAGE_SHIFT) > ULONG_MAX:
        return -errno.EINVAL
    if vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        return -errno.EFAULT  # R33: "a very odd choice for most of the cases"
    return vma


def _vma_expandable(mm: MmStruct, vma: VmAreaStruct, delta: int) -> bool:
    end = vma.vm_end + delta
    if end < vma.vm_end:
        return False
    if mm.vmas_in(vma.vm_end, end):
        return False
    return mm.get_unmapped_area(None, vma.vm_start, end - vma.vm_start, MAP_FIXED) >= 0


@kernel_function("move_vma", file="mm/mremap.c")
def move_vma(
    mm: MmStruct,
    vma: VmAreaStruct,
    addr: int,
    old_len: int,
    new_len: int,
    new_addr: int,
    flags: int = 0,
) -> int:
    """Copy the vma to ``new_addr``, move its PTEs, then unmap the old range.

    ``MREMAP_DONTUNMAP`` keeps the old vma (emptied of its PTEs, ``VM_LOCKED``
    cleared); ``old_len == 0`` (duplicating a shared mapping) moves no PTEs and its
    ``do_munmap`` of a zero length fails quietly, so the old mapping stays too.
    """
    if vma.vm_ops is not None and vma.vm_ops.may_split is not None:
        err = 0
        if vma.vm_start != addr:
            err = vma.vm_ops.may_split(vma, addr)
        if not err and vma.vm_end != addr + old_len:
            err = vma.vm_ops.may_split(vma, addr + old_len)
        if err:
            return err
    vm_flags = vma.vm_flags
    pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
    new = vm_area_dup(vma)  # copy_vma
    new.vm_start, new.vm_end, new.vm_flags, new.vm_pgoff = (
        new_addr,
        new_addr + new_len,
        vm_flags,
        pgoff,
    )
    if new.vm_file is not None:
        get_file(new.vm_file)
    if new.vm_ops is not None and new.vm_ops.open is not None:
        new.vm_ops.open(new)
    mm.vma_link(new)
    table = mm.pgtable
    shift = (new_addr - addr) >> PAGE_SHIFT
    moved = list(table.iter_range(addr >> PAGE_SHIFT, (addr + old_len) >> PAGE_SHIFT))
    for vpn, _pte in moved:
        table.clear(vpn)
    for vpn, pte in moved:
        table.set(vpn + shift, pte)
    if new.vm_ops is not None and new.vm_ops.mremap is not None:
        err = new.vm_ops.mremap(new)
        if err:
            return err
    if flags & MREMAP_DONTUNMAP:
        # "We always clear VM_LOCKED[ONFAULT] on the old vma"; its PTEs moved away
        vma.vm_flags &= ~VM_LOCKED
        return new_addr
    if old_len:
        ret = do_munmap(mm, addr, old_len)
        if ret:
            return ret
    if vm_flags & VM_LOCKED and new_len > old_len:
        _populate(mm, new_addr + old_len, new_len - old_len)
    return new_addr
