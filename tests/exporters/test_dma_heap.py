"""The dma-heap framework: ``DMA_HEAP_IOCTL_ALLOC`` on ``/dev/dma_heap/<name>``.

kernel-spec §5.1 (file modes of heap buffers), §6.1, §6.2; drivers/dma-buf/dma-heap.c.
``dma_heap_ioctl`` picks the kernel command by ``_IOC_NR`` alone and copies in and
out as many bytes as the user's command says (zero-extending a shorter struct);
``dma_heap_ioctl_allocate`` checks ``fd == 0``, ``fd_flags`` and ``heap_flags`` (all
``EINVAL``) before ``dma_heap_buffer_alloc`` rounds the length to pages (``EINVAL``
if that is 0) and installs an fd with the user's ``fd_flags``.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

import pytest

from dmabuf_sim import Kernel, Process
from dmabuf_sim.dma_buf.core import DmaBuf
from dmabuf_sim.mm.vma import VM_MAYSHARE, VM_MAYWRITE, VM_SHARED
from dmabuf_sim.uapi import (
    _IO,
    _IOR,
    _IOW,
    _IOWR,
    DMA_HEAP_IOCTL_ALLOC,
    DmaHeapAllocationData,
)

MODERN = ["v6.1", "v6.12", "latest"]
HEAPS = ["system", "reserved"]
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
SIZEOF = DmaHeapAllocationData.sizeof()  # 24


def _setup(spec: str, heap: str = "system") -> tuple[Kernel, Process, int]:
    k = Kernel(spec)
    p = k.spawn("heap")
    return k, p, p.open(f"/dev/dma_heap/{heap}", os.O_RDONLY | os.O_CLOEXEC)


def _errno(p: Process, fd: int, data: object, cmd: int = DMA_HEAP_IOCTL_ALLOC) -> int:
    with pytest.raises(OSError) as ei:
        p.ioctl(fd, cmd, data)
    return ei.value.errno


def _alloc(p: Process, heap_fd: int, length: int, fd_flags: int = os.O_RDWR) -> int:
    data = DmaHeapAllocationData(len=length, fd_flags=fd_flags)
    assert p.ioctl(heap_fd, DMA_HEAP_IOCTL_ALLOC, data) == 0
    return int(data.fd)


# -- dma_heap_ioctl_allocate: the argument checks --------------------------------------------


@pytest.mark.parametrize("heap", HEAPS)
@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"fd": 3}, "fd must be 0 on input"),
        ({"fd": 0xFFFFFFFF}, "fd must be 0 on input"),
        ({"fd_flags": os.O_NONBLOCK}, "fd_flags outside O_ACCMODE|O_CLOEXEC"),
        ({"fd_flags": os.O_RDWR | os.O_APPEND}, "fd_flags outside O_ACCMODE|O_CLOEXEC"),
        ({"heap_flags": 1}, "no heap flags are valid"),
        ({"heap_flags": 1 << 63}, "no heap flags are valid"),
    ],
)
def test_alloc_bad_fields_einval_and_nothing_allocated(
    heap: str, spec: str, fields: dict[str, int], why: str
) -> None:
    """dma_heap_ioctl_allocate: fd != 0, unknown fd_flags or heap_flags → EINVAL (§5.1);
    no page is allocated and no fd is installed."""
    k, p, h = _setup(spec, heap)
    pages_before, fds_before = k.mem.allocated_pages, set(p.files.fds)
    data = DmaHeapAllocationData(len=PAGE, **{"fd_flags": os.O_RDWR, **fields})
    assert _errno(p, h, data) == errno.EINVAL, why
    assert k.mem.allocated_pages == pages_before
    assert set(p.files.fds) == fds_before
    assert not k.dma_bufs


@pytest.mark.parametrize("heap", HEAPS)
@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("length", [0, 2**64 - 1, 2**64 - PAGE + 1])
def test_alloc_length_zero_or_page_align_wrap_einval(heap: str, spec: str, length: int) -> None:
    """dma_heap_buffer_alloc: len = PAGE_ALIGN(len); 0 (given or wrapped) → EINVAL."""
    k, p, h = _setup(spec, heap)
    before = k.mem.allocated_pages
    assert _errno(p, h, DmaHeapAllocationData(len=length, fd_flags=os.O_RDWR)) == errno.EINVAL
    assert k.mem.allocated_pages == before and not k.dma_bufs


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("arg", [8, 0, 0x7FFF_FFFF_F000])
def test_alloc_bad_pointer_efault(spec: str, arg: int) -> None:
    """copy_from_user of the struct fails → EFAULT, before anything is allocated."""
    k, p, h = _setup(spec)
    before = k.mem.allocated_pages
    assert _errno(p, h, arg) == errno.EFAULT
    assert k.mem.allocated_pages == before and not k.dma_bufs


@pytest.mark.parametrize("heap", HEAPS)
@pytest.mark.parametrize("spec", MODERN)
def test_alloc_writes_the_new_fd_back_into_the_struct(heap: str, spec: str) -> None:
    """copy_to_user: the struct comes back with ``fd`` set; the fd is a dma-buf of the
    rounded-up length exported by the heap (exp_name = heap name)."""
    _k, p, h = _setup(spec, heap)
    data = DmaHeapAllocationData(len=PAGE + 1, fd_flags=os.O_RDWR | os.O_CLOEXEC)
    assert p.ioctl(h, DMA_HEAP_IOCTL_ALLOC, data) == 0
    assert data.fd not in (0, h) and data.fd in p.files.fds
    assert (data.len, data.fd_flags, data.heap_flags) == (PAGE + 1, os.O_RDWR | os.O_CLOEXEC, 0)
    dmabuf = p.file(data.fd).private_data
    assert isinstance(dmabuf, DmaBuf)
    assert dmabuf.size == 2 * PAGE and dmabuf.exp_name == heap


@pytest.mark.parametrize("spec", MODERN)
def test_alloc_through_a_user_address_writes_back_through_memory(spec: str) -> None:
    """The struct read from and written back to process memory (an int pointer)."""
    _k, p, h = _setup(spec)
    buf = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    p.write_memory(buf, DmaHeapAllocationData(len=3 * PAGE, fd_flags=os.O_RDWR).pack())
    assert p.ioctl(h, DMA_HEAP_IOCTL_ALLOC, buf) == 0
    back = DmaHeapAllocationData.unpack(p.read_memory(buf, SIZEOF))
    assert back.len == 3 * PAGE and back.fd in p.files.fds
    assert p.file(back.fd).private_data.size == 3 * PAGE


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(("fd_flags", "cloexec"), [(os.O_RDWR, 0), (os.O_RDWR | os.O_CLOEXEC, 1)])
def test_alloc_fd_flags_cloexec_sets_fd_cloexec(spec: str, fd_flags: int, cloexec: int) -> None:
    """dma_buf_fd(dmabuf, fd_flags): O_CLOEXEC becomes FD_CLOEXEC; F_GETFL never shows it."""
    _k, p, h = _setup(spec)
    fd = _alloc(p, h, PAGE, fd_flags)
    assert p.fcntl(fd, fcntl.F_GETFD) == (fcntl.FD_CLOEXEC if cloexec else 0)
    assert p.fcntl(fd, fcntl.F_GETFL) & os.O_CLOEXEC == 0
    assert p.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR


# -- R7 / R8: the buffer's file mode is the user's access mode ---------------------------------


@pytest.mark.parametrize("heap", HEAPS)
@pytest.mark.parametrize("spec", MODERN)
def test_r7_rdonly_heap_buffer_cannot_be_mapped_shared_writable(heap: str, spec: str) -> None:
    """R7: an O_RDONLY heap buffer has F_GETFL accmode 0; PROT_WRITE|MAP_SHARED → EACCES,
    leaving nothing mapped; PROT_READ|MAP_SHARED works without VM_SHARED/VM_MAYWRITE and
    mprotect(PROT_WRITE) on it fails EACCES."""
    _k, p, h = _setup(spec, heap)
    fd = _alloc(p, h, 2 * PAGE, os.O_RDONLY)
    assert p.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == 0
    count = p.file(fd).f_count
    with pytest.raises(OSError) as ei:
        p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert ei.value.errno == errno.EACCES
    assert not p.mm.vmas and len(p.mm.pgtable) == 0 and p.file(fd).f_count == count
    addr = p.mmap(0, 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    flags = p.mm.vma_lookup(addr).vm_flags
    assert flags & VM_MAYSHARE and not flags & (VM_SHARED | VM_MAYWRITE)
    with pytest.raises(OSError) as ei:
        p.mprotect(addr, PAGE, RW)
    assert ei.value.errno == errno.EACCES


@pytest.mark.parametrize("spec", MODERN)
def test_r8_wronly_heap_buffer_cannot_be_mapped_at_all(spec: str) -> None:
    """R8: a heap buffer exported O_WRONLY has no FMODE_READ: every mmap fails EACCES."""
    _k, p, h = _setup(spec)
    fd = _alloc(p, h, PAGE, os.O_WRONLY)
    for prot, flags in ((mmap.PROT_READ, mmap.MAP_SHARED), (RW, mmap.MAP_PRIVATE)):
        with pytest.raises(OSError) as ei:
            p.mmap(0, PAGE, prot, flags, fd, 0)
        assert ei.value.errno == errno.EACCES


# -- a big buffer costs structure, not bytes ------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_one_gib_system_heap_buffer_is_1024_order8_chunks_and_no_page_bytes(spec: str) -> None:
    """A 1 GiB (262,144-page) system-heap buffer: 1024 sg entries of 256 pages (order 8,
    largest first), every page counted as allocated, yet no page holds bytes and no
    struct page is materialised until something touches them (zeroed = implicit)."""
    k, p, h = _setup(spec)
    data_before = k.mem.pages_with_data
    struct_before = k.mem.materialised_pages
    alloc_before = k.mem.allocated_pages
    fd = _alloc(p, h, 1 << 30)
    buffer = p.file(fd).private_data.priv
    entries = buffer.sg_table.entries
    assert len(entries) == 1024
    assert {n for _pfn, n in entries} == {256}
    assert sorted(order for _pfn, order in buffer.chunks) == [8] * 1024
    assert buffer.sg_table.npages() == 262144
    assert k.mem.allocated_pages - alloc_before == 262144
    assert k.mem.pages_with_data == data_before
    assert k.mem.materialised_pages == struct_before


@pytest.mark.parametrize("spec", MODERN)
def test_system_heap_uses_largest_orders_first(spec: str) -> None:
    """alloc_largest_available: 256 + 16 + 3 pages → one order-8, one order-4, three order-0
    chunks, in that order (orders never increase)."""
    _k, p, h = _setup(spec)
    fd = _alloc(p, h, (256 + 16 + 3) * PAGE)
    chunks = p.file(fd).private_data.priv.chunks
    assert [order for _pfn, order in chunks] == [8, 4, 0, 0, 0]


# -- dma_heap_ioctl: the command is matched by _IOC_NR only --------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_nr_beyond_the_command_table_einval(spec: str) -> None:
    """dma_heap_ioctl: _IOC_NR(cmd) >= ARRAY_SIZE(dma_heap_ioctl_cmds) → EINVAL (not ENOTTY)."""
    _k, p, h = _setup(spec)
    data = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR)
    assert _errno(p, h, data, _IOWR("H", 1, SIZEOF)) == errno.EINVAL
    assert _errno(p, h, data, _IOWR("H", 0xFF, SIZEOF)) == errno.EINVAL


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_type_byte_is_not_checked(spec: str) -> None:
    """dma_heap_ioctl maps nr 0 to DMA_HEAP_IOCTL_ALLOC whatever the type byte says."""
    _k, p, h = _setup(spec)
    data = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR)
    assert p.ioctl(h, _IOWR("X", 0, SIZEOF), data) == 0
    assert isinstance(p.file(data.fd).private_data, DmaBuf)


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_shorter_struct_is_zero_extended(spec: str) -> None:
    """A 16-byte command copies len/fd/fd_flags only: the kernel's heap_flags is zero, so
    garbage in the caller's heap_flags field is never read; only 16 bytes come back."""
    _k, p, h = _setup(spec)
    data = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR, heap_flags=0xDEAD)
    assert p.ioctl(h, _IOWR("H", 0, 16), data) == 0
    assert data.fd in p.files.fds and data.heap_flags == 0xDEAD


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_without_read_direction_allocates_but_writes_nothing_back(spec: str) -> None:
    """_IOW: in_size = 24, out_size = 0: the buffer is made and its fd installed, but the
    caller's struct keeps fd = 0."""
    k, p, h = _setup(spec)
    fds_before = set(p.files.fds)
    data = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR)
    assert p.ioctl(h, _IOW("H", 0, SIZEOF), data) == 0
    assert data.fd == 0
    (new,) = set(p.files.fds) - fds_before
    assert isinstance(p.file(new).private_data, DmaBuf) and len(k.dma_bufs) == 1


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_without_write_direction_reads_nothing_and_zeroes_the_struct(spec: str) -> None:
    """_IOR: nothing is copied in, so the kernel sees len 0 → EINVAL, and copies its zeroed
    struct back over the caller's; _IO (no data at all) → EINVAL."""
    k, p, h = _setup(spec)
    data = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR)
    assert _errno(p, h, data, _IOR("H", 0, SIZEOF)) == errno.EINVAL
    assert (data.len, data.fd, data.fd_flags, data.heap_flags) == (0, 0, 0, 0)
    assert _errno(p, h, 0, _IO("H", 0)) == errno.EINVAL
    assert not k.dma_bufs


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_unwritable_struct_efault_leaves_the_fd_installed(spec: str) -> None:
    """The allocation succeeds, copy_to_user fails → EFAULT; dma-heap.c does not undo the
    fd it installed (the buffer stays, reachable only through that fd)."""
    k, p, h = _setup(spec)
    fds_before = set(p.files.fds)
    ro = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR).pack()  # read-only memory
    assert _errno(p, h, ro) == errno.EFAULT
    (new,) = set(p.files.fds) - fds_before
    assert p.file(new).private_data is k.dma_bufs[0]


@pytest.mark.parametrize("spec", MODERN)
def test_ioctl_longer_struct_is_read_and_written_back_whole(spec: str) -> None:
    """A 32-byte command: ksize = 32, the kernel uses the first 24 bytes and copies all 32
    back, so the caller's 8 trailing bytes come back as they were; a 24-byte object cannot
    supply 32 bytes → EFAULT before anything is allocated."""
    k, p, h = _setup(spec)
    buf = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR).pack() + b"TRAILING"
    p.write_memory(buf, raw)
    assert p.ioctl(h, _IOWR("H", 0, 32), buf) == 0
    back = p.read_memory(buf, 32)
    assert back[24:] == b"TRAILING"
    assert DmaHeapAllocationData.unpack(back[:24]).fd in p.files.fds
    data = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR)
    assert _errno(p, h, data, _IOWR("H", 0, 32)) == errno.EFAULT
    assert len(k.dma_bufs) == 1
