"""Small mm helpers from mm/util.c."""

from __future__ import annotations

from ..fs import File, fput, get_file
from ..trace import kernel_function
from .vma import VmAreaStruct

__all__ = ["vma_set_file"]


@kernel_function("vma_set_file", file="mm/util.c")
def vma_set_file(vma: VmAreaStruct, file: File) -> None:
    """Swap ``vma->vm_file`` to ``file``: take the new reference, then drop the old.

    Since 5.11 this is how ``dma_buf_mmap`` and exporters that want their own
    address_space (omapdrm, i915, vgem) re-point a vma before it is linked.
    """
    get_file(file)
    old, vma.vm_file = vma.vm_file, file
    if old is not None:
        fput(old)
