"""vgem before the GEM shmem helpers: its own objects (drivers/gpu/drm/vgem/vgem_drv.c, 5.10).

Until 45d9c8dde4cd ("drm/vgem: use shmem helpers", 5.15) vgem kept its own
``struct drm_vgem_gem_object``: a shmem-backed GEM object with a ``pages``
array pinned on demand (``pages_pin_count``).  Read in the 5.10 source, and
what the recorded 5.10.223 showed:

* ``vgem_gem_dumb_create``: ``pitch = width * DIV_ROUND_UP(bpp, 8)`` (no
  alignment), ``size = height * pitch`` (``EINVAL`` if 0), an object of
  ``roundup(size, PAGE_SIZE)`` bytes; ``args->size`` is the object's size;
* the DRM node's ``mmap`` is ``vgem_mmap``: ``drm_gem_mmap`` (which sets
  ``VM_IO|VM_PFNMAP|...`` and a write-combined ``vm_page_prot``), then the
  original ``vm_flags | VM_DONTEXPAND | VM_DONTDUMP`` again — "our pages are
  ordinary and not special" — so the vma is not ``VM_PFNMAP`` and private
  mappings copy on write;
* its fault handler hands the core ``vmf->page``: the pinned page, or the
  shmem page cache's page at ``(address - vm_start) >> PAGE_SHIFT`` ("We don't
  use vmf->pgoff since that has the fake offset");
* **the PRIME mmap** (``vgem_prime_mmap``, the driver's ``gem_prime_mmap``)
  maps the shmem file itself: ``call_mmap(obj->filp, vma)``, then the vma's
  file becomes ``obj->filp``.  A dma-buf mapping is therefore an ordinary
  shmem mapping: ``MAP_PRIVATE`` works and is private, ``vm_pgoff`` is
  honoured, ``/proc/PID/maps`` names ``/drm mm object (deleted)``, and the vma
  holds the shmem file, not the dma-buf file (fdinfo's count does not rise);
* imports (``vgem_prime_import_sg_table``) get a shmem object too, whose
  ``pages`` are the importer's view of the sg table, "perma-pinned".

Simplified: 5.10's vgem fills the driver-level ``gem_*`` callbacks of
``struct drm_driver`` that the DRM core consulted when an object had no
``funcs``; here the same functions sit in a :class:`DrmGemObjectFuncs` table
(``mmap`` NULL, so ``drm_gem_mmap_obj`` takes its ``vm_ops`` path).  No
``pages_lock`` mutex; ``drm_clflush_pages`` at pin time is a no-op (the CPU
cache model writes back on its own terms).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from attrs import define, field

from ..device import SgTable
from ..dma_buf.core import IosysMap
from ..errors import KernelError
from ..fs import File, fput, get_file
from ..mm.memory import get_page
from ..mm.page_alloc import PAGE_ALIGN, PAGE_SHIFT
from ..mm.pgtable import CACHE_WC, pgprot_writecombine, vm_get_page_prot
from ..mm.shmem import shmem_read_mapping_page
from ..mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)
from ..mm.vmalloc import vmap, vunmap
from ..trace import kernel_function
from ..uapi import DrmModeCreateDumb
from .drm_gem import (
    DrmDevice,
    DrmFile,
    DrmGemObject,
    DrmGemObjectFuncs,
    drm_gem_handle_create,
    drm_gem_mmap,
    drm_gem_object_init,
    drm_gem_object_put,
    drm_gem_object_release,
    drm_gem_vm_close,
    drm_gem_vm_open,
)
from .drm_prime import drm_prime_gem_destroy
from .vgem import drm_gem_get_pages, drm_gem_put_pages

if TYPE_CHECKING:
    from ..dma_buf.core import DmaBufAttachment

__all__ = [
    "VGEM_GEM_FUNCS",
    "VGEM_GEM_VM_OPS",
    "DrmVgemGemObject",
    "vgem_gem_dumb_create",
    "vgem_gem_fault",
    "vgem_mmap",
    "vgem_prime_import_sg_table",
    "vgem_prime_mmap",
]

_VGEM = "drivers/gpu/drm/vgem/vgem_drv.c"


@define(eq=False, slots=True)
class DrmVgemGemObject(DrmGemObject):
    """``struct drm_vgem_gem_object``: a shmem GEM object and its on-demand page array."""

    pages: list[int] | None = field(default=None, repr=False)
    """pfns of the pinned pages (for imports: the sg table's pages, pinned for good)."""
    pages_pin_count: int = 0
    table: SgTable | None = field(default=None, repr=False)
    """An import's sg table."""


def _vgem(obj: object) -> DrmVgemGemObject:
    assert isinstance(obj, DrmVgemGemObject)
    return obj


@kernel_function("vgem_gem_free_object", file=_VGEM)
def vgem_gem_free_object(obj: DrmGemObject) -> None:
    bo = _vgem(obj)
    if bo.import_attach is not None:
        drm_prime_gem_destroy(bo, bo.table)
        bo.table = None
    elif bo.pages is not None and bo.pages_pin_count:
        bo.kernel.warn("vgem_gem_free_object", "pages still pinned")
    bo.pages = None  # kvfree(vgem_obj->pages)
    drm_gem_object_release(bo)


@kernel_function("vgem_gem_fault", file=_VGEM)
def vgem_gem_fault(vmf: VmFault) -> int:
    """The pinned page, or the shmem page at the vma-relative index; never past the object."""
    vma = vmf.vma
    obj = _vgem(vma.vm_private_data)
    # "We don't use vmf->pgoff since that has the fake offset"
    page_offset = (vmf.address - vma.vm_start) >> PAGE_SHIFT
    num_pages = -(-obj.size // (1 << PAGE_SHIFT))
    if page_offset >= num_pages:
        return VM_FAULT_SIGBUS
    kernel = obj.kernel
    if obj.pages is not None:
        page = kernel.mem.pfn_to_page(obj.pages[page_offset])
        get_page(page)
        vmf.page = page
        return 0
    assert obj.filp is not None
    page = shmem_read_mapping_page(obj.filp.f_inode, page_offset)
    get_page(page)  # shmem_read_mapping_page returns the page referenced
    vmf.page = page
    return 0


VGEM_GEM_VM_OPS = VmOperationsStruct(
    fault=vgem_gem_fault, open=drm_gem_vm_open, close=drm_gem_vm_close, owner="vgem"
)
"""``vgem_gem_vm_ops``."""


def _pin_pages(bo: DrmVgemGemObject) -> list[int]:
    """``vgem_pin_pages``: the first pin reads every page in (``drm_gem_get_pages``)."""
    if bo.pages_pin_count == 0:
        bo.pages = drm_gem_get_pages(bo)
    bo.pages_pin_count += 1
    assert bo.pages is not None
    return bo.pages


def _unpin_pages(bo: DrmVgemGemObject) -> None:
    """``vgem_unpin_pages``: the last unpin puts the pages back."""
    bo.pages_pin_count -= 1
    if bo.pages_pin_count == 0 and bo.pages is not None:
        drm_gem_put_pages(bo, bo.pages)
        bo.pages = None


@kernel_function("vgem_prime_pin", file=_VGEM)
def vgem_prime_pin(obj: DrmGemObject) -> int:
    try:
        _pin_pages(_vgem(obj))
    except KernelError as exc:
        return -exc.err
    return 0


@kernel_function("vgem_prime_unpin", file=_VGEM)
def vgem_prime_unpin(obj: DrmGemObject) -> None:
    _unpin_pages(_vgem(obj))


@kernel_function("vgem_prime_get_sg_table", file=_VGEM)
def vgem_prime_get_sg_table(obj: DrmGemObject) -> SgTable:
    bo = _vgem(obj)
    assert bo.pages is not None, "get_sg_table of an unpinned vgem object"
    return SgTable.from_pfns(bo.pages)


@kernel_function("vgem_prime_vmap", file=_VGEM)
def vgem_prime_vmap(obj: DrmGemObject, map: IosysMap) -> int:
    """``vmap(pages, n, 0, pgprot_writecombine(PAGE_KERNEL))`` after a pin (NULL on error)."""
    bo = _vgem(obj)
    try:
        pages = _pin_pages(bo)
    except KernelError:
        return -errno.ENOMEM
    map.vaddr = vmap(bo.kernel, pages, CACHE_WC)
    return 0


@kernel_function("vgem_prime_vunmap", file=_VGEM)
def vgem_prime_vunmap(obj: DrmGemObject, map: IosysMap) -> None:
    if map.vaddr is not None:
        vunmap(map.vaddr)
    _unpin_pages(_vgem(obj))


VGEM_GEM_FUNCS = DrmGemObjectFuncs(
    free=vgem_gem_free_object,
    mmap=None,
    vm_ops=VGEM_GEM_VM_OPS,
    pin=vgem_prime_pin,
    unpin=vgem_prime_unpin,
    get_sg_table=vgem_prime_get_sg_table,
    vmap=vgem_prime_vmap,
    vunmap=vgem_prime_vunmap,
)
"""5.10 vgem's driver-level GEM callbacks, as one table (see the module docstring)."""


@kernel_function("__vgem_gem_create", file=_VGEM)
def __vgem_gem_create(dev: DrmDevice, size: int) -> DrmVgemGemObject:
    """A shmem-backed object of ``roundup(size, PAGE_SIZE)`` bytes (imports too)."""
    obj = DrmVgemGemObject(dev, PAGE_ALIGN(size), funcs=VGEM_GEM_FUNCS)
    drm_gem_object_init(dev, obj, PAGE_ALIGN(size))
    return obj


@kernel_function("vgem_gem_dumb_create", file=_VGEM)
def vgem_gem_dumb_create(file_priv: DrmFile, dev: DrmDevice, args: DrmModeCreateDumb) -> int:
    """``pitch = width * DIV_ROUND_UP(bpp, 8)``, ``size = height * pitch``, both in u64."""
    pitch = args.width * ((args.bpp + 7) // 8)
    size = args.height * pitch
    if size == 0:
        return -errno.EINVAL
    obj = __vgem_gem_create(dev, size)
    handle = drm_gem_handle_create(file_priv, obj)  # the fake offset comes with MAP_DUMB
    if handle < 0:
        drm_gem_object_put(obj)
        return handle
    args.handle = handle
    args.size = obj.size
    args.pitch = pitch & 0xFFFF_FFFF  # a __u32 field
    drm_gem_object_put(obj)  # the handle holds it now
    return 0


@kernel_function("vgem_mmap", file=_VGEM)
def vgem_mmap(file: File, vma: VmAreaStruct) -> int:
    """``drm_gem_mmap``, then the original flags plus DONTEXPAND|DONTDUMP ("our pages are
    ordinary and not special"); the write-combined ``vm_page_prot`` stays."""
    flags = vma.vm_flags
    ret = drm_gem_mmap(file, vma)
    if ret:
        return ret
    vma.vm_flags = flags | VM_DONTEXPAND | VM_DONTDUMP
    return 0


@kernel_function("vgem_prime_mmap", file=_VGEM)
def vgem_prime_mmap(obj: DrmGemObject, vma: VmAreaStruct) -> int:
    """Map the object's shmem file in place of the dma-buf: ``call_mmap(obj->filp)`` and
    the vma's file becomes ``obj->filp`` (``ENODEV`` for an import, which has none of its
    own in later kernels; here an import's object has one too)."""
    if obj.size < vma.vm_end - vma.vm_start:
        return -errno.EINVAL
    filp = obj.filp
    if filp is None:
        return -errno.ENODEV
    assert filp.f_op.mmap is not None
    ret = filp.f_op.mmap(filp, vma)  # call_mmap
    if ret:
        return ret
    old = vma.vm_file
    vma.vm_file = get_file(filp)  # fput(vma->vm_file); vma->vm_file = get_file(obj->filp)
    if old is not None:
        fput(old)
    vma.vm_flags |= VM_DONTEXPAND | VM_DONTDUMP
    vma.vm_page_prot = pgprot_writecombine(vm_get_page_prot(vma.vm_flags))
    return 0


@kernel_function("vgem_prime_import_sg_table", file=_VGEM)
def vgem_prime_import_sg_table(
    dev: DrmDevice, attach: DmaBufAttachment, sgt: SgTable
) -> DrmGemObject:
    """An object (with a shmem file of its own) whose pages are the sg table's, pinned for good.

    Raises :class:`~dmabuf_sim.errors.KernelError` like the ERR_PTR it models.
    """
    obj = __vgem_gem_create(dev, attach.dmabuf.size)
    obj.table = sgt
    obj.pages = [pfn for first, n in sgt.entries for pfn in range(first, first + n)]
    obj.pages_pin_count += 1  # "perma-pinned"
    return obj
