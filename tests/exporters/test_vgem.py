"""vgem: dumb buffers, GEM mmap, PRIME export/import and fences (kernel-spec §6.4, §6.5).

The seed's second use case lives here: an importing subsystem (vgem, through the
GEM shmem helpers) forwards the mmap of an imported object to the exporter with
``dma_buf_mmap(obj->dma_buf, vma, 0)`` (R22).  Every test runs on v6.1, v6.12 and
latest; where the kernels differ, the test says which commit separates them.
"""

from __future__ import annotations

import errno
import mmap
import os
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device
from dmabuf_sim.dma_buf import dma_buf_attach, dma_buf_detach, dma_buf_map_attachment_unlocked
from dmabuf_sim.dma_buf.access import (
    dma_buf_unmap_attachment_unlocked,
    dma_buf_vmap_unlocked,
    dma_buf_vunmap_unlocked,
)
from dmabuf_sim.dma_buf.core import DmaBuf, IosysMap
from dmabuf_sim.errors import KernelOops
from dmabuf_sim.exporters.drm_gem import (
    DRM_FILE_PAGE_OFFSET_START,
    DrmFile,
    DrmGemObject,
    drm_vma_node_offset_addr,
)
from dmabuf_sim.exporters.drm_prime import DRM_GEM_PRIME_DMABUF_OPS
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.exporters.vgem import (
    VGEM_FENCE_TIMEOUT_NS,
    DrmGemShmemObject,
    VgemDevice,
    drm_gem_shmem_fault,
)
from dmabuf_sim.mm.page_alloc import PAGE_SHIFT
from dmabuf_sim.mm.pgtable import CACHE_WB, CACHE_WC, pte_cache_mode
from dmabuf_sim.mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_SHARED,
    VmAreaStruct,
    VmFault,
)
from dmabuf_sim.mm.vmalloc import KernelMapping
from dmabuf_sim.process import Process
from dmabuf_sim.spec import SPECS as SPEC_TABLE
from dmabuf_sim.uapi import (
    _IOWR,
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
    DMA_HEAP_IOCTL_ALLOC,
    DRM_CLOEXEC,
    DRM_IOCTL_GEM_CLOSE,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_MODE_MAP_DUMB,
    DRM_IOCTL_PRIME_FD_TO_HANDLE,
    DRM_IOCTL_PRIME_HANDLE_TO_FD,
    DRM_IOCTL_VGEM_FENCE_ATTACH,
    DRM_IOCTL_VGEM_FENCE_SIGNAL,
    DRM_RDWR,
    F_ADD_SEALS,
    POLLIN,
    POLLOUT,
    UDMABUF_CREATE,
    VGEM_FENCE_WRITE,
    DmaBufSync,
    DmaHeapAllocationData,
    DrmGemClose,
    DrmModeCreateDumb,
    DrmModeMapDumb,
    DrmPrimeHandle,
    DrmVgemFenceAttach,
    DrmVgemFenceSignal,
    UdmabufCreate,
)

SPECS = ["v6.1", "v6.12", "latest"]
FIXED_SPECS = ["v6.12", "latest"]  # carry the 6.5 shmem-helper locking
# 6.1.0 as released, before 6.1.y took the 6.2 errant-put fix (Dec 2022) and the 6.9
# COW fix (mid 2024) that the modelled 6.1.192 carries
V61_0 = SPEC_TABLE["v6.1"].replace(
    name="v6.1.0", drm_shmem_import_put_on_success=False, drm_shmem_rejects_cow=False
)
CUSTOM = {"v6.1.0": V61_0}
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
SHARED = mmap.MAP_SHARED
CARD = VgemDevice.PATH
TCGETS = 0x5401


# -- helpers -----------------------------------------------------------------------------
def setup(spec: str) -> SimpleNamespace:
    k = Kernel(CUSTOM.get(spec, spec))
    p = k.spawn("vgem-test")
    fd = p.open(CARD, os.O_RDWR)
    return SimpleNamespace(k=k, p=p, fd=fd, vgem=k.drivers["vgem"])


def dumb(
    p: Process, fd: int, width: int = 1024, height: int = 1, bpp: int = 32
) -> DrmModeCreateDumb:
    args = DrmModeCreateDumb(height=height, width=width, bpp=bpp)
    p.ioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, args)
    return args


def map_dumb(p: Process, fd: int, handle: int) -> int:
    args = DrmModeMapDumb(handle=handle)
    p.ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, args)
    return args.offset


def export(p: Process, fd: int, handle: int, flags: int = DRM_CLOEXEC | DRM_RDWR) -> int:
    args = DrmPrimeHandle(handle=handle, flags=flags)
    p.ioctl(fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, args)
    return args.fd


def import_fd(p: Process, fd: int, prime_fd: int) -> int:
    args = DrmPrimeHandle(fd=prime_fd)
    p.ioctl(fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, args)
    return args.handle


def gem_close(p: Process, fd: int, handle: int) -> None:
    p.ioctl(fd, DRM_IOCTL_GEM_CLOSE, DrmGemClose(handle=handle))


def drm_file(p: Process, fd: int) -> DrmFile:
    priv = p.file(fd).private_data
    assert isinstance(priv, DrmFile)
    return priv


def gem(p: Process, fd: int, handle: int) -> DrmGemObject:
    obj = drm_file(p, fd).object_idr[handle]
    assert obj is not None
    return obj


def fake_offset(p: Process, fd: int, handle: int) -> int:
    """What a driver-private mmap-offset ioctl (panfrost/v3d MMAP_BO) would return; vgem
    has none and MAP_DUMB refuses imports, so the tests read it from the kernel."""
    return drm_vma_node_offset_addr(gem(p, fd, handle).vma_node)


def dmabuf_of(p: Process, fd: int) -> DmaBuf:
    dmabuf = p.file(fd).private_data
    assert isinstance(dmabuf, DmaBuf)
    return dmabuf


def heap_alloc(p: Process, size: int, flags: int = os.O_RDWR | os.O_CLOEXEC) -> int:
    hfd = p.open("/dev/dma_heap/system", os.O_RDONLY)
    data = DmaHeapAllocationData(len=size, fd_flags=flags)
    p.ioctl(hfd, DMA_HEAP_IOCTL_ALLOC, data)
    p.close(hfd)
    return data.fd


def udmabuf_alloc(p: Process, size: int) -> int:
    memfd = p.memfd_create("backing", 0x2)  # MFD_ALLOW_SEALING
    p.ftruncate(memfd, size)
    p.fcntl(memfd, F_ADD_SEALS, 0x2)  # F_SEAL_SHRINK
    dev = p.open("/dev/udmabuf", os.O_RDWR)
    fd = p.ioctl(dev, UDMABUF_CREATE, UdmabufCreate(memfd=memfd, size=size))
    p.close(dev)
    p.close(memfd)
    return fd


def attach_fence(p: Process, fd: int, handle: int, flags: int = VGEM_FENCE_WRITE) -> int:
    args = DrmVgemFenceAttach(handle=handle, flags=flags)
    p.ioctl(fd, DRM_IOCTL_VGEM_FENCE_ATTACH, args)
    return args.out_fence


def signal_fence(p: Process, fd: int, fence: int, flags: int = 0) -> None:
    p.ioctl(fd, DRM_IOCTL_VGEM_FENCE_SIGNAL, DrmVgemFenceSignal(fence=fence, flags=flags))


def errno_of(call: object, *args: object) -> int:
    with pytest.raises(OSError) as exc:
        call(*args)  # type: ignore[operator]
    assert exc.value.errno is not None
    return exc.value.errno


# -- dumb buffers --------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_dumb_create_map_mmap_write_read_round_trip(spec: str) -> None:
    """MODE_CREATE_DUMB → MODE_MAP_DUMB → mmap(DRM fd, fake offset): a shmem object mapped
    VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP and write-combined (map_wc), faulted page by page."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd, width=1000, height=5, bpp=32)
    assert (a.handle, a.pitch, a.size) == (1, 4000, 5 * PAGE)  # PAGE_ALIGN(4000 * 5)
    off = map_dumb(p, t.fd, a.handle)
    assert off == DRM_FILE_PAGE_OFFSET_START << PAGE_SHIFT == 1 << 32
    b = dumb(p, t.fd, width=1024, height=1, bpp=32)
    assert b.handle == 2 and map_dumb(p, t.fd, b.handle) == off + a.size  # next fake range
    addr = p.mmap(0, a.size, RW, SHARED, t.fd, off)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is p.file(t.fd) and vma.vm_pgoff == off >> PAGE_SHIFT
    want = VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP
    assert vma.vm_flags & want == want
    assert len(p.mm.pgtable) == 0  # lazily faulted
    p.write_memory(addr + 3 * PAGE + 10, b"vgem bytes")
    assert p.read_memory(addr + 3 * PAGE + 10, 10) == b"vgem bytes"
    assert len(p.mm.pgtable) == 1
    pte = p.mm.pgtable.get((addr + 3 * PAGE) >> PAGE_SHIFT)
    assert pte is not None and pte_cache_mode(pte) == CACHE_WC
    # WC bypasses the CPU cache: the bytes are in the shmem page in DRAM already
    obj = gem(p, t.fd, a.handle)
    assert isinstance(obj, DrmGemShmemObject) and obj.pages is not None
    assert t.k.mem.read((obj.pages[3] << PAGE_SHIFT) + 10, 10) == b"vgem bytes"
    # the vma is tracked in the DRM device's address_space, at the fake offset
    assert vma in t.vgem.drm.anon_inode.i_mapping.mapped_vmas()
    assert p.maps().splitlines()[0].endswith(CARD)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    ("width", "height", "bpp"),
    [
        (0, 1, 32),  # zero width
        (1, 0, 32),  # zero height
        (1, 1, 0),  # zero bpp
        (1, 1, 0xFFFF_FFF8),  # bpp > U32_MAX - 8
        (0x8000_0000, 1, 32),  # cpp * width overflows 32 bits
        (0x1_0000, 0x1_0000, 8),  # height * stride overflows
        (0xFFFF_F001, 1, 8),  # PAGE_ALIGN of the 32-bit size wraps to 0
    ],
)
def test_dumb_create_rejects_zero_and_overflowing_sizes(
    spec: str, width: int, height: int, bpp: int
) -> None:
    """drm_mode_create_dumb's 32-bit overflow checks: EINVAL, no object created."""
    t = setup(spec)
    args = DrmModeCreateDumb(height=height, width=width, bpp=bpp)
    assert errno_of(t.p.ioctl, t.fd, DRM_IOCTL_MODE_CREATE_DUMB, args) == errno.EINVAL
    assert drm_file(t.p, t.fd).object_idr == {}


@pytest.mark.parametrize("spec", SPECS)
def test_dumb_create_error_copies_the_struct_back(spec: str) -> None:
    """drm_ioctl copies the struct back even on failure: 6.1/6.12 return the caller's
    output fields untouched; 6.19's drm_mode_create_dumb_ioctl zeroes them first."""
    t = setup(spec)
    args = DrmModeCreateDumb(height=1, width=0, bpp=32, handle=5, pitch=7, size=9)
    assert errno_of(t.p.ioctl, t.fd, DRM_IOCTL_MODE_CREATE_DUMB, args) == errno.EINVAL
    want = (0, 0, 0) if spec == "latest" else (5, 7, 9)
    assert (args.handle, args.pitch, args.size) == want


@pytest.mark.parametrize("spec", SPECS)
def test_dumb_pitch_formula_per_kernel(spec: str) -> None:
    """6.1/6.12: pitch = DIV_ROUND_UP(width * bpp, 8); 6.19 and later: drm_mode_size_dumb(),
    the width times DIV_ROUND_UP(bpp, 8) for a color mode without format, not aligned (the
    6.19-rc SZ_8 alignment was reverted by 4cbae3748fc4 before the release)."""
    t = setup(spec)
    a = dumb(t.p, t.fd, width=3, height=2, bpp=12)
    if spec == "latest":
        assert (a.pitch, a.size) == (6, PAGE)  # 3 * DIV_ROUND_UP(12, 8), no alignment
    else:
        assert (a.pitch, a.size) == (5, PAGE)
    b = dumb(t.p, t.fd, width=5, height=1, bpp=32)
    assert b.pitch == 20
    c = dumb(t.p, t.fd, width=3, height=1, bpp=8)
    assert c.pitch == 3  # an 8-byte alignment would make it 8
    assert t.k.warnings == []  # 12 is one of the color modes 6.19 knows to guess


@pytest.mark.parametrize("spec", SPECS)
def test_dumb_width_times_bpp_wraps_in_32_bits(spec: str) -> None:
    """width * bpp is a u32 product in the 6.1/6.12 shmem helper: 2**27 * 32 wraps to 0,
    pitch 0, size 0, and drm_mm has no zero-sized node (ENOSPC).  6.19 computes the pitch
    from the format in 64 bits and creates the 512 MiB object (no pages are allocated)."""
    t = setup(spec)
    args = DrmModeCreateDumb(height=1, width=1 << 27, bpp=32)
    if spec == "latest":
        t.p.ioctl(t.fd, DRM_IOCTL_MODE_CREATE_DUMB, args)
        assert (args.pitch, args.size) == (1 << 29, 1 << 29)
    else:
        assert errno_of(t.p.ioctl, t.fd, DRM_IOCTL_MODE_CREATE_DUMB, args) == errno.ENOSPC
        assert drm_file(t.p, t.fd).object_idr == {}


@given(width=st.integers(1, 4096), height=st.integers(1, 64), bpp=st.sampled_from([8, 16, 24, 32]))
def test_dumb_size_covers_every_scanline_and_maps_whole(width: int, height: int, bpp: int) -> None:
    """For the common color modes every kernel gives pitch >= width * bpp / 8 and
    size = PAGE_ALIGN(pitch * height); the whole object maps and its last byte is usable."""
    t = setup("v6.12")
    a = dumb(t.p, t.fd, width=width, height=height, bpp=bpp)
    assert a.pitch == width * bpp // 8
    assert a.size == -(-(a.pitch * height) // PAGE) * PAGE
    addr = t.p.mmap(0, a.size, RW, SHARED, t.fd, map_dumb(t.p, t.fd, a.handle))
    t.p.write_memory(addr + a.size - 1, b"!")
    assert t.p.read_memory(addr + a.size - 1, 1) == b"!"


@pytest.mark.parametrize("spec", SPECS)
def test_map_dumb_and_gem_close_of_unknown_handles(spec: str) -> None:
    """MAP_DUMB of an unknown handle: ENOENT; GEM_CLOSE of one: EINVAL."""
    t = setup(spec)
    assert errno_of(map_dumb, t.p, t.fd, 7) == errno.ENOENT
    assert errno_of(gem_close, t.p, t.fd, 7) == errno.EINVAL


# -- drm_gem_mmap --------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_drm_gem_mmap_needs_an_exact_offset_a_fitting_vma_and_a_handle(spec: str) -> None:
    """drm_gem_mmap: EINVAL unless vm_pgoff is exactly the object's node start and the vma
    fits in the node; EACCES for a drm_file (another open) without a handle; EINVAL once the
    object (and its offset) is gone."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd, width=1024, height=2)  # 2 pages
    off = map_dumb(p, t.fd, a.handle)
    assert errno_of(p.mmap, 0, PAGE, RW, SHARED, t.fd, off + PAGE) == errno.EINVAL
    assert errno_of(p.mmap, 0, 3 * PAGE, RW, SHARED, t.fd, off) == errno.EINVAL
    assert errno_of(p.mmap, 0, PAGE, RW, SHARED, t.fd, off + 1) == errno.EINVAL  # R3
    assert errno_of(p.mmap, 0, PAGE, RW, SHARED, t.fd, 0) == errno.EINVAL
    other = p.open(CARD, os.O_RDWR)
    assert errno_of(p.mmap, 0, PAGE, RW, SHARED, other, off) == errno.EACCES
    addr = p.mmap(0, PAGE, RW, SHARED, t.fd, off)  # a shorter vma is fine
    p.munmap(addr, PAGE)
    gem_close(p, t.fd, a.handle)
    assert errno_of(p.mmap, 0, PAGE, RW, SHARED, t.fd, off) == errno.EINVAL
    assert t.k.warnings == []


@pytest.mark.parametrize("spec", SPECS)
def test_fault_past_the_object_is_sigbus(spec: str) -> None:
    """R32: drm_gem_shmem_fault returns VM_FAULT_SIGBUS for page_offset >= num_pages.  No
    mapping can reach it (the size checks and VM_DONTEXPAND see to that), so the handler is
    called with a vma twice the object's size."""
    t = setup(spec)
    a = dumb(t.p, t.fd, width=1024, height=1)
    addr = t.p.mmap(0, PAGE, RW, SHARED, t.fd, map_dumb(t.p, t.fd, a.handle))
    real = t.p.mm.vma_lookup(addr)
    big = VmAreaStruct(
        real.vm_mm,
        addr,
        addr + 2 * PAGE,
        real.vm_flags,
        real.vm_page_prot,
        real.vm_pgoff,
        vm_file=real.vm_file,
        vm_ops=real.vm_ops,
        vm_private_data=real.vm_private_data,
    )
    assert drm_gem_shmem_fault(VmFault(big, addr + PAGE, 0, 0, addr + PAGE)) == VM_FAULT_SIGBUS
    assert drm_gem_shmem_fault(VmFault(real, addr, 0, 0, addr)) == VM_FAULT_NOPAGE


@pytest.mark.parametrize("spec", SPECS)
def test_r33_vgem_mapping_cannot_grow(spec: str) -> None:
    """R33: VM_DONTEXPAND|VM_PFNMAP: mremap growth fails EFAULT."""
    t = setup(spec)
    a = dumb(t.p, t.fd, width=1024, height=2)
    addr = t.p.mmap(0, PAGE, RW, SHARED, t.fd, map_dumb(t.p, t.fd, a.handle))
    assert errno_of(t.p.mremap, addr, PAGE, 2 * PAGE, 1) == errno.EFAULT  # MREMAP_MAYMOVE


@pytest.mark.parametrize("spec", [*SPECS, "v6.1.0"])
def test_cow_mapping_einval_since_6_9_bug_on_before(spec: str) -> None:
    """MAP_PRIVATE of a native object: EINVAL since 39bc27bd6880 ("drm/shmem-helper: Fix
    BUG_ON() on mmap(PROT_WRITE, MAP_PRIVATE)", 6.9, in 6.1.y by 6.1.192).  6.1.0 maps it,
    and the first fault reaches vmf_insert_pfn's BUG_ON(VM_PFNMAP && is_cow_mapping)."""
    t = setup(spec)
    a = dumb(t.p, t.fd, width=1024, height=1)
    off = map_dumb(t.p, t.fd, a.handle)
    if spec == "v6.1.0":
        addr = t.p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_PRIVATE, t.fd, off)
        with pytest.raises(KernelOops, match="is_cow_mapping"):
            t.p.read_memory(addr, 1)
    else:
        flags = mmap.MAP_PRIVATE
        assert errno_of(t.p.mmap, 0, PAGE, mmap.PROT_READ, flags, t.fd, off) == errno.EINVAL


# -- PRIME export ---------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_prime_export_mmap_sees_the_same_bytes(spec: str) -> None:
    """PRIME_HANDLE_TO_FD, then mmap of the dma-buf fd: drm_gem_dmabuf_mmap →
    drm_gem_prime_mmap adds the fake offset to vm_pgoff and runs drm_gem_shmem_mmap; both
    mappings are WC over the same shmem pages.  exp_name is "drm" (KBUILD_MODNAME)."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd, width=1024, height=4)
    off = map_dumb(p, t.fd, a.handle)
    gem_addr = p.mmap(0, a.size, RW, SHARED, t.fd, off)
    pfd = export(p, t.fd, a.handle)
    dmabuf = dmabuf_of(p, pfd)
    assert dmabuf.ops is DRM_GEM_PRIME_DMABUF_OPS and dmabuf.exp_name == "drm"
    assert dmabuf.size == a.size and dmabuf.resv is gem(p, t.fd, a.handle).resv
    buf_addr = p.mmap(0, a.size, RW, SHARED, pfd, 0)
    p.write_memory(gem_addr + PAGE, b"from the DRM fd")
    assert p.read_memory(buf_addr + PAGE, 15) == b"from the DRM fd"
    p.write_memory(buf_addr + 2 * PAGE, b"from the dma-buf")
    assert p.read_memory(gem_addr + 2 * PAGE, 16) == b"from the dma-buf"
    vma = p.mm.vma_lookup(buf_addr)
    assert vma.vm_file is dmabuf.file and vma.vm_pgoff == off >> PAGE_SHIFT
    assert vma.vm_flags & (VM_PFNMAP | VM_DONTEXPAND) == VM_PFNMAP | VM_DONTEXPAND
    # drm_gem_dmabuf_export points the dma-buf file at the DRM anon inode's address_space
    assert dmabuf.file is not None
    assert dmabuf.file.f_mapping is t.vgem.drm.anon_inode.i_mapping
    assert vma in t.vgem.drm.anon_inode.i_mapping.mapped_vmas()
    assert "/dmabuf:" in p.maps() and "exp_name:\tdrm" in p.fdinfo(pfd)
    assert p.fcntl(pfd, 1) == 1  # F_GETFD: DRM_CLOEXEC is O_CLOEXEC


@pytest.mark.parametrize("spec", SPECS)
def test_r60_prime_mmap_at_an_offset_starts_at_page_zero(spec: str) -> None:
    """R60 (the drm_gem_shmem exception): the fault handler indexes pages by
    (address - vm_start) >> PAGE_SHIFT, ignoring vm_pgoff, so an mmap of the dma-buf fd at
    offset 2 pages shows page 0 of the object.  The system heap honours vm_pgoff."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd, width=1024, height=4)
    gem_addr = p.mmap(0, a.size, RW, SHARED, t.fd, map_dumb(p, t.fd, a.handle))
    for i in range(4):
        p.write_memory(gem_addr + i * PAGE, f"page {i}".encode())
    pfd = export(p, t.fd, a.handle)
    addr = p.mmap(0, PAGE, mmap.PROT_READ, SHARED, pfd, 2 * PAGE)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_pgoff == (DRM_FILE_PAGE_OFFSET_START + 2)  # fake offset + the user's 2
    assert p.read_memory(addr, 6) == b"page 0"  # not "page 2"
    # contrast: the system heap maps from vm_pgoff
    hfd = heap_alloc(p, 4 * PAGE)
    hall = p.mmap(0, 4 * PAGE, RW, SHARED, hfd, 0)
    p.write_memory(hall + 2 * PAGE, b"heap 2")
    hpart = p.mmap(0, PAGE, mmap.PROT_READ, SHARED, hfd, 2 * PAGE)
    assert p.read_memory(hpart, 6) == b"heap 2"


@pytest.mark.parametrize("spec", SPECS)
def test_r7_export_without_drm_rdwr_is_read_only(spec: str) -> None:
    """R7: a PRIME fd exported without DRM_RDWR is O_RDONLY: PROT_WRITE|MAP_SHARED fails
    EACCES; a read-only shared mapping works but has neither VM_SHARED nor VM_MAYWRITE."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd, width=1024, height=1)
    pfd = export(p, t.fd, a.handle, flags=0)
    assert p.fcntl(pfd, 3) & os.O_ACCMODE == os.O_RDONLY  # F_GETFL
    assert p.fcntl(pfd, 1) == 0  # no DRM_CLOEXEC, no FD_CLOEXEC
    assert errno_of(p.mmap, 0, PAGE, RW, SHARED, pfd, 0) == errno.EACCES
    addr = p.mmap(0, PAGE, mmap.PROT_READ, SHARED, pfd, 0)
    assert p.mm.vma_lookup(addr).vm_flags & (VM_SHARED | VM_MAYWRITE) == 0
    assert errno_of(p.mprotect, addr, PAGE, RW) == errno.EACCES


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("flags", [0x1, os.O_NONBLOCK, DRM_RDWR | 0x40, 0xFFFF_FFFF])
def test_export_flags_outside_cloexec_rdwr_are_einval(spec: str, flags: int) -> None:
    """drm_prime_handle_to_fd_ioctl: flags & ~(DRM_CLOEXEC | DRM_RDWR) → EINVAL; no fd."""
    t = setup(spec)
    a = dumb(t.p, t.fd)
    before = set(t.p.files.fds)
    assert errno_of(export, t.p, t.fd, a.handle, flags) == errno.EINVAL
    assert set(t.p.files.fds) == before and gem(t.p, t.fd, a.handle).dma_buf is None


@pytest.mark.parametrize("spec", SPECS)
def test_export_unknown_handle_is_enoent(spec: str) -> None:
    t = setup(spec)
    before = set(t.p.files.fds)
    assert errno_of(export, t.p, t.fd, 9) == errno.ENOENT
    assert set(t.p.files.fds) == before  # the reserved fd was given back


@pytest.mark.parametrize("spec", SPECS)
def test_exporting_twice_gives_the_same_dma_buf_with_the_first_mode(spec: str) -> None:
    """obj->dma_buf caches the export: a second PRIME_HANDLE_TO_FD — here asking for
    DRM_RDWR, from another open of the node too — installs the SAME file, still O_RDONLY."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd)
    first = export(p, t.fd, a.handle, flags=0)
    second = export(p, t.fd, a.handle, flags=DRM_RDWR)
    assert first != second and p.file(first) is p.file(second)
    assert errno_of(p.mmap, 0, PAGE, RW, SHARED, second, 0) == errno.EACCES
    other = p.open(CARD, os.O_RDWR)
    h2 = import_fd(p, other, first)
    third = export(p, other, h2, flags=DRM_RDWR)
    assert p.file(third) is p.file(first)


@pytest.mark.parametrize("spec", SPECS)
def test_export_reference_counts_and_release(spec: str) -> None:
    """R16/R17: the dma-buf file is held by the fd, the object's export cache and this
    file's PRIME entry; the last handle breaks the cache, the last fd releases the dma-buf,
    whose release drops the object, whose free releases the shmem pages."""
    t = setup(spec)
    p, k = t.p, t.k
    baseline = k.mem.allocated_pages
    a = dumb(p, t.fd, width=1024, height=4)
    addr = p.mmap(0, a.size, RW, SHARED, t.fd, map_dumb(p, t.fd, a.handle))
    p.write_memory(addr, b"x" * 5)  # pages are pinned from the mmap on
    pfd = export(p, t.fd, a.handle)
    f = p.file(pfd)
    obj = gem(p, t.fd, a.handle)
    assert f.f_count == 3  # fd + obj->dma_buf + the PRIME cache entry
    assert obj.refcount == 3  # handle + vma + the dma-buf
    b = p.mmap(0, a.size, RW, SHARED, pfd, 0)
    assert (f.f_count, obj.refcount) == (4, 4)
    p.munmap(b, a.size)
    p.munmap(addr, a.size)
    assert (f.f_count, obj.refcount) == (3, 2)
    gem_close(p, t.fd, a.handle)
    assert (f.f_count, obj.refcount, obj.freed) == (1, 1, False)  # the dma-buf keeps it
    p.close(pfd)
    assert f.released and obj.freed
    assert k.mem.allocated_pages == baseline
    assert k.warnings == []


@pytest.mark.parametrize("spec", SPECS)
def test_prime_attach_maps_the_shmem_pages_for_the_device(spec: str) -> None:
    """drm_gem_map_attach pins; drm_gem_map_dma_buf returns the shmem pages' sg table mapped
    for the attachment's device (DMA_ATTR_SKIP_CPU_SYNC); a device read sees the WC writes."""
    t = setup(spec)
    p, k = t.p, t.k
    a = dumb(p, t.fd, width=1024, height=2)
    addr = p.mmap(0, a.size, RW, SHARED, t.fd, map_dumb(p, t.fd, a.handle))
    p.write_memory(addr + PAGE, b"for the device")
    pfd = export(p, t.fd, a.handle)
    dmabuf = dmabuf_of(p, pfd)
    obj = gem(p, t.fd, a.handle)
    assert isinstance(obj, DrmGemShmemObject)
    dev = Device(k, "gpu")
    with k.running(p):
        at = dma_buf_attach(dmabuf, dev)
        assert obj.pages_use_count == 2  # the mmap and the attachment
        sgt = dma_buf_map_attachment_unlocked(at, DMA_BIDIRECTIONAL)
        assert list(sgt.pfns()) == obj.pages and sgt.mapped_for is dev
        assert dev.dma_read(sgt, PAGE, 14) == b"for the device"
        dma_buf_unmap_attachment_unlocked(at, sgt, DMA_BIDIRECTIONAL)
        dma_buf_detach(dmabuf, at)
    assert obj.pages_use_count == 1


@pytest.mark.parametrize("spec", SPECS)
def test_prime_vmap_is_a_write_combined_kernel_mapping(spec: str) -> None:
    """drm_gem_dmabuf_vmap → drm_gem_shmem_vmap: the pinned pages, write-combined (map_wc),
    so the kernel reads what a user WC mapping wrote without any cache maintenance."""
    t = setup(spec)
    p, k = t.p, t.k
    a = dumb(p, t.fd, width=1024, height=2)
    addr = p.mmap(0, a.size, RW, SHARED, t.fd, map_dumb(p, t.fd, a.handle))
    p.write_memory(addr + PAGE + 3, b"seen by vmap")
    dmabuf = dmabuf_of(p, export(p, t.fd, a.handle))
    m = IosysMap()
    assert dma_buf_vmap_unlocked(dmabuf, m) == 0
    assert isinstance(m.vaddr, KernelMapping) and m.vaddr.cache_mode == CACHE_WC
    assert m.vaddr.read(PAGE + 3, 12) == b"seen by vmap"
    dma_buf_vunmap_unlocked(dmabuf, m)
    assert not k.warnings


# -- PRIME import -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_self_import_gives_back_the_original_object(spec: str) -> None:
    """FD_TO_HANDLE of a dma-buf this device exported: the same handle in the exporting
    file (its PRIME cache), a new handle to the SAME object in another open; no attachment."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd, width=1024, height=2)
    pfd = export(p, t.fd, a.handle)
    dmabuf = dmabuf_of(p, pfd)
    assert import_fd(p, t.fd, pfd) == a.handle
    other = p.open(CARD, os.O_RDWR)
    dumb(p, other)  # handle 1 there is taken
    h = import_fd(p, other, pfd)
    assert h == 2 and gem(p, other, h) is gem(p, t.fd, a.handle)
    assert dmabuf.attachments == []
    # the second file may now map the object through the same fake offset
    off = map_dumb(p, other, h)
    assert off == map_dumb(p, t.fd, a.handle)
    x = p.mmap(0, a.size, RW, SHARED, other, off)
    y = p.mmap(0, a.size, RW, SHARED, t.fd, off)
    p.write_memory(x, b"shared object")
    assert p.read_memory(y, 13) == b"shared object"


@pytest.mark.parametrize("spec", SPECS)
def test_import_system_heap_holds_a_reference_and_an_attachment(spec: str) -> None:
    """A foreign dma-buf: drm_gem_prime_import_dev attaches vgem's device and maps the
    attachment at once; the object holds the import's dma_buf reference, obj->dma_buf and
    this file's PRIME entry hold one each.  GEM_CLOSE undoes it all; MAP_DUMB refuses it."""
    t = setup(spec)
    p = t.p
    hfd = heap_alloc(p, 2 * PAGE)
    dmabuf = dmabuf_of(p, hfd)
    assert dmabuf.file is not None
    h = import_fd(p, t.fd, hfd)
    obj = gem(p, t.fd, h)
    assert obj.import_attach is not None and obj.import_attach.dev is t.vgem.platform
    assert obj.dma_buf is dmabuf and obj.resv is dmabuf.resv and obj.filp is None
    assert dmabuf.attachments == [obj.import_attach] and obj.size == 2 * PAGE
    assert dmabuf.file.f_count == 4  # fd + import + obj->dma_buf + PRIME entry
    assert import_fd(p, t.fd, hfd) == h  # the PRIME cache answers
    assert errno_of(map_dumb, p, t.fd, h) == errno.EINVAL  # "Don't allow imported objects"
    # exporting an imported object re-exports the original dma-buf
    again = export(p, t.fd, h)
    assert p.file(again) is dmabuf.file
    p.close(again)
    gem_close(p, t.fd, h)
    assert obj.freed and dmabuf.attachments == [] and dmabuf.file.f_count == 1
    p.close(hfd)
    assert dmabuf.released and t.k.warnings == []


@pytest.mark.parametrize("spec", SPECS)
def test_import_of_a_non_dma_buf_fd(spec: str) -> None:
    """dma_buf_get: EBADF for a closed fd, EINVAL for a file that is not a dma-buf."""
    t = setup(spec)
    assert errno_of(import_fd, t.p, t.fd, 99) == errno.EBADF
    assert errno_of(import_fd, t.p, t.fd, t.fd) == errno.EINVAL
    assert t.p.file(t.fd).f_count == 1


@pytest.mark.parametrize("spec", SPECS)
def test_r22_imported_object_mmap_is_forwarded_to_the_exporter(spec: str) -> None:
    """The seed's second use case (R22): mmap of the DRM fd at an imported object's fake
    offset → drm_gem_mmap → drm_gem_shmem_mmap → dma_buf_mmap(obj->dma_buf, vma, 0): the vma
    ends with vm_file = the dma-buf file, vm_pgoff = 0, the system heap's remap in place; the
    DRM file lost the vma's reference and the dma-buf file gained it.  Both CPU views are
    the same cached pages: bytes cross in both directions.  /proc maps names the dma-buf."""
    t = setup(spec)
    p = t.p
    hfd = heap_alloc(p, 4 * PAGE)
    dmabuf = dmabuf_of(p, hfd)
    assert dmabuf.file is not None
    heap_addr = p.mmap(0, 4 * PAGE, RW, SHARED, hfd, 0)
    h = import_fd(p, t.fd, hfd)
    obj = gem(p, t.fd, h)
    drm_count, buf_count, obj_refs = p.file(t.fd).f_count, dmabuf.file.f_count, obj.refcount
    addr = p.mmap(0, 4 * PAGE, RW, SHARED, t.fd, fake_offset(p, t.fd, h))
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is dmabuf.file and vma.vm_pgoff == 0
    assert vma.vm_private_data is None
    assert vma in dmabuf.file.f_mapping.mapped_vmas()
    assert p.file(t.fd).f_count == drm_count and dmabuf.file.f_count == buf_count + 1
    assert obj.refcount == obj_refs  # drm_gem_mmap_obj's reference was given back
    assert len(p.mm.pgtable.entries) >= 4  # the system heap remapped eagerly
    pte = p.mm.pgtable.get(addr >> PAGE_SHIFT)
    assert pte is not None and pte_cache_mode(pte) == CACHE_WB
    p.write_memory(heap_addr + PAGE + 7, b"heap -> vgem")
    assert p.read_memory(addr + PAGE + 7, 12) == b"heap -> vgem"
    p.write_memory(addr + 3 * PAGE, b"vgem -> heap")
    assert p.read_memory(heap_addr + 3 * PAGE, 12) == b"vgem -> heap"
    line = next(ln for ln in p.maps().splitlines() if ln.startswith(f"{addr:08x}"))
    assert line.endswith("/dmabuf:") and " 00000000 " in line
    if spec == "v6.1":
        # 6.1 left drm_gem_shmem_vm_ops on the vma with vm_private_data == NULL (Boris
        # Brezillon's "Reset vma->vm_ops before calling dma_buf_mmap()" is 6.5): the system
        # heap installs no vm_ops, so munmap's ->close dereferences NULL.
        assert vma.vm_ops is not None and vma.vm_ops.owner == "drm_gem_shmem"
        with pytest.raises(KernelOops, match="NULL pointer dereference"):
            p.munmap(addr, 4 * PAGE)
        assert t.k.tainted
    else:
        assert vma.vm_ops is None
        p.munmap(addr, 4 * PAGE)
        assert dmabuf.file.f_count == buf_count and p.file(t.fd).f_count == drm_count


@pytest.mark.parametrize("spec", FIXED_SPECS)
def test_import_forwarding_refcounts_balance_after_munmap_and_close(spec: str) -> None:
    """R17/R22: after munmap, GEM_CLOSE and close every file and page is released; the
    heap's release runs once."""
    t = setup(spec)
    p, k = t.p, t.k
    baseline = k.mem.allocated_pages
    hfd = heap_alloc(p, 2 * PAGE)
    dmabuf = dmabuf_of(p, hfd)
    h = import_fd(p, t.fd, hfd)
    addr = p.mmap(0, 2 * PAGE, RW, SHARED, t.fd, fake_offset(p, t.fd, h))
    p.write_memory(addr, b"x")
    p.close(hfd)  # the vma and the object keep the dma-buf alive
    assert not dmabuf.released
    p.munmap(addr, 2 * PAGE)
    gem_close(p, t.fd, h)
    assert dmabuf.released and dmabuf.release_calls == 1
    p.close(t.fd)
    assert k.mem.allocated_pages == baseline and k.warnings == []


@pytest.mark.parametrize("spec", SPECS)
def test_import_udmabuf_forwarding_and_the_6_1_dontexpand_warn(spec: str) -> None:
    """udmabuf installs its own vm_ops, so the forwarded mapping faults through udmabuf on
    every kernel and munmap is clean.  On 6.1 udmabuf sets no VM_DONTEXPAND, which
    drm_gem_mmap_obj WARNs about; 6.12+ udmabuf sets VM_PFNMAP|VM_DONTEXPAND."""
    t = setup(spec)
    p = t.p
    ufd = udmabuf_alloc(p, 2 * PAGE)
    dmabuf = dmabuf_of(p, ufd)
    h = import_fd(p, t.fd, ufd)
    addr = p.mmap(0, 2 * PAGE, RW, SHARED, t.fd, fake_offset(p, t.fd, h))
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is dmabuf.file and vma.vm_ops is not None
    assert vma.vm_ops.owner == "udmabuf"
    p.write_memory(addr + PAGE, b"through udmabuf's fault")
    assert p.read_memory(addr + PAGE, 23) == b"through udmabuf's fault"
    warned = "drm_gem_mmap_obj: WARN_ON(!(vma->vm_flags & VM_DONTEXPAND))" in t.k.warnings
    assert warned == (spec == "v6.1")
    p.munmap(addr, 2 * PAGE)
    gem_close(p, t.fd, h)
    p.close(ufd)
    assert dmabuf.released


@pytest.mark.parametrize("spec", [*SPECS, "v6.1.0"])
def test_r24_failed_forward_and_the_6_1_double_put(spec: str) -> None:
    """R24: a multi-page MAP_PRIVATE forwarded to the system heap fails EINVAL (R37) and
    mmap(2)'s error path puts the dma-buf file the vma then held: file counts balance.
    6.1's drm_gem_shmem_mmap dropped drm_gem_mmap_obj's object reference *before*
    dma_buf_mmap, and drm_gem_mmap_obj drops it again on the error: the imported object is
    freed under its handle, and GEM_CLOSE then touches freed memory (fixed in 6.2, "drm/
    shmem-helper: Remove errant put in error path", and in 6.1.y since Dec 2022: only
    6.1.0 as released shows it)."""
    t = setup(spec)
    p = t.p
    hfd = heap_alloc(p, 2 * PAGE)
    dmabuf = dmabuf_of(p, hfd)
    assert dmabuf.file is not None
    h = import_fd(p, t.fd, hfd)
    obj = gem(p, t.fd, h)
    counts = (p.file(t.fd).f_count, dmabuf.file.f_count)
    off = fake_offset(p, t.fd, h)
    assert errno_of(p.mmap, 0, 2 * PAGE, RW, mmap.MAP_PRIVATE, t.fd, off) == errno.EINVAL
    if spec == "v6.1.0":
        assert obj.freed  # while object_idr still holds it
        with pytest.raises(KernelOops, match="use-after-free"):
            gem_close(p, t.fd, h)
    else:
        assert (p.file(t.fd).f_count, dmabuf.file.f_count) == counts
        assert obj.refcount == 1 and not obj.freed
        gem_close(p, t.fd, h)
        assert obj.freed


# -- fences ---------------------------------------------------------------------------------
def fenced_export(spec: str) -> SimpleNamespace:
    t = setup(spec)
    a = dumb(t.p, t.fd, width=1024, height=2)
    t.handle = a.handle
    t.size = a.size
    t.pfd = export(t.p, t.fd, a.handle)
    t.dmabuf = dmabuf_of(t.p, t.pfd)
    return t


@pytest.mark.parametrize("spec", SPECS)
def test_r50_write_fence_blocks_poll_until_signalled(spec: str) -> None:
    """R50: a WRITE fence on the object is an implicit fence of its dma-buf: POLLIN and
    POLLOUT stay unready until VGEM_FENCE_SIGNAL."""
    t = fenced_export(spec)
    p = t.p
    assert p.poll(t.pfd, POLLIN | POLLOUT) == POLLIN | POLLOUT
    fence_id = attach_fence(p, t.fd, t.handle, VGEM_FENCE_WRITE)
    assert fence_id == 1
    assert p.poll(t.pfd, POLLIN) == 0 and p.poll(t.pfd, POLLOUT) == 0
    clock = t.k.clock
    signal_fence(p, t.fd, fence_id)
    assert t.k.clock == clock  # signalling is immediate
    assert p.poll(t.pfd, POLLIN | POLLOUT) == POLLIN | POLLOUT
    assert errno_of(signal_fence, p, t.fd, fence_id) == errno.ENOENT  # consumed


@pytest.mark.parametrize("spec", SPECS)
def test_r50_read_fence_blocks_writers_only(spec: str) -> None:
    """R50: a READ fence leaves POLLIN ready and holds POLLOUT; readers share, but a WRITE
    fence next to a reader — or a reader next to a writer — is EBUSY."""
    t = fenced_export(spec)
    p = t.p
    r1 = attach_fence(p, t.fd, t.handle, 0)
    assert p.poll(t.pfd, POLLIN | POLLOUT) == POLLIN
    r2 = attach_fence(p, t.fd, t.handle, 0)
    assert r2 == r1 + 1
    assert errno_of(attach_fence, p, t.fd, t.handle, VGEM_FENCE_WRITE) == errno.EBUSY
    signal_fence(p, t.fd, r1)
    signal_fence(p, t.fd, r2)
    w = attach_fence(p, t.fd, t.handle, VGEM_FENCE_WRITE)
    assert errno_of(attach_fence, p, t.fd, t.handle, 0) == errno.EBUSY
    assert w == r2 + 1  # the EBUSY attempt took no id; signalled ids are not reused


@pytest.mark.parametrize("spec", SPECS)
def test_fence_expires_after_ten_virtual_seconds(spec: str) -> None:
    """vgem_fence_create: "We force the fence to expire within 10s": once the clock passes
    it the fence is signalled, and VGEM_FENCE_SIGNAL reports ETIMEDOUT (consuming it)."""
    t = fenced_export(spec)
    p, k = t.p, t.k
    fence_id = attach_fence(p, t.fd, t.handle)
    k.advance_clock_to(k.clock + VGEM_FENCE_TIMEOUT_NS - 1)
    assert p.poll(t.pfd, POLLIN) == 0
    k.advance_clock_to(k.clock + 1)
    assert p.poll(t.pfd, POLLIN) == POLLIN
    assert errno_of(signal_fence, p, t.fd, fence_id) == errno.ETIMEDOUT
    assert errno_of(signal_fence, p, t.fd, fence_id) == errno.ENOENT


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    ("sync", "fence_flags", "waits"),
    [
        (DMA_BUF_SYNC_READ, VGEM_FENCE_WRITE, True),  # a reader waits for the writer
        (DMA_BUF_SYNC_WRITE, VGEM_FENCE_WRITE, True),
        (DMA_BUF_SYNC_WRITE, 0, True),  # a writer waits for readers too
        (DMA_BUF_SYNC_READ, 0, False),  # readers do not wait for readers
    ],
)
def test_r46_sync_start_waits_for_the_vgem_fence(
    spec: str, sync: int, fence_flags: int, waits: bool
) -> None:
    """R46: DMA_BUF_IOCTL_SYNC START waits (the virtual clock runs to the fence's 10 s
    expiry) for the fences dma_resv_usage_rw() names; PRIME ops have no begin_cpu_access."""
    t = fenced_export(spec)
    p, k = t.p, t.k
    attach_fence(p, t.fd, t.handle, fence_flags)
    start = k.clock
    p.ioctl(t.pfd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags=DMA_BUF_SYNC_START | sync))
    assert (k.clock == start + VGEM_FENCE_TIMEOUT_NS) == waits
    assert (k.clock == start) == (not waits)


@pytest.mark.parametrize("spec", SPECS)
def test_r55_vgem_faults_never_wait_for_fences(spec: str) -> None:
    """R55 (the RFC's "no synchronization at fault time"): with an unsignalled WRITE fence,
    faults through the DRM fd and through the dma-buf fd map pages at once: the clock does
    not move, the fence stays pending, no wait happens inside a fault."""
    t = fenced_export(spec)
    p, k = t.p, t.k
    attach_fence(p, t.fd, t.handle, VGEM_FENCE_WRITE)
    start = k.clock
    a = p.mmap(0, t.size, RW, SHARED, t.fd, map_dumb(p, t.fd, t.handle))
    b = p.mmap(0, t.size, RW, SHARED, t.pfd, 0)
    p.write_memory(a, b"racing the device")
    assert p.read_memory(b, 17) == b"racing the device"
    p.write_memory(b + PAGE, b"!")
    assert k.clock == start and k.fault_waits == []
    assert p.poll(t.pfd, POLLIN) == 0  # still unsignalled
    assert len(p.mm.pgtable) == 3


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    ("args", "err"),
    [
        ({"flags": 0x2}, errno.EINVAL),  # flags & ~VGEM_FENCE_WRITE
        ({"flags": VGEM_FENCE_WRITE | 0x100}, errno.EINVAL),
        ({"pad": 1}, errno.EINVAL),
        ({"handle": 42}, errno.ENOENT),
    ],
)
def test_fence_attach_errors(spec: str, args: dict[str, int], err: int) -> None:
    t = fenced_export(spec)
    req = DrmVgemFenceAttach(handle=args.get("handle", t.handle), flags=args.get("flags", 0))
    req.pad = args.get("pad", 0)
    assert errno_of(t.p.ioctl, t.fd, DRM_IOCTL_VGEM_FENCE_ATTACH, req) == err
    assert t.dmabuf.resv is not None and t.dmabuf.resv.fences == []


@pytest.mark.parametrize("spec", SPECS)
def test_fence_signal_errors(spec: str) -> None:
    """SIGNAL: flags → EINVAL; an id never handed out (0 included) → ENOENT."""
    t = fenced_export(spec)
    fence_id = attach_fence(t.p, t.fd, t.handle)
    assert errno_of(signal_fence, t.p, t.fd, fence_id, 1) == errno.EINVAL
    assert errno_of(signal_fence, t.p, t.fd, 0) == errno.ENOENT
    assert errno_of(signal_fence, t.p, t.fd, fence_id + 1) == errno.ENOENT
    other = t.p.open(CARD, os.O_RDWR)  # fence ids are per file
    assert errno_of(signal_fence, t.p, other, fence_id) == errno.ENOENT


@pytest.mark.parametrize("spec", SPECS)
def test_closing_the_drm_fd_signals_its_fences(spec: str) -> None:
    """vgem_postclose → vgem_fence_close signals every fence the file still owns."""
    t = fenced_export(spec)
    attach_fence(t.p, t.fd, t.handle)
    assert t.p.poll(t.pfd, POLLIN) == 0
    t.p.close(t.fd)
    assert t.p.poll(t.pfd, POLLIN) == POLLIN


@pytest.mark.parametrize("spec", SPECS)
def test_fence_on_an_imported_object_lands_in_the_exporters_resv(spec: str) -> None:
    """An imported object's resv is the dma-buf's: a vgem fence on it holds the heap fd."""
    t = setup(spec)
    hfd = heap_alloc(t.p, PAGE)
    h = import_fd(t.p, t.fd, hfd)
    fence_id = attach_fence(t.p, t.fd, h)
    assert t.p.poll(hfd, POLLIN) == 0
    signal_fence(t.p, t.fd, fence_id)
    assert t.p.poll(hfd, POLLIN) == POLLIN


# -- the node -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    ("cmd", "err"),
    [
        (TCGETS, errno.ENOTTY),  # not a DRM ioctl type: isatty() must say no
        (DMA_BUF_IOCTL_SYNC, errno.ENOTTY),
        (_IOWR("d", 0x40, 8), errno.EINVAL),  # vgem_ioctls[0] is a hole: "no function"
        (_IOWR("d", 0x43, 8), errno.EINVAL),  # past num_ioctls
        (_IOWR("d", 0x9F, 8), errno.EINVAL),
        (_IOWR("d", 0xFF, 8), errno.EINVAL),  # past DRM_CORE_IOCTL_COUNT
    ],
)
def test_unknown_ioctls(spec: str, cmd: int, err: int) -> None:
    """drm_ioctl: ENOTTY for another ioctl type, EINVAL for numbers outside the tables."""
    t = setup(spec)
    assert errno_of(t.p.ioctl, t.fd, cmd, bytes(8)) == err


@pytest.mark.parametrize("spec", SPECS)
def test_each_open_has_its_own_handle_table(spec: str) -> None:
    """drm_open gives every open its own drm_file: handles are per file, from 1."""
    t = setup(spec)
    p = t.p
    other = p.open(CARD, os.O_RDWR)
    assert drm_file(p, t.fd) is not drm_file(p, other)
    a = dumb(p, t.fd)
    b = dumb(p, other)
    assert a.handle == b.handle == 1
    assert gem(p, t.fd, 1) is not gem(p, other, 1)
    gem_close(p, t.fd, 1)
    assert gem(p, other, 1).refcount == 1
    assert dumb(p, t.fd).handle == 1  # the lowest free handle again
    assert p.file(t.fd).f_mapping is p.file(other).f_mapping  # one device address_space


@pytest.mark.parametrize("spec", SPECS)
def test_closing_the_drm_fd_releases_handles_but_not_exports(spec: str) -> None:
    """drm_release → drm_gem_release: handles go; an exported dma-buf keeps the object
    (its mapping still works) until its own last reference."""
    t = setup(spec)
    p, k = t.p, t.k
    baseline = k.mem.allocated_pages
    a = dumb(p, t.fd, width=1024, height=2)
    pfd = export(p, t.fd, a.handle)
    obj = gem(p, t.fd, a.handle)
    p.close(t.fd)
    assert not obj.freed and obj.handle_count == 0 and obj.dma_buf is None
    addr = p.mmap(0, a.size, RW, SHARED, pfd, 0)
    p.write_memory(addr, b"orphan")
    assert p.read_memory(addr, 6) == b"orphan"
    p.close(pfd)
    assert not obj.freed  # the vma holds the dma-buf and the object
    p.munmap(addr, a.size)
    assert obj.freed and k.mem.allocated_pages == baseline


@pytest.mark.parametrize("spec", SPECS)
def test_r18_r19_fork_and_split_take_object_references(spec: str) -> None:
    """R18/R19: fork and a partial munmap run drm_gem_shmem_vm_open (object reference,
    page pin); the PFNMAP PTEs are copied to the child (R40); exits give everything back."""
    t = setup(spec)
    p = t.p
    a = dumb(p, t.fd, width=1024, height=4)
    addr = p.mmap(0, a.size, RW, SHARED, t.fd, map_dumb(p, t.fd, a.handle))
    p.write_memory(addr, b"before fork")
    obj = gem(p, t.fd, a.handle)
    assert isinstance(obj, DrmGemShmemObject)
    refs, pins = obj.refcount, obj.pages_use_count
    child = p.fork()
    assert (obj.refcount, obj.pages_use_count) == (refs + 1, pins + 1)
    assert len(child.mm.pgtable) == 1  # copied, not refaulted
    assert child.read_memory(addr, 11) == b"before fork"
    child.exit()
    assert (obj.refcount, obj.pages_use_count) == (refs, pins)
    p.munmap(addr + PAGE, PAGE)  # split into two vmas
    assert obj.refcount == refs + 1
    p.munmap(addr, a.size)
    assert (obj.refcount, obj.pages_use_count) == (refs - 1, 0)
    assert obj.pages is None


@pytest.mark.parametrize("spec", SPECS)
def test_trace_of_the_forwarded_mmap(spec: str) -> None:
    """The function graph of the seed's second use case, outermost to exporter."""
    t = setup(spec)
    hfd = heap_alloc(t.p, PAGE)
    h = import_fd(t.p, t.fd, hfd)
    off = fake_offset(t.p, t.fd, h)
    with t.k.trace() as events:
        t.p.mmap(0, PAGE, RW, SHARED, t.fd, off)
    calls = [e.func for e in events if e.kind == "entry"]
    chain = [
        "drm_gem_mmap",
        "drm_gem_mmap_obj",
        "drm_gem_shmem_mmap",
        "dma_buf_mmap",
        "system_heap_mmap",
        "remap_pfn_range",
    ]
    positions = [calls.index(name) for name in chain]
    assert positions == sorted(positions)


def test_vgem_exists_only_on_the_modern_specs() -> None:
    """The node is registered for specs with dma_buf_export(exp_info) (4.1+)."""
    for spec in ("rfc-2012", "v3.4", "v3.5"):
        assert "vgem" not in Kernel(spec).drivers
    for spec in SPECS:
        assert CARD in Kernel(spec).chrdevs


def test_reopening_the_drm_fd_through_proc_gives_it_a_drm_file_of_its_own() -> None:
    """The syscall fuzzer's find: open("/proc/self/fd/N") of the card runs drm_open on
    the *new* file (do_dentry_open), so the first fd keeps its drm_file and its handles,
    and the import it holds is released with it at exit."""
    k = Kernel("v6.12")
    p = k.spawn()
    card = p.open("/dev/dri/card0", os.O_RDWR)
    buf = EXPORTERS["udmabuf"].make_fd(p, 4096, os.O_RDWR)
    prime = DrmPrimeHandle(fd=buf)
    p.ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, prime)
    again = p.open(f"/proc/self/fd/{card}", os.O_RDONLY)
    first, second = p.file(card).private_data, p.file(again).private_data
    assert first is not second
    assert list(first.object_idr) == [prime.handle] and not second.object_idr
    p.exit()
    k.run_until_idle()
    assert k.dma_bufs == []
