"""udmabuf: a dma-buf over the pages of a sealed memfd (drivers/dma-buf/udmabuf.c), §6.3.

``UDMABUF_CREATE`` checks, in this order: offset and size page-aligned, the running
page count within ``size_limit_mb`` (64 MiB), the page count non-zero (all
``EINVAL``, before the memfd is looked at); then the memfd: not an open fd or not
shmem → ``EBADFD``; ``F_SEAL_SHRINK`` missing or ``F_SEAL_WRITE`` present →
``EINVAL``; the range must lie inside the file (``EINVAL``).  The pages are pinned
for the buffer's life; the fd is always ``O_RDWR``.  ``mmap`` refuses non-shared
vmas (R57) and faults pages in: v6.1 returns the refcounted page (no vm flags, so
the vma can grow), v6.12 ``vmf_insert_pfn`` into a ``VM_PFNMAP|VM_DONTEXPAND|
VM_DONTDUMP`` vma, latest also pre-faults the whole vma on the first fault.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel, Process
from dmabuf_sim.dma_buf.core import DmaBuf
from dmabuf_sim.errors import BUS_ADRERR, SIGBUS
from dmabuf_sim.mm.mmap import MAP_FIXED
from dmabuf_sim.mm.pgtable import pte_pfn, pte_special
from dmabuf_sim.mm.shmem import (
    F_SEAL_FUTURE_WRITE,
    F_SEAL_GROW,
    F_SEAL_SHRINK,
    F_SEAL_WRITE,
    MFD_ALLOW_SEALING,
)
from dmabuf_sim.mm.vma import VM_DONTDUMP, VM_DONTEXPAND, VM_IO, VM_MIXEDMAP, VM_PFNMAP
from dmabuf_sim.spec import SPECS, Spec
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    F_ADD_SEALS,
    UDMABUF_CREATE,
    UDMABUF_CREATE_LIST,
    UDMABUF_FLAGS_CLOEXEC,
    DmaBufSync,
    UdmabufCreate,
)

MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
MREMAP_MAYMOVE = 1
LIMIT = 64 << 20  # size_limit_mb


class Env:
    """A kernel, a process, /dev/udmabuf open, and helpers to make memfds and buffers."""

    def __init__(self, spec: str | Spec) -> None:
        self.kernel = Kernel(spec)
        self.proc = self.kernel.spawn("udmabuf")
        self.dev = self.proc.open("/dev/udmabuf", os.O_RDWR)

    def memfd(self, size: int, seals: int = F_SEAL_SHRINK) -> int:
        p = self.proc
        fd = p.memfd_create("buf", MFD_ALLOW_SEALING)
        p.ftruncate(fd, size)
        if seals:
            p.fcntl(fd, F_ADD_SEALS, seals)
        return fd

    def create(self, memfd: int, offset: int, size: int, flags: int = 0) -> int:
        """The new fd, or -errno."""
        try:
            return self.proc.ioctl(
                self.dev, UDMABUF_CREATE, UdmabufCreate(memfd, flags, offset, size)
            )
        except OSError as exc:
            return -exc.errno

    def buffer(self, pages: int) -> tuple[int, int]:
        """(memfd, udmabuf fd) over all ``pages`` pages of a fresh sealed memfd."""
        memfd = self.memfd(pages * PAGE)
        fd = self.create(memfd, 0, pages * PAGE)
        assert fd >= 0
        return memfd, fd

    def dmabuf(self, fd: int) -> DmaBuf:
        d = self.proc.file(fd).private_data
        assert isinstance(d, DmaBuf)
        return d


def _present(p: Process, addr: int, npages: int) -> list[int]:
    vpn = addr // PAGE
    return [v - vpn for v, _pte in p.mm.pgtable.iter_range(vpn, vpn + npages)]


def _sync(p: Process, fd: int, flags: int) -> None:
    p.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags))


# -- UDMABUF_CREATE: the checks and their order -------------------------------------------------

BAD_FD = 99


@pytest.mark.parametrize("spec", MODERN)
def test_create_alignment_size_and_limit_are_checked_before_the_memfd(spec: str) -> None:
    """Unaligned offset or size, a zero page count and more than size_limit_mb all fail
    EINVAL even with a bad memfd: the loop over the items runs before any fget."""
    env = Env(spec)
    for offset, size in (
        (1, PAGE),  # unaligned offset
        (PAGE + 8, PAGE),
        (0, 100),  # unaligned size
        (0, PAGE + 1),
        (0, 0),  # no pages
        (0, LIMIT + PAGE),  # over size_limit_mb
        (PAGE, 1 << 40),
    ):
        assert env.create(BAD_FD, offset, size) == -errno.EINVAL, (offset, size)


@pytest.mark.parametrize("spec", MODERN)
def test_create_memfd_not_open_ebadfd(spec: str) -> None:
    """check_memfd_seals(NULL): an fd that is not open → EBADFD (not EBADF)."""
    env = Env(spec)
    assert env.create(BAD_FD, 0, PAGE) == -errno.EBADFD
    memfd = env.memfd(PAGE)
    env.proc.close(memfd)
    assert env.create(memfd, 0, PAGE) == -errno.EBADFD


@pytest.mark.parametrize("spec", MODERN)
def test_create_non_memfd_fd_ebadfd(spec: str) -> None:
    """An open fd that is not a shmem file (a char device, a dma-buf) → EBADFD."""
    env = Env(spec)
    simmem = env.proc.open("/dev/simmem", os.O_RDWR)
    assert env.create(simmem, 0, PAGE) == -errno.EBADFD
    _memfd, ubuf = env.buffer(1)
    assert env.create(ubuf, 0, PAGE) == -errno.EBADFD
    assert env.create(env.dev, 0, PAGE) == -errno.EBADFD


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("seals", "want"),
    [
        (0, -errno.EINVAL),  # F_SEAL_SHRINK missing
        (F_SEAL_GROW, -errno.EINVAL),
        (F_SEAL_SHRINK | F_SEAL_WRITE, -errno.EINVAL),  # F_SEAL_WRITE denied
        (F_SEAL_WRITE, -errno.EINVAL),
        (F_SEAL_SHRINK, 0),
        (F_SEAL_SHRINK | F_SEAL_GROW, 0),
    ],
)
def test_create_seals(spec: str, seals: int, want: int) -> None:
    """SEALS_WANTED = F_SEAL_SHRINK must be set, SEALS_DENIED = F_SEAL_WRITE must not be."""
    env = Env(spec)
    ret = env.create(env.memfd(2 * PAGE, seals), 0, 2 * PAGE)
    assert ret == want if want else ret >= 0


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        (SPECS["v6.1"].replace(udmabuf_denies_future_write=False), None),
        ("v6.1", -errno.EINVAL),
        ("v6.12", -errno.EINVAL),
        ("latest", -errno.EINVAL),
    ],
    ids=["v6.1.0", "v6.1", "v6.12", "latest"],
)
def test_create_denies_f_seal_future_write_since_the_fix(spec: Any, want: int | None) -> None:
    """0a16e24e34f2 (Jann Horn, Dec 2024; in 6.12.y and 6.1.y stable, so in the recorded
    6.12.117 and 6.1.192): a memfd sealed F_SEAL_FUTURE_WRITE is refused like
    F_SEAL_WRITE; 6.1.0 accepted it."""
    env = Env(spec)
    memfd = env.memfd(PAGE, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE)
    ret = env.create(memfd, 0, PAGE)
    assert ret == want if want is not None else ret >= 0


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(("offset", "size"), [(0, 5 * PAGE), (PAGE, 4 * PAGE), (4 * PAGE, PAGE)])
def test_create_range_past_the_memfd_size_einval(spec: str, offset: int, size: int) -> None:
    """memfd_pin_folios: ``end >= i_size`` → EINVAL; nothing is pinned."""
    env = Env(spec)
    memfd = env.memfd(4 * PAGE)
    env.proc.write(memfd, b"data")  # page 0 exists
    inode = env.proc.file(memfd).f_inode
    page0 = env.kernel.mem.page_if_exists(inode.i_mapping.pages[0])
    refs, allocated = page0.refcount, env.kernel.mem.allocated_pages
    assert env.create(memfd, offset, size) == -errno.EINVAL
    assert page0.refcount == refs and env.kernel.mem.allocated_pages == allocated
    assert not env.kernel.dma_bufs


@pytest.mark.parametrize("spec", ["v6.12"])
def test_create_exactly_size_limit_works(spec: str) -> None:
    """The limit is inclusive: exactly 64 MiB (16384 pages) is accepted."""
    env = Env(spec)
    fd = env.create(env.memfd(LIMIT), 0, LIMIT)
    assert fd >= 0 and env.dmabuf(fd).size == LIMIT


@pytest.mark.parametrize("spec", MODERN)
def test_unknown_ioctl_on_the_device_enotty(spec: str) -> None:
    env = Env(spec)
    with pytest.raises(OSError) as ei:
        env.proc.ioctl(env.dev, 0x7542, 0)
    assert ei.value.errno == errno.ENOTTY


# -- UDMABUF_CREATE_LIST ------------------------------------------------------------------------


def _create_list(flags: int, items: list[tuple[int, int, int]]) -> bytes:
    head = struct.pack("<II", flags, len(items))
    return head + b"".join(struct.pack("<IIQQ", m, 0, off, size) for m, off, size in items)


@pytest.mark.parametrize("spec", MODERN)
def test_create_list_concatenates_ranges_of_several_memfds(spec: str) -> None:
    """UDMABUF_CREATE_LIST: one buffer made of ranges of two memfds, in list order."""
    env = Env(spec)
    p = env.proc
    a, b = env.memfd(2 * PAGE), env.memfd(3 * PAGE)
    p.write(a, b"A" * 2 * PAGE)
    p.write(b, b"B" * 3 * PAGE)
    fd = p.ioctl(env.dev, UDMABUF_CREATE_LIST, _create_list(0, [(a, PAGE, PAGE), (b, 0, 2 * PAGE)]))
    assert env.dmabuf(fd).size == 3 * PAGE
    addr = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert p.read_memory(addr, 3 * PAGE) == b"A" * PAGE + b"B" * 2 * PAGE


@pytest.mark.parametrize("spec", MODERN)
def test_create_list_errors(spec: str) -> None:
    """count > list_limit (1024) → EINVAL; an unreadable header or list → EFAULT; an empty
    list → EINVAL (no pages); flags carry UDMABUF_FLAGS_CLOEXEC as for UDMABUF_CREATE."""
    env = Env(spec)
    p = env.proc
    memfd = env.memfd(PAGE)
    too_many = struct.pack("<II", 0, 1025)
    for arg, want in (
        (too_many, errno.EINVAL),
        (8, errno.EFAULT),
        (struct.pack("<II", 0, 2) + b"\0" * 24, errno.EFAULT),  # list shorter than count
        (_create_list(0, []), errno.EINVAL),
    ):
        with pytest.raises(OSError) as ei:
            p.ioctl(env.dev, UDMABUF_CREATE_LIST, arg)
        assert ei.value.errno == want
    fd = p.ioctl(
        env.dev, UDMABUF_CREATE_LIST, _create_list(UDMABUF_FLAGS_CLOEXEC, [(memfd, 0, PAGE)])
    )
    assert p.fcntl(fd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC


# -- the fd -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(("flags", "fd_cloexec"), [(0, 0), (UDMABUF_FLAGS_CLOEXEC, 1)])
def test_fd_is_always_rdwr_and_cloexec_only_on_request(
    spec: str, flags: int, fd_cloexec: int
) -> None:
    """exp_info.flags = O_RDWR always (F_GETFL accmode 2); UDMABUF_FLAGS_CLOEXEC only sets
    FD_CLOEXEC on the new fd."""
    env = Env(spec)
    fd = env.create(env.memfd(PAGE), 0, PAGE, flags)
    assert env.proc.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
    assert env.proc.fcntl(fd, fcntl.F_GETFD) == (fcntl.FD_CLOEXEC if fd_cloexec else 0)
    assert env.dmabuf(fd).exp_name == "udmabuf"


@pytest.mark.parametrize("spec", MODERN)
def test_r57_map_private_einval(spec: str) -> None:
    """R57: mmap_udmabuf refuses a vma without VM_SHARED|VM_MAYSHARE → EINVAL."""
    env = Env(spec)
    _memfd, fd = env.buffer(2)
    for pages in (1, 2):
        with pytest.raises(OSError) as ei:
            env.proc.mmap(0, pages * PAGE, RW, mmap.MAP_PRIVATE, fd, 0)
        assert ei.value.errno == errno.EINVAL
    assert not [v for v in env.proc.mm.vmas if v.vm_file is env.proc.file(fd)]


@pytest.mark.parametrize("spec", MODERN)
def test_r45_sync_end_before_start_einval_then_ok(spec: str) -> None:
    """R45: the core keeps no SYNC state, but end_cpu_udmabuf fails EINVAL until the first
    begin_cpu_udmabuf has built the sg table; afterwards END (and a second START) work."""
    env = Env(spec)
    _memfd, fd = env.buffer(1)
    p = env.proc
    with pytest.raises(OSError) as ei:
        _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW)
    assert ei.value.errno == errno.EINVAL
    assert env.dmabuf(fd).priv.sg is None
    _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW)
    assert env.dmabuf(fd).priv.sg is not None
    _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW)
    _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
    _sync(p, fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
    _sync(p, fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)


# -- the pages: shared with the memfd, pinned ---------------------------------------------------


@pytest.mark.parametrize("spec", MODERN)
def test_memfd_mapping_and_udmabuf_mapping_see_the_same_bytes(spec: str) -> None:
    """The memfd's own mapping, write(2) on the memfd and the udmabuf mapping are three views
    of the same pages: what one writes, the others read, both ways."""
    env = Env(spec)
    memfd, fd = env.buffer(4)
    p = env.proc
    mview = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, memfd, 0)
    uview = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, PAGE)  # udmabuf pages 1..3
    p.write_memory(mview + 2 * PAGE + 10, b"via-memfd")
    assert p.read_memory(uview + PAGE + 10, 9) == b"via-memfd"
    p.write_memory(uview + 2 * PAGE, b"via-udmabuf")
    assert p.read_memory(mview + 3 * PAGE, 11) == b"via-udmabuf"
    p.lseek(memfd, PAGE, os.SEEK_SET)
    p.write(memfd, b"via-write(2)")
    assert p.read_memory(uview, 12) == b"via-write(2)"


@pytest.mark.parametrize("spec", MODERN)
def test_pages_stay_pinned_after_the_memfd_closes_and_go_with_the_udmabuf(spec: str) -> None:
    """udmabuf pins every page (a reference each): closing the memfd (its page cache
    reference goes) keeps the pages and their data; releasing the udmabuf frees them."""
    env = Env(spec)
    k, p = env.kernel, env.proc
    baseline = k.mem.allocated_pages
    memfd, fd = env.buffer(4)
    pfns = list(env.dmabuf(fd).priv.pfns)
    assert k.mem.allocated_pages == baseline + 4
    assert [k.mem.page_if_exists(pfn).refcount for pfn in pfns] == [2] * 4  # cache + pin
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr + 3 * PAGE, b"pinned")
    p.close(memfd)
    assert all(k.mem.pfn_allocated(pfn) for pfn in pfns)
    # the pin only; on v6.1 the touched page also has its PTE's reference
    pte_ref = 1 if spec == "v6.1" else 0
    assert [k.mem.page_if_exists(pfn).refcount for pfn in pfns] == [1, 1, 1, 1 + pte_ref]
    assert p.read_memory(addr + 3 * PAGE, 6) == b"pinned"
    p.close(fd)
    p.munmap(addr, 4 * PAGE)
    assert not any(k.mem.pfn_allocated(pfn) for pfn in pfns)
    assert k.mem.allocated_pages == baseline and k.bad_pages == []


# -- the fault handler per spec -----------------------------------------------------------------


def test_v61_fault_returns_a_refcounted_page_and_growth_is_allowed() -> None:
    """v6.1: no vm flags; the fault returns ``vmf->page`` after get_page (refcount and
    mapcount go up, a normal PTE); mremap may grow the vma (no VM_DONTEXPAND), and the
    handler's ``pgoff >= pagecount`` check then gives SIGBUS past the end (R34)."""
    env = Env("v6.1")
    _memfd, fd = env.buffer(2)
    k, p = env.kernel, env.proc
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & (VM_PFNMAP | VM_MIXEDMAP | VM_DONTEXPAND) == 0
    page = k.mem.page_if_exists(env.dmabuf(fd).priv.pfns[1])
    before = (page.refcount, page.mapcount)
    p.read_memory(addr + PAGE, 1)
    assert (page.refcount, page.mapcount) == (before[0] + 1, before[1] + 1)
    assert not pte_special(p.mm.pgtable.get(addr // PAGE + 1))
    new = p.mremap(addr, 2 * PAGE, 3 * PAGE, MREMAP_MAYMOVE)
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(new + 2 * PAGE, 1)
    assert (ei.value.si_code, ei.value.addr) == (BUS_ADRERR, new + 2 * PAGE)
    assert p.read_memory(new + PAGE, 1) == b"\0"
    p.munmap(new, 3 * PAGE)
    assert (page.refcount, page.mapcount) == before


def test_v612_pfnmap_insert_pfn_one_pte_per_fault_and_no_growth() -> None:
    """v6.12: VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP (no VM_IO); vmf_insert_pfn puts one special
    PTE per fault, no page reference; growth fails EFAULT (R33)."""
    env = Env("v6.12")
    _memfd, fd = env.buffer(4)
    k, p = env.kernel, env.proc
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    flags = p.mm.vma_lookup(addr).vm_flags
    assert flags & (VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP) == VM_PFNMAP | VM_DONTEXPAND | (
        VM_DONTDUMP
    )
    assert not flags & VM_IO
    pfns = env.dmabuf(fd).priv.pfns
    page = k.mem.page_if_exists(pfns[2])
    refs = (page.refcount, page.mapcount)
    p.read_memory(addr + 2 * PAGE, 1)
    assert _present(p, addr, 4) == [2]
    pte = p.mm.pgtable.get(addr // PAGE + 2)
    assert pte_special(pte) and pte_pfn(pte) == pfns[2]
    assert (page.refcount, page.mapcount) == refs
    with pytest.raises(OSError) as ei:
        p.mremap(addr, 4 * PAGE, 5 * PAGE, MREMAP_MAYMOVE)
    assert ei.value.errno == errno.EFAULT


def test_r35_v61_adjacent_mmap_past_the_end_merges_then_sigbus() -> None:
    """R35 (v6.1): no VM_SPECIAL flag, so a MAP_FIXED mmap right after the vma with the
    contiguous pgoff merges into it without ->mmap (the size check never runs); udmabuf's
    own ``pgoff >= pagecount`` check then turns the access into SIGBUS.  On v6.12 the
    PFNMAP vma does not merge and the same mmap fails EINVAL (R1)."""
    for spec in ("v6.1", "v6.12"):
        env = Env(spec)
        _memfd, fd = env.buffer(2)
        p = env.proc
        addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        if spec == "v6.12":
            with pytest.raises(OSError) as ei:
                p.mmap(addr + 2 * PAGE, PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 2 * PAGE)
            assert ei.value.errno == errno.EINVAL
            continue
        past = p.mmap(addr + 2 * PAGE, PAGE, RW, mmap.MAP_SHARED | MAP_FIXED, fd, 2 * PAGE)
        assert [(v.vm_start, v.vm_end) for v in p.mm.vmas] == [(addr, addr + 3 * PAGE)]
        with pytest.raises(SIGBUS):
            p.read_memory(past, 1)


@pytest.mark.parametrize(("pgoff", "pages"), [(0, 4), (1, 2), (3, 1)])
def test_latest_first_fault_prefaults_the_whole_vma(pgoff: int, pages: int) -> None:
    """latest (6.13+): the first fault inserts the faulting page and then every other page of
    the vma, each at ``pfns[vm_pgoff + i]``: one access, all PTEs."""
    env = Env("latest")
    _memfd, fd = env.buffer(4)
    p = env.proc
    addr = p.mmap(0, pages * PAGE, RW, mmap.MAP_SHARED, fd, pgoff * PAGE)
    assert _present(p, addr, pages) == []
    p.read_memory(addr + (pages - 1) * PAGE, 1)
    assert _present(p, addr, pages) == list(range(pages))
    pfns = env.dmabuf(fd).priv.pfns
    vpn = addr // PAGE
    got = [pte_pfn(pte) for _v, pte in p.mm.pgtable.iter_range(vpn, vpn + pages)]
    assert got == pfns[pgoff : pgoff + pages]


@pytest.mark.parametrize("spec", ["v6.1", "v6.12"])
def test_no_prefault_before_613(spec: str) -> None:
    """Before 6.13 one access maps exactly one page."""
    env = Env(spec)
    _memfd, fd = env.buffer(4)
    addr = env.proc.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    env.proc.read_memory(addr + PAGE, 1)
    assert _present(env.proc, addr, 4) == [1]


# -- property: every shared mapping of one buffer sees the same memory --------------------------

NPAGES = 6
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("map"), st.integers(0, NPAGES - 1), st.integers(1, NPAGES)),
        st.tuples(st.just("unmap"), st.integers(0, 63)),
        st.tuples(
            st.just("write"),
            st.integers(0, 63),
            st.integers(0, NPAGES * PAGE - 1),
            st.binary(min_size=1, max_size=80),
        ),
        st.tuples(
            st.just("read"),
            st.integers(0, 63),
            st.integers(0, NPAGES * PAGE - 1),
            st.integers(1, 80),
        ),
    ),
    max_size=40,
)


@given(ops=OPS)
def test_property_all_shared_mappings_of_one_buffer_see_the_same_memory(
    ops: list[tuple[Any, ...]],
) -> None:
    """Rule: all shared mappings of one buffer see the same memory — here including the
    memfd's own mapping, which is never unmapped.  Random udmabuf mmaps at random page
    offsets and lengths, munmaps, writes at random offsets through one view and reads
    through others (v6.12): every read returns the last bytes written at that offset."""
    env = Env("v6.12")
    memfd, fd = env.buffer(NPAGES)
    p = env.proc
    model = bytearray(NPAGES * PAGE)
    memfd_view = (p.mmap(0, NPAGES * PAGE, RW, mmap.MAP_SHARED, memfd, 0), 0, NPAGES)
    maps: list[tuple[int, int, int]] = [memfd_view]

    def check(view: tuple[int, int, int], start: int, end: int) -> None:
        addr, pgoff, pages = view
        lo, hi = max(start, pgoff * PAGE), min(end, (pgoff + pages) * PAGE)
        if lo < hi:
            assert p.read_memory(addr + lo - pgoff * PAGE, hi - lo) == bytes(model[lo:hi])

    for kind, *args in ops:
        if kind == "map":
            pgoff, pages = args[0], min(args[1], NPAGES - args[0])
            maps.append(
                (p.mmap(0, pages * PAGE, RW, mmap.MAP_SHARED, fd, pgoff * PAGE), pgoff, pages)
            )
            continue
        view = maps[args[0] % len(maps)]
        addr, pgoff, pages = view
        if kind == "unmap":
            if view is not memfd_view:
                p.munmap(addr, pages * PAGE)
                maps.remove(view)
        elif kind == "write":
            off = args[1] % (pages * PAGE)
            data = args[2][: pages * PAGE - off]
            p.write_memory(addr + off, data)
            start = pgoff * PAGE + off
            model[start : start + len(data)] = data
            for other in maps:  # read it back through every view that covers it
                check(other, start, start + len(data))
        else:
            start = pgoff * PAGE + args[1] % (pages * PAGE)
            check(view, start, start + args[2])
