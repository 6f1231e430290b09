"""shmem files, memfd and seals (mm/shmem.c, mm/memfd.c).

udmabuf wraps the pages of a sealed memfd, and ``MAP_SHARED|MAP_ANONYMOUS``
is backed by an unnamed shmem file; this module provides both.  Pages live in
the inode's page cache (``i_mapping.pages``: index → pfn) and are allocated on
first touch (fault, write or udmabuf pinning).

Simplified: no swap, no huge pages, no ``F_SEAL_FUTURE_WRITE``/``F_SEAL_EXEC``
semantics beyond recording them; read/write move whole byte ranges through the
kernel's write-back mapping (the CPU cache).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ..errors import KernelError, OutOfMemory
from ..fs import (
    FMODE_LSEEK,
    FMODE_PREAD,
    FMODE_PWRITE,
    FMODE_READ,
    FMODE_WRITE,
    S_IFREG,
    File,
    FileOperations,
    Inode,
)
from ..trace import kernel_function
from .gfp import __GFP_ZERO, GFP_HIGHUSER_MOVABLE
from .page_alloc import PAGE_SHIFT, PAGE_SIZE, Page
from .vma import (
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_SHARED,
    VM_WRITE,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "F_SEAL_GROW",
    "F_SEAL_SEAL",
    "F_SEAL_SHRINK",
    "F_SEAL_WRITE",
    "MFD_ALLOW_SEALING",
    "MFD_CLOEXEC",
    "ShmemInfo",
    "is_shmem_file",
    "memfd_create",
    "shmem_file_setup",
    "shmem_read_mapping_page",
    "shmem_zero_setup",
]

MFD_CLOEXEC = 0x0001
MFD_ALLOW_SEALING = 0x0002
MFD_HUGETLB = 0x0004
MFD_NOEXEC_SEAL = 0x0008
MFD_EXEC = 0x0010

F_SEAL_SEAL = 0x0001
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_WRITE = 0x0008
F_SEAL_FUTURE_WRITE = 0x0010
F_SEAL_EXEC = 0x0020
F_ALL_SEALS = (
    F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC
)

MEMFD_NAME_MAX_LEN = 255 - len("memfd:")
O_LARGEFILE = 0o100000  # x86-64's kernel value (userspace headers define it as 0)


class ShmemInfo:
    """``shmem_inode_info``: the seals (kept on the inode's ``i_private``)."""

    __slots__ = ("seals",)

    def __init__(self, seals: int) -> None:
        self.seals = seals


def is_shmem_file(file: File) -> bool:
    return file.f_inode.i_sb == "shmem"


def _pages_in_file(inode: Inode) -> int:
    return (inode.i_size + PAGE_SIZE - 1) >> PAGE_SHIFT


@kernel_function("shmem_get_folio", file="mm/shmem.c")
def shmem_read_mapping_page(inode: Inode, index: int) -> Page:
    """Find or allocate the page cache page at ``index`` (referenced by the cache).

    Raises :class:`~dmabuf_sim.errors.KernelError` ``ENOMEM`` (the
    ``ERR_PTR(-ENOMEM)`` of ``shmem_read_mapping_page``) when no page is free."""
    kernel = inode.kernel
    mapping = inode.i_mapping
    pfn = mapping.pages.get(index)
    if pfn is None:
        try:
            pfn = kernel.mem.alloc_pages(0, GFP_HIGHUSER_MOVABLE | __GFP_ZERO)
        except OutOfMemory:
            raise KernelError(errno.ENOMEM, "shmem_read_mapping_page") from None
        mapping.pages[index] = pfn
        page = kernel.mem.pfn_to_page(pfn)
        page.mapping = mapping
        page.index = index
        return page
    return kernel.mem.pfn_to_page(pfn)


@kernel_function("shmem_fault", file="mm/shmem.c")
def shmem_fault(vmf: VmFault) -> int:
    vma = vmf.vma
    assert vma.vm_file is not None
    inode = vma.vm_file.f_inode
    if vmf.pgoff >= _pages_in_file(inode):
        return VM_FAULT_SIGBUS
    try:
        page = shmem_read_mapping_page(inode, vmf.pgoff)
    except KernelError:
        return VM_FAULT_OOM  # vmf_error(-ENOMEM)
    page.refcount += 1  # the PTE's reference
    vmf.page = page
    return 0


def _shmem_vm_ops() -> VmOperationsStruct:
    return VmOperationsStruct(fault=shmem_fault, owner="shmem")


@kernel_function("shmem_mmap", file="mm/shmem.c")
def shmem_mmap(file: File, vma: VmAreaStruct) -> int:
    info = file.f_inode.i_private
    if (
        isinstance(info, ShmemInfo)
        and info.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)
        and vma.vm_flags & VM_SHARED
        and vma.vm_flags & VM_WRITE
    ):
        return -errno.EPERM
    vma.vm_ops = _shmem_vm_ops()
    return 0


def _shmem_llseek(file: File, offset: int, whence: int) -> int:
    if whence == os.SEEK_SET:
        new = offset
    elif whence == os.SEEK_CUR:
        new = file.f_pos + offset
    elif whence == os.SEEK_END:
        new = file.f_inode.i_size + offset
    else:
        return -errno.EINVAL
    if new < 0:
        return -errno.EINVAL
    file.f_pos = new
    return new


def _shmem_read(file: File, count: int) -> bytes | int:
    inode = file.f_inode
    kernel = inode.kernel
    end = min(inode.i_size, file.f_pos + count)
    out = bytearray()
    pos = file.f_pos
    while pos < end:
        index, off = divmod(pos, PAGE_SIZE)
        chunk = min(end - pos, PAGE_SIZE - off)
        pfn = inode.i_mapping.pages.get(index)
        if pfn is None:
            out += bytes(chunk)
        else:
            pa = (pfn << PAGE_SHIFT) + off
            piece = kernel.cache.load(pa, chunk)
            if kernel.access_observer is not None:
                kernel.access_observer.cpu_access(pa, piece, False, "read(2)")
            out += piece
        pos += chunk
    file.f_pos = pos
    return bytes(out)


def _shmem_write(file: File, data: bytes) -> int:
    inode = file.f_inode
    info = inode.i_private
    seals = info.seals if isinstance(info, ShmemInfo) else 0
    if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
        return -errno.EPERM
    end = file.f_pos + len(data)
    if end > inode.i_size and seals & F_SEAL_GROW:
        return -errno.EPERM
    kernel = inode.kernel
    pos = file.f_pos
    done = 0
    while done < len(data):
        index, off = divmod(pos + done, PAGE_SIZE)
        chunk = min(len(data) - done, PAGE_SIZE - off)
        try:
            page = shmem_read_mapping_page(inode, index)
        except KernelError as exc:
            # generic_perform_write: a short write if anything went in, else the error
            if not done:
                return -exc.err
            end = pos + done
            break
        piece = data[done : done + chunk]
        pa = (page.pfn << PAGE_SHIFT) + off
        kernel.cache.store(pa, piece)
        if kernel.access_observer is not None:
            kernel.access_observer.cpu_access(pa, piece, True, "write(2)")
        done += chunk
    file.f_pos = end
    inode.i_size = max(inode.i_size, end)
    return done


def _shmem_release(inode: Inode, file: File) -> int:
    # The inode (and its page cache) goes with its last file: every vma holds a
    # file reference, so by now nothing maps these pages through this file.
    from .memory import put_page

    kernel = inode.kernel
    for _index, pfn in sorted(inode.i_mapping.pages.items()):
        page = kernel.mem.pfn_to_page(pfn)
        page.mapping = None
        put_page(kernel, page)
    inode.i_mapping.pages.clear()
    return 0


def _shmem_fops() -> FileOperations:
    return FileOperations(
        owner="shmem",
        mmap=shmem_mmap,
        llseek=_shmem_llseek,
        read=_shmem_read,
        write=_shmem_write,
        release=_shmem_release,
    )


@kernel_function("shmem_file_setup", file="mm/shmem.c")
def shmem_file_setup(kernel: Kernel, name: str, size: int, *, seals: int = F_SEAL_SEAL) -> File:
    """An unlinked shmem file of ``size`` bytes, open read-write."""
    inode = Inode(kernel, kernel.next_ino(), S_IFREG | 0o600, "shmem", i_size=size)
    inode.i_private = ShmemInfo(seals)
    fops = _shmem_fops()
    inode.i_fop = FileOperations(owner="shmem", open=lambda i, f: 0)
    return File(
        kernel,
        inode,
        fops,
        FMODE_READ | FMODE_WRITE | FMODE_LSEEK | FMODE_PREAD | FMODE_PWRITE,
        os.O_RDWR,
        name,
        d_dname=lambda f: f"/{f.name} (deleted)",
    )


@kernel_function("shmem_zero_setup", file="mm/shmem.c")
def shmem_zero_setup(vma: VmAreaStruct) -> int:
    """Back a ``MAP_SHARED|MAP_ANONYMOUS`` vma with a fresh shmem file."""
    size = vma.vm_end - vma.vm_start
    file = shmem_file_setup(vma.kernel, "dev/zero", size)
    if vma.vm_file is not None:
        from ..fs import fput

        fput(vma.vm_file)
    vma.vm_file = file
    vma.vm_ops = _shmem_vm_ops()
    return 0


@kernel_function("memfd_create", file="mm/memfd.c")
def memfd_create(kernel: Kernel, name: str, flags: int) -> File | int:
    """``memfd_create``: the file, or ``-errno`` (the fd is installed by the caller)."""
    if flags & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC):
        return -errno.EINVAL
    if flags & MFD_HUGETLB:
        raise NotImplementedError("MFD_HUGETLB (hugetlbfs) is not modelled")
    if len(name.encode()) > MEMFD_NAME_MAX_LEN:
        return -errno.EINVAL
    seals = 0 if flags & MFD_ALLOW_SEALING else F_SEAL_SEAL
    file = shmem_file_setup(kernel, f"memfd:{name}", 0, seals=seals)
    file.f_flags |= O_LARGEFILE  # memfd_create sets it explicitly (F_GETFL shows 0100002)
    return file


@kernel_function("memfd_fcntl", file="mm/memfd.c")
def memfd_fcntl(file: File, cmd: int, arg: int) -> int:
    """``F_ADD_SEALS`` / ``F_GET_SEALS``."""
    from ..uapi import F_ADD_SEALS, F_GET_SEALS

    priv = file.f_inode.i_private
    info = priv if is_shmem_file(file) and isinstance(priv, ShmemInfo) else None
    if cmd == F_GET_SEALS:
        return info.seals if info is not None else -errno.EINVAL
    if cmd != F_ADD_SEALS:
        return -errno.EINVAL
    # memfd_add_seals: the mode and the seal bits are checked before the file
    # is known to have seals at all (memfd_file_seals_ptr)
    if not file.f_mode & FMODE_WRITE:
        return -errno.EPERM
    if arg & ~F_ALL_SEALS:
        return -errno.EINVAL
    if info is None:
        return -errno.EINVAL
    if info.seals & F_SEAL_SEAL:
        return -errno.EPERM
    if arg & F_SEAL_WRITE:
        for vma in file.f_mapping.i_mmap:
            if vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE:
                return -errno.EBUSY  # mapping_deny_writable
    info.seals |= arg
    return 0


@kernel_function("shmem_setattr", file="mm/shmem.c")
def shmem_truncate(file: File, length: int) -> int:
    """``ftruncate`` on a shmem file, honouring F_SEAL_SHRINK / F_SEAL_GROW."""
    from .memory import put_page, unmap_mapping_range

    inode = file.f_inode
    info = inode.i_private
    seals = info.seals if isinstance(info, ShmemInfo) else 0
    old = inode.i_size
    if length < old and seals & F_SEAL_SHRINK:
        return -errno.EPERM
    if length > old and seals & F_SEAL_GROW:
        return -errno.EPERM
    inode.i_size = length
    if length < old:
        first = (length + PAGE_SIZE - 1) >> PAGE_SHIFT
        unmap_mapping_range(inode.i_mapping, first << PAGE_SHIFT, 0, 1)
        kernel = inode.kernel
        for index in [i for i in inode.i_mapping.pages if i >= first]:
            pfn = inode.i_mapping.pages.pop(index)
            page = kernel.mem.pfn_to_page(pfn)
            page.mapping = None
            put_page(kernel, page)
    return 0
