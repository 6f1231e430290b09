"""mmap(2) entry and do_mmap check order (kernel-spec §5.1, §5.2; R3-R10, R35).

Errnos are compared with ``.errno``; where the kernel's order decides which
errno wins, the test combines two faults and checks the earlier one.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import SIGBUS, Kernel
from dmabuf_sim.mm.memory import vmf_insert_pfn
from dmabuf_sim.mm.mmap import (
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_NONBLOCK,
    MAP_POPULATE,
    MAP_SHARED_VALIDATE,
    do_mmap,
)
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import pte_pfn, pte_write
from dmabuf_sim.mm.vma import (
    VM_DONTEXPAND,
    VM_IO,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_SHARED,
    VM_WRITE,
)
from dmabuf_sim.spec import SPECS

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MAP_SYNC = 0x80000
TASK_SIZE = 0x7FFFFFFFF000
ALL = list(SPECS)
MMAP_SPECS = [s for s in SPECS if SPECS[s].has_mmap_fop]
MODERN = ["v6.1", "v6.12", "latest"]
OLD = ["rfc-2012", "v3.5"]


def errno_of(fn: Callable[..., Any], *args: Any) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)
    return int(ei.value.errno)


def setup(spec: str = "v6.12", flags: int = os.O_RDWR) -> tuple[Kernel, Any, int]:
    k = Kernel(spec)
    p = k.spawn("t")
    return k, p, p.open("/dev/simmem", flags)


def traced_funcs(k: Kernel, fn: Callable[[], Any]) -> list[str]:
    with k.trace() as events, contextlib.suppress(OSError):
        fn()
    return [e.func for e in events if e.kind == "entry"]


# -- R3 / R4: what is checked before the fd lookup ------------------------------------


@pytest.mark.parametrize("spec", ALL)
def test_r3_unaligned_offset_checked_before_fd_lookup(spec: str) -> None:
    k, p, fd = setup(spec)
    assert errno_of(p.mmap, 0, PAGE, R, SH, 77, 1) == errno.EINVAL  # bad fd, unaligned
    assert errno_of(p.mmap, 0, PAGE, R, SH, 77, PAGE) == errno.EBADF
    assert errno_of(p.mmap, 0, PAGE, R, SH, fd, PAGE - 1) == errno.EINVAL
    funcs = traced_funcs(k, lambda: p.mmap(0, PAGE, R, SH, 77, 2048))
    assert "fget" not in funcs and "do_mmap" not in funcs
    assert p.mm.map_count == 0


@pytest.mark.parametrize("spec", ALL)
def test_r4_zero_length_einval_but_bad_fd_ebadf_first(spec: str) -> None:
    _, p, fd = setup(spec)
    assert errno_of(p.mmap, 0, 0, R, SH, fd, 0) == errno.EINVAL
    assert errno_of(p.mmap, 0, 0, R, SH, 42, 0) == errno.EBADF
    assert errno_of(p.mmap, 0, 0, R, SH, -1, 0) == errno.EBADF
    assert p.mm.map_count == 0


def test_r4_closed_fd_is_ebadf() -> None:
    _, p, fd = setup()
    p.close(fd)
    assert errno_of(p.mmap, 0, PAGE, R, SH, fd, 0) == errno.EBADF


# -- R5 / R6: offset arithmetic ---------------------------------------------------------


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r5_pgoff_wrap_eoverflow_via_kernel_face(spec: str) -> None:
    """A page offset (as 32-bit mmap2 passes it) whose sum with the length wraps."""
    k, p, fd = setup(spec)
    file = p.file(fd)
    with k.running(p):
        assert do_mmap(p.mm, file, 0, 2 * PAGE, R, SH, 2**64 - 1) == -errno.EOVERFLOW
        assert do_mmap(p.mm, file, 0, PAGE, R, SH, 2**64 - 1) == -errno.EOVERFLOW
    assert p.mm.map_count == 0
    assert file.f_count == 1


@pytest.mark.parametrize("spec", OLD)
def test_r5_x86_64_byte_offset_cannot_wrap_pgoff(spec: str) -> None:
    """The largest byte offset is pgoff 2**52-1 and the largest length that fits is
    < 2**35 pages: pgoff + pages cannot wrap, so (without file_mmap_ok) the call
    reaches the driver, which refuses it."""
    k, p, fd = setup(spec)
    longest = 0x7F0000000000 - 0x10000  # the whole free window of a fresh process
    funcs = traced_funcs(k, lambda: p.mmap(0, longest, R, SH, fd, 2**64 - PAGE))
    assert "simmem_mmap" in funcs
    assert errno_of(p.mmap, 0, longest, R, SH, fd, 2**64 - PAGE) == errno.EINVAL
    assert p.mm.map_count == 0


@pytest.mark.parametrize("spec", MMAP_SPECS)
@pytest.mark.parametrize("offset", [0xFFFFFFFFFFFFF000, -4096])
def test_r6_huge_offset_eoverflow_or_reaches_driver(spec: str, offset: int) -> None:
    k, p, fd = setup(spec)
    funcs = traced_funcs(k, lambda: p.mmap(0, PAGE, R, SH, fd, offset))
    got = errno_of(p.mmap, 0, PAGE, R, SH, fd, offset)
    if SPECS[spec].vfs_file_mmap_ok:
        assert got == errno.EOVERFLOW
        assert "simmem_mmap" not in funcs and "mmap_region" not in funcs
    else:
        assert got == errno.EINVAL  # the driver's own bounds check
        assert "simmem_mmap" in funcs
    assert p.mm.map_count == 0
    assert p.file(fd).f_count == 1


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r6_file_mmap_ok_edge_for_non_regular_file(spec: str) -> None:
    """pgoff > (ULONG_MAX - len) >> 12 is the exact EOVERFLOW boundary."""
    _, p, fd = setup(spec)
    length = 3 * PAGE
    last_ok = ((2**64 - 1 - length) >> PAGE_SHIFT) << PAGE_SHIFT
    # at the boundary the driver is reached (and refuses: past its 16 pages)
    assert errno_of(p.mmap, 0, length, R, SH, fd, last_ok) == errno.EINVAL
    expect = errno.EOVERFLOW if SPECS[spec].vfs_file_mmap_ok else errno.EINVAL
    assert errno_of(p.mmap, 0, length, R, SH, fd, last_ok + PAGE) == expect


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r6_regular_file_limit_is_max_lfs_filesize(spec: str) -> None:
    """memfd is S_IFREG: the limit is 2**63-1, so 2**63-4096 overflows on v6.x only."""
    _, p, _ = setup(spec)
    mfd = p.memfd_create("big")
    if SPECS[spec].vfs_file_mmap_ok:
        assert errno_of(p.mmap, 0, PAGE, R, SH, mfd, 2**63 - PAGE) == errno.EOVERFLOW
    else:
        addr = p.mmap(0, PAGE, R, SH, mfd, 2**63 - PAGE)
        assert p.mm.vma_lookup(addr).vm_pgoff == (2**63 - PAGE) >> PAGE_SHIFT
    addr = p.mmap(0, PAGE, R, SH, mfd, 2**63 - 2 * PAGE)
    assert p.mm.vma_lookup(addr).vm_pgoff == 2**51 - 2


# -- R7 / R8: file modes ----------------------------------------------------------------


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r7_shared_write_on_rdonly_file_eacces(spec: str) -> None:
    _, p, fd = setup(spec, os.O_RDONLY)
    assert errno_of(p.mmap, 0, PAGE, R | W, SH, fd, 0) == errno.EACCES
    assert errno_of(p.mmap, 0, PAGE, W, SH, fd, 0) == errno.EACCES
    assert p.mm.map_count == 0
    assert p.file(fd).f_count == 1


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r7_shared_read_on_rdonly_file_has_no_vm_shared_and_mprotect_write_eacces(
    spec: str,
) -> None:
    k, p, fd = setup(spec, os.O_RDONLY)
    addr = p.mmap(0, 2 * PAGE, R, SH, fd, 0)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_flags & VM_MAYSHARE
    assert not vma.vm_flags & (VM_SHARED | VM_MAYWRITE | VM_WRITE)
    assert errno_of(p.mprotect, addr, 2 * PAGE, R | W) == errno.EACCES
    assert errno_of(p.mprotect, addr, PAGE, W) == errno.EACCES
    assert p.mm.map_count == 1 and vma.vm_end - vma.vm_start == 2 * PAGE
    assert p.maps().split()[1] == "r--s"
    # reading works and is the driver's page
    assert p.read_memory(addr, 4) == b"\0" * 4
    assert pte_pfn(p.mm.pgtable.get(addr >> PAGE_SHIFT)) == k.drivers["simmem"].pfns[0]


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r7_private_write_on_rdonly_file_is_allowed_cow(spec: str) -> None:
    k, p, fd = setup(spec, os.O_RDONLY)
    addr = p.mmap(0, PAGE, R | W, PR, fd, 0)
    p.write_memory(addr, b"cow")
    assert p.read_memory(addr, 3) == b"cow"
    drv = k.drivers["simmem"]
    pfn = pte_pfn(p.mm.pgtable.get(addr >> PAGE_SHIFT))
    assert pfn != drv.pfns[0]
    k.cache.flush_all()
    assert k.mem.read(drv.pfns[0] * PAGE, 3) == b"\0\0\0"
    assert p.maps().split()[1] == "rw-p"


@pytest.mark.parametrize("spec", MMAP_SPECS)
@pytest.mark.parametrize(("prot", "flags"), [(R, SH), (R, PR), (W, SH), (0, PR), (R | W, PR)])
def test_r8_wronly_file_any_mmap_eacces(spec: str, prot: int, flags: int) -> None:
    _, p, fd = setup(spec, os.O_WRONLY)
    assert errno_of(p.mmap, 0, PAGE, prot, flags, fd, 0) == errno.EACCES
    assert p.mm.map_count == 0


# -- R9: map types and MAP_SHARED_VALIDATE ---------------------------------------------


@pytest.mark.parametrize("spec", MMAP_SPECS)
@pytest.mark.parametrize("map_type", [0, 0x4, 0x5, 0xF])
def test_r9_bad_map_type_einval(spec: str, map_type: int) -> None:
    _, p, fd = setup(spec)
    assert errno_of(p.mmap, 0, PAGE, R, map_type, fd, 0) == errno.EINVAL
    assert errno_of(p.mmap, 0, PAGE, R, map_type | ANON, -1, 0) == errno.EINVAL
    assert p.mm.map_count == 0


@pytest.mark.parametrize("spec", MODERN)
def test_r9_shared_validate_unknown_flag_eopnotsupp(spec: str) -> None:
    _, p, fd = setup(spec)
    assert errno_of(p.mmap, 0, PAGE, R, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0) == errno.EOPNOTSUPP
    assert (
        errno_of(p.mmap, 0, PAGE, R, MAP_SHARED_VALIDATE | MAP_FIXED_NOREPLACE, fd, 0)
        == errno.EOPNOTSUPP
    )
    # the flag check precedes the file-mode checks
    _, q, rofd = setup(spec, os.O_RDONLY)
    assert (
        errno_of(q.mmap, 0, PAGE, R | W, MAP_SHARED_VALIDATE | MAP_SYNC, rofd, 0)
        == errno.EOPNOTSUPP
    )
    addr = p.mmap(0, PAGE, R | W, MAP_SHARED_VALIDATE, fd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & VM_SHARED


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_r9_map_shared_ignores_unknown_flags(spec: str) -> None:
    """MAP_SHARED silently drops flags it does not know (MAP_SYNC) on every kernel."""
    _, p, fd = setup(spec)
    addr = p.mmap(0, PAGE, R | W, SH | MAP_SYNC, fd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & VM_SHARED


@pytest.mark.parametrize("spec", OLD)
def test_r9_old_kernels_have_no_shared_validate(spec: str) -> None:
    """Before 4.15 the map type 3 is simply invalid: EINVAL, never EOPNOTSUPP."""
    _, p, fd = setup(spec)
    assert errno_of(p.mmap, 0, PAGE, R, MAP_SHARED_VALIDATE, fd, 0) == errno.EINVAL
    assert errno_of(p.mmap, 0, PAGE, R, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0) == errno.EINVAL


@pytest.mark.parametrize("spec", MODERN)
def test_r9_anonymous_shared_validate_einval(spec: str) -> None:
    """do_mmap's anonymous branch knows only MAP_SHARED and MAP_PRIVATE."""
    _, p, _ = setup(spec)
    assert errno_of(p.mmap, 0, PAGE, R, MAP_SHARED_VALIDATE | ANON) == errno.EINVAL
    assert p.mm.map_count == 0


def test_r10_device_without_mmap_is_enodev(make_driver: Callable[..., Any]) -> None:
    k = Kernel("v6.12")
    make_driver(k, None, "/dev/nommap")
    p = k.spawn()
    fd = p.open("/dev/nommap", os.O_RDWR)
    assert errno_of(p.mmap, 0, PAGE, R, SH, fd, 0) == errno.ENODEV
    assert errno_of(p.mmap, 0, PAGE, R, PR, fd, 0) == errno.ENODEV
    assert p.file(fd).f_count == 1


# -- lengths and addresses ---------------------------------------------------------------


@pytest.mark.parametrize("length", [2**64 - 1, 2**64 - PAGE + 1, -1])
def test_page_align_wrap_is_enomem(length: int) -> None:
    _, p, fd = setup()
    assert errno_of(p.mmap, 0, length, R, SH, fd, 0) == errno.ENOMEM


@pytest.mark.parametrize("length", [TASK_SIZE + 1, 2**63, 2**64 - PAGE])
def test_length_beyond_task_size_is_enomem_before_file_checks(length: int) -> None:
    _, p, fd = setup(flags=os.O_WRONLY)  # EACCES would come later
    assert errno_of(p.mmap, 0, length, R, SH, fd, 0) == errno.ENOMEM


def test_driver_bounds_check_einval() -> None:
    k, p, fd = setup()
    assert errno_of(p.mmap, 0, 17 * PAGE, R, SH, fd, 0) == errno.EINVAL
    assert errno_of(p.mmap, 0, PAGE, R, SH, fd, 16 * PAGE) == errno.EINVAL
    addr = p.mmap(0, PAGE, R, SH, fd, 15 * PAGE)
    assert p.mm.vma_lookup(addr).vm_pgoff == 15
    assert k.drivers["simmem"].opens == 1


def test_map_fixed_places_exactly_and_replaces() -> None:
    k, p, fd = setup()
    drv = k.drivers["simmem"]
    base = 0x10000000
    assert p.mmap(base, 4 * PAGE, R | W, SH | MAP_FIXED, fd, 0) == base
    p.write_memory(base + PAGE, b"old")
    f = p.file(fd)
    assert f.f_count == 2
    # replace the middle two pages with an anonymous mapping
    assert p.mmap(base + PAGE, 2 * PAGE, R | W, PR | ANON | MAP_FIXED) == base + PAGE
    assert p.read_memory(base + PAGE, 3) == b"\0\0\0"
    spans = [(v.vm_start, v.vm_end, v.vm_file is None) for v in p.mm.vmas]
    assert spans == [
        (base, base + PAGE, False),
        (base + PAGE, base + 3 * PAGE, True),
        (base + 3 * PAGE, base + 4 * PAGE, False),
    ]
    assert f.f_count == 3  # two simmem pieces, plus the fd
    # ->mmap once, ->open for each of the two split pieces, ->close for the middle
    assert drv.opens == 3 and drv.closes == 1


@pytest.mark.parametrize("spec", MMAP_SPECS)
def test_map_fixed_unaligned_addr_einval(spec: str) -> None:
    _, p, fd = setup(spec)
    assert errno_of(p.mmap, 0x10000001, PAGE, R, SH | MAP_FIXED, fd, 0) == errno.EINVAL


@pytest.mark.parametrize("addr", [0x800000000001, 0x7FFFFFFFF001, 0xFFFF800000000001])
def test_map_fixed_beyond_task_size_enomem_before_alignment(addr: int) -> None:
    """__get_unmapped_area checks ``addr > TASK_SIZE - len`` before ``offset_in_page``."""
    _, p, fd = setup()
    assert errno_of(p.mmap, addr, PAGE, R, SH | MAP_FIXED, fd, 0) == errno.ENOMEM
    assert errno_of(p.mmap, addr, PAGE, R, PR | ANON | MAP_FIXED) == errno.ENOMEM


@pytest.mark.parametrize("spec", MODERN)
def test_map_fixed_noreplace_eexist(spec: str) -> None:
    k, p, fd = setup(spec)
    base = 0x20000000
    p.mmap(base, 2 * PAGE, R, SH | MAP_FIXED, fd, 0)
    before = (p.mm.vmas[0].vm_start, p.mm.vmas[0].vm_end)
    assert errno_of(p.mmap, base + PAGE, 2 * PAGE, R, SH | MAP_FIXED_NOREPLACE, fd, 0) == (
        errno.EEXIST
    )
    assert errno_of(p.mmap, base - PAGE, 2 * PAGE, R, PR | ANON | MAP_FIXED_NOREPLACE) == (
        errno.EEXIST
    )
    assert [(v.vm_start, v.vm_end) for v in p.mm.vmas] == [before]
    assert k.drivers["simmem"].closes == 0
    # a free range is mapped exactly there
    assert p.mmap(base + 2 * PAGE, PAGE, R, PR | ANON | MAP_FIXED_NOREPLACE) == base + 2 * PAGE


@pytest.mark.parametrize("spec", OLD)
def test_map_fixed_noreplace_is_only_a_hint_before_4_17(spec: str) -> None:
    _k, p, fd = setup(spec)
    base = 0x20000000
    p.mmap(base, 2 * PAGE, R, SH | MAP_FIXED, fd, 0)
    addr = p.mmap(base, PAGE, R, PR | ANON | MAP_FIXED_NOREPLACE)
    assert addr != base
    assert p.mm.vma_lookup(base).vm_file is p.file(fd)
    assert p.mm.map_count == 2


def test_address_hint_is_used_when_free_and_rounded_down() -> None:
    _, p, _ = setup()
    assert p.mmap(0x300000000, PAGE, R, PR | ANON) == 0x300000000
    # round_hint_to_min: hint &= PAGE_MASK
    assert p.mmap(0x300010123, PAGE, R, PR | ANON) == 0x300010000
    # occupied hint: the allocator picks elsewhere
    other = p.mmap(0x300000000, PAGE, R, PR | ANON)
    assert other not in (0x300000000, 0x300001000)


def test_tiny_hint_rounds_to_no_hint() -> None:
    """A hint below one page becomes NULL: the top-down allocator decides."""
    _, p, _ = setup()
    _, q, _ = setup()
    assert p.mmap(0x123, PAGE, R, PR | ANON) == q.mmap(0, PAGE, R, PR | ANON)


def test_hint_below_mmap_min_addr_is_raised() -> None:
    _, p, _ = setup()
    assert p.mmap(0x5000, PAGE, R, PR | ANON) == 0x10000


# -- MAP_POPULATE ------------------------------------------------------------------------


def test_map_populate_shared_read_faults_every_page() -> None:
    k, p, fd = setup()
    drv = k.drivers["simmem"]
    addr = p.mmap(0, 4 * PAGE, R | W, SH | MAP_POPULATE, fd, 4 * PAGE)
    ptes = [p.mm.pgtable.get((addr >> PAGE_SHIFT) + i) for i in range(4)]
    assert [pte_pfn(x) for x in ptes if x is not None] == drv.pfns[4:8]
    assert k.mem.pages_with_data == 0  # populating writes nothing


def test_map_populate_private_writable_breaks_cow() -> None:
    """populate_vma_page_range write-faults (VM_WRITE|VM_SHARED) == VM_WRITE mappings."""
    k, p, fd = setup()
    drv = k.drivers["simmem"]
    addr = p.mmap(0, 2 * PAGE, R | W, PR | MAP_POPULATE, fd, 0)
    ptes = [p.mm.pgtable.get((addr >> PAGE_SHIFT) + i) for i in range(2)]
    assert all(x is not None and pte_write(x) for x in ptes)
    assert not {pte_pfn(x) for x in ptes if x is not None} & set(drv.pfns)
    assert all(k.mem.page_if_exists(pte_pfn(x)).anon for x in ptes if x is not None)


def test_map_populate_private_readonly_maps_driver_pages() -> None:
    k, p, fd = setup()
    drv = k.drivers["simmem"]
    addr = p.mmap(0, 2 * PAGE, R, PR | MAP_POPULATE, fd, 0)
    ptes = [p.mm.pgtable.get((addr >> PAGE_SHIFT) + i) for i in range(2)]
    assert [pte_pfn(x) for x in ptes if x is not None] == drv.pfns[:2]
    assert not any(pte_write(x) for x in ptes if x is not None)


def test_map_populate_nonblock_populates_nothing() -> None:
    _, p, fd = setup()
    p.mmap(0, 4 * PAGE, R, SH | MAP_POPULATE | MAP_NONBLOCK, fd, 0)
    assert len(p.mm.pgtable) == 0


def test_map_populate_skips_pfnmap_vmas(make_driver: Callable[..., Any]) -> None:
    """GUP refuses VM_IO|VM_PFNMAP (check_vma_flags): MAP_POPULATE leaves them unfaulted."""
    k = Kernel("v6.12")
    calls: list[int] = []

    def pfn_fault(vmf: Any) -> int:
        calls.append(vmf.address)
        return vmf_insert_pfn(vmf.vma, vmf.address, drv.pfn(vmf.pgoff))

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        vma.vm_flags |= VM_IO | VM_PFNMAP
        vma.vm_ops = d.vm_ops()
        vma.vm_ops.fault = pfn_fault
        return 0

    drv = make_driver(k, mmap_fn)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH | MAP_POPULATE, fd, 0)
    assert len(p.mm.pgtable) == 0 and calls == []
    p.read_memory(addr + PAGE, 1)
    assert calls == [addr + PAGE]
    assert len(p.mm.pgtable) == 1


# -- R35: merging before ->mmap ------------------------------------------------------------


def test_r35_adjacent_mmap_merges_without_calling_mmap(
    make_driver: Callable[..., Any], plain_mmap: Any
) -> None:
    k = Kernel("v6.12")

    def no_close(d: Any, file: Any, vma: Any) -> int:
        ret = int(plain_mmap(d, file, vma))
        if ret == 0:
            vma.vm_ops = d.vm_ops(close=False)  # ->close forbids merging
        return ret

    drv = make_driver(k, no_close, npages=2)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    base = 0x40000000
    p.mmap(base, 2 * PAGE, R | W, SH | MAP_FIXED, fd, 0)
    assert drv.mmap_calls == 1
    # pages 2..3 are past the driver's 2 pages: ->mmap would say EINVAL
    assert errno_of(p.mmap, 0, 2 * PAGE, R | W, SH, fd, 2 * PAGE) == errno.EINVAL
    assert drv.mmap_calls == 2
    assert p.mmap(base + 2 * PAGE, 2 * PAGE, R | W, SH | MAP_FIXED, fd, 2 * PAGE) == base + 2 * PAGE
    assert drv.mmap_calls == 2  # merged: the bounds check never ran
    assert [(v.vm_start, v.vm_end, v.vm_pgoff) for v in p.mm.vmas] == [(base, base + 4 * PAGE, 0)]
    assert p.file(fd).f_count == 2  # one vma, one reference
    vma = p.mm.vmas[0]
    assert p.file(fd).f_mapping.i_mmap.interval_of(vma) == (0, 3)
    # only the driver's fault handler stands between the user and page 2
    p.write_memory(base + PAGE, b"ok")
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(base + 2 * PAGE, 1)
    assert (ei.value.signo, ei.value.si_code, ei.value.addr) == (7, 2, base + 2 * PAGE)


@pytest.mark.parametrize(
    "variant", ["dontexpand", "close", "other_prot", "gap_pgoff", "other_file"]
)
def test_r35_no_merge_calls_mmap(
    make_driver: Callable[..., Any], plain_mmap: Any, variant: str
) -> None:
    k = Kernel("v6.12")

    def mmap_fn(d: Any, file: Any, vma: Any) -> int:
        ret = int(plain_mmap(d, file, vma))
        if ret == 0 and variant != "close":
            vma.vm_ops = d.vm_ops(close=False)
        if ret == 0 and variant == "dontexpand":
            vma.vm_flags |= VM_DONTEXPAND
        return ret

    drv = make_driver(k, mmap_fn, npages=8)
    p = k.spawn()
    fd = p.open("/dev/toy", os.O_RDWR)
    fd2 = p.open("/dev/toy", os.O_RDWR)
    base = 0x40000000
    p.mmap(base, 2 * PAGE, R | W, SH | MAP_FIXED, fd, 0)
    prot = R if variant == "other_prot" else R | W
    off = 3 * PAGE if variant == "gap_pgoff" else 2 * PAGE
    f2 = fd2 if variant == "other_file" else fd
    p.mmap(base + 2 * PAGE, 2 * PAGE, prot, SH | MAP_FIXED, f2, off)
    assert drv.mmap_calls == 2
    assert p.mm.map_count == 2
