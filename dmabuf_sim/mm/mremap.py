"""mremap(2) (mm/mremap.c).

The check order of the kernel (kernel-spec §5.6): flag validation and
alignment (``EINVAL``); shrinking is a plain munmap of the tail; growth goes
through ``vma_to_resize``: no vma at the address or a range crossing the vma
end → ``EFAULT``; pgoff wrap → ``EINVAL``; ``VM_DONTEXPAND`` or ``VM_PFNMAP``
→ ``EFAULT`` (R33).  A grown vma is *not* passed to ``f_op->mmap`` again,
which is how a dma-buf mapping without ``VM_DONTEXPAND`` can reach past the
buffer (R34).

Simplified: no ``MREMAP_DONTUNMAP`` moves, no ``old_len == 0`` duplication of
shared mappings (both raise NotImplementedError).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..fs import get_file
from ..trace import kernel_function
from .page_alloc import PAGE_ALIGN, PAGE_MASK, PAGE_SHIFT, ULONG_MAX
from .vma import VM_DONTEXPAND, VM_MAYSHARE, VM_PFNMAP, VmAreaStruct

if TYPE_CHECKING:
    from .mmap import MmStruct

__all__ = ["MREMAP_DONTUNMAP", "MREMAP_FIXED", "MREMAP_MAYMOVE", "do_mremap"]

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4


@kernel_function("do_mremap", file="mm/mremap.c")
def do_mremap(
    mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    spec = mm.kernel.spec
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return -errno.EINVAL
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        return -errno.EINVAL
    if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
        return -errno.EINVAL
    if addr & ~PAGE_MASK:
        return -errno.EINVAL
    old_len = PAGE_ALIGN(old_len)
    new_len = PAGE_ALIGN(new_len)
    if not new_len:
        return -errno.EINVAL
    if old_len == 0:
        vma = mm.vma_lookup(addr)
        if vma is None:
            return -errno.EFAULT  # vma_to_resize (3.x) / do_mremap's vma_lookup (5.16+)
        if not vma.vm_flags & VM_MAYSHARE:
            return -errno.EINVAL
        raise NotImplementedError("mremap(old_len=0) duplication of a shared mapping")
    if flags & MREMAP_DONTUNMAP:
        vma = mm.vma_lookup(addr)
        if (
            spec.mremap_dontunmap_special_einval
            and vma is not None
            and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP)
        ):
            return -errno.EINVAL
        raise NotImplementedError("MREMAP_DONTUNMAP moves are not modelled")
    if flags & MREMAP_FIXED:
        raise NotImplementedError("MREMAP_FIXED moves are not modelled")
    if old_len >= new_len:
        if old_len > new_len:
            ret = mm.do_munmap(addr + new_len, old_len - new_len)
            if ret:
                return ret
        return addr
    vma_or_err = vma_to_resize(mm, addr, old_len, new_len)
    if isinstance(vma_or_err, int):
        return vma_or_err
    vma = vma_or_err
    delta = new_len - old_len
    if old_len == vma.vm_end - addr and _vma_expandable(mm, vma, delta):
        mm.vma_adjust(vma, vma.vm_start, addr + new_len, vma.vm_pgoff)
        return addr
    if not flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    return move_vma(mm, vma, addr, old_len, new_len)


@kernel_function("vma_to_resize", file="mm/mremap.c")
def vma_to_resize(mm: MmStruct, addr: int, old_len: int, new_len: int) -> VmAreaStruct | int:
    vma = mm.vma_lookup(addr)
    if vma is None:
        return -errno.EFAULT
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
    from .mmap import MAP_FIXED

    return mm.get_unmapped_area(None, vma.vm_start, end - vma.vm_start, MAP_FIXED) >= 0


@kernel_function("move_vma", file="mm/mremap.c")
def move_vma(mm: MmStruct, vma: VmAreaStruct, addr: int, old_len: int, new_len: int) -> int:
    """Copy the vma to a new range, move its PTEs, then unmap the old range."""
    pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
    new_addr = mm.get_unmapped_area(vma.vm_file, 0, new_len, 0)
    if new_addr < 0:
        return new_addr
    new = VmAreaStruct(
        mm,
        new_addr,
        new_addr + new_len,
        vma.vm_flags,
        vma.vm_page_prot,
        pgoff,
        vm_file=vma.vm_file,
        vm_ops=vma.vm_ops,
        vm_private_data=vma.vm_private_data,
    )
    new.anon_vma = vma.anon_vma
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
    ret = mm.do_munmap(addr, old_len)
    if ret:
        return ret
    return new_addr
