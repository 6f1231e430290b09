"""The dma-heap framework: /dev/dma_heap/<name> and DMA_HEAP_IOCTL_ALLOC (dma-heap.c).

``dma_heap_ioctl`` copies the argument in (``EFAULT``), ``dma_heap_ioctl_allocate``
checks it in the kernel's order — ``fd`` must be 0, ``fd_flags`` within
``O_ACCMODE|O_CLOEXEC``, ``heap_flags`` within the (empty) valid set, all
``EINVAL`` — then ``dma_heap_buffer_alloc`` rounds the length up to pages
(``EINVAL`` if that wraps to 0), asks the heap for a dma-buf, installs an fd
with the user's ``fd_flags`` and copies the struct back.  The buffer's file
mode is the user's access mode (kernel-spec §5.1): a heap buffer asked for
``O_RDONLY`` cannot be mapped ``PROT_WRITE|MAP_SHARED``.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, Protocol

from attrs import define, field

from ..dma_buf.core import DmaBuf, dma_buf_fd, dma_buf_put
from ..errors import KernelError
from ..fs import File, FileOperations, Inode
from ..mm.page_alloc import PAGE_ALIGN
from ..trace import kernel_function
from ..uaccess import copy_from_user, copy_to_user
from ..uapi import (
    _IOC_NR,
    DMA_HEAP_IOCTL_ALLOC,
    DMA_HEAP_VALID_HEAP_FLAGS,
    DmaHeapAllocationData,
)

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["DmaHeap", "DmaHeapOps", "dma_heap_add"]

DMA_HEAP_VALID_FD_FLAGS = os.O_CLOEXEC | os.O_ACCMODE


class DmaHeapOps(Protocol):
    """``struct dma_heap_ops``."""

    def allocate(self, heap: DmaHeap, length: int, fd_flags: int, heap_flags: int) -> DmaBuf:
        """Return a dma-buf of ``length`` bytes, or raise KernelError."""


@define(eq=False, slots=True)
class DmaHeap:
    """``struct dma_heap``."""

    kernel: Kernel = field(repr=False)
    name: str
    ops: DmaHeapOps = field(repr=False)
    priv: Any = field(default=None, repr=False)

    def trace_name(self) -> str:
        return f"heap({self.name})"


@kernel_function("dma_heap_add", file="drivers/dma-buf/dma-heap.c")
def dma_heap_add(kernel: Kernel, name: str, ops: DmaHeapOps, priv: Any = None) -> DmaHeap:
    """Register ``/dev/dma_heap/<name>``."""
    heap = DmaHeap(kernel, name, ops, priv)

    def dma_heap_open(inode: Inode, file: File) -> int:
        file.private_data = heap
        return 0

    def dma_heap_ioctl(file: File, cmd: int, arg: Any) -> int:
        return _dma_heap_ioctl(heap, file, cmd, arg)

    fops = FileOperations(owner="dma-heap", open=dma_heap_open, unlocked_ioctl=dma_heap_ioctl)
    kernel.register_chrdev(f"/dev/dma_heap/{name}", fops, heap)
    return heap


@kernel_function("dma_heap_ioctl", file="drivers/dma-buf/dma-heap.c")
def _dma_heap_ioctl(heap: DmaHeap, file: File, cmd: int, arg: Any) -> int:
    if _IOC_NR(cmd) != _IOC_NR(DMA_HEAP_IOCTL_ALLOC):
        return -errno.EINVAL  # nr beyond dma_heap_ioctl_cmds[]
    if cmd != DMA_HEAP_IOCTL_ALLOC:
        return -errno.ENOTTY
    data = copy_from_user(heap.kernel, arg, DmaHeapAllocationData)
    if isinstance(data, int):
        return -errno.EFAULT
    ret = dma_heap_ioctl_allocate(heap, data)
    if copy_to_user(heap.kernel, arg, data):
        return -errno.EFAULT
    return ret


@kernel_function("dma_heap_ioctl_allocate", file="drivers/dma-buf/dma-heap.c")
def dma_heap_ioctl_allocate(heap: DmaHeap, data: DmaHeapAllocationData) -> int:
    if data.fd:
        return -errno.EINVAL
    if data.fd_flags & ~DMA_HEAP_VALID_FD_FLAGS:
        return -errno.EINVAL
    if data.heap_flags & ~DMA_HEAP_VALID_HEAP_FLAGS:
        return -errno.EINVAL
    fd = dma_heap_buffer_alloc(heap, data.len, data.fd_flags, data.heap_flags)
    if fd < 0:
        return fd
    data.fd = fd
    return 0


@kernel_function("dma_heap_buffer_alloc", file="drivers/dma-buf/dma-heap.c")
def dma_heap_buffer_alloc(heap: DmaHeap, length: int, fd_flags: int, heap_flags: int) -> int:
    length = PAGE_ALIGN(length)
    if not length:
        return -errno.EINVAL
    try:
        dmabuf = heap.ops.allocate(heap, length, fd_flags, heap_flags)
    except KernelError as exc:
        return -exc.err
    fd = dma_buf_fd(dmabuf, fd_flags)
    if fd < 0:
        dma_buf_put(dmabuf)
    return fd
