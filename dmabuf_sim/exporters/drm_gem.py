"""The DRM core a GEM driver sits on: device node, files, ioctls, handles, fake offsets.

Mirrors drivers/gpu/drm/drm_file.c (``drm_open``/``drm_release``), drm_ioctl.c
(``drm_ioctl``), drm_gem.c (objects, handles, ``drm_gem_mmap``), drm_vma_manager.c
(fake mmap offsets) and drm_dumb_buffers.c (``MODE_CREATE_DUMB``/``MODE_MAP_DUMB``),
kernel-spec §6.5:

* every ``open()`` of the node gets its own :class:`DrmFile` (the kernel's
  ``struct drm_file``) in ``file->private_data``: a per-open handle table and a
  per-open PRIME cache.  ``drm_open`` also points ``file->f_mapping`` at the
  device's anon inode ("share address_space across all char-devs of a single
  device"), so every GEM mapping of the device lands in one ``i_mmap``;
* a GEM object is mapped through a **fake offset**: a page range the device's
  ``drm_vma_offset_manager`` hands out from ``DRM_FILE_PAGE_OFFSET_START``
  (4 GiB) on, best fit (``DRM_MM_INSERT_BEST``).  ``drm_gem_mmap`` wants an
  **exact** match of ``vm_pgoff`` with a node start and the whole vma inside the
  node (``EINVAL`` otherwise), and the calling ``drm_file`` must hold a handle to
  the object (``EACCES``: handles "allow" the node per file);
* ``drm_ioctl`` answers ``ENOTTY`` for a non-DRM ioctl type, ``EINVAL`` for a
  number beyond the core or driver tables or on a hole in them ("no function"),
  copies the struct in (``EFAULT``), calls the handler, and copies the struct
  back **whatever the handler returned**.

Simplified: one minor (``card0``), no render node, no master/authentication or
``drm_ioctl_permit``; the ioctl struct is the table's, whatever size the user's
command encodes; no ``drm_read``/``drm_poll`` events; no flink names; locks are
not modelled except where a driver takes the ``dma_resv`` lock.

DRM's own history between the modelled kernels is named in the spec
(``drm_core_ioctl_count``, ``drm_mode_size_dumb``, ``drm_shmem_*``).
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import define, field

from ..dma_buf.core import dma_buf_put
from ..dma_buf.dma_resv import DmaResv
from ..errors import KernelOops
from ..fs import File, FileOperations, Inode, alloc_anon_inode, fput
from ..mm.page_alloc import PAGE_SHIFT, PAGE_SIZE
from ..mm.pgtable import pgprot_writecombine, vm_get_page_prot
from ..mm.shmem import shmem_file_setup
from ..mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_IO,
    VM_PFNMAP,
    VmAreaStruct,
    VmOperationsStruct,
    vma_pages,
)
from ..trace import kernel_function
from ..uaccess import copy_from_user, copy_to_user
from ..uapi import (
    _IOC_NR,
    _IOC_READ,
    _IOC_TYPE,
    _IOC_WRITE,
    DRM_COMMAND_BASE,
    DRM_COMMAND_END,
    DRM_IOCTL_BASE,
    DRM_IOCTL_GEM_CLOSE,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_MODE_MAP_DUMB,
    DRM_IOCTL_PRIME_FD_TO_HANDLE,
    DRM_IOCTL_PRIME_HANDLE_TO_FD,
    DrmGemClose,
    DrmModeCreateDumb,
    DrmModeMapDumb,
    DrmPrimeHandle,
    UapiStruct,
)

if TYPE_CHECKING:
    from ..device import Device, SgTable
    from ..dma_buf.core import DmaBuf, DmaBufAttachment, IosysMap
    from ..kernel import Kernel
    from ..module import Module

__all__ = [
    "DRM_FILE_PAGE_OFFSET_SIZE",
    "DRM_FILE_PAGE_OFFSET_START",
    "DrmDevice",
    "DrmDriver",
    "DrmFile",
    "DrmGemObject",
    "DrmGemObjectFuncs",
    "DrmIoctlDesc",
    "DrmPrimeFilePrivate",
    "DrmVmaOffsetManager",
    "DrmVmaOffsetNode",
    "drm_dev_register",
    "drm_dev_unregister",
    "drm_gem_create_mmap_offset",
    "drm_gem_dumb_map_offset",
    "drm_gem_handle_create",
    "drm_gem_handle_delete",
    "drm_gem_mmap",
    "drm_gem_mmap_obj",
    "drm_gem_object_get",
    "drm_gem_object_init",
    "drm_gem_object_lookup",
    "drm_gem_object_put",
    "drm_gem_object_release",
    "drm_gem_private_object_init",
    "drm_gem_vm_close",
    "drm_gem_vm_open",
    "drm_ioctl",
    "drm_mode_size_dumb",
    "drm_vma_node_offset_addr",
]

U32_MAX = 0xFFFF_FFFF
# include/drm/drm_vma_manager.h, 64-bit: the fake offsets start at 4 GiB so they can never
# collide with a real file offset a driver might also accept on the same node.
DRM_FILE_PAGE_OFFSET_START = (0xFFFF_FFFF >> PAGE_SHIFT) + 1
DRM_FILE_PAGE_OFFSET_SIZE = (0xFFFF_FFFF >> PAGE_SHIFT) * 256
_IOC_IN = _IOC_WRITE << 30  # asm-generic IOC_IN: the user passes data in
_IOC_OUT = _IOC_READ << 30  # IOC_OUT: the kernel writes data back


def _u32(value: int) -> int:
    return value & U32_MAX


# -- drm_vma_manager.c: fake mmap offsets ----------------------------------------------
@define(eq=False, slots=True)
class DrmVmaOffsetNode:
    """``struct drm_vma_offset_node``: a page range in the fake offset space.

    ``vm_files`` is the per-``drm_file`` allow count (``drm_vma_node_allow``/``revoke``):
    only files holding a handle to the object may mmap it (``EACCES``).
    """

    start: int = 0
    """First page of the node (``drm_vma_node_start``); 0 while unallocated."""
    size: int = 0
    allocated: bool = False
    vm_files: dict[DrmFile, int] = field(factory=dict, repr=False)
    obj: DrmGemObject | None = field(default=None, repr=False)
    """The object embedding the node (what ``container_of`` finds)."""


@define(eq=False, slots=True)
class DrmVmaOffsetManager:
    """``struct drm_vma_offset_manager`` over a ``drm_mm`` of pages.

    Simplified: ``drm_mm`` is a sorted list of holes; best fit takes the smallest
    hole that fits (lowest address among equals) and places the node at its start,
    as ``DRM_MM_INSERT_BEST`` does.
    """

    kernel: Kernel | None = field(default=None, repr=False)
    page_offset: int = DRM_FILE_PAGE_OFFSET_START
    size: int = DRM_FILE_PAGE_OFFSET_SIZE
    holes: list[tuple[int, int]] = field(factory=list, repr=False)
    """Free ranges ``(start, pages)``, sorted by start."""
    nodes: dict[int, DrmVmaOffsetNode] = field(factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        self.holes = [(self.page_offset, self.size)]


@kernel_function("drm_vma_offset_add", file="drivers/gpu/drm/drm_vma_manager.c")
def drm_vma_offset_add(mgr: DrmVmaOffsetManager, node: DrmVmaOffsetNode, pages: int) -> int:
    """Give ``node`` a range of ``pages`` (idempotent); ``-ENOSPC`` for 0 pages or no room."""
    if node.allocated:
        return 0
    # drm_mm_insert_node_in_range: "if (unlikely(size == 0 || ...)) return -ENOSPC"
    if pages == 0:
        return -errno.ENOSPC
    fits = [(size, start, i) for i, (start, size) in enumerate(mgr.holes) if size >= pages]
    if not fits:
        return -errno.ENOSPC
    size, start, i = min(fits)
    if size == pages:
        del mgr.holes[i]
    else:
        mgr.holes[i] = (start + pages, size - pages)
    node.start, node.size, node.allocated = start, pages, True
    mgr.nodes[start] = node
    return 0


@kernel_function("drm_vma_offset_remove", file="drivers/gpu/drm/drm_vma_manager.c")
def drm_vma_offset_remove(mgr: DrmVmaOffsetManager, node: DrmVmaOffsetNode) -> None:
    """Return the node's range to the free space (merging with neighbouring holes)."""
    if not node.allocated:
        return
    del mgr.nodes[node.start]
    start, size = node.start, node.size
    holes = mgr.holes
    i = bisect.bisect_left(holes, (start, 0))
    if i < len(holes) and holes[i][0] == start + size:
        size += holes[i][1]
        del holes[i]
    if i > 0 and holes[i - 1][0] + holes[i - 1][1] == start:
        start, size = holes[i - 1][0], holes[i - 1][1] + size
        del holes[i - 1]
        i -= 1
    holes.insert(i, (start, size))
    node.start, node.size, node.allocated = 0, 0, False


def drm_vma_offset_exact_lookup_locked(
    mgr: DrmVmaOffsetManager, start: int, pages: int
) -> DrmVmaOffsetNode | None:
    """The node starting exactly at ``start`` that also covers ``pages`` pages, or None."""
    node = mgr.nodes.get(start)
    if node is None or start + pages > node.start + node.size:
        return None
    return node


def drm_vma_node_offset_addr(node: DrmVmaOffsetNode) -> int:
    """``drm_vma_node_offset_addr``: the byte offset userspace passes to ``mmap``."""
    return node.start << PAGE_SHIFT


def drm_vma_node_allow(node: DrmVmaOffsetNode, tag: DrmFile) -> None:
    node.vm_files[tag] = node.vm_files.get(tag, 0) + 1


def drm_vma_node_revoke(node: DrmVmaOffsetNode, tag: DrmFile) -> None:
    count = node.vm_files.get(tag, 0)
    if count <= 1:
        node.vm_files.pop(tag, None)
    else:
        node.vm_files[tag] = count - 1


def drm_vma_node_is_allowed(node: DrmVmaOffsetNode, tag: DrmFile) -> bool:
    return tag in node.vm_files


# -- objects --------------------------------------------------------------------------
@define(eq=False, slots=True)
class DrmGemObjectFuncs:
    """``struct drm_gem_object_funcs``; ``None`` is a NULL callback."""

    free: Callable[[DrmGemObject], None]
    mmap: Callable[[DrmGemObject, VmAreaStruct], int] | None = None
    vm_ops: VmOperationsStruct | None = field(default=None, repr=False)
    pin: Callable[[DrmGemObject], int] | None = None
    unpin: Callable[[DrmGemObject], None] | None = None
    get_sg_table: Callable[[DrmGemObject], SgTable] | None = None
    vmap: Callable[[DrmGemObject, IosysMap], int] | None = None
    vunmap: Callable[[DrmGemObject, IosysMap], None] | None = None
    export: Callable[[DrmGemObject, int], DmaBuf] | None = None
    """NULL: ``drm_gem_prime_export``."""


@define(eq=False, slots=True)
class DrmGemObject:
    """``struct drm_gem_object``.

    ``refcount`` is the kref (``drm_gem_object_get``/``put``); ``handle_count``
    counts handles in all files.  ``dma_buf`` is the export cache (or, for an
    import, the imported buffer), ``import_attach`` the importer's attachment;
    ``resv`` is ``&own_resv`` for native objects and the dma-buf's resv for imports.
    """

    dev: DrmDevice = field(repr=False)
    size: int
    funcs: DrmGemObjectFuncs | None = field(default=None, repr=False)
    refcount: int = 1
    handle_count: int = 0
    filp: File | None = field(default=None, repr=False)
    """The shmem file backing the object (NULL for imports: ``drm_gem_private_object_init``)."""
    vma_node: DrmVmaOffsetNode = field(factory=DrmVmaOffsetNode, repr=False)
    dma_buf: DmaBuf | None = field(default=None, repr=False)
    import_attach: DmaBufAttachment | None = field(default=None, repr=False)
    resv: DmaResv | None = field(default=None, repr=False)
    own_resv: DmaResv | None = field(default=None, repr=False)
    freed: bool = False

    @property
    def kernel(self) -> Kernel:
        return self.dev.kernel

    def trace_name(self) -> str:
        kind = "import" if self.import_attach is not None else "gem"
        return f"{kind}({self.size:#x})"

    def ops(self) -> DrmGemObjectFuncs:
        assert self.funcs is not None, "a GEM object without funcs"
        return self.funcs


@define(eq=False, slots=True)
class DrmPrimeFilePrivate:
    """``struct drm_prime_file_private``: this file's handle <-> dma-buf cache."""

    handles: dict[int, DmaBuf] = field(factory=dict, repr=False)
    dmabufs: dict[DmaBuf, int] = field(factory=dict, repr=False)
    kernel: Kernel | None = field(default=None, repr=False)


@define(eq=False, slots=True)
class DrmFile:
    """``struct drm_file``: what one ``open()`` of the node owns."""

    dev: DrmDevice = field(repr=False)
    filp: File = field(repr=False)
    object_idr: dict[int, DrmGemObject | None] = field(factory=dict, repr=False)
    """Handle → object; None while a handle is being deleted (``idr_replace(NULL)``)."""
    prime: DrmPrimeFilePrivate = field(factory=DrmPrimeFilePrivate, repr=False)
    driver_priv: Any = field(default=None, repr=False)

    @property
    def kernel(self) -> Kernel:
        return self.dev.kernel

    def trace_name(self) -> str:
        return f"drm_file({self.filp.path()})"


@define(eq=False, slots=True)
class DrmIoctlDesc:
    """``struct drm_ioctl_desc``: the command the table declares, its handler and struct."""

    cmd: int
    func: Callable[[DrmDevice, Any, DrmFile], int] | None
    arg_type: type[UapiStruct]
    name: str


@define(eq=False, slots=True)
class DrmDriver:
    """``struct drm_driver`` (the fields a shmem-helper GEM driver fills in)."""

    name: str
    desc: str
    ioctls: list[DrmIoctlDesc | None] = field(factory=list, repr=False)
    """Driver ioctls indexed by ``nr - DRM_COMMAND_BASE`` (``DRM_IOCTL_DEF_DRV``)."""
    open: Callable[[DrmDevice, DrmFile], int] | None = None
    postclose: Callable[[DrmDevice, DrmFile], None] | None = None
    dumb_create: Callable[[DrmFile, DrmDevice, DrmModeCreateDumb], int] | None = None
    dumb_map_offset: Callable[[DrmFile, DrmDevice, int], tuple[int, int]] | None = None
    """NULL: ``drm_gem_dumb_map_offset``; returns ``(0 or -errno, offset)``."""
    gem_create_object: Callable[[DrmDevice, int], DrmGemObject] | None = None
    gem_prime_import: Callable[[DrmDevice, DmaBuf], DrmGemObject] | None = None
    """NULL: ``drm_gem_prime_import``; raises KernelError for ERR_PTR."""
    gem_prime_import_sg_table: (
        Callable[[DrmDevice, DmaBufAttachment, SgTable], DrmGemObject] | None
    ) = None
    gem_prime_mmap: Callable[[DrmGemObject, VmAreaStruct], int] | None = None
    """The driver's PRIME mmap that ``drm_gem_dmabuf_mmap`` calls (kernels before 6.6 had
    the hook; vgem of 5.10 maps its shmem file there).  NULL: ``drm_gem_prime_mmap``."""
    fops_mmap: Callable[[File, VmAreaStruct], int] | None = None
    """``fops->mmap`` of the node when the driver wraps ``drm_gem_mmap`` (5.10 vgem's
    ``vgem_mmap``).  NULL: ``DEFINE_DRM_GEM_FOPS``' ``drm_gem_mmap``."""
    owner: Module | None = None
    """``driver->fops->owner``: the driver's module (THIS_MODULE); None when built in.
    Every open DRM fd and every dma-buf the driver exports holds a reference on it."""


@define(eq=False, slots=True)
class DrmDevice:
    """``struct drm_device`` with its one minor."""

    kernel: Kernel = field(repr=False)
    driver: DrmDriver = field(repr=False)
    dev: Device = field(repr=False)
    """The ``struct device`` DMA and dma-buf attachments go through (vgem's platform device)."""
    anon_inode: Inode = field(repr=False)
    """``dev->anon_inode``: every DRM file and PRIME dma-buf of the device maps through it."""
    path: str
    vma_offset_manager: DrmVmaOffsetManager = field(factory=DrmVmaOffsetManager, repr=False)
    dev_private: Any = field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self.vma_offset_manager.kernel = self.kernel

    def trace_name(self) -> str:
        return f"drm({self.driver.name})"


def drm_gem_fops(
    mmap: Callable[[File, VmAreaStruct], int] | None = None, module: Module | None = None
) -> FileOperations:
    """``DEFINE_DRM_GEM_FOPS``: open/release/ioctl from the core, mmap = ``drm_gem_mmap``
    (or the driver's own ``mmap`` where it wraps it); ``.owner = THIS_MODULE`` of the driver
    that defines them."""
    return FileOperations(
        module=module,
        owner="drm",
        open=drm_open,
        release=drm_release,
        unlocked_ioctl=drm_ioctl,
        mmap=mmap or drm_gem_mmap,
    )


@kernel_function("drm_dev_register", file="drivers/gpu/drm/drm_drv.c")
def drm_dev_register(kernel: Kernel, driver: DrmDriver, dev: Device, path: str) -> DrmDevice:
    """Create the device, its anon inode and its node at ``path`` (``/dev/dri/card0``)."""
    anon = alloc_anon_inode(kernel, "drm")  # drm_fs_inode_new()
    drm = DrmDevice(kernel, driver, dev, anon, path)
    chrdev = kernel.register_chrdev(path, drm_gem_fops(driver.fops_mmap, driver.owner), drm)
    chrdev.inode.i_private = drm  # what drm_minor_acquire(iminor(inode)) finds
    return drm


@kernel_function("drm_dev_unregister", file="drivers/gpu/drm/drm_drv.c")
def drm_dev_unregister(dev: DrmDevice) -> None:
    """The device node goes: later opens of it fail ``ENOENT``."""
    dev.kernel.unregister_chrdev(dev.path)


# -- drm_file.c ------------------------------------------------------------------------
@kernel_function("drm_open", file="drivers/gpu/drm/drm_file.c")
def drm_open(inode: Inode, file: File) -> int:
    """A fresh ``drm_file`` per open; the file maps through the device's anon inode."""
    dev = inode.i_private
    assert isinstance(dev, DrmDevice)
    # "share address_space across all char-devs of a single device"
    file.f_mapping = dev.anon_inode.i_mapping
    priv = DrmFile(dev, file)  # drm_file_alloc: drm_gem_open + drm_prime_init_file_private
    priv.prime.kernel = dev.kernel
    if dev.driver.open is not None:
        ret = dev.driver.open(dev, priv)
        if ret:
            return ret
    file.private_data = priv
    return 0


@kernel_function("drm_release", file="drivers/gpu/drm/drm_file.c")
def drm_release(inode: Inode, file: File) -> int:
    """The last close: every handle goes (``drm_gem_release``), then ``postclose``."""
    priv = file.private_data
    assert isinstance(priv, DrmFile)
    dev = priv.dev
    drm_gem_release(dev, priv)
    if dev.driver.postclose is not None:
        dev.driver.postclose(dev, priv)
    # drm_prime_destroy_file_private: "by now drm_gem_release should've made sure the list
    # is empty"
    if priv.prime.dmabufs:
        dev.kernel.warn("drm_prime_destroy_file_private", "!RB_EMPTY_ROOT(&prime_fpriv->dmabufs)")
    return 0


# -- drm_ioctl.c -----------------------------------------------------------------------
def _core_ioctls() -> dict[int, DrmIoctlDesc]:
    """The modelled entries of ``drm_ioctls[]``, by number."""
    from .drm_prime import drm_prime_fd_to_handle_ioctl, drm_prime_handle_to_fd_ioctl  # noqa: PLC0415  # cycle: drm_prime.py builds on drm_gem.py, as drm_prime.c on drm_gem.c

    table = [
        DrmIoctlDesc(DRM_IOCTL_GEM_CLOSE, drm_gem_close_ioctl, DrmGemClose, "GEM_CLOSE"),
        DrmIoctlDesc(
            DRM_IOCTL_PRIME_HANDLE_TO_FD,
            drm_prime_handle_to_fd_ioctl,
            DrmPrimeHandle,
            "PRIME_HANDLE_TO_FD",
        ),
        DrmIoctlDesc(
            DRM_IOCTL_PRIME_FD_TO_HANDLE,
            drm_prime_fd_to_handle_ioctl,
            DrmPrimeHandle,
            "PRIME_FD_TO_HANDLE",
        ),
        DrmIoctlDesc(
            DRM_IOCTL_MODE_CREATE_DUMB,
            drm_mode_create_dumb_ioctl,
            DrmModeCreateDumb,
            "MODE_CREATE_DUMB",
        ),
        DrmIoctlDesc(
            DRM_IOCTL_MODE_MAP_DUMB, drm_mode_mmap_dumb_ioctl, DrmModeMapDumb, "MODE_MAP_DUMB"
        ),
    ]
    return {_IOC_NR(d.cmd): d for d in table}


def _drm_core_ioctl_count(kernel: Kernel) -> int:
    """``DRM_CORE_IOCTL_COUNT``: one past the newest core ioctl of the kernel.

    6.1 ends with ``MODE_GETFB2`` (0xCE); 6.12 with ``MODE_CLOSEFB`` (0xD0, 6.8);
    6.19 with ``GEM_CHANGE_HANDLE`` (0xD2, 6.18).
    """
    return kernel.spec.drm_core_ioctl_count


@kernel_function("drm_ioctl", file="drivers/gpu/drm/drm_ioctl.c")
def drm_ioctl(file: File, cmd: int, arg: Any) -> int:
    """Dispatch to the core or driver table; copy the struct in and (always) back out."""
    priv = file.private_data
    assert isinstance(priv, DrmFile)
    dev = priv.dev
    kernel = dev.kernel
    nr = _IOC_NR(cmd)
    if _IOC_TYPE(cmd) != ord(DRM_IOCTL_BASE):
        return -errno.ENOTTY  # not a DRM ioctl at all (isatty() asks TCGETS)
    ioctl: DrmIoctlDesc | None
    if DRM_COMMAND_BASE <= nr < DRM_COMMAND_END:
        index = nr - DRM_COMMAND_BASE
        if index >= len(dev.driver.ioctls):
            return -errno.EINVAL
        ioctl = dev.driver.ioctls[index]
    else:
        if nr >= _drm_core_ioctl_count(kernel):
            return -errno.EINVAL
        ioctl = _core_ioctls().get(nr)
        if ioctl is None:
            raise NotImplementedError(
                f"DRM core ioctl nr {nr:#x} is not modelled (only GEM_CLOSE, PRIME_*_TO_*,"
                " MODE_CREATE_DUMB and MODE_MAP_DUMB are)"
            )
    if ioctl is None or ioctl.func is None:
        return -errno.EINVAL  # a hole in the table: "no function"
    if cmd & ioctl.cmd & _IOC_IN:
        data = copy_from_user(kernel, arg, ioctl.arg_type)
        if isinstance(data, int):
            return -errno.EFAULT
    else:
        data = ioctl.arg_type()  # kdata is zero-filled when nothing is copied in
    ret = ioctl.func(dev, data, priv)
    # drm_ioctl copies the struct back even when the handler failed
    if cmd & ioctl.cmd & _IOC_OUT and copy_to_user(kernel, arg, data):
        ret = -errno.EFAULT
    return ret


# -- drm_gem.c: object lifetime -----------------------------------------------------------
@kernel_function("drm_gem_private_object_init", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_private_object_init(dev: DrmDevice, obj: DrmGemObject, size: int) -> None:
    """An object without backing storage (imports): one reference, its own resv."""
    obj.dev, obj.size, obj.refcount = dev, size, 1
    obj.vma_node.obj = obj
    obj.own_resv = DmaResv(dev.kernel)
    if obj.resv is None:
        obj.resv = obj.own_resv


@kernel_function("drm_gem_object_init", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_object_init(dev: DrmDevice, obj: DrmGemObject, size: int) -> int:
    """An object backed by a fresh shmem file of ``size`` bytes."""
    drm_gem_private_object_init(dev, obj, size)
    obj.filp = shmem_file_setup(dev.kernel, "drm mm object", size)
    return 0


@kernel_function("drm_gem_object_release", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_object_release(obj: DrmGemObject) -> None:
    """Drop the shmem file and the fake offset (the inverse of ``drm_gem_object_init``)."""
    if obj.filp is not None:
        fput(obj.filp)
        obj.filp = None
    drm_vma_offset_remove(obj.dev.vma_offset_manager, obj.vma_node)


@kernel_function("drm_gem_object_get", file="include/drm/drm_gem.h")
def drm_gem_object_get(obj: DrmGemObject) -> None:
    if obj.freed:
        obj.kernel.tainted = True
        raise KernelOops("drm_gem_object_get", f"use after free of {obj.trace_name()}")
    obj.refcount += 1


@kernel_function("drm_gem_object_put", file="include/drm/drm_gem.h")
def drm_gem_object_put(obj: DrmGemObject) -> None:
    """Drop a reference; the last one frees the object through ``funcs->free``."""
    if obj.freed or obj.refcount <= 0:
        obj.kernel.tainted = True
        raise KernelOops(
            "drm_gem_object_put",
            f"refcount_t: underflow; use-after-free of {obj.trace_name()}",
        )
    obj.refcount -= 1
    if obj.refcount == 0:
        drm_gem_object_free(obj)


@kernel_function("drm_gem_object_free", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_object_free(obj: DrmGemObject) -> None:
    obj.ops().free(obj)
    obj.freed = True


# -- handles ----------------------------------------------------------------------------
@kernel_function("drm_gem_handle_create_tail", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_handle_create_tail(file_priv: DrmFile, obj: DrmGemObject) -> int:
    """Publish ``obj`` under the lowest free handle >= 1; returns it (or ``-errno``).

    The first handle takes a reference; every handle allows the fake offset for
    this file.
    """
    if obj.handle_count == 0:
        drm_gem_object_get(obj)
    obj.handle_count += 1
    handle = 1
    while handle in file_priv.object_idr:  # idr_alloc(&file_priv->object_idr, obj, 1, 0)
        handle += 1
    file_priv.object_idr[handle] = obj
    drm_vma_node_allow(obj.vma_node, file_priv)
    return handle


def drm_gem_handle_create(file_priv: DrmFile, obj: DrmGemObject) -> int:
    """``drm_gem_handle_create``: see :func:`drm_gem_handle_create_tail`."""
    return drm_gem_handle_create_tail(file_priv, obj)


@kernel_function("drm_gem_object_lookup", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_object_lookup(file_priv: DrmFile, handle: int) -> DrmGemObject | None:
    """The object behind ``handle`` with a reference held, or None."""
    obj = file_priv.object_idr.get(handle)
    if obj is None:
        return None
    drm_gem_object_get(obj)
    return obj


@kernel_function("drm_gem_object_handle_put_unlocked", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_object_handle_put_unlocked(obj: DrmGemObject) -> None:
    """The last handle breaks the export cycle (obj->dma_buf) and drops the handles' ref."""
    if obj.handle_count == 0:
        obj.kernel.warn("drm_gem_object_handle_put_unlocked", "obj->handle_count == 0")
        return
    obj.handle_count -= 1
    if obj.handle_count == 0:
        # drm_gem_object_exported_dma_buf_free: "Unbreak the reference cycle if we have
        # an exported dma_buf."
        if obj.dma_buf is not None:
            dmabuf, obj.dma_buf = obj.dma_buf, None
            dma_buf_put(dmabuf)
        drm_gem_object_put(obj)


@kernel_function("drm_gem_object_release_handle", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_object_release_handle(handle: int, obj: DrmGemObject, file_priv: DrmFile) -> None:
    from .drm_prime import drm_prime_remove_buf_handle  # noqa: PLC0415  # cycle: drm_prime.py builds on drm_gem.py, as drm_prime.c on drm_gem.c

    drm_prime_remove_buf_handle(file_priv.prime, handle)
    drm_vma_node_revoke(obj.vma_node, file_priv)
    drm_gem_object_handle_put_unlocked(obj)


@kernel_function("drm_gem_handle_delete", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_handle_delete(file_priv: DrmFile, handle: int) -> int:
    """``GEM_CLOSE``: ``-EINVAL`` for a handle this file does not hold."""
    obj = file_priv.object_idr.get(handle)
    if obj is None:
        return -errno.EINVAL
    file_priv.object_idr[handle] = None  # idr_replace(NULL): lookups now miss
    drm_gem_object_release_handle(handle, obj, file_priv)
    del file_priv.object_idr[handle]  # "make the handle available for future allocations"
    return 0


@kernel_function("drm_gem_release", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_release(dev: DrmDevice, file_priv: DrmFile) -> None:
    """At close: release every handle the file still holds (``idr_for_each``)."""
    for handle, obj in sorted(file_priv.object_idr.items()):
        if obj is not None:
            drm_gem_object_release_handle(handle, obj, file_priv)
    file_priv.object_idr.clear()


@kernel_function("drm_gem_close_ioctl", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_close_ioctl(dev: DrmDevice, args: DrmGemClose, file_priv: DrmFile) -> int:
    return drm_gem_handle_delete(file_priv, args.handle)


# -- fake offsets ------------------------------------------------------------------------
@kernel_function("drm_gem_create_mmap_offset", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_create_mmap_offset(obj: DrmGemObject) -> int:
    """Allocate the object's fake offset (idempotent)."""
    return drm_vma_offset_add(obj.dev.vma_offset_manager, obj.vma_node, obj.size // PAGE_SIZE)


@kernel_function("drm_gem_dumb_map_offset", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_dumb_map_offset(file_priv: DrmFile, dev: DrmDevice, handle: int) -> tuple[int, int]:
    """``MODE_MAP_DUMB``: ``(0, fake offset)``; ``ENOENT`` unknown handle, ``EINVAL`` import.

    "Don't allow imported objects to be mapped": the only way to reach an imported
    object's mmap through the DRM fd is a driver-private offset ioctl (panfrost and
    v3d have one; vgem has none).
    """
    obj = drm_gem_object_lookup(file_priv, handle)
    if obj is None:
        return -errno.ENOENT, 0
    try:
        if obj.import_attach is not None:
            return -errno.EINVAL, 0
        ret = drm_gem_create_mmap_offset(obj)
        if ret:
            return ret, 0
        return 0, drm_vma_node_offset_addr(obj.vma_node)
    finally:
        drm_gem_object_put(obj)


# -- mmap -------------------------------------------------------------------------------
@kernel_function("drm_gem_vm_open", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_vm_open(vma: VmAreaStruct) -> None:
    """A copied or split vma holds its own object reference."""
    obj = vma.vm_private_data
    assert isinstance(obj, DrmGemObject)
    drm_gem_object_get(obj)


@kernel_function("drm_gem_vm_close", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_vm_close(vma: VmAreaStruct) -> None:
    obj = vma.vm_private_data
    assert isinstance(obj, DrmGemObject)
    drm_gem_object_put(obj)


@kernel_function("drm_gem_mmap_obj", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_mmap_obj(obj: DrmGemObject, obj_size: int, vma: VmAreaStruct) -> int:
    """Size check, a reference for the vma, ``vm_ops``/``vm_private_data``, then ``funcs->mmap``.

    WARNs when the object's mmap did not set ``VM_DONTEXPAND``.
    """
    if obj_size < vma.vm_end - vma.vm_start:
        return -errno.EINVAL
    # "Take a ref for this mapping of the object, so that the fault handler can
    # dereference the mmap offset's pointer to the object."
    drm_gem_object_get(obj)
    funcs = obj.ops()
    vma.vm_private_data = obj
    vma.vm_ops = funcs.vm_ops
    if funcs.mmap is not None:
        ret = funcs.mmap(obj, vma)
        if ret:
            drm_gem_object_put(obj)
            return ret
        if not vma.vm_flags & VM_DONTEXPAND:
            obj.kernel.warn("drm_gem_mmap_obj", "!(vma->vm_flags & VM_DONTEXPAND)")
        return 0
    if vma.vm_ops is None:
        drm_gem_object_put(obj)
        return -errno.EINVAL
    vma.vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP
    vma.vm_page_prot = pgprot_writecombine(vm_get_page_prot(vma.vm_flags))
    return 0


@kernel_function("drm_gem_mmap", file="drivers/gpu/drm/drm_gem.c")
def drm_gem_mmap(file: File, vma: VmAreaStruct) -> int:
    """``f_op->mmap`` of the DRM node: look the object up by the fake offset in ``vm_pgoff``.

    ``EINVAL`` unless ``vm_pgoff`` is exactly a node's start and the vma fits in it;
    ``EACCES`` if this ``drm_file`` holds no handle to the object.
    """
    priv = file.private_data
    assert isinstance(priv, DrmFile)
    dev = priv.dev
    node = drm_vma_offset_exact_lookup_locked(dev.vma_offset_manager, vma.vm_pgoff, vma_pages(vma))
    obj = node.obj if node is not None else None  # container_of(node, ..., vma_node)
    # kref_get_unless_zero: an object already on its way out is "not found"
    if obj is None or obj.freed or obj.refcount == 0:
        return -errno.EINVAL
    assert node is not None
    drm_gem_object_get(obj)
    if not drm_vma_node_is_allowed(node, priv):
        drm_gem_object_put(obj)
        return -errno.EACCES
    ret = drm_gem_mmap_obj(obj, node.size << PAGE_SHIFT, vma)
    drm_gem_object_put(obj)
    return ret


# -- drm_dumb_buffers.c -------------------------------------------------------------------
@kernel_function("drm_mode_create_dumb", file="drivers/gpu/drm/drm_dumb_buffers.c")
def drm_mode_create_dumb(dev: DrmDevice, args: DrmModeCreateDumb, file_priv: DrmFile) -> int:
    """The core's 32-bit overflow checks on ``cpp * width * height``, then the driver."""
    if dev.driver.dumb_create is None:
        return -errno.ENOSYS
    if not args.width or not args.height or not args.bpp:
        return -errno.EINVAL
    # "overflow checks for 32bit size calculations"
    if args.bpp > U32_MAX - 8:
        return -errno.EINVAL
    cpp = (args.bpp + 7) // 8
    if cpp > U32_MAX // args.width:
        return -errno.EINVAL
    stride = cpp * args.width
    if args.height > U32_MAX // stride:
        return -errno.EINVAL
    size = args.height * stride
    if _u32(size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) == 0:  # PAGE_ALIGN of a u32 wraps
        return -errno.EINVAL
    # "handle, pitch and size are output parameters. Zero them out to prevent drivers
    # from accidentally using uninitialized data."
    args.handle = args.pitch = args.size = 0
    return dev.driver.dumb_create(file_priv, dev, args)


@kernel_function("drm_mode_create_dumb_ioctl", file="drivers/gpu/drm/drm_dumb_buffers.c")
def drm_mode_create_dumb_ioctl(dev: DrmDevice, args: DrmModeCreateDumb, file_priv: DrmFile) -> int:
    ret = drm_mode_create_dumb(dev, args, file_priv)
    if ret and dev.kernel.spec.drm_mode_size_dumb:
        # read in the drm_dumb_buffers.c that carries drm_mode_size_dumb()
        args.handle = args.pitch = args.size = 0
    return ret


@kernel_function("drm_mode_mmap_dumb_ioctl", file="drivers/gpu/drm/drm_dumb_buffers.c")
def drm_mode_mmap_dumb_ioctl(dev: DrmDevice, args: DrmModeMapDumb, file_priv: DrmFile) -> int:
    """``MODE_MAP_DUMB``: the fake offset to pass to ``mmap`` on the DRM fd."""
    if dev.driver.dumb_create is None:
        return -errno.ENOSYS
    map_offset = dev.driver.dumb_map_offset or drm_gem_dumb_map_offset
    ret, offset = map_offset(file_priv, dev, args.handle)
    if ret == 0:
        args.offset = offset
    elif dev.kernel.spec.drm_mode_size_dumb:
        args.offset = 0
    return ret


# drm_driver_color_mode_format() → drm_format_info: (char_per_block, block_w) of plane 0
_COLOR_MODE_FORMATS = {
    1: (1, 8),  # DRM_FORMAT_C1
    2: (1, 4),  # DRM_FORMAT_C2
    4: (1, 2),  # DRM_FORMAT_C4
    8: (1, 1),  # DRM_FORMAT_C8
    15: (2, 1),  # DRM_FORMAT_XRGB1555
    16: (2, 1),  # DRM_FORMAT_RGB565
    24: (3, 1),  # DRM_FORMAT_RGB888
    32: (4, 1),  # DRM_FORMAT_XRGB8888 (color mode 32 is depth 24)
}


@kernel_function("drm_mode_size_dumb", file="drivers/gpu/drm/drm_dumb_buffers.c")
def drm_mode_size_dumb(
    dev: DrmDevice, args: DrmModeCreateDumb, hw_pitch_align: int, hw_size_align: int
) -> int:
    """Pitch from the color mode's format (or ``width * DIV_ROUND_UP(bpp, 8)``), aligned.

    The 2025 helper that drivers' ``dumb_create`` calls: the pitch is computed in
    64 bits from the format, rounded up to ``hw_pitch_align``; ``size = height *
    pitch`` must fit 32 bits and is page aligned; any failure is ``EINVAL``.
    """
    fmt = _COLOR_MODE_FORMATS.get(args.bpp)
    if fmt is not None:
        cpb, block_w = fmt
        pitch = -(-(args.width * cpb) // block_w)  # drm_format_info_min_pitch
    else:
        if args.bpp not in (10, 12, 15, 30, 64):
            # drm_warn_once: a log line, not a WARN_ON splat (kernel.warnings)
            dev.kernel.tracer.event(
                "drm_warn_once", f"Unknown color mode {args.bpp}; guessing buffer size."
            )
        pitch = _u32(args.width * ((args.bpp + 7) // 8))
    if not pitch or pitch > U32_MAX:
        return -errno.EINVAL
    # drm_mode_align_dumb, in u32
    if hw_pitch_align:
        pitch = _u32(_u32(pitch + hw_pitch_align - 1) // hw_pitch_align * hw_pitch_align)
    align = hw_size_align or PAGE_SIZE
    size = args.height * pitch
    if size > U32_MAX:  # check_mul_overflow into a u32
        return -errno.EINVAL
    size = _u32(size + align - 1) & ~(align - 1)
    if not size:
        return -errno.EINVAL
    args.pitch, args.size = pitch, size
    return 0
