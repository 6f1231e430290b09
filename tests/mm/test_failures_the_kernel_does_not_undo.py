"""The promise, stated exactly: a failed call changes nothing, except where the kernel does.

These are the exceptions the README lists, one test each.  Every test checks
both halves: exactly what the kernel leaves changed, and that nothing else
moved (through the back-door snapshot of tests/mm/conftest.py).
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel, Process
from dmabuf_sim.mm.shmem import F_SEAL_SHRINK, MFD_ALLOW_SEALING
from dmabuf_sim.uapi import (
    DMA_HEAP_IOCTL_ALLOC,
    DRM_IOCTL_MODE_CREATE_DUMB,
    F_ADD_SEALS,
    UDMABUF_CREATE,
    DmaHeapAllocationData,
    DrmModeCreateDumb,
    UdmabufCreate,
)

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10
BASE = 0x40000000
ALL = ["rfc-2012", "v3.5", "v6.1", "v6.12", "latest"]
Snap = Callable[[Kernel], dict[str, Any]]


def errno_of(fn: Callable[..., Any], *args: Any) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)
    return int(ei.value.errno or 0)


@pytest.mark.parametrize("spec", ALL)
def test_mprotect_enomem_keeps_the_vmas_it_changed_before_the_hole(snap: Snap, spec: str) -> None:
    """mm/mprotect.c do_mprotect_pkey: mprotect_fixup runs vma by vma; meeting a hole
    returns ENOMEM with the vmas before it already changed.  The vma after the hole,
    and everything else, is untouched."""
    k = Kernel(spec)
    p = k.spawn()
    p.mmap(BASE, 2 * PAGE, R | W, PR | ANON | MAP_FIXED)
    p.write_memory(BASE, b"before the hole")
    p.mmap(BASE + 3 * PAGE, PAGE, R | W, PR | ANON | MAP_FIXED)
    before = snap(k)
    assert errno_of(p.mprotect, BASE, 4 * PAGE, R) == errno.ENOMEM
    after = snap(k)
    vmas = [(v.vm_start, v.vm_end, v.vm_flags & 0x3) for v in p.mm.vmas]
    assert vmas == [(BASE, BASE + 2 * PAGE, 0x1), (BASE + 3 * PAGE, BASE + 4 * PAGE, 0x3)]
    assert not p.mm.pgtable.get(BASE >> 12) & 0x2  # the present PTE lost _PAGE_RW too
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"procs"}
    assert before["procs"][p.pid]["fds"] == after["procs"][p.pid]["fds"]


@pytest.mark.parametrize("spec", ALL)
def test_map_fixed_whose_mmap_fails_leaves_the_old_range_unmapped(snap: Snap, spec: str) -> None:
    """mm/mmap.c mmap_region: MAP_FIXED unmaps what was there before calling ->mmap
    (do_munmap up to 6.1; vms_clean_up_area then vms_abort_munmap_vmas leaving a gap
    since 6.12).  simmem's ->mmap refuses an offset past its pages: the old mappings in
    the range are gone, their anonymous page freed; the mappings outside it stay."""
    k = Kernel(spec)
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    p.mmap(BASE, 4 * PAGE, R | W, SH | MAP_FIXED, fd, 0)
    p.write_memory(BASE, b"kept")
    p.mmap(BASE + 5 * PAGE, 2 * PAGE, R | W, PR | ANON | MAP_FIXED)
    p.write_memory(BASE + 5 * PAGE, b"lost")
    allocated = k.mem.allocated_pages
    f_count = p.file(fd).f_count
    before = snap(k)
    assert errno_of(p.mmap, BASE + PAGE, 6 * PAGE, R | W, SH | MAP_FIXED, fd, 15 * PAGE) == (
        errno.EINVAL
    )
    assert [(v.vm_start, v.vm_end) for v in p.mm.vmas] == [(BASE, BASE + PAGE)]
    assert p.read_memory(BASE, 4) == b"kept"
    assert k.mem.allocated_pages == allocated - 1  # the private page went with its vma
    assert p.file(fd).f_count == f_count  # the split-off piece took and gave back its own
    assert snap(k)["procs"][p.pid]["fds"] == before["procs"][p.pid]["fds"]
    assert k.bad_pages == []


@pytest.mark.parametrize("spec", ["v6.1", "v6.12", "latest"])
def test_heap_alloc_whose_copy_out_fails_leaves_the_new_fd(snap: Snap, spec: str) -> None:
    """drivers/dma-buf/dma-heap.c dma_heap_ioctl: the command runs (a buffer and an fd),
    then copy_to_user fails → EFAULT, and nothing undoes the fd: the buffer lives on,
    reachable through it."""
    k = Kernel(spec)
    p = k.spawn()
    heap = p.open("/dev/dma_heap/system", os.O_RDONLY)
    before = snap(k)
    allocated = k.mem.allocated_pages
    readonly = DmaHeapAllocationData(len=PAGE, fd_flags=os.O_RDWR).pack()  # bytes: no write
    assert errno_of(p.ioctl, heap, DMA_HEAP_IOCTL_ALLOC, readonly) == errno.EFAULT
    (new,) = set(p.files.fds) - set(before["procs"][p.pid]["fds"])
    assert p.file(new).private_data is k.dma_bufs[0]
    assert k.mem.allocated_pages == allocated + 1
    p.close(new)
    assert k.mem.allocated_pages == allocated and not k.dma_bufs
    assert snap(k) == before


@pytest.mark.parametrize("spec", ["v6.1", "v6.12", "latest"])
def test_drm_ioctl_whose_copy_out_fails_leaves_the_new_handle(spec: str) -> None:
    """drivers/gpu/drm/drm_ioctl.c drm_ioctl_kernel then copy_to_user: CREATE_DUMB made the
    GEM object and its handle before the copy-out failed with EFAULT; the handle stays
    in the file's table until it is closed."""
    k = Kernel(spec)
    p = k.spawn()
    card = p.open("/dev/dri/card0", os.O_RDWR)
    readonly = DrmModeCreateDumb(height=1, width=1024, bpp=32).pack()
    assert errno_of(p.ioctl, card, DRM_IOCTL_MODE_CREATE_DUMB, readonly) == errno.EFAULT
    handles = p.file(card).private_data.object_idr
    (leftover,) = handles  # the handle userspace never learned
    again = DrmModeCreateDumb(height=1, width=1024, bpp=32)
    p.ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, again)
    assert again.handle != leftover and set(handles) == {leftover, again.handle}


@pytest.mark.parametrize("spec", ["v6.1", "v6.12", "latest"])
def test_udmabuf_create_out_of_memory_leaves_the_pages_it_read_in_the_memfd(spec: str) -> None:
    """drivers/dma-buf/udmabuf.c: each page is read into the memfd's page cache
    (shmem_read_mapping_page) and pinned; when memory runs out part-way, the pins are
    dropped and ENOMEM returned, but the pages read stay in the page cache: they belong
    to the memfd now, and closing it gives them back."""
    k = Kernel(spec, ram_pages=1 << 13)
    p = k.spawn()
    free = k.mem.nr_free_pages() - k.mem.nr_free_cma_pages()
    size = (free + 8) * PAGE  # more than the machine has, within udmabuf's 64 MiB limit
    memfd = p.memfd_create("big", MFD_ALLOW_SEALING)
    p.ftruncate(memfd, size)
    p.fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK)
    dev = p.open("/dev/udmabuf", os.O_RDWR)
    fds = set(p.files.fds)
    allocated = k.mem.allocated_pages
    arg = UdmabufCreate(memfd=memfd, flags=0, offset=0, size=size)
    assert errno_of(p.ioctl, dev, UDMABUF_CREATE, arg) == errno.ENOMEM
    assert set(p.files.fds) == fds and not k.dma_bufs
    cache = p.file(memfd).f_inode.i_mapping.pages
    assert len(cache) == free and k.mem.allocated_pages == allocated + free
    assert all(k.mem.pfn_to_page(pfn).refcount == 1 for pfn in cache.values())  # unpinned
    p.close(memfd)
    assert k.mem.allocated_pages == allocated


def _two_anonymous_pages(spec: str) -> tuple[Kernel, Process]:
    """A page holding "lost" at BASE and one holding "kept" four pages higher."""
    k = Kernel(spec)
    p = k.spawn()
    p.mmap(BASE, PAGE, R | W, PR | ANON | MAP_FIXED)
    p.write_memory(BASE, b"lost")
    p.mmap(BASE + 4 * PAGE, PAGE, R | W, PR | ANON | MAP_FIXED)
    p.write_memory(BASE + 4 * PAGE, b"kept")
    return k, p


# (spec, source address, old_len): a source with no vma (up to 5.15 the lookup came
# after the unmap) or one whose range runs past its vma (vma_to_resize, up to 6.16)
UNMAPS_FIRST = [
    ("v5.10", BASE + 8 * PAGE, PAGE),
    ("v6.1", BASE + 4 * PAGE, 2 * PAGE),
    ("v6.12", BASE + 4 * PAGE, 2 * PAGE),
]


@pytest.mark.parametrize(("spec", "source", "old_len"), UNMAPS_FIRST)
def test_mremap_fixed_whose_source_check_fails_leaves_the_target_unmapped(
    snap: Snap, spec: str, source: int, old_len: int
) -> None:
    """mm/mremap.c mremap_to (before 6.17): with MREMAP_FIXED the target range is
    unmapped ("munmap dst first") before vma_to_resize looks at the source, so a
    source that fails EFAULT has already cost the target its mapping."""
    k, p = _two_anonymous_pages(spec)
    allocated = k.mem.allocated_pages
    before = snap(k)
    # MREMAP_MAYMOVE | MREMAP_FIXED onto the first mapping, growing by a page
    assert errno_of(p.mremap, source, old_len, old_len + PAGE, 3, BASE) == errno.EFAULT
    assert [(v.vm_start, v.vm_end) for v in p.mm.vmas] == [(BASE + 4 * PAGE, BASE + 5 * PAGE)]
    assert p.read_memory(BASE + 4 * PAGE, 4) == b"kept"
    assert k.mem.allocated_pages == allocated - 1  # the target's anonymous page went
    assert snap(k)["procs"][p.pid]["fds"] == before["procs"][p.pid]["fds"]
    assert k.bad_pages == []


@pytest.mark.parametrize("spec", ["v6.19", "latest"])
@pytest.mark.parametrize(
    ("source", "old_len"), [(BASE + 8 * PAGE, PAGE), (BASE + 4 * PAGE, 2 * PAGE)]
)
def test_mremap_fixed_checks_the_source_before_unmapping_the_target_since_6_17(
    snap: Snap, spec: str, source: int, old_len: int
) -> None:
    """6.17's check_prep_vma runs before mremap_to: the same failing calls leave
    every mapping as it was (Spec.mremap_remap_move)."""
    k, p = _two_anonymous_pages(spec)
    before = snap(k)
    assert errno_of(p.mremap, source, old_len, old_len + PAGE, 3, BASE) == errno.EFAULT
    assert snap(k) == before
    assert p.read_memory(BASE, 4) == b"lost"


@pytest.mark.parametrize(
    ("spec", "tail_kept"), [("v5.10", False), ("v6.12", False), ("latest", True)]
)
def test_a_shrinking_mremap_fixed_unmaps_the_old_tail_before_the_source_check(
    spec: str, tail_kept: bool
) -> None:
    """mm/mremap.c mremap_to (before 6.17): "if (old_len > new_len)" the tail
    [addr + new_len, addr + old_len) is unmapped before vma_to_resize finds that the
    kept part runs past the source vma: EFAULT, with the mapping in the tail gone.
    Since 6.17 check_prep_vma refuses it first and nothing changes."""
    k, p = _two_anonymous_pages(spec)
    allocated = k.mem.allocated_pages
    # shrink 5 pages to 4 from the 1-page "lost" vma: the tail is the "kept" page
    got = errno_of(p.mremap, BASE, 5 * PAGE, 4 * PAGE, 3, BASE + 16 * PAGE)
    assert got == errno.EFAULT
    left = [(v.vm_start, v.vm_end) for v in p.mm.vmas]
    kept = (BASE + 4 * PAGE, BASE + 5 * PAGE)
    assert left == ([(BASE, BASE + PAGE), kept] if tail_kept else [(BASE, BASE + PAGE)])
    assert k.mem.allocated_pages == allocated - (0 if tail_kept else 1)
    assert p.read_memory(BASE, 4) == b"lost"
