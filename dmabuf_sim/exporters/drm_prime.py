"""DRM PRIME: GEM handles to dma-buf fds and back (drivers/gpu/drm/drm_prime.c), §6.5.

**Export** (``PRIME_HANDLE_TO_FD``): flags other than ``DRM_CLOEXEC|DRM_RDWR``
are ``EINVAL``; the flags become the dma-buf file's open flags, so an export
without ``DRM_RDWR`` is ``O_RDONLY`` and cannot be mapped
``PROT_WRITE|MAP_SHARED`` (``EACCES``, R7).  The object caches its dma-buf
(``obj->dma_buf``): exporting again — from any file, with any flags — returns
an fd for the **same** dma-buf (the first export's mode sticks).  Exporting an
*imported* object hands back the original dma-buf.  The dma-buf:

* is exported with ``exp_name`` ``"drm"`` (``KBUILD_MODNAME`` of drm_prime.c, "white
  lie for debug"), the object's size and the object's ``resv`` (so fences on the
  object are the dma-buf's implicit fences);
* holds a GEM reference, dropped by ``release`` (``drm_gem_dmabuf_release``);
* has its file's ``f_mapping`` pointed at the DRM device's anon inode, so its
  mappings are tracked where the DRM node's are;
* ``mmap`` = ``drm_gem_dmabuf_mmap`` → ``drm_gem_prime_mmap``: **adds the fake
  offset to** ``vm_pgoff``, installs ``funcs->vm_ops``, takes a GEM reference and
  calls the object's ``funcs->mmap``;
* ``attach`` pins the object, ``map_dma_buf`` returns its pages' sg table mapped
  for the attachment's device with ``DMA_ATTR_SKIP_CPU_SYNC`` (no cache
  maintenance: PRIME assumes coherent, write-combined backing storage).

**Import** (``PRIME_FD_TO_HANDLE``): a dma-buf this file already has a handle
for gives that handle back; one exported by this device gives a new handle to
the **original** GEM object (self-import); a foreign one is attached to the
driver's device and mapped (``DMA_BIDIRECTIONAL``) at once, and a new object
wraps it, holding a dma-buf reference, the attachment and the sg table.

Simplified: no ``drm_gem_prime_handle_to_dmabuf`` export API for kernel users,
no dynamic attachments, no fallback ``drm_gem_prime_mmap`` path for objects
without ``funcs->mmap`` (the fake ``drm_file``); the dma-buf holds no
``drm_device`` reference.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..device import DMA_BIDIRECTIONAL, DMA_NONE, Device, DmaDataDirection, SgTable
from ..dma_buf.access import (
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_map_attachment_unlocked,
    dma_buf_unmap_attachment_unlocked,
)
from ..dma_buf.core import (
    DmaBuf,
    DmaBufAttachment,
    DmaBufExportInfo,
    DmaBufOps,
    IosysMap,
    dma_buf_export,
    dma_buf_get,
    dma_buf_put,
    get_dma_buf,
)
from ..errors import KernelError
from ..fs_file import fd_install, get_unused_fd_flags, put_unused_fd
from ..mm.vma import VmAreaStruct
from ..trace import kernel_function
from ..uapi import DRM_CLOEXEC, DRM_RDWR, DrmPrimeHandle
from .drm_gem import (
    DrmDevice,
    DrmFile,
    DrmGemObject,
    DrmPrimeFilePrivate,
    drm_gem_handle_create_tail,
    drm_gem_object_get,
    drm_gem_object_lookup,
    drm_gem_object_put,
)

if TYPE_CHECKING:
    from ..process import Process

__all__ = [
    "DRM_GEM_PRIME_DMABUF_OPS",
    "DrmGemPrimeDmaBufOps",
    "drm_gem_is_prime_exported_dma_buf",
    "drm_gem_prime_export",
    "drm_gem_prime_fd_to_handle",
    "drm_gem_prime_handle_to_fd",
    "drm_gem_prime_import",
    "drm_gem_prime_import_dev",
    "drm_gem_prime_mmap",
    "drm_prime_fd_to_handle_ioctl",
    "drm_prime_gem_destroy",
    "drm_prime_handle_to_fd_ioctl",
]


# -- the per-file cache ------------------------------------------------------------------
@kernel_function("drm_prime_add_buf_handle", file="drivers/gpu/drm/drm_prime.c")
def drm_prime_add_buf_handle(prime: DrmPrimeFilePrivate, dma_buf: DmaBuf, handle: int) -> int:
    """Remember handle <-> dma-buf for this file; the entry holds a dma-buf reference."""
    get_dma_buf(dma_buf)
    prime.handles[handle] = dma_buf
    prime.dmabufs[dma_buf] = handle
    return 0


def drm_prime_lookup_buf_handle(prime: DrmPrimeFilePrivate, dma_buf: DmaBuf) -> int | None:
    return prime.dmabufs.get(dma_buf)


def drm_prime_lookup_buf_by_handle(prime: DrmPrimeFilePrivate, handle: int) -> DmaBuf | None:
    return prime.handles.get(handle)


@kernel_function("drm_prime_remove_buf_handle", file="drivers/gpu/drm/drm_prime.c")
def drm_prime_remove_buf_handle(prime: DrmPrimeFilePrivate, handle: int) -> None:
    dma_buf = prime.handles.pop(handle, None)
    if dma_buf is not None:
        del prime.dmabufs[dma_buf]
        dma_buf_put(dma_buf)


# -- dma_buf_ops of a GEM export ------------------------------------------------------------
def _obj(dma_buf: DmaBuf) -> DrmGemObject:
    obj = dma_buf.priv
    assert isinstance(obj, DrmGemObject)
    return obj


class DrmGemPrimeDmaBufOps(DmaBufOps):
    """``drm_gem_prime_dmabuf_ops``: every GEM driver's exports share this table."""

    exp_name = "drm"

    @kernel_function("drm_gem_map_attach", file="drivers/gpu/drm/drm_prime.c")
    def attach(self, dma_buf: DmaBuf, attach: DmaBufAttachment) -> int:
        """Pin the object's backing storage for the attachment's lifetime."""
        funcs = _obj(dma_buf).ops()
        if funcs.get_sg_table is None:
            return -errno.ENOSYS
        if funcs.pin is None:
            return 0
        return funcs.pin(_obj(dma_buf))

    @kernel_function("drm_gem_map_detach", file="drivers/gpu/drm/drm_prime.c")
    def detach(self, dma_buf: DmaBuf, attach: DmaBufAttachment) -> None:
        funcs = _obj(dma_buf).ops()
        if funcs.unpin is not None:
            funcs.unpin(_obj(dma_buf))

    @kernel_function("drm_gem_map_dma_buf", file="drivers/gpu/drm/drm_prime.c")
    def map_dma_buf(self, attach: DmaBufAttachment, direction: DmaDataDirection) -> SgTable:
        """The pages' sg table mapped for ``attach->dev`` with ``DMA_ATTR_SKIP_CPU_SYNC``."""
        obj = _obj(attach.dmabuf)
        if direction == DMA_NONE:
            obj.kernel.warn("drm_gem_map_dma_buf", "dir == DMA_NONE")
            raise KernelError(errno.EINVAL, "drm_gem_map_dma_buf")
        get_sg_table = obj.ops().get_sg_table
        if get_sg_table is None:
            obj.kernel.warn("drm_gem_map_dma_buf", "!obj->funcs->get_sg_table")
            raise KernelError(errno.ENOSYS, "drm_gem_map_dma_buf")
        sgt = get_sg_table(obj)
        # dma_map_sgtable(attach->dev, sgt, dir, DMA_ATTR_SKIP_CPU_SYNC): the device gets
        # DMA addresses but the CPU cache is neither cleaned nor invalidated.
        sgt.mapped_for = attach.dev
        sgt.direction = direction
        return sgt

    @kernel_function("drm_gem_unmap_dma_buf", file="drivers/gpu/drm/drm_prime.c")
    def unmap_dma_buf(
        self, attach: DmaBufAttachment, sgt: SgTable, direction: DmaDataDirection
    ) -> None:
        # dma_unmap_sgtable(..., DMA_ATTR_SKIP_CPU_SYNC): no invalidate either
        sgt.mapped_for = None
        sgt.direction = None

    @kernel_function("drm_gem_dmabuf_release", file="drivers/gpu/drm/drm_prime.c")
    def release(self, dma_buf: DmaBuf) -> None:
        """Drop the reference on the object the export held."""
        drm_gem_object_put(_obj(dma_buf))

    @kernel_function("drm_gem_dmabuf_mmap", file="drivers/gpu/drm/drm_prime.c")
    def mmap(self, dma_buf: DmaBuf, vma: VmAreaStruct) -> int:
        """Map a PRIME buffer the way the DRM node maps the object: ``drm_gem_prime_mmap``,
        or the driver's ``gem_prime_mmap`` where it has one (5.10's vgem)."""
        obj = _obj(dma_buf)
        gem_prime_mmap = obj.dev.driver.gem_prime_mmap
        if gem_prime_mmap is not None:
            return gem_prime_mmap(obj, vma)
        return drm_gem_prime_mmap(obj, vma)

    @kernel_function("drm_gem_dmabuf_vmap", file="drivers/gpu/drm/drm_prime.c")
    def vmap(self, dma_buf: DmaBuf, map: IosysMap) -> int:
        vmap = _obj(dma_buf).ops().vmap
        if vmap is None:
            return -errno.EOPNOTSUPP  # drm_gem_vmap
        return vmap(_obj(dma_buf), map)

    @kernel_function("drm_gem_dmabuf_vunmap", file="drivers/gpu/drm/drm_prime.c")
    def vunmap(self, dma_buf: DmaBuf, map: IosysMap) -> None:
        vunmap = _obj(dma_buf).ops().vunmap
        if vunmap is not None and map.vaddr is not None:
            vunmap(_obj(dma_buf), map)
        map.vaddr = None


DRM_GEM_PRIME_DMABUF_OPS = DrmGemPrimeDmaBufOps()
"""The one ``drm_gem_prime_dmabuf_ops`` (its identity is how self-imports are recognised)."""


@kernel_function("drm_gem_prime_mmap", file="drivers/gpu/drm/drm_prime.c")
def drm_gem_prime_mmap(obj: DrmGemObject, vma: VmAreaStruct) -> int:
    """Add the fake offset to ``vm_pgoff``, then the object's own mmap with a GEM reference.

    The vma keeps ``vm_file`` = the dma-buf file; ``vm_pgoff`` becomes
    ``fake offset + the user's page offset``, which is where the vma is indexed in
    the DRM anon inode's ``i_mmap``.
    """
    # "Add the fake offset"
    vma.vm_pgoff += obj.vma_node.start
    funcs = obj.ops()
    if funcs.mmap is None:
        raise NotImplementedError(
            "drm_gem_prime_mmap without funcs->mmap (the fake drm_file path) is not modelled"
        )
    vma.vm_ops = funcs.vm_ops
    drm_gem_object_get(obj)
    ret = funcs.mmap(obj, vma)
    if ret:
        drm_gem_object_put(obj)
        return ret
    vma.vm_private_data = obj
    return 0


# -- export ---------------------------------------------------------------------------------
@kernel_function("drm_gem_dmabuf_export", file="drivers/gpu/drm/drm_prime.c")
def drm_gem_dmabuf_export(dev: DrmDevice, exp_info: DmaBufExportInfo) -> DmaBuf:
    """``dma_buf_export`` plus a GEM reference and the device's address_space."""
    obj = exp_info.priv
    assert isinstance(obj, DrmGemObject)
    dma_buf = dma_buf_export(dev.kernel, exp_info)  # KernelError propagates (ERR_PTR)
    drm_gem_object_get(obj)
    assert dma_buf.file is not None
    dma_buf.file.f_mapping = obj.dev.anon_inode.i_mapping
    return dma_buf


@kernel_function("drm_gem_prime_export", file="drivers/gpu/drm/drm_prime.c")
def drm_gem_prime_export(obj: DrmGemObject, flags: int) -> DmaBuf:
    """The default ``funcs->export``: a dma-buf over the object, sharing its resv."""
    info = DmaBufExportInfo(
        ops=DRM_GEM_PRIME_DMABUF_OPS,
        size=obj.size,
        priv=obj,
        flags=flags,
        exp_name="drm",  # KBUILD_MODNAME, "white lie for debug"
        owner=obj.dev.driver.owner,  # dev->driver->fops->owner
        resv=obj.resv,
    )
    return drm_gem_dmabuf_export(obj.dev, info)


def _export_and_register_object(dev: DrmDevice, obj: DrmGemObject, flags: int) -> DmaBuf:
    # "prevent races with concurrent gem_close"
    if obj.handle_count == 0:
        raise KernelError(errno.ENOENT, "export_and_register_object")
    export = obj.ops().export or drm_gem_prime_export
    dmabuf = export(obj, flags)
    # the export cache: one more reference, dropped when the last handle goes
    obj.dma_buf = dmabuf
    get_dma_buf(dmabuf)
    return dmabuf


@kernel_function("drm_gem_prime_handle_to_fd", file="drivers/gpu/drm/drm_prime.c")
def drm_gem_prime_handle_to_fd(
    dev: DrmDevice, file_priv: DrmFile, handle: int, flags: int
) -> tuple[int, int]:
    """``(0, fd)`` or ``(-errno, -1)``: the fd is reserved first, the buffer found or made."""
    task = _current(dev)
    fd = get_unused_fd_flags(task, flags)
    if fd < 0:
        return fd, -1
    obj = drm_gem_object_lookup(file_priv, handle)
    if obj is None:
        put_unused_fd(task, fd)
        return -errno.ENOENT, -1
    try:
        dmabuf = drm_prime_lookup_buf_by_handle(file_priv.prime, handle)
        if dmabuf is not None:
            get_dma_buf(dmabuf)  # this file exported (or imported) it before
        else:
            if obj.import_attach is not None:
                # "re-export the original imported object"
                dmabuf = obj.import_attach.dmabuf
                get_dma_buf(dmabuf)
            elif obj.dma_buf is not None:
                dmabuf = obj.dma_buf  # exported before: the SAME dma-buf, first flags
                get_dma_buf(dmabuf)
            else:
                try:
                    dmabuf = _export_and_register_object(dev, obj, flags)
                except KernelError as exc:
                    put_unused_fd(task, fd)
                    return -exc.err, -1
            # "cheat and add it to the import list so we get the correct handle back"
            drm_prime_add_buf_handle(file_priv.prime, dmabuf, handle)
    finally:
        drm_gem_object_put(obj)
    assert dmabuf.file is not None
    fd_install(task, fd, dmabuf.file)  # the reference taken above moves into the table
    return 0, fd


@kernel_function("drm_prime_handle_to_fd_ioctl", file="drivers/gpu/drm/drm_prime.c")
def drm_prime_handle_to_fd_ioctl(dev: DrmDevice, args: DrmPrimeHandle, file_priv: DrmFile) -> int:
    """``PRIME_HANDLE_TO_FD``: flags within ``DRM_CLOEXEC|DRM_RDWR`` (else ``EINVAL``)."""
    # "check flags are valid"
    if args.flags & ~(DRM_CLOEXEC | DRM_RDWR):
        return -errno.EINVAL
    ret, fd = drm_gem_prime_handle_to_fd(dev, file_priv, args.handle, args.flags)
    if ret == 0:
        args.fd = fd
    return ret


# -- import ---------------------------------------------------------------------------------
def drm_gem_is_prime_exported_dma_buf(dev: DrmDevice, dma_buf: DmaBuf) -> bool:
    """Was ``dma_buf`` exported by a GEM object of ``dev``?"""
    obj = dma_buf.priv
    return (
        dma_buf.ops is DRM_GEM_PRIME_DMABUF_OPS
        and isinstance(obj, DrmGemObject)
        and (obj.dev is dev)
    )


@kernel_function("drm_gem_prime_import_dev", file="drivers/gpu/drm/drm_prime.c")
def drm_gem_prime_import_dev(dev: DrmDevice, dma_buf: DmaBuf, attach_dev: Device) -> DrmGemObject:
    """Self-import: the original object; else attach, map and wrap (raises KernelError)."""
    if drm_gem_is_prime_exported_dma_buf(dev, dma_buf):
        # "Importing dmabuf exported from our own gem increases refcount on gem itself
        # instead of f_count of dmabuf."
        obj = _obj(dma_buf)
        drm_gem_object_get(obj)
        return obj
    import_sg_table = dev.driver.gem_prime_import_sg_table
    if import_sg_table is None:
        raise KernelError(errno.EINVAL, "drm_gem_prime_import_dev")
    attach = dma_buf_attach(dma_buf, attach_dev)
    get_dma_buf(dma_buf)
    try:
        sgt = dma_buf_map_attachment_unlocked(attach, DMA_BIDIRECTIONAL)
    except KernelError:
        dma_buf_detach(dma_buf, attach)
        dma_buf_put(dma_buf)
        raise
    try:
        obj = import_sg_table(dev, attach, sgt)
    except KernelError:
        dma_buf_unmap_attachment_unlocked(attach, sgt, DMA_BIDIRECTIONAL)
        dma_buf_detach(dma_buf, attach)
        dma_buf_put(dma_buf)
        raise
    obj.import_attach = attach
    obj.resv = dma_buf.resv
    return obj


@kernel_function("drm_gem_prime_import", file="drivers/gpu/drm/drm_prime.c")
def drm_gem_prime_import(dev: DrmDevice, dma_buf: DmaBuf) -> DrmGemObject:
    """The default ``gem_prime_import``: attach through the device's ``struct device``."""
    return drm_gem_prime_import_dev(dev, dma_buf, dev.dev)


@kernel_function("drm_prime_gem_destroy", file="drivers/gpu/drm/drm_prime.c")
def drm_prime_gem_destroy(obj: DrmGemObject, sg: SgTable | None) -> None:
    """Free-time undo of an import: unmap, detach, drop the import's dma-buf reference."""
    attach = obj.import_attach
    assert attach is not None
    if sg is not None:
        dma_buf_unmap_attachment_unlocked(attach, sg, DMA_BIDIRECTIONAL)
    dma_buf = attach.dmabuf
    dma_buf_detach(dma_buf, attach)
    dma_buf_put(dma_buf)


@kernel_function("drm_gem_prime_fd_to_handle", file="drivers/gpu/drm/drm_prime.c")
def drm_gem_prime_fd_to_handle(
    dev: DrmDevice, file_priv: DrmFile, prime_fd: int
) -> tuple[int, int]:
    """``(0, handle)`` or ``(-errno, 0)``; ``EBADF``/``EINVAL`` from ``dma_buf_get``."""
    try:
        dma_buf = dma_buf_get(dev.kernel, prime_fd)
    except KernelError as exc:
        return -exc.err, 0
    try:
        handle = drm_prime_lookup_buf_handle(file_priv.prime, dma_buf)
        if handle is not None:
            return 0, handle  # this file already has a handle for it
        # "never seen this one, need to import"
        import_fn = dev.driver.gem_prime_import or drm_gem_prime_import
        try:
            obj = import_fn(dev, dma_buf)
        except KernelError as exc:
            return -exc.err, 0
        if obj.dma_buf is not None:
            if obj.dma_buf is not dma_buf:
                dev.kernel.warn("drm_gem_prime_fd_to_handle", "obj->dma_buf != dma_buf")
        else:
            obj.dma_buf = dma_buf
            get_dma_buf(dma_buf)
        ret = drm_gem_handle_create_tail(file_priv, obj)
        drm_gem_object_put(obj)
        if ret < 0:
            return ret, 0
        drm_prime_add_buf_handle(file_priv.prime, dma_buf, ret)
        return 0, ret
    finally:
        dma_buf_put(dma_buf)


@kernel_function("drm_prime_fd_to_handle_ioctl", file="drivers/gpu/drm/drm_prime.c")
def drm_prime_fd_to_handle_ioctl(dev: DrmDevice, args: DrmPrimeHandle, file_priv: DrmFile) -> int:
    ret, handle = drm_gem_prime_fd_to_handle(dev, file_priv, args.fd)
    if ret == 0:
        args.handle = handle
    return ret


def _current(dev: DrmDevice) -> Process:
    task = dev.kernel.current
    if task is None:
        raise ValueError("PRIME export needs a current task: call it from a syscall")
    return task
