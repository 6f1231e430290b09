"""The dma-heap framework: /dev/dma_heap/<name> and DMA_HEAP_IOCTL_ALLOC (dma-heap.c).

``dma_heap_ioctl`` maps the command to the kernel's by ``_IOC_NR`` alone (nr >= 1:
``EINVAL``; type and size are not checked: a shorter struct is zero-extended, a
command without the read direction gets nothing back), copies the argument in
(``EFAULT``), ``dma_heap_ioctl_allocate``
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
from ..errors import KernelError, Signal
from ..fs import File, FileOperations, Inode
from ..mm.memory import user_access
from ..mm.page_alloc import PAGE_ALIGN
from ..trace import kernel_function
from ..uapi import (
    _IOC_DIRSHIFT,
    _IOC_NR,
    _IOC_READ,
    _IOC_SIZE,
    _IOC_WRITE,
    DMA_HEAP_IOCTL_ALLOC,
    DMA_HEAP_VALID_HEAP_FLAGS,
    DmaHeapAllocationData,
    UapiStruct,
)

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["DmaHeap", "DmaHeapOps", "dma_heap_add"]

DMA_HEAP_VALID_FD_FLAGS = os.O_CLOEXEC | os.O_ACCMODE
IOC_IN = _IOC_WRITE << _IOC_DIRSHIFT  # asm-generic/ioctl.h: the user passes data in
IOC_OUT = _IOC_READ << _IOC_DIRSHIFT  # the kernel writes data back
DMA_HEAP_IOCTL_CMDS = (DMA_HEAP_IOCTL_ALLOC,)
"""``dma_heap_ioctl_cmds[]``: the kernel's command for each ioctl nr."""


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
    # dma-heap.c picks the kernel command by _IOC_NR alone and copies
    # min(user size, ...) in and out according to the direction bits both
    # commands share: the type byte is never checked, a shorter user struct is
    # zero-extended, a command without IOC_OUT gets nothing written back.
    nr = _IOC_NR(cmd)
    if nr >= len(DMA_HEAP_IOCTL_CMDS):
        return -errno.EINVAL  # nr beyond dma_heap_ioctl_cmds[]
    kcmd = DMA_HEAP_IOCTL_CMDS[nr]
    drv_size = _IOC_SIZE(kcmd)
    out_size = in_size = _IOC_SIZE(cmd)
    if not cmd & kcmd & IOC_IN:
        in_size = 0
    if not cmd & kcmd & IOC_OUT:
        out_size = 0
    ksize = max(in_size, out_size, drv_size)
    kernel = heap.kernel
    raw = _copy_from_user(kernel, arg, in_size)
    if isinstance(raw, int):
        return -errno.EFAULT
    kdata = bytearray(raw) + bytes(ksize - in_size)  # zero the difference
    data = DmaHeapAllocationData.unpack(bytes(kdata[:drv_size]))
    ret = dma_heap_ioctl_allocate(heap, data)  # the only kcmd: DMA_HEAP_IOCTL_ALLOC
    kdata[:drv_size] = data.pack()
    if _copy_to_user(kernel, arg, bytes(kdata[:out_size])):
        ret = -errno.EFAULT  # the fd stays installed: the kernel does not undo it
    return ret


def _copy_from_user(kernel: Kernel, arg: Any, n: int) -> bytes | int:
    """``copy_from_user(kdata, arg, n)``: the bytes, or -EFAULT.

    ``arg`` is a uapi struct (a pointer to exactly that much memory), read-only
    ``bytes``, or an address in the current process.  Copying 0 bytes never faults.
    """
    if n == 0:
        return b""
    if isinstance(arg, UapiStruct):
        raw = arg.pack()
    elif isinstance(arg, (bytes, bytearray)):
        raw = bytes(arg)
    elif isinstance(arg, int) and not isinstance(arg, bool):
        return _user_copy(kernel, arg, n, None)
    else:
        return -errno.EFAULT
    return raw[:n] if len(raw) >= n else -errno.EFAULT


def _copy_to_user(kernel: Kernel, arg: Any, data: bytes) -> int:
    """``copy_to_user(arg, kdata, len(data))``: 0, or -EFAULT."""
    if not data:
        return 0
    if isinstance(arg, UapiStruct):
        raw = bytearray(arg.pack())
        if len(data) > len(raw):
            return -errno.EFAULT
        raw[: len(data)] = data
        arg.update_from(type(arg).unpack(bytes(raw)))
        return 0
    if isinstance(arg, int) and not isinstance(arg, bool):
        ret = _user_copy(kernel, arg, len(data), data)
        return ret if isinstance(ret, int) else 0
    return -errno.EFAULT  # bytes are read-only memory


def _user_copy(kernel: Kernel, addr: int, n: int, data: bytes | None) -> bytes | int:
    proc = kernel.current
    if proc is None or addr <= 0 or addr + n > 1 << 64:
        return -errno.EFAULT
    try:
        return user_access(proc.mm, addr, n, write=data is not None, data=data)
    except Signal:
        return -errno.EFAULT  # the exception-table fixup


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
