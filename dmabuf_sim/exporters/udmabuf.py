"""udmabuf: a dma-buf over the pages of a sealed memfd (drivers/dma-buf/udmabuf.c), §6.3.

``UDMABUF_CREATE`` (one range) or ``UDMABUF_CREATE_LIST`` (up to ``list_limit``
ranges, concatenated) on ``/dev/udmabuf`` (``udmabuf_create``, 6.12 order):
offset and size must be page aligned and within ``size_limit_mb``
(``EINVAL``), the page count non-zero (``EINVAL``); then per memfd: not an
fd or not shmem → ``EBADFD``; ``F_SEAL_SHRINK`` missing or ``F_SEAL_WRITE``
present → ``EINVAL``; the range is pinned (a reference per page).  The
buffer is always exported ``O_RDWR``; ``UDMABUF_FLAGS_CLOEXEC`` only sets
``O_CLOEXEC`` on the fd.

* **mmap** rejects non-shared vmas (``EINVAL``, R57) and installs a fault
  handler.  6.1: the handler returns the refcounted page (no vm flags, so the
  vma can grow with mremap, R34).  6.12+: ``VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP``
  and ``vmf_insert_pfn``; latest also pre-faults the rest of the vma.
* **CPU access**: the first ``begin_cpu_access`` builds an sg table mapped for
  the udmabuf misc device; later ones sync it for the CPU.  ``end_cpu_access``
  fails ``EINVAL`` until that table exists (SYNC_END before any START, R45).
* The memfd's own mappings see the same pages: the two CPU views are
  trivially coherent (same physical pages, same cache).
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Any

from attrs import define, field

from ..device import (
    DMA_BIDIRECTIONAL,
    Device,
    DmaDataDirection,
    SgTable,
    dma_map_sgtable,
    dma_sync_sgtable_for_cpu,
    dma_sync_sgtable_for_device,
    dma_unmap_sgtable,
)
from ..dma_buf.core import (
    DmaBuf,
    DmaBufAttachment,
    DmaBufExportInfo,
    DmaBufOps,
    IosysMap,
    dma_buf_export,
    dma_buf_fd,
    dma_buf_put,
)
from ..errors import KernelError, Signal
from ..fs import File, FileOperations, fput
from ..fs_file import fget
from ..kstate import Key
from ..mm.memory import get_page, put_page, user_access, vmf_insert_pfn
from ..mm.page_alloc import PAGE_MASK, PAGE_SHIFT
from ..mm.shmem import (
    F_SEAL_FUTURE_WRITE,
    F_SEAL_SHRINK,
    F_SEAL_WRITE,
    ShmemInfo,
    is_shmem_file,
    shmem_read_mapping_page,
)
from ..mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)
from ..mm.vmalloc import vmap, vunmap
from ..trace import kernel_function
from ..uaccess import copy_from_user
from ..uapi import UDMABUF_CREATE, UDMABUF_CREATE_LIST, UDMABUF_FLAGS_CLOEXEC, UdmabufCreate

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["UDMABUF", "Udmabuf", "UdmabufDriver"]

UDMABUF: Key[UdmabufDriver] = Key("udmabuf")
"""The ``/dev/udmabuf`` driver of a kernel (where the spec has udmabuf)."""

SIZE_LIMIT_MB = 64  # module parameter size_limit_mb
LIST_LIMIT = 1024  # module parameter list_limit
SEALS_WANTED = F_SEAL_SHRINK
SEALS_DENIED = F_SEAL_WRITE
_O_RDWR = 0o2
_O_CLOEXEC = 0o2000000


@define(eq=False, slots=True)
class Udmabuf:
    """``struct udmabuf``: the pinned pages and the misc device's sg table."""

    pagecount: int
    pfns: list[int] = field(factory=list, repr=False)
    sg: SgTable | None = field(default=None, repr=False)
    device: Device | None = field(default=None, repr=False)


class UdmabufOps(DmaBufOps):
    """``udmabuf_ops``."""

    exp_name = "udmabuf"
    cache_sgt_mapping = True

    @kernel_function("map_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def map_dma_buf(self, at: DmaBufAttachment, direction: DmaDataDirection) -> SgTable:
        return _get_sg_table(at.dev, at.dmabuf.priv, direction)

    @kernel_function("unmap_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def unmap_dma_buf(self, at: DmaBufAttachment, sg: SgTable, direction: DmaDataDirection) -> None:
        dma_unmap_sgtable(at.dev, sg, direction)

    @kernel_function("release_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def release(self, dmabuf: DmaBuf) -> None:
        ubuf: Udmabuf = dmabuf.priv
        kernel = dmabuf.kernel
        if ubuf.sg is not None and ubuf.device is not None:
            dma_unmap_sgtable(ubuf.device, ubuf.sg, DMA_BIDIRECTIONAL)
        for pfn in ubuf.pfns:  # unpin
            put_page(kernel, kernel.mem.pfn_to_page(pfn))
        ubuf.pfns.clear()

    @kernel_function("mmap_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
            return -errno.EINVAL  # R57
        vma.vm_ops = VmOperationsStruct(fault=udmabuf_vm_fault, owner="udmabuf")
        vma.vm_private_data = dmabuf.priv
        if dmabuf.kernel.spec.udmabuf_pfnmap:
            vma.vm_flags |= VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP
        return 0

    @kernel_function("vmap_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def vmap(self, dmabuf: DmaBuf, map: IosysMap) -> int:
        ubuf: Udmabuf = dmabuf.priv
        map.vaddr = vmap(dmabuf.kernel, ubuf.pfns)
        return 0

    @kernel_function("vunmap_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def vunmap(self, dmabuf: DmaBuf, map: IosysMap) -> None:
        assert map.vaddr is not None  # the core BUG()s on a NULL map before calling us
        vunmap(map.vaddr)

    @kernel_function("begin_cpu_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def begin_cpu_access(self, dmabuf: DmaBuf, direction: DmaDataDirection) -> int:
        ubuf: Udmabuf = dmabuf.priv
        assert ubuf.device is not None
        if ubuf.sg is None:
            try:
                ubuf.sg = _get_sg_table(ubuf.device, ubuf, direction)
            except KernelError as exc:
                return -exc.err
            if not dmabuf.kernel.spec.udmabuf_begin_cpu_always_syncs:
                # Before 1d0e25c1ddf2 the first call relied on mapping the sg table,
                # which only cleans: a line the CPU cached before a device wrote stays.
                return 0
        dma_sync_sgtable_for_cpu(ubuf.device, ubuf.sg, direction)
        return 0

    @kernel_function("end_cpu_udmabuf", file="drivers/dma-buf/udmabuf.c")
    def end_cpu_access(self, dmabuf: DmaBuf, direction: DmaDataDirection) -> int:
        ubuf: Udmabuf = dmabuf.priv
        if ubuf.sg is None:
            return -errno.EINVAL  # SYNC_END before the first SYNC_START (R45)
        assert ubuf.device is not None
        dma_sync_sgtable_for_device(ubuf.device, ubuf.sg, direction)
        return 0


def _get_sg_table(dev: Device, ubuf: Udmabuf, direction: DmaDataDirection) -> SgTable:
    sg = SgTable.from_pfns(ubuf.pfns)
    if dma_map_sgtable(dev, sg, direction):
        raise KernelError(errno.EINVAL, "get_sg_table")
    return sg


@kernel_function("udmabuf_vm_fault", file="drivers/dma-buf/udmabuf.c")
def udmabuf_vm_fault(vmf: VmFault) -> int:
    vma = vmf.vma
    ubuf: Udmabuf = vma.vm_private_data
    pgoff = vmf.pgoff
    if pgoff >= ubuf.pagecount:
        return VM_FAULT_SIGBUS
    kernel = vma.vm_mm.kernel
    spec = kernel.spec
    if not spec.udmabuf_pfnmap:
        page = kernel.mem.pfn_to_page(ubuf.pfns[pgoff])  # 6.1: the core maps the page
        get_page(page)
        vmf.page = page
        return 0
    ret = vmf_insert_pfn(vma, vmf.address, ubuf.pfns[pgoff])
    if spec.udmabuf_prefault:
        # 6.13+: map the rest of the vma now; errors there are ignored
        addr, pg = vma.vm_start, vma.vm_pgoff
        while addr < vma.vm_end:
            if addr != vmf.address:
                if pg >= ubuf.pagecount:
                    kernel.warn("udmabuf_vm_fault", "pgoff >= ubuf->pagecount")
                    break
                vmf_insert_pfn(vma, addr, ubuf.pfns[pg])
            addr += 1 << PAGE_SHIFT
            pg += 1
    return ret


@define(eq=False, slots=True)
class UdmabufDriver:
    """The ``/dev/udmabuf`` misc device."""

    kernel: Kernel = field(repr=False)
    misc: Device = field(repr=False)
    ops: UdmabufOps = field(factory=UdmabufOps, repr=False)

    PATH = "/dev/udmabuf"

    @classmethod
    def register(cls, kernel: Kernel) -> UdmabufDriver:
        drv = cls(kernel, Device(kernel, "udmabuf"))
        fops = FileOperations(owner="udmabuf", unlocked_ioctl=drv.udmabuf_ioctl)
        kernel.register_chrdev(cls.PATH, fops, drv)
        return drv

    @kernel_function("udmabuf_ioctl", file="drivers/dma-buf/udmabuf.c")
    def udmabuf_ioctl(self, file: File, cmd: int, arg: Any) -> int:
        if cmd == UDMABUF_CREATE:
            return self.udmabuf_ioctl_create(arg)
        if cmd == UDMABUF_CREATE_LIST:  # since 4.20, with UDMABUF_CREATE
            return self.udmabuf_ioctl_create_list(arg)
        return -errno.ENOTTY

    def udmabuf_ioctl_create(self, arg: Any) -> int:
        create = copy_from_user(self.kernel, arg, UdmabufCreate)
        if isinstance(create, int):
            return -errno.EFAULT
        return self.udmabuf_create(create.flags, [(create.memfd, create.offset, create.size)])

    @kernel_function("udmabuf_ioctl_create_list", file="drivers/dma-buf/udmabuf.c")
    def udmabuf_ioctl_create_list(self, arg: Any) -> int:
        """``struct udmabuf_create_list { __u32 flags, count; struct udmabuf_create_item
        list[]; }`` with items ``{ __u32 memfd, __pad; __u64 offset, size; }``: the header
        is copied (``EFAULT``), ``count > list_limit`` → ``EINVAL``, then the items
        (``memdup_user``: ``EFAULT``).  ``arg`` is bytes or a user address."""
        head = _copy_from_user_bytes(self.kernel, arg, 0, 8)
        if isinstance(head, int):
            return -errno.EFAULT
        flags, count = struct.unpack("<II", head)
        if count > LIST_LIMIT:
            return -errno.EINVAL
        raw = _copy_from_user_bytes(self.kernel, arg, 8, 24 * count)
        if isinstance(raw, int):
            return -errno.EFAULT
        items = [
            (memfd, offset, size) for memfd, _pad, offset, size in struct.iter_unpack("<IIQQ", raw)
        ]
        return self.udmabuf_create(flags, items)

    @kernel_function("udmabuf_create", file="drivers/dma-buf/udmabuf.c")
    def udmabuf_create(self, flags: int, items: list[tuple[int, int, int]]) -> int:
        kernel = self.kernel
        pglimit = (SIZE_LIMIT_MB * 1024 * 1024) >> PAGE_SHIFT
        ubuf = Udmabuf(0, device=self.misc)
        for _memfd, offset, size in items:
            if offset & ~PAGE_MASK or size & ~PAGE_MASK:
                return -errno.EINVAL
            ubuf.pagecount += size >> PAGE_SHIFT
            if ubuf.pagecount > pglimit:
                return -errno.EINVAL
        if not ubuf.pagecount:
            return -errno.EINVAL
        task = kernel.current
        assert task is not None
        pinned: list[int] = []

        def unpin() -> None:
            for pfn in pinned:
                put_page(kernel, kernel.mem.pfn_to_page(pfn))

        for memfd_fd, offset, size in items:
            memfd = fget(task, memfd_fd)
            ret = _check_memfd_seals(memfd)
            if ret < 0:
                if memfd is not None:
                    fput(memfd)
                unpin()
                return ret
            assert memfd is not None
            inode = memfd.f_inode
            if offset + size > inode.i_size:
                fput(memfd)
                unpin()
                return -errno.EINVAL
            for index in range(offset >> PAGE_SHIFT, (offset + size) >> PAGE_SHIFT):
                try:
                    page = shmem_read_mapping_page(inode, index)
                except KernelError as exc:
                    fput(memfd)
                    unpin()
                    return -exc.err
                get_page(page)  # pinned for the buffer's lifetime
                pinned.append(page.pfn)
            fput(memfd)
        ubuf.pfns = pinned
        info = DmaBufExportInfo(
            ops=self.ops,
            size=ubuf.pagecount << PAGE_SHIFT,
            priv=ubuf,
            flags=_O_RDWR,
            exp_name="udmabuf",
        )
        try:
            dmabuf = dma_buf_export(kernel, info)
        except KernelError as exc:
            unpin()
            return -exc.err
        fd_flags = _O_CLOEXEC if flags & UDMABUF_FLAGS_CLOEXEC else 0
        ret = dma_buf_fd(dmabuf, fd_flags)
        if ret < 0:
            dma_buf_put(dmabuf)
        return ret


def _copy_from_user_bytes(kernel: Kernel, arg: Any, offset: int, n: int) -> bytes | int:
    """``n`` bytes at ``arg + offset``: from ``bytes`` or process memory; else -EFAULT."""
    if n == 0:
        return b""
    if isinstance(arg, (bytes, bytearray)):
        return bytes(arg[offset : offset + n]) if len(arg) >= offset + n else -errno.EFAULT
    if isinstance(arg, int) and not isinstance(arg, bool) and arg > 0 and kernel.current:
        try:
            return user_access(kernel.current.mm, arg + offset, n, write=False)
        except Signal:
            return -errno.EFAULT
    return -errno.EFAULT


def _check_memfd_seals(memfd: File | None) -> int:
    if memfd is None:
        return -errno.EBADFD
    if not is_shmem_file(memfd):
        return -errno.EBADFD
    info = memfd.f_inode.i_private
    seals = info.seals if isinstance(info, ShmemInfo) else 0
    denied = SEALS_DENIED
    if memfd.kernel.spec.udmabuf_denies_future_write:
        denied |= F_SEAL_FUTURE_WRITE  # 0a16e24e34f2: a future-write seal is a write seal too
    if (seals & SEALS_WANTED) != SEALS_WANTED or seals & denied:
        return -errno.EINVAL
    return 0
