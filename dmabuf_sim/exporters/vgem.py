"""vgem: a GEM driver without hardware, as exporter *and* importer (drivers/gpu/drm/vgem/), §6.4.

``/dev/dri/card0``.  Modern vgem (v6.1 .. latest; since 5.15) is the GEM shmem helpers
(drivers/gpu/drm/drm_gem_shmem_helper.c, modelled here too) with
``map_wc = true`` — "vgem doesn't have any begin/end cpu access ioctls,
therefore must use coherent memory or dma-buf sharing just wont work" — plus
two fence ioctls.  Through the DRM core (:mod:`.drm_gem`, :mod:`.drm_prime`):

* ``MODE_CREATE_DUMB``: shmem object; 6.1/6.12 ``pitch = DIV_ROUND_UP(width * bpp, 8)``
  in 32 bits, ``size = PAGE_ALIGN(pitch * height)`` (so ``width * bpp`` wrapping
  makes a zero-sized object, which has no room for a fake offset: ``ENOSPC``);
  6.19 and later ``drm_mode_size_dumb(dev, args, 0, 0)`` (no pitch alignment).
  ``MODE_MAP_DUMB`` gives the fake offset (``EINVAL`` for imports).
* **mmap of a native object** (DRM fd at the fake offset, or its PRIME dma-buf fd):
  ``drm_gem_shmem_mmap`` pins the pages, sets ``VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP``
  and a write-combined ``vm_page_prot``; the fault handler inserts the pfn of page
  ``(address - vm_start) >> PAGE_SHIFT`` — "We don't use vmf->pgoff since that has
  the fake offset" — so a dma-buf mmap at a non-zero offset still starts at page 0
  of the object (R60's exception).  Past the object: ``SIGBUS``.  COW
  (``MAP_PRIVATE``) mappings: 6.12+ ``EINVAL`` (the 6.9 fix); 6.1 accepts them and
  the first fault hits ``BUG_ON(VM_PFNMAP && is_cow_mapping)`` in ``vmf_insert_pfn``.
* **mmap of an imported object** through the DRM fd — the seed's second use case —
  forwards: ``dma_buf_mmap(obj->dma_buf, vma, 0)`` after clearing
  ``vm_private_data`` (6.5+: ``vm_ops`` too) and dropping the reference
  ``drm_gem_mmap_obj`` took (6.1: before the call; 6.2+: only on success).  The
  vma ends with ``vm_file`` = the dma-buf file, ``vm_pgoff`` = 0, the exporter's
  mmap in charge.  Historical bugs kept per spec: on 6.1 an exporter that sets no
  ``vm_ops`` (the system heap) leaves ``drm_gem_shmem_vm_ops`` with a NULL
  ``vm_private_data`` behind — munmap oopses in ``drm_gem_shmem_vm_close``; and a
  failing exporter mmap drops the object reference twice.
* **Fences**: ``VGEM_FENCE_ATTACH`` adds a fence to the object's resv (= its
  dma-buf's) as WRITE (``VGEM_FENCE_WRITE``) or READ usage and returns an id;
  ``VGEM_FENCE_SIGNAL`` signals it.  Every fence signals by itself 10 s (virtual)
  after attach.  Nothing in vgem's mmap or fault path ever waits for them (R55):
  userspace syncs with ``poll()`` or ``DMA_BUF_IOCTL_SYNC`` on the dma-buf.

Simplified: no madvise/purge (``madv`` stays 0), no shrinker, no huge pages; the
shmem helper's ``pages_pin_count`` (6.10+) is folded into ``pages_use_count``;
the 6.1 ``pages_lock`` mutex is not modelled (6.12+ pins and faults under the
resv lock, which is).  The 6.2, 6.5 and 6.9 fixes are spec behaviours
(``drm_shmem_import_put_on_success``, ``drm_shmem_resv_locking``,
``drm_shmem_rejects_cow``): v6.1 (6.1.192) has the 6.2 and 6.9 ones from 6.1.y.
Before 5.15 (``v5.10``) vgem had GEM objects of its own: :mod:`.vgem_gem`.
"""

from __future__ import annotations

import errno
from functools import partial
from typing import TYPE_CHECKING, Any

from attrs import define, field

from ..device import Device, SgTable
from ..dma_buf.core import DmaBufAttachment, IosysMap
from ..dma_buf.dma_fence import DmaFence, dma_fence_signal
from ..dma_buf.dma_resv import DmaResvUsage, dma_resv_usage_rw
from ..dma_buf.mmap import dma_buf_mmap
from ..errors import KernelError, KernelOops
from ..jiffies import HZ, TICK_NSEC, jiffies
from ..kstate import Key
from ..mm.memory import get_page, put_page, vmf_insert_pfn
from ..mm.mmap import is_cow_mapping
from ..mm.page_alloc import PAGE_ALIGN, PAGE_SHIFT, PAGE_SIZE
from ..mm.pgtable import CACHE_WB, CACHE_WC, pgprot_writecombine, vm_get_page_prot
from ..mm.shmem import shmem_read_mapping_page
from ..mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VM_PFNMAP,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)
from ..mm.vmalloc import KernelMapping, vmap, vunmap
from ..module import Module, register_module_file, request_module
from ..trace import kernel_function
from ..uapi import (
    DRM_COMMAND_BASE,
    DRM_IOCTL_VGEM_FENCE_ATTACH,
    DRM_IOCTL_VGEM_FENCE_SIGNAL,
    VGEM_FENCE_WRITE,
    DrmModeCreateDumb,
    DrmVgemFenceAttach,
    DrmVgemFenceSignal,
)
from .drm_gem import (
    DrmDevice,
    DrmDriver,
    DrmFile,
    DrmGemObject,
    DrmGemObjectFuncs,
    DrmIoctlDesc,
    drm_dev_register,
    drm_dev_unregister,
    drm_gem_create_mmap_offset,
    drm_gem_handle_create,
    drm_gem_object_init,
    drm_gem_object_lookup,
    drm_gem_object_put,
    drm_gem_object_release,
    drm_gem_private_object_init,
    drm_gem_vm_close,
    drm_gem_vm_open,
    drm_mode_size_dumb,
)
from .drm_prime import drm_prime_gem_destroy

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "VGEM_FENCE_TIMEOUT",
    "VGEM_FENCE_TIMEOUT_NS",
    "DrmGemShmemObject",
    "VgemDevice",
    "VgemFile",
    "drm_gem_shmem_fault",
    "drm_gem_shmem_mmap",
]

_SHMEM = "drivers/gpu/drm/drm_gem_shmem_helper.c"
_VGEM = "drivers/gpu/drm/vgem/vgem_drv.c"
_VGEM_FENCE = "drivers/gpu/drm/vgem/vgem_fence.c"
VGEM_FENCE_TIMEOUT = 10 * HZ
"""``VGEM_FENCE_TIMEOUT`` (jiffies): "We force the fence to expire within 10s"."""
VGEM_FENCE_TIMEOUT_NS = VGEM_FENCE_TIMEOUT * TICK_NSEC
_SHMEM_DUMB_PITCH_ALIGN = 0
"""``drm_mode_size_dumb(dev, args, 0, 0)``: 6.19-rc had ``SZ_8``; 4cbae3748fc4 ("drm/gem-shmem:
revert the 8-byte alignment constraint", Ludovic Desroches, drm-misc-fixes for 6.19)
removed it before the release, so no released kernel aligns the pitch."""


# == drm_gem_shmem_helper.c ==============================================================
@define(eq=False, slots=True)
class DrmGemShmemObject(DrmGemObject):
    """``struct drm_gem_shmem_object``: pages pinned while mapped, attached or vmapped."""

    pages: list[int] | None = field(default=None, repr=False)
    """pfns of the pinned shmem pages (``shmem->pages``)."""
    pages_use_count: int = 0
    sgt: SgTable | None = field(default=None, repr=False)
    """For imports: the attachment's sg table mapped at import time."""
    madv: int = 0
    map_wc: bool = False
    vmap_use_count: int = 0
    vaddr: KernelMapping | None = field(default=None, repr=False)


def _u32(value: int) -> int:
    return value & 0xFFFF_FFFF


def _shmem(obj: Any) -> DrmGemShmemObject:
    assert isinstance(obj, DrmGemShmemObject)
    return obj


@kernel_function("drm_gem_get_pages", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_get_pages(obj: DrmGemObject) -> list[int]:
    """Read (allocating) every page of the shmem file and take a reference on each."""
    if obj.filp is None:
        obj.kernel.warn("drm_gem_get_pages", "!obj->filp")
        raise KernelError(errno.EINVAL, "drm_gem_get_pages")
    inode = obj.filp.f_inode
    pfns: list[int] = []
    for index in range(obj.size >> PAGE_SHIFT):
        try:
            page = shmem_read_mapping_page(inode, index)
        except KernelError:
            drm_gem_put_pages(obj, pfns)  # the pages read so far go back
            raise
        get_page(page)
        pfns.append(page.pfn)
    return pfns


@kernel_function("drm_gem_put_pages", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_put_pages(obj: DrmGemObject, pfns: list[int]) -> None:
    kernel = obj.kernel
    for pfn in pfns:
        put_page(kernel, kernel.mem.pfn_to_page(pfn))


@kernel_function("drm_gem_shmem_get_pages", file=_SHMEM)
def drm_gem_shmem_get_pages(shmem: DrmGemShmemObject) -> int:
    """Pin the backing pages (the first user reads them in)."""
    if shmem.import_attach is not None:
        shmem.kernel.warn("drm_gem_shmem_get_pages", "obj->import_attach")
    shmem.pages_use_count += 1
    if shmem.pages_use_count > 1:
        return 0
    try:
        shmem.pages = drm_gem_get_pages(shmem)
    except KernelError as exc:
        shmem.pages_use_count -= 1
        return -exc.err
    return 0


@kernel_function("drm_gem_shmem_put_pages", file=_SHMEM)
def drm_gem_shmem_put_pages(shmem: DrmGemShmemObject) -> None:
    if shmem.pages_use_count == 0:
        shmem.kernel.warn("drm_gem_shmem_put_pages", "!shmem->pages_use_count")
        return
    shmem.pages_use_count -= 1
    if shmem.pages_use_count:
        return
    assert shmem.pages is not None
    drm_gem_put_pages(shmem, shmem.pages)
    shmem.pages = None


@kernel_function("drm_gem_shmem_pin", file=_SHMEM)
def drm_gem_shmem_pin(obj: DrmGemObject) -> int:
    """``funcs->pin`` (PRIME attach): the pages stay while the attachment lives."""
    return drm_gem_shmem_get_pages(_shmem(obj))


@kernel_function("drm_gem_shmem_unpin", file=_SHMEM)
def drm_gem_shmem_unpin(obj: DrmGemObject) -> None:
    drm_gem_shmem_put_pages(_shmem(obj))


@kernel_function("drm_gem_shmem_get_sg_table", file=_SHMEM)
def drm_gem_shmem_get_sg_table(obj: DrmGemObject) -> SgTable:
    """``drm_prime_pages_to_sg`` over the pinned pages (contiguous pages merge)."""
    shmem = _shmem(obj)
    if shmem.import_attach is not None:
        shmem.kernel.warn("drm_gem_shmem_get_sg_table", "obj->import_attach")
    if shmem.pages is None:
        raise KernelOops("drm_gem_shmem_get_sg_table", "NULL shmem->pages (not pinned)")
    return SgTable.from_pfns(shmem.pages)


@kernel_function("drm_gem_shmem_vmap", file=_SHMEM)
def drm_gem_shmem_vmap(obj: DrmGemObject, map: IosysMap) -> int:
    """A kernel mapping of the pinned pages, write-combined when ``map_wc``."""
    shmem = _shmem(obj)
    if shmem.vmap_use_count:
        shmem.vmap_use_count += 1
        map.vaddr = shmem.vaddr
        return 0
    ret = drm_gem_shmem_get_pages(shmem)
    if ret:
        return ret
    assert shmem.pages is not None
    shmem.vaddr = vmap(shmem.kernel, shmem.pages, CACHE_WC if shmem.map_wc else CACHE_WB)
    shmem.vmap_use_count = 1
    map.vaddr = shmem.vaddr
    return 0


@kernel_function("drm_gem_shmem_vunmap", file=_SHMEM)
def drm_gem_shmem_vunmap(obj: DrmGemObject, map: IosysMap) -> None:
    shmem = _shmem(obj)
    if shmem.vmap_use_count == 0:
        shmem.kernel.warn("drm_gem_shmem_vunmap", "!shmem->vmap_use_count")
        return
    shmem.vmap_use_count -= 1
    if shmem.vmap_use_count:
        return
    assert shmem.vaddr is not None
    vunmap(shmem.vaddr)
    shmem.vaddr = None
    drm_gem_shmem_put_pages(shmem)


@kernel_function("drm_gem_shmem_fault", file=_SHMEM)
def drm_gem_shmem_fault(vmf: VmFault) -> int:
    """Insert the pfn of object page ``(address - vm_start) >> PAGE_SHIFT``; never waits.

    The page index ignores ``vm_pgoff`` ("We don't use vmf->pgoff since that has the
    fake offset"), which is also why a PRIME mmap at a non-zero offset maps the
    object from page 0 (R60).  6.12+ holds the resv lock around the lookup and the
    insert; neither version waits for the resv's fences (R55).
    """
    vma = vmf.vma
    shmem = _shmem(vma.vm_private_data)
    num_pages = shmem.size >> PAGE_SHIFT
    # We don't use vmf->pgoff since that has the fake offset
    page_offset = (vmf.address - vma.vm_start) >> PAGE_SHIFT
    resv = shmem.resv if shmem.kernel.spec.drm_shmem_resv_locking else None
    if resv is not None:
        resv.lock()
    try:
        if page_offset >= num_pages or shmem.madv < 0:
            return VM_FAULT_SIGBUS
        if shmem.pages is None:
            shmem.kernel.warn("drm_gem_shmem_fault", "!shmem->pages")
            return VM_FAULT_SIGBUS
        return vmf_insert_pfn(vma, vmf.address, shmem.pages[page_offset])
    finally:
        if resv is not None:
            resv.unlock()


@kernel_function("drm_gem_shmem_vm_open", file=_SHMEM)
def drm_gem_shmem_vm_open(vma: VmAreaStruct) -> None:
    """fork/split: the new vma pins the pages once more and holds an object reference."""
    obj = vma.vm_private_data
    if obj is None:
        _null_deref("drm_gem_shmem_vm_open", vma)
    shmem = _shmem(obj)
    if shmem.import_attach is not None:
        shmem.kernel.warn("drm_gem_shmem_vm_open", "obj->import_attach")
    if shmem.pages_use_count == 0:
        shmem.kernel.warn("drm_gem_shmem_vm_open", "!shmem->pages_use_count")
    else:
        shmem.pages_use_count += 1
    drm_gem_vm_open(vma)


@kernel_function("drm_gem_shmem_vm_close", file=_SHMEM)
def drm_gem_shmem_vm_close(vma: VmAreaStruct) -> None:
    obj = vma.vm_private_data
    if obj is None:
        _null_deref("drm_gem_shmem_vm_close", vma)
    drm_gem_shmem_put_pages(_shmem(obj))
    drm_gem_vm_close(vma)


def _null_deref(func: str, vma: VmAreaStruct) -> None:
    """to_drm_gem_shmem_obj(NULL) → the pages lock at a NULL-based address: an oops.

    Reached on 6.1 only: the import forwarding cleared ``vm_private_data`` but left
    ``drm_gem_shmem_vm_ops`` for exporters that install no ``vm_ops`` of their own
    (fixed in 6.5 by resetting ``vm_ops`` before ``dma_buf_mmap``).
    """
    vma.kernel.tainted = True
    raise KernelOops(
        func,
        f"NULL pointer dereference: {vma.trace_name()} has drm_gem_shmem_vm_ops but"
        " vm_private_data == NULL (the forwarded import left vgem's vm_ops behind)",
    )


DRM_GEM_SHMEM_VM_OPS = VmOperationsStruct(
    fault=drm_gem_shmem_fault,
    open=drm_gem_shmem_vm_open,
    close=drm_gem_shmem_vm_close,
    owner="drm_gem_shmem",
)
"""``drm_gem_shmem_vm_ops``."""


@kernel_function("drm_gem_shmem_mmap", file=_SHMEM)
def drm_gem_shmem_mmap(obj: DrmGemObject, vma: VmAreaStruct) -> int:
    """``funcs->mmap``: forward an import with ``dma_buf_mmap``; else pin and map WC lazily."""
    shmem = _shmem(obj)
    kernel = shmem.kernel
    if shmem.import_attach is not None:
        assert shmem.dma_buf is not None
        if not kernel.spec.drm_shmem_import_put_on_success:
            # 6.1: "Drop the reference drm_gem_mmap_obj() acquired." — before the call,
            # so a failing exporter mmap drops it a second time in drm_gem_mmap_obj.
            drm_gem_object_put(shmem)
            vma.vm_private_data = None
            return dma_buf_mmap(shmem.dma_buf, vma, 0)
        # "Reset both vm_ops and vm_private_data, so we don't end up with vm_ops pointing
        # to our implementation if the dma-buf backend doesn't set those fields."
        vma.vm_private_data = None
        if kernel.spec.drm_shmem_resv_locking:
            vma.vm_ops = None
        ret = dma_buf_mmap(shmem.dma_buf, vma, 0)
        if not ret:
            drm_gem_object_put(shmem)  # only on success since 6.2
        return ret
    if kernel.spec.drm_shmem_rejects_cow and is_cow_mapping(vma.vm_flags):
        return -errno.EINVAL
    # 6.5+ pins under the resv lock (6.1 used the shmem pages_lock, not modelled)
    resv = shmem.resv if kernel.spec.drm_shmem_resv_locking else None
    if resv is not None:
        resv.lock()
    try:
        ret = drm_gem_shmem_get_pages(shmem)
    finally:
        if resv is not None:
            resv.unlock()
    if ret:
        return ret
    vma.vm_flags |= VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP
    vma.vm_page_prot = vm_get_page_prot(vma.vm_flags)
    if shmem.map_wc:
        vma.vm_page_prot = pgprot_writecombine(vma.vm_page_prot)
    return 0


@kernel_function("drm_gem_shmem_free", file=_SHMEM)
def drm_gem_shmem_free(obj: DrmGemObject) -> None:
    """``funcs->free``: undo the import, or unpin; then release the shmem file and offset."""
    shmem = _shmem(obj)
    if shmem.import_attach is not None:
        drm_prime_gem_destroy(shmem, shmem.sgt)
        shmem.sgt = None
    else:
        if shmem.vmap_use_count:
            shmem.kernel.warn("drm_gem_shmem_free", "shmem->vmap_use_count")
        if shmem.pages is not None:
            drm_gem_shmem_put_pages(shmem)
        if shmem.pages_use_count:
            shmem.kernel.warn("drm_gem_shmem_free", "shmem->pages_use_count")
    drm_gem_object_release(shmem)


DRM_GEM_SHMEM_FUNCS = DrmGemObjectFuncs(
    free=drm_gem_shmem_free,
    mmap=drm_gem_shmem_mmap,
    vm_ops=DRM_GEM_SHMEM_VM_OPS,
    pin=drm_gem_shmem_pin,
    unpin=drm_gem_shmem_unpin,
    get_sg_table=drm_gem_shmem_get_sg_table,
    vmap=drm_gem_shmem_vmap,
    vunmap=drm_gem_shmem_vunmap,
)
"""``drm_gem_shmem_funcs`` (what ``drm_gem_shmem_object_*`` wrap)."""


@kernel_function("__drm_gem_shmem_create", file=_SHMEM)
def __drm_gem_shmem_create(dev: DrmDevice, size: int, private: bool) -> DrmGemShmemObject:
    """A shmem object (or, ``private``, one without storage for an import) with its fake
    offset already allocated; raises KernelError."""
    size = PAGE_ALIGN(size)
    create = dev.driver.gem_create_object
    obj = create(dev, size) if create is not None else DrmGemShmemObject(dev, size)
    shmem = _shmem(obj)
    if shmem.funcs is None:
        shmem.funcs = DRM_GEM_SHMEM_FUNCS
    if private:
        drm_gem_private_object_init(dev, shmem, size)
        shmem.map_wc = False  # "dma-buf mappings use always writecombine"
    else:
        drm_gem_object_init(dev, shmem, size)
    ret = drm_gem_create_mmap_offset(shmem)
    if ret:
        drm_gem_object_release(shmem)
        raise KernelError(-ret, "__drm_gem_shmem_create")
    return shmem


@kernel_function("drm_gem_shmem_create_with_handle", file=_SHMEM)
def drm_gem_shmem_create_with_handle(file_priv: DrmFile, dev: DrmDevice, size: int) -> int:
    """A new object and a handle to it; returns the handle or ``-errno``."""
    try:
        shmem = __drm_gem_shmem_create(dev, size, False)
    except KernelError as exc:
        return -exc.err
    handle = drm_gem_handle_create(file_priv, shmem)
    # "drop reference from allocate - handle holds it now."
    drm_gem_object_put(shmem)
    return handle


@kernel_function("drm_gem_shmem_dumb_create", file=_SHMEM)
def drm_gem_shmem_dumb_create(file_priv: DrmFile, dev: DrmDevice, args: DrmModeCreateDumb) -> int:
    """Pitch and size per the kernel in force, then a shmem object and its handle."""
    if dev.kernel.spec.drm_mode_size_dumb:
        ret = drm_mode_size_dumb(dev, args, _SHMEM_DUMB_PITCH_ALIGN, 0)
        if ret:
            return ret
    else:
        # all in u32, as in C: width * bpp and pitch * height can wrap
        min_pitch = _u32(_u32(args.width * args.bpp) + 7) // 8  # DIV_ROUND_UP
        if not args.pitch or not args.size:
            args.pitch = min_pitch
            args.size = _u32(_u32(args.pitch * args.height) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    handle = drm_gem_shmem_create_with_handle(file_priv, dev, args.size)
    if handle < 0:
        return handle
    args.handle = handle
    return 0


@kernel_function("drm_gem_shmem_prime_import_sg_table", file=_SHMEM)
def drm_gem_shmem_prime_import_sg_table(
    dev: DrmDevice, attach: DmaBufAttachment, sgt: SgTable
) -> DrmGemObject:
    """``gem_prime_import_sg_table``: a storage-less object remembering the sg table."""
    size = PAGE_ALIGN(attach.dmabuf.size)
    shmem = __drm_gem_shmem_create(dev, size, True)
    shmem.sgt = sgt
    return shmem


# == vgem_fence.c ===========================================================================
@define(eq=False, slots=True)
class VgemFile:
    """``struct vgem_file``: the file's fences by id (``fence_idr``, ids from 1, never reused)."""

    fence_idr: dict[int, DmaFence | None] = field(factory=dict, repr=False)


def _vfile(file_priv: DrmFile) -> VgemFile:
    vfile = file_priv.driver_priv
    assert isinstance(vfile, VgemFile)
    return vfile


@kernel_function("vgem_fence_timeout", file=_VGEM_FENCE)
def vgem_fence_timeout(fence: DmaFence) -> None:
    """The 10 s timer: signal the fence if userspace has not."""
    if not fence.signaled:
        dma_fence_signal(fence)


@kernel_function("vgem_fence_create", file=_VGEM_FENCE)
def vgem_fence_create(dev: DrmDevice, vfile: VgemFile, flags: int) -> DmaFence:
    """A fence on a fresh context (``dma_fence_context_alloc(1)``) that expires in 10 s.

    Only VGEM_FENCE_SIGNAL, the file's release or the timer
    (``mod_timer(&fence->timer, jiffies + VGEM_FENCE_TIMEOUT)``) signal it; a waiter
    sleeps until one of them does.
    """
    kernel = dev.kernel
    vgem = dev.dev_private
    assert isinstance(vgem, VgemDevice)
    vgem.fence_contexts += 1
    fence = DmaFence(kernel, f"vgem:{vgem.fence_contexts}", 1)
    # "We force the fence to expire within 10s to prevent driver hangs"
    fence.timer = kernel.schedule(
        (jiffies(kernel) + VGEM_FENCE_TIMEOUT) * TICK_NSEC,
        partial(vgem_fence_timeout, fence),
        name=f"vgem_fence_timeout({fence.trace_name()})",
    )
    return fence


@kernel_function("vgem_fence_attach_ioctl", file=_VGEM_FENCE)
def vgem_fence_attach_ioctl(dev: DrmDevice, arg: DrmVgemFenceAttach, file_priv: DrmFile) -> int:
    """``VGEM_FENCE_ATTACH``: a WRITE or READ fence on the object's resv; its id out.

    ``EINVAL`` for unknown flags or a non-zero pad, ``ENOENT`` for an unknown handle,
    ``EBUSY`` if an unsignalled fence conflicts (any fence for a write, a writer for a
    read: ``dma_resv_usage_rw``).
    """
    if arg.flags & ~VGEM_FENCE_WRITE:
        return -errno.EINVAL
    if arg.pad:
        return -errno.EINVAL
    obj = drm_gem_object_lookup(file_priv, arg.handle)
    if obj is None:
        return -errno.ENOENT
    try:
        vfile = _vfile(file_priv)
        fence = vgem_fence_create(dev, vfile, arg.flags)
        resv = obj.resv
        assert resv is not None
        write = bool(arg.flags & VGEM_FENCE_WRITE)
        # "Check for a conflicting fence"
        if not resv.test_signaled(dma_resv_usage_rw(write)):
            dma_fence_signal(fence)
            return -errno.EBUSY
        # "Expose the fence via the dma-buf"
        resv.lock()
        try:
            resv.add_fence(fence, DmaResvUsage.WRITE if write else DmaResvUsage.READ)
        finally:
            resv.unlock()
        # "Record the fence in our idr for later signaling"
        fence_id = max(vfile.fence_idr, default=0) + 1
        vfile.fence_idr[fence_id] = fence
        arg.out_fence = fence_id
        return 0
    finally:
        drm_gem_object_put(obj)


@kernel_function("vgem_fence_signal_ioctl", file=_VGEM_FENCE)
def vgem_fence_signal_ioctl(dev: DrmDevice, arg: DrmVgemFenceSignal, file_priv: DrmFile) -> int:
    """``VGEM_FENCE_SIGNAL``: ``ENOENT`` unknown or already consumed id; ``ETIMEDOUT`` if it
    had already expired (it is consumed either way)."""
    if arg.flags:
        return -errno.EINVAL
    vfile = _vfile(file_priv)
    if arg.fence not in vfile.fence_idr:
        return -errno.ENOENT  # idr_replace: ERR_PTR(-ENOENT)
    fence, vfile.fence_idr[arg.fence] = vfile.fence_idr[arg.fence], None
    if fence is None:
        return -errno.ENOENT
    ret = -errno.ETIMEDOUT if fence.signaled else 0
    if not fence.signaled:
        dma_fence_signal(fence)
    return ret


# == vgem_drv.c =============================================================================
@kernel_function("vgem_open", file=_VGEM)
def vgem_open(dev: DrmDevice, file_priv: DrmFile) -> int:
    file_priv.driver_priv = VgemFile()  # vgem_fence_open
    return 0


@kernel_function("vgem_postclose", file=_VGEM)
def vgem_postclose(dev: DrmDevice, file_priv: DrmFile) -> None:
    """``vgem_fence_close``: every fence the file still owns is signalled."""
    vfile = _vfile(file_priv)
    for _fence_id, fence in sorted(vfile.fence_idr.items()):
        if fence is not None and not fence.signaled:
            dma_fence_signal(fence)
    vfile.fence_idr.clear()


@kernel_function("vgem_gem_create_object", file=_VGEM)
def vgem_gem_create_object(dev: DrmDevice, size: int) -> DrmGemObject:
    obj = DrmGemShmemObject(dev, size)
    # "vgem doesn't have any begin/end cpu access ioctls, therefore must use coherent
    # memory or dma-buf sharing just wont work."
    obj.map_wc = True
    return obj


def _vgem_ioctls() -> list[DrmIoctlDesc | None]:
    """``vgem_ioctls[]`` laid out by ``DRM_IOCTL_DEF_DRV``: index 0 is a hole."""
    table: list[DrmIoctlDesc | None] = [None, None, None]
    for desc in (
        DrmIoctlDesc(
            DRM_IOCTL_VGEM_FENCE_ATTACH, vgem_fence_attach_ioctl, DrmVgemFenceAttach, "ATTACH"
        ),
        DrmIoctlDesc(
            DRM_IOCTL_VGEM_FENCE_SIGNAL, vgem_fence_signal_ioctl, DrmVgemFenceSignal, "SIGNAL"
        ),
    ):
        table[(desc.cmd & 0xFF) - DRM_COMMAND_BASE] = desc
    return table


@define(eq=False, slots=True)
class VgemDevice:
    """The vgem module: its ``struct device`` and ``drm_device``."""

    kernel: Kernel = field(repr=False)
    platform: Device = field(repr=False)
    """The platform (6.17+: faux) device "vgem" that imports attach through."""
    drm: DrmDevice = field(init=False, repr=False)
    fence_contexts: int = 0

    PATH = "/dev/dri/card0"

    @classmethod
    def register(cls, kernel: Kernel) -> VgemDevice:
        """Install vgem.ko and load it (``modprobe vgem``): the device and ``/dev/dri/card0``.

        The module can be unloaded (``Process.delete_module("vgem", O_NONBLOCK)``) once no
        DRM fd and no exported dma-buf holds it, and loaded again with
        :func:`~dmabuf_sim.module.request_module`.
        """
        register_module_file(kernel, "vgem", init=vgem_module_init, exit=vgem_exit)
        ret = request_module(kernel, "vgem")
        if ret:
            raise KernelError(-ret, "request_module")
        return kernel.drivers[VGEM]

    def trace_name(self) -> str:
        return "vgem"


@kernel_function("vgem_init", file=_VGEM)
def vgem_init(kernel: Kernel, owner: Module | None = None) -> VgemDevice:
    """Register the device; its GEM objects are shmem-helper objects since 5.15
    (``vgem_shmem_helpers``), vgem's own before (:mod:`.vgem_gem`); the fops are owned by
    ``owner`` (the vgem module)."""
    vgem = VgemDevice(kernel, Device(kernel, "vgem"))
    if kernel.spec.vgem_shmem_helpers:
        driver = DrmDriver(
            name="vgem",
            desc="Virtual GEM provider",
            ioctls=_vgem_ioctls(),
            open=vgem_open,
            postclose=vgem_postclose,
            dumb_create=drm_gem_shmem_dumb_create,
            gem_create_object=vgem_gem_create_object,
            gem_prime_import_sg_table=drm_gem_shmem_prime_import_sg_table,
            owner=owner,
        )
    else:
        from .vgem_gem import (  # noqa: PLC0415  # cycle: vgem_gem.py uses the helpers here
            vgem_gem_dumb_create,
            vgem_mmap,
            vgem_prime_import_sg_table,
            vgem_prime_mmap,
        )

        driver = DrmDriver(
            name="vgem",
            desc="Virtual GEM provider",
            ioctls=_vgem_ioctls(),
            open=vgem_open,
            postclose=vgem_postclose,
            dumb_create=vgem_gem_dumb_create,
            gem_prime_import_sg_table=vgem_prime_import_sg_table,
            gem_prime_mmap=vgem_prime_mmap,
            fops_mmap=vgem_mmap,
            owner=owner,
        )
    vgem.drm = drm_dev_register(kernel, driver, vgem.platform, VgemDevice.PATH)
    vgem.drm.dev_private = vgem
    return vgem


VGEM: Key[VgemDevice] = Key("vgem")
"""The vgem device of a kernel, while the vgem module is loaded."""


def vgem_module_init(mod: Module) -> int:
    """``module_init(vgem_init)``: the driver's state hangs off its module."""
    vgem = vgem_init(mod.kernel, owner=mod)
    mod.private = vgem
    mod.kernel.drivers.add(VGEM, vgem)
    return 0


@kernel_function("vgem_exit", file=_VGEM)
def vgem_exit(mod: Module) -> None:
    """``module_exit(vgem_exit)``: unregister the DRM device; ``/dev/dri/card0`` goes."""
    vgem = mod.private
    assert isinstance(vgem, VgemDevice)
    drm_dev_unregister(vgem.drm)
    mod.kernel.drivers.remove(VGEM, vgem)


__all__ += ["DRM_GEM_SHMEM_FUNCS", "DRM_GEM_SHMEM_VM_OPS", "VGEM", "vgem_exit", "vgem_init"]
