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
    fput,
)
from ..fs_open import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from ..fs_sync import noop_fsync
from ..trace import kernel_function
from ..uapi import F_ADD_SEALS, F_GET_SEALS
from .gfp import __GFP_ZERO, GFP_HIGHUSER_MOVABLE
from .memory import put_page, unmap_mapping_range
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


def _shmem_read(file: File, count: int, pos: int) -> bytes | int:
    """``shmem_file_read_iter`` at ``pos``: holes read as zeros, nothing past ``i_size``."""
    inode = file.f_inode
    kernel = inode.kernel
    end = min(inode.i_size, pos + count)
    out = bytearray()
    while pos < end:
        index, off = divmod(pos, PAGE_SIZE)
        chunk = min(end - pos, PAGE_SIZE - off)
        pfn = inode.i_mapping.pages.get(index)
        if pfn is None:
            out += bytes(chunk)
        else:
            pa = (pfn << PAGE_SHIFT) + off
            piece = kernel.cache.load(pa, chunk)
            if kernel.observers.cpu_access:
                kernel.observers.emit("cpu_access", pa, piece, False, "read(2)")
            out += piece
        pos += chunk
    return bytes(out)


def _shmem_write(file: File, data: bytes, pos: int) -> int:
    """``shmem_file_write_iter`` at ``pos`` (seals checked in ``shmem_write_begin``)."""
    inode = file.f_inode
    info = inode.i_private
    seals = info.seals if isinstance(info, ShmemInfo) else 0
    if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
        return -errno.EPERM
    end = pos + len(data)
    if end > inode.i_size and seals & F_SEAL_GROW:
        return -errno.EPERM
    kernel = inode.kernel
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
        if kernel.observers.cpu_access:
            kernel.observers.emit("cpu_access", pa, piece, True, "write(2)")
        done += chunk
    inode.i_size = max(inode.i_size, end)
    return done


@kernel_function("shmem_fallocate", file="mm/shmem.c")
def shmem_fallocate(file: File, mode: int, offset: int, length: int) -> int:
    """Punch a hole (``FALLOC_FL_PUNCH_HOLE``) or allocate pages; other modes ``EOPNOTSUPP``.

    A hole is unmapped from every shared mapping of the file (``unmap_mapping_range``;
    private COW copies stay) and its pages leave the page cache
    (``shmem_truncate_range``), the partial pages at its edges zeroed.  A page that
    someone else holds — udmabuf pins its memfd's pages — lives on for them with its
    contents: a udmabuf mapping keeps reading the old bytes while the memfd reads zeros.
    """
    if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
        return -errno.EOPNOTSUPP
    inode = file.f_inode
    info = inode.i_private
    seals = info.seals if isinstance(info, ShmemInfo) else 0
    if mode & FALLOC_FL_PUNCH_HOLE:
        if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            return -errno.EPERM
        unmap_start = -(-offset // PAGE_SIZE) * PAGE_SIZE  # round_up
        unmap_end = (offset + length) // PAGE_SIZE * PAGE_SIZE - 1  # round_down - 1
        if unmap_end > unmap_start:
            unmap_mapping_range(inode.i_mapping, unmap_start, 1 + unmap_end - unmap_start, 0)
        shmem_truncate_range(inode, offset, offset + length - 1)
        return 0
    end = offset + length
    if seals & F_SEAL_GROW and end > inode.i_size:
        return -errno.EPERM
    for index in range(offset >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT):
        shmem_read_mapping_page(inode, index)  # shmem_get_folio(SGP_FALLOC)
    if not mode & FALLOC_FL_KEEP_SIZE and end > inode.i_size:
        inode.i_size = end
    return 0


@kernel_function("shmem_truncate_range", file="mm/shmem.c")
def shmem_truncate_range(inode: Inode, lstart: int, lend: int) -> None:
    """Drop the page cache pages wholly inside ``[lstart, lend]``; zero the partial ones."""
    kernel = inode.kernel
    mapping = inode.i_mapping
    first_full = -(-lstart // PAGE_SIZE)
    last_full = (lend + 1) // PAGE_SIZE - 1
    for index in sorted(i for i in mapping.pages if first_full <= i <= last_full):
        pfn = mapping.pages.pop(index)
        page = kernel.mem.pfn_to_page(pfn)
        page.mapping = None
        put_page(kernel, page)  # the page cache's reference; pinners keep theirs
    for index in {lstart // PAGE_SIZE, lend // PAGE_SIZE}:
        if first_full <= index <= last_full or index not in mapping.pages:
            continue
        page_start = index * PAGE_SIZE
        lo = max(lstart, page_start) - page_start
        hi = min(lend + 1, page_start + PAGE_SIZE) - page_start
        kernel.cache.store((mapping.pages[index] << PAGE_SHIFT) + lo, bytes(hi - lo))


def _shmem_release(inode: Inode, file: File) -> int:
    # The inode (and its page cache) goes with its last file: every vma holds a
    # file reference, so by now nothing maps these pages through this file.

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
        fsync=noop_fsync,
        fallocate=shmem_fallocate,
    )


@kernel_function("shmem_file_setup", file="mm/shmem.c")
def shmem_file_setup(kernel: Kernel, name: str, size: int, *, seals: int = F_SEAL_SEAL) -> File:
    """An unlinked shmem file of ``size`` bytes, open read-write."""
    # shmem_get_inode(..., S_IFREG | S_IRWXUGO, ...)
    inode = Inode(kernel, kernel.next_ino(), S_IFREG | 0o777, "shmem", i_size=size)
    inode.i_private = ShmemInfo(seals)
    fops = _shmem_fops()
    inode.i_fop = fops  # shmem_file_operations: what a reopen through /proc gets too
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
        fput(vma.vm_file)
    vma.vm_file = file
    vma.vm_ops = _shmem_vm_ops()
    return 0


@kernel_function("memfd_create", file="mm/memfd.c")
def memfd_create(kernel: Kernel, name: str, flags: int) -> File | int:
    """``memfd_create``: the file, or ``-errno`` (the fd is installed by the caller)."""
    known = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB
    if kernel.spec.memfd_noexec_seal:  # 6.3 (105ff5339f49)
        known |= MFD_NOEXEC_SEAL | MFD_EXEC
    if flags & ~known:
        return -errno.EINVAL
    if flags & MFD_EXEC and flags & MFD_NOEXEC_SEAL:
        return -errno.EINVAL  # check_sysctl_memfd_noexec / "Invalid exec flags"
    if flags & MFD_HUGETLB:
        raise NotImplementedError("MFD_HUGETLB (hugetlbfs) is not modelled")
    if len(name.encode()) > MEMFD_NAME_MAX_LEN:
        return -errno.EINVAL
    seals = 0 if flags & (MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL) else F_SEAL_SEAL
    if flags & MFD_NOEXEC_SEAL:
        seals |= F_SEAL_EXEC
    file = shmem_file_setup(kernel, f"memfd:{name}", 0, seals=seals)
    if flags & MFD_NOEXEC_SEAL:
        file.f_inode.i_mode &= ~0o111
    file.f_flags |= O_LARGEFILE  # memfd_create sets it explicitly (F_GETFL shows 0100002)
    return file


@kernel_function("memfd_fcntl", file="mm/memfd.c")
def memfd_fcntl(file: File, cmd: int, arg: int) -> int:
    """``F_ADD_SEALS`` / ``F_GET_SEALS``."""
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
