"""``/dev/simmem``: a tiny teaching char driver with its own ``f_op->mmap``.

It owns ``npages`` (default 16) physically scattered pages and maps them
lazily: ``mmap`` bounds-checks the request (``EINVAL`` past the end), sets
``VM_DONTEXPAND | VM_DONTDUMP`` and installs a ``fault`` handler that returns
the page (refcounted, ``vmf->page``) or ``VM_FAULT_SIGBUS`` past the end.
It exercises the whole mm without dma-buf, the way a real misc driver would.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from attrs import define, field

from ..fs import File, FileOperations
from ..kstate import Key
from ..mm.memory import get_page
from ..mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
    vma_pages,
)
from ..trace import kernel_function

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["SIMMEM", "SimMem"]


@define(eq=False, slots=True)
class SimMem:
    """The driver instance: its pages and its counters."""

    kernel: Kernel = field(repr=False)
    npages: int = 16
    pfns: list[int] = field(factory=list)
    opens: int = 0
    closes: int = 0

    PATH = "/dev/simmem"

    @classmethod
    def register(cls, kernel: Kernel, npages: int = 16) -> SimMem:
        drv = cls(kernel, npages)
        drv.pfns = [kernel.mem.alloc_pages(0) for _ in range(npages)]
        fops = FileOperations(owner="simmem", mmap=drv.simmem_mmap)
        kernel.register_chrdev(cls.PATH, fops, drv)
        kernel.drivers.add(SIMMEM, drv)
        return drv

    @kernel_function("simmem_mmap", file="drivers/misc/simmem.c (teaching driver)")
    def simmem_mmap(self, file: File, vma: VmAreaStruct) -> int:
        if vma.vm_pgoff + vma_pages(vma) > self.npages:
            return -errno.EINVAL
        vma.vm_flags |= VM_DONTEXPAND | VM_DONTDUMP
        vma.vm_ops = VmOperationsStruct(
            open=self._open, close=self._close, fault=self.simmem_fault, owner="simmem"
        )
        vma.vm_private_data = self
        self.opens += 1
        return 0

    def _open(self, vma: VmAreaStruct) -> None:
        self.opens += 1

    def _close(self, vma: VmAreaStruct) -> None:
        self.closes += 1

    @kernel_function("simmem_fault", file="drivers/misc/simmem.c (teaching driver)")
    def simmem_fault(self, vmf: VmFault) -> int:
        if vmf.pgoff >= self.npages:
            return VM_FAULT_SIGBUS
        page = self.kernel.mem.pfn_to_page(self.pfns[vmf.pgoff])
        get_page(page)
        vmf.page = page
        return 0


SIMMEM: Key[SimMem] = Key("simmem")
"""The ``/dev/simmem`` driver of a kernel: ``kernel.drivers[SIMMEM]``."""
