"""madvise(2) and msync(2) on dma-bufs, memfds and anonymous memory, per kernel.

What the kernel answers (mm/madvise.c, mm/msync.c): a PFN-mapped dma-buf refuses
every advice that frees or reclaims pages (``EINVAL``) and ``MADV_REMOVE`` reaches
``vfs_fallocate`` of the dma-buf file (``ENODEV``); ``msync(MS_SYNC)`` reaches its
missing ``->fsync`` (``EINVAL``).  5.10's vgem maps the shmem file itself, so there
those calls behave like a memfd's.
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.errors import SIGSEGV
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.madvise import (
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_HUGEPAGE,
    MADV_MERGEABLE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
    VM_HUGEPAGE,
)
from dmabuf_sim.mm.msync import MS_ASYNC, MS_INVALIDATE, MS_SYNC
from dmabuf_sim.mm.vma import VM_DONTCOPY, VM_DONTDUMP, VM_LOCKED
from dmabuf_sim.process import Process

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
MAP_LOCKED = 0x2000
PFN_EXPORTERS = [("v6.12", "system_heap"), ("v6.12", "udmabuf"), ("latest", "vgem")]


def errno_of(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or 0
    return 0


def dmabuf_mapping(spec: str, exporter: str, pages: int = 4) -> tuple[Kernel, Process, int, int]:
    k = Kernel(spec)
    p = k.spawn("madv")
    fd = EXPORTERS[exporter].make_fd(p, pages * PAGE, os.O_RDWR)
    addr = p.mmap(0, pages * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"dma-buf bytes")
    return k, p, fd, addr


@pytest.mark.parametrize(("spec", "exporter"), PFN_EXPORTERS)
@pytest.mark.parametrize(
    ("advice", "want"),
    [
        (MADV_DONTNEED, errno.EINVAL),  # VM_PFNMAP
        (MADV_FREE, errno.EINVAL),
        (MADV_COLD, errno.EINVAL),
        (MADV_PAGEOUT, errno.EINVAL),
        (MADV_DONTNEED_LOCKED, errno.EINVAL),
        (MADV_REMOVE, errno.ENODEV),  # vfs_fallocate: the dma-buf inode has no file type
        (MADV_DODUMP, errno.EINVAL),  # VM_SPECIAL
        (MADV_DOFORK, errno.EINVAL),  # VM_IO (system heap) ...
        (MADV_WIPEONFORK, errno.EINVAL),  # has a file
        (MADV_POPULATE_READ, errno.EINVAL),  # GUP refuses VM_IO|VM_PFNMAP
        (MADV_COLLAPSE, errno.EINVAL),  # VM_NO_KHUGEPAGED
        (MADV_WILLNEED, 0),
        (MADV_NORMAL, 0),
        (MADV_RANDOM, 0),
        (MADV_SEQUENTIAL, 0),
        (MADV_DONTFORK, 0),
        (MADV_DONTDUMP, 0),
        (MADV_MERGEABLE, 0),  # KSM leaves shared vmas alone, without an error
        (MADV_HUGEPAGE, 0),
    ],
)
def test_madvise_on_a_pfn_mapped_dmabuf(spec: str, exporter: str, advice: int, want: int) -> None:
    """mm/madvise.c per advice on a VM_PFNMAP dma-buf vma; the bytes are never lost."""
    _k, p, _fd, addr = dmabuf_mapping(spec, exporter)
    vma = p.mm.vma_lookup(addr)
    if advice == MADV_DOFORK and not vma.vm_flags & 0x4000:
        want = 0  # udmabuf and vgem do not set VM_IO
    assert errno_of(p.madvise, addr, 4 * PAGE, advice) == want
    assert p.read_memory(addr, 13) == b"dma-buf bytes"


def test_madvise_checks_before_the_vmas() -> None:
    """Unknown advice, an unaligned start, a wrapping range: EINVAL; empty: 0; a hole: ENOMEM
    after the vmas around it were advised."""
    _k, p, _fd, addr = dmabuf_mapping("v6.12", "system_heap", pages=2)
    assert errno_of(p.madvise, addr, PAGE, 77) == errno.EINVAL
    assert errno_of(p.madvise, addr + 1, PAGE, MADV_NORMAL) == errno.EINVAL
    assert errno_of(p.madvise, addr, -1, MADV_NORMAL) == errno.EINVAL
    assert errno_of(p.madvise, addr, 0, MADV_DONTNEED) == 0
    other = p.mmap(addr - 4 * PAGE, PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x10, -1, 0)
    # [other][hole 3 pages][dma-buf 2 pages]: DONTDUMP lands on both, then ENOMEM
    assert errno_of(p.madvise, other, 6 * PAGE, MADV_DONTDUMP) == errno.ENOMEM
    assert p.mm.vma_lookup(other).vm_flags & VM_DONTDUMP
    assert p.mm.vma_lookup(addr).vm_flags & VM_DONTDUMP


def test_madvise_flag_advice_splits_the_dmabuf_vma() -> None:
    """madvise_update_vma: DONTFORK on the middle page splits the vma in three; a fork child
    then lacks that page, and the other two still map the buffer."""
    _k, p, _fd, addr = dmabuf_mapping("v6.12", "udmabuf", pages=3)
    p.madvise(addr + PAGE, PAGE, MADV_DONTFORK)
    vmas = [(v.vm_start - addr, v.vm_flags & VM_DONTCOPY) for v in p.mm.vmas]
    assert vmas == [(0, 0), (PAGE, VM_DONTCOPY), (2 * PAGE, 0)]
    child = p.fork()
    assert child.read_memory(addr, 13) == b"dma-buf bytes"
    with pytest.raises(SIGSEGV):
        child.read_memory(addr + PAGE, 1)


def test_madvise_hugepage_sets_the_flag_on_any_vma() -> None:
    _k, p, _fd, addr = dmabuf_mapping("latest", "system_heap", pages=1)
    p.madvise(addr, PAGE, MADV_HUGEPAGE)
    assert p.mm.vma_lookup(addr).vm_flags & VM_HUGEPAGE


@pytest.mark.parametrize(
    ("spec", "advice", "known"),
    [
        ("v5.10", MADV_POPULATE_READ, False),  # 5.14
        ("v5.10", MADV_DONTNEED_LOCKED, False),  # 5.18
        ("v5.10", MADV_COLLAPSE, False),  # 6.1
        ("v6.1", MADV_POPULATE_WRITE, True),
        ("v6.12", MADV_GUARD_INSTALL, False),  # 6.13
        ("v6.19", MADV_GUARD_REMOVE, True),
        ("v3.5", MADV_FREE, False),  # 4.5
        ("v3.5", MADV_WIPEONFORK, False),  # 4.14
        ("v3.5", MADV_COLD, False),  # 5.4
    ],
)
def test_madvise_advice_the_kernel_does_not_know_is_einval(
    spec: str, advice: int, known: bool
) -> None:
    """madvise_behavior_valid per spec: advice newer than the kernel is EINVAL before anything."""
    k = Kernel(spec)
    p = k.spawn("madv")
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS, -1, 0)
    got = errno_of(p.madvise, addr, PAGE, advice)
    assert (got != errno.EINVAL) == known or advice in (MADV_POPULATE_WRITE, MADV_GUARD_REMOVE)
    if not known:
        assert got == errno.EINVAL


def test_madvise_guard_regions_refuse_dmabufs_since_6_13() -> None:
    """6.13's guard regions on a VM_SPECIAL vma: EINVAL (is_valid_guard_vma); on 6.12 the
    advice itself is unknown: EINVAL as well, for another reason."""
    for spec in ("v6.12", "v6.19"):
        _k, p, _fd, addr = dmabuf_mapping(spec, "system_heap", pages=1)
        assert errno_of(p.madvise, addr, PAGE, MADV_GUARD_INSTALL) == errno.EINVAL


def test_madvise_dontneed_zaps_anonymous_and_memfd_pages() -> None:
    """MADV_DONTNEED: private anonymous pages come back zeroed, shared memfd pages refault
    with their bytes; MADV_FREE keeps them (nothing reclaims on an idle machine)."""
    k = Kernel("v6.12")
    p = k.spawn("madv")
    anon = p.mmap(0, 2 * PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    p.write_memory(anon, b"anon")
    p.madvise(anon, 2 * PAGE, MADV_FREE)
    assert p.read_memory(anon, 4) == b"anon"
    p.madvise(anon, 2 * PAGE, MADV_DONTNEED)
    assert p.read_memory(anon, 4) == bytes(4)
    m = p.memfd_create("m")
    p.ftruncate(m, PAGE)
    shared = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, m, 0)
    p.write_memory(shared, b"memfd")
    assert errno_of(p.madvise, shared, PAGE, MADV_FREE) == errno.EINVAL  # not anonymous
    p.madvise(shared, PAGE, MADV_DONTNEED)
    assert p.mm.pgtable.get(shared // PAGE) is None
    assert p.read_memory(shared, 5) == b"memfd"


def test_madvise_remove_punches_a_memfd_and_wants_a_writable_shared_mapping() -> None:
    """MADV_REMOVE = fallocate(PUNCH_HOLE|KEEP_SIZE) of the vma's file: memfd bytes gone;
    a private mapping is EACCES; 6.7+ asks VM_MAYWRITE, 6.1 the current VM_WRITE."""
    for spec, ro_shared_want in (("v6.1", errno.EACCES), ("v6.12", 0)):
        k = Kernel(spec)
        p = k.spawn("madv")
        m = p.memfd_create("m")
        p.ftruncate(m, 2 * PAGE)
        p.pwrite(m, b"x" * 2 * PAGE, 0)
        private = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE, m, 0)
        assert errno_of(p.madvise, private, PAGE, MADV_REMOVE) == errno.EACCES
        ro = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, m, PAGE)
        assert errno_of(p.madvise, ro, PAGE, MADV_REMOVE) == ro_shared_want
        rw = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, m, 0)
        p.madvise(rw, PAGE, MADV_REMOVE)
        assert p.pread(m, 2, 0) == bytes(2)
        assert p.pread(m, 1, PAGE) == (b"x" if ro_shared_want else b"\0")


def test_madvise_populate_faults_in_and_reports_sigbus_as_efault() -> None:
    """MADV_POPULATE_*: GUP faults every page; a page past a memfd's end (SIGBUS) is EFAULT;
    writing a read-only mapping is EINVAL; a hole ENOMEM."""
    k = Kernel("v6.12")
    p = k.spawn("madv")
    m = p.memfd_create("m")
    p.ftruncate(m, PAGE)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, m, 0)
    assert errno_of(p.madvise, addr, PAGE, MADV_POPULATE_WRITE) == 0
    assert p.mm.pgtable.get(addr // PAGE) is not None
    assert errno_of(p.madvise, addr, 2 * PAGE, MADV_POPULATE_READ) == errno.EFAULT
    ro = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, m, 0)
    assert errno_of(p.madvise, ro, PAGE, MADV_POPULATE_WRITE) == errno.EINVAL
    p.munmap(ro, PAGE)
    assert errno_of(p.madvise, ro, PAGE, MADV_POPULATE_READ) == errno.ENOMEM


def test_map_locked_dmabuf_is_not_locked_and_refuses_dontneed_elsewhere() -> None:
    """MAP_LOCKED: a dma-buf vma (VM_SPECIAL) drops VM_LOCKED after ->mmap; an anonymous one
    keeps it, is populated at once, refuses MADV_DONTNEED (EINVAL) and msync(MS_INVALIDATE)
    (EBUSY), and a fork child does not inherit the lock."""
    k = Kernel("latest")
    p = k.spawn("lock")
    fd = EXPORTERS["udmabuf"].make_fd(p, 2 * PAGE, os.O_RDWR)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED | MAP_LOCKED, fd, 0)
    assert not p.mm.vma_lookup(addr).vm_flags & VM_LOCKED
    anon = p.mmap(0, 2 * PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_LOCKED, -1, 0)
    assert p.mm.vma_lookup(anon).vm_flags & VM_LOCKED
    assert [p.mm.pgtable.get(anon // PAGE + i) is not None for i in range(2)] == [True, True]
    assert errno_of(p.madvise, anon, PAGE, MADV_DONTNEED) == errno.EINVAL
    assert errno_of(p.msync, anon, PAGE, MS_INVALIDATE) == errno.EBUSY
    assert errno_of(p.madvise, anon, PAGE, MADV_DONTNEED_LOCKED) == 0
    assert not p.fork().mm.vma_lookup(anon).vm_flags & VM_LOCKED


@pytest.mark.parametrize(("spec", "exporter"), [*PFN_EXPORTERS, ("v5.10", "vgem")])
def test_msync_sync_reaches_fsync_of_the_vma_file(spec: str, exporter: str) -> None:
    """msync(MS_SYNC) on a shared dma-buf mapping: vfs_fsync_range of a file without ->fsync
    is EINVAL; 5.10's vgem mapping is the shmem file (noop_fsync): 0.  MS_ASYNC is 0."""
    _k, p, _fd, addr = dmabuf_mapping(spec, exporter, pages=2)
    want = 0 if spec == "v5.10" else errno.EINVAL
    assert errno_of(p.msync, addr, 2 * PAGE, MS_SYNC) == want
    assert errno_of(p.msync, addr, 2 * PAGE, MS_ASYNC) == 0


def test_msync_argument_checks_and_holes() -> None:
    """Bad flags, ASYNC|SYNC together, an unaligned start: EINVAL; a hole is ENOMEM (at once
    for a plain MS_ASYNC, after the vmas for MS_SYNC); private and anonymous: 0."""
    k = Kernel("v6.12")
    p = k.spawn("msync")
    anon = p.mmap(0, 2 * PAGE, RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert errno_of(p.msync, anon, PAGE, 8) == errno.EINVAL
    assert errno_of(p.msync, anon, PAGE, MS_ASYNC | MS_SYNC) == errno.EINVAL
    assert errno_of(p.msync, anon + 1, PAGE, MS_SYNC) == errno.EINVAL
    assert errno_of(p.msync, anon, 0, MS_SYNC) == 0
    assert errno_of(p.msync, anon, 2 * PAGE, MS_SYNC | MS_INVALIDATE) == 0
    p.munmap(anon, PAGE)
    assert errno_of(p.msync, anon, 2 * PAGE, MS_ASYNC) == errno.ENOMEM
    assert errno_of(p.msync, anon, 2 * PAGE, MS_SYNC) == errno.ENOMEM
