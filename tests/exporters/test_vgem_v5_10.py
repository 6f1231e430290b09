"""vgem in 5.10: its own GEM objects, before the shmem helpers (45d9c8dde4cd, 5.15).

vgem_prime_mmap maps the object's shmem file in place of the dma-buf
(``call_mmap(obj->filp)``, then ``vm_file = obj->filp``), which is what the recorded
5.10.223 shows: MAP_PRIVATE works and is private, the page offset is honoured, /proc
maps names ``/drm mm object (deleted)``, and fdinfo's count does not rise per mapping.
The DRM node's own mmap (``vgem_mmap``) restores the vma's flags after drm_gem_mmap:
"our pages are ordinary and not special".
"""

from __future__ import annotations

import errno
import mmap
import os
from types import SimpleNamespace

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.exporters.vgem_gem import DrmVgemGemObject
from dmabuf_sim.mm.pgtable import CACHE_WC, pte_cache_mode
from dmabuf_sim.mm.vma import VM_DONTEXPAND, VM_IO, VM_PFNMAP
from dmabuf_sim.replay import make_buffer
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
    DMA_BUF_SET_NAME,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_MODE_MAP_DUMB,
    DmaBufExportSyncFile,
    DmaBufImportSyncFile,
    DrmModeCreateDumb,
    DrmModeMapDumb,
)

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def setup(pages: int = 3) -> SimpleNamespace:
    k = Kernel("v5.10")
    p = k.spawn("vgem510")
    fd = make_buffer(p, "vgem", pages)  # card and handle stay open, as the probe had them
    return SimpleNamespace(k=k, p=p, fd=fd, dmabuf=p.file(fd).private_data)


def fdinfo_fields(p: object, fd: int) -> dict[str, str]:
    text = p.fdinfo(fd)  # type: ignore[attr-defined]
    return dict(line.split(":\t", 1) for line in text.splitlines())


def test_v510_vgem_is_not_the_shmem_helper() -> None:
    t = setup()
    assert isinstance(t.dmabuf.priv, DrmVgemGemObject)
    assert t.dmabuf.exp_name == "drm"


def test_prime_mmap_maps_the_shmem_file_with_the_offset_honoured() -> None:
    """vm_file becomes obj->filp (maps shows it, ``(deleted)`` as the recording's last
    field); vm_pgoff is the user's: a mapping at page 1 starts with page 1's bytes."""
    t = setup()
    p = t.p
    a = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, t.fd, 0)
    p.write_memory(a + PAGE, b"page one")
    b = p.mmap(0, 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, t.fd, PAGE)
    assert p.read_memory(b, 8) == b"page one"
    vma = p.mm.vma_lookup(b)
    assert vma.vm_file is t.dmabuf.priv.filp and vma.vm_pgoff == 1
    assert not vma.vm_flags & (VM_PFNMAP | VM_IO) and vma.vm_flags & VM_DONTEXPAND
    assert pte_cache_mode(p.mm.pgtable.get(b // PAGE)) == CACHE_WC
    line = next(x for x in p.maps().splitlines() if x.startswith(f"{b:08x}-"))
    assert line.endswith(" /drm mm object (deleted)")


def test_map_private_works_and_is_private() -> None:
    """A shmem MAP_PRIVATE mapping: writes COW into private pages (6.1.192 refuses it)."""
    t = setup(1)
    p = t.p
    shared = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, t.fd, 0)
    p.write_memory(shared, b"shared")
    private = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE, t.fd, 0)
    assert p.read_memory(private, 6) == b"shared"
    p.write_memory(private, b"PRIVAT")
    assert p.read_memory(shared, 6) == b"shared"
    k61 = Kernel("v6.1")
    p61 = k61.spawn("vgem61")
    fd61 = make_buffer(p61, "vgem", 1)
    with pytest.raises(OSError) as ei:
        p61.mmap(0, PAGE, RW, mmap.MAP_PRIVATE, fd61, 0)
    assert ei.value.errno == errno.EINVAL  # drm_gem_shmem_mmap, 39bc27bd6880 in 6.1.y


def test_fdinfo_has_no_ino_and_the_count_ignores_mappings() -> None:
    """5.10's fdinfo: pos, flags, mnt_id (no ino: before 5.14); count = file refs - 1: the
    fd, the export cache and the handle's PRIME entry — a mapping holds the shmem file."""
    t = setup(1)
    p = t.p
    p.ioctl(t.fd, DMA_BUF_SET_NAME, "oracle")
    before = fdinfo_fields(p, t.fd)
    assert "ino" not in before and before["count"] == "3" and before["name"] == "oracle"
    p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, t.fd, 0)
    p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, t.fd, 0)
    assert fdinfo_fields(p, t.fd)["count"] == "3"
    k = Kernel("latest")
    q = k.spawn("vgem73")
    fd = make_buffer(q, "vgem", 1)
    q.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert fdinfo_fields(q, fd)["count"] == "4" and "ino" in fdinfo_fields(q, fd)


def test_sync_file_ioctls_are_enotty_before_6_0() -> None:
    t = setup(1)
    for cmd, arg in (
        (DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DmaBufExportSyncFile(flags=1)),
        (DMA_BUF_IOCTL_IMPORT_SYNC_FILE, DmaBufImportSyncFile(flags=1, fd=0)),
    ):
        with pytest.raises(OSError) as ei:
            t.p.ioctl(t.fd, cmd, arg)
        assert ei.value.errno == errno.ENOTTY


@pytest.mark.parametrize(
    ("width", "height", "bpp", "pitch", "size"),
    [
        (3, 2, 12, 6, PAGE),  # width * DIV_ROUND_UP(bpp, 8), no alignment
        (1024, 3, 32, 4096, 3 * PAGE),
        (5, 1, 1, 5, PAGE),
        (1 << 27, 1, 32, 1 << 29, 1 << 29),  # u64 maths: no 32-bit wrap as in 6.1/6.12
    ],
)
def test_dumb_pitch_and_size(width: int, height: int, bpp: int, pitch: int, size: int) -> None:
    """vgem_gem_dumb_create: pitch = width * DIV_ROUND_UP(bpp, 8), size the object's."""
    k = Kernel("v5.10")
    p = k.spawn("dumb")
    card = p.open("/dev/dri/card0", os.O_RDWR)
    args = DrmModeCreateDumb(height=height, width=width, bpp=bpp)
    p.ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, args)
    assert (args.pitch, args.size) == (pitch, size)


def test_drm_node_mmap_is_ordinary_pages_that_copy_on_write() -> None:
    """vgem_mmap: drm_gem_mmap then the vma's own flags plus DONTEXPAND|DONTDUMP — no
    VM_PFNMAP, so a private mapping of the node copies on write (no BUG_ON as on 6.1.0)."""
    k = Kernel("v5.10")
    p = k.spawn("node")
    card = p.open("/dev/dri/card0", os.O_RDWR)
    dumb = DrmModeCreateDumb(height=1, width=1024, bpp=32)
    p.ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, dumb)
    off = DrmModeMapDumb(handle=dumb.handle)
    p.ioctl(card, DRM_IOCTL_MODE_MAP_DUMB, off)
    shared = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, card, off.offset)
    p.write_memory(shared, b"node")
    private = p.mmap(0, PAGE, RW, mmap.MAP_PRIVATE, card, off.offset)
    p.write_memory(private, b"mine")
    assert p.read_memory(shared, 4) == b"node"
    assert not p.mm.vma_lookup(shared).vm_flags & (VM_PFNMAP | VM_IO)
