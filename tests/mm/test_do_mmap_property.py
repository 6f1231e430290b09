"""Property: mmap(2) arithmetic against an independent statement of kernel-spec §5.1.

The oracle below is written from the spec text, not from the simulator: it
takes the user's ``length``/``offset`` as the C ABI delivers them (64-bit
unsigned) and walks sys_mmap -> do_mmap -> get_unmapped_area -> file_mmap_ok
-> the driver's bounds check in the kernel's order (R3, R4, R5, R6).
"""

from __future__ import annotations

import errno
import mmap
import os

from hypothesis import event, given
from hypothesis import strategies as st

from dmabuf_sim import Kernel
from dmabuf_sim.spec import SPECS

PAGE = 4096
U64 = 1 << 64
TASK_SIZE = 0x7FFFFFFFF000  # x86-64, 4-level paging
# The simulator's layout of a fresh process: the top-down allocator searches
# [mmap_min_addr, mmap_base).  A length that fits below TASK_SIZE but not in
# this window is ENOMEM from get_unmapped_area, as "no room" on a real machine.
MMAP_MIN_ADDR = 0x10000
MMAP_BASE = 0x7F0000000000
SIMMEM_PAGES = 16
MMAP_SPECS = [s for s in SPECS if SPECS[s].has_mmap_fop]

EDGES = [0, 1, 4095, 4096, 4097, 2**64 - 4096, 2**64 - 1, 2**63, -4096, -1]
LENGTH_EDGES = [
    *EDGES,
    8192,
    16 * PAGE,
    17 * PAGE,
    TASK_SIZE,
    TASK_SIZE + 1,
    MMAP_BASE - MMAP_MIN_ADDR,
    MMAP_BASE - MMAP_MIN_ADDR + 1,
    2**64 - 4095,
]
OFFSET_EDGES = [*EDGES, 15 * PAGE, 16 * PAGE, 2**52 * PAGE - PAGE, 2**63 - PAGE, -(2**47)]

lengths = st.one_of(
    st.sampled_from(LENGTH_EDGES),
    st.integers(1, 20 * PAGE),  # plausible sizes, around the driver's 16 pages
    st.integers(-(2**63), 2**64 - 1),
)
offsets = st.one_of(
    st.sampled_from(OFFSET_EDGES),
    st.integers(0, 32).map(lambda n: n * PAGE),
    # the file_mmap_ok edge: the last pages below 2**64
    st.one_of(st.integers(0, 64), st.integers(0, 2**36)).map(lambda n: (2**52 - 1 - n) * PAGE),
    st.integers(-(2**63), 2**64 - 1),
)


def oracle(length: int, offset: int, *, vfs_file_mmap_ok: bool) -> int:
    """0 for success, else the errno, for mmap(0, length, PROT_READ, MAP_SHARED, simmem, offset)."""
    length %= U64
    offset %= U64
    if offset % PAGE:  # sys_mmap: before the fd is even looked up
        return errno.EINVAL
    pgoff = offset // PAGE
    if length == 0:
        return errno.EINVAL
    aligned = (length + PAGE - 1) // PAGE * PAGE % U64  # PAGE_ALIGN in 64-bit arithmetic
    if aligned == 0:
        return errno.ENOMEM
    pages = aligned // PAGE
    if pgoff + pages >= U64:  # (pgoff + pages) < pgoff in C; impossible with byte offsets
        return errno.EOVERFLOW
    if aligned > TASK_SIZE or aligned > MMAP_BASE - MMAP_MIN_ADDR:
        return errno.ENOMEM
    # file_mmap_ok: a char device is not S_IFREG, so its maximum size is ULONG_MAX
    if vfs_file_mmap_ok and pgoff > (U64 - 1 - aligned) // PAGE:
        return errno.EOVERFLOW
    if pgoff + pages > SIMMEM_PAGES:  # simmem_mmap's own bounds check
        return errno.EINVAL
    return 0


def test_oracle_spot_checks() -> None:
    """The oracle itself, on the cases the spec states in words."""
    assert oracle(PAGE, 0xFFFFFFFFFFFFF000, vfs_file_mmap_ok=True) == errno.EOVERFLOW  # R6
    assert oracle(PAGE, 0xFFFFFFFFFFFFF000, vfs_file_mmap_ok=False) == errno.EINVAL  # R6, v3.5
    assert oracle(0, 1, vfs_file_mmap_ok=True) == errno.EINVAL  # R3
    assert oracle(-1, 0, vfs_file_mmap_ok=True) == errno.ENOMEM
    assert oracle(16 * PAGE, 0, vfs_file_mmap_ok=True) == 0
    assert oracle(1, 15 * PAGE, vfs_file_mmap_ok=False) == 0


@given(length=lengths, offset=offsets, spec=st.sampled_from(MMAP_SPECS))
def test_mmap_arithmetic_matches_oracle(length: int, offset: int, spec: str) -> None:
    k = Kernel(spec)
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    want = oracle(length, offset, vfs_file_mmap_ok=SPECS[spec].vfs_file_mmap_ok)
    event(errno.errorcode.get(want, "success"))
    try:
        addr = p.mmap(0, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    except OSError as e:
        got = e.errno
        assert got == want, f"{spec}: mmap(len={length:#x}, off={offset:#x})"
        assert p.mm.map_count == 0
        assert p.file(fd).f_count == 1
        assert k.drivers["simmem"].opens == 0
        return
    assert want == 0, f"{spec}: mmap(len={length:#x}, off={offset:#x}) succeeded"
    aligned = (length % U64 + PAGE - 1) // PAGE * PAGE
    vma = p.mm.vma_lookup(addr)
    assert vma is not None and addr % PAGE == 0
    assert (vma.vm_start, vma.vm_end) == (addr, addr + aligned)
    assert vma.vm_pgoff == (offset % U64) // PAGE
    assert addr + aligned <= TASK_SIZE and addr >= MMAP_MIN_ADDR
    assert p.file(fd).f_count == 2
    assert len(p.mm.pgtable) == 0
