"""Importers and kernel CPU access (drivers/dma-buf/dma-buf.c).

* attach/detach (optional exporter ops, errors propagated) and
  map/unmap_attachment returning the exporter's sg table (kernel-spec §2.8,
  §4.10); with ``cache_sgt_mapping`` (until 6.15) the core caches one table per attachment;
* ``begin/end_cpu_access`` in both signatures: ``(dmabuf, start, len, dir)``
  with a void end on the 2012-era specs, ``(dmabuf, dir)`` returning int on
  modern ones, where begin also waits for the implicit fences (R44-R46, R52);
* ``kmap``/``kmap_atomic``/``kunmap`` (3.x) and ``vmap``/``vunmap`` with the
  core's mapping counter (R54).

Simplified: no dynamic importers (``move_notify``) or pinning beyond the
export-time pin/unpin pairing check.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Literal, cast

from ..device import DMA_BIDIRECTIONAL, DMA_TO_DEVICE, Device, DmaDataDirection, SgTable
from ..errors import KernelError, KernelOops
from ..trace import kernel_function
from .core import (
    AttachOp,
    AttachOp3x,
    DmaBuf,
    DmaBufAttachment,
    IosysMap,
    VmapOp,
    VmapOp35,
    VunmapOp,
    VunmapOp35,
    op,
)
from .dma_resv import DmaResvUsage, dma_resv_usage_rw

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..mm.vmalloc import KernelMapping

__all__ = [
    "dma_buf_attach",
    "dma_buf_begin_cpu_access",
    "dma_buf_detach",
    "dma_buf_end_cpu_access",
    "dma_buf_kmap",
    "dma_buf_kmap_atomic",
    "dma_buf_kunmap",
    "dma_buf_map_attachment",
    "dma_buf_map_attachment_unlocked",
    "dma_buf_unmap_attachment",
    "dma_buf_unmap_attachment_unlocked",
    "dma_buf_vmap",
    "dma_buf_vmap_unlocked",
    "dma_buf_vunmap",
    "dma_buf_vunmap_unlocked",
]


def _kernel_of(*objs: Any) -> Kernel | None:
    for o in objs:
        if o is not None and hasattr(o, "kernel"):
            k: Kernel = o.kernel
            return k
    return None


# -- attach -------------------------------------------------------------------------
@kernel_function("dma_buf_attach", file="drivers/dma-buf/dma-buf.c")
def dma_buf_attach(dmabuf: DmaBuf | None, dev: Device | None) -> DmaBufAttachment:
    """Attach ``dev``; raises KernelError for ``ERR_PTR`` (``-EINVAL`` on NULL, exporter errors)."""
    if dmabuf is None or dev is None:
        kernel = _kernel_of(dmabuf, dev)
        if kernel is not None:
            kernel.warn("dma_buf_attach", "!dmabuf || !dev")
        raise KernelError(errno.EINVAL, "dma_buf_attach")
    attach = DmaBufAttachment(dmabuf, dev)
    attach_op = op(dmabuf.ops, "attach")
    if attach_op is not None:
        if dmabuf.kernel.spec.export_info_form:
            ret = cast(AttachOp, attach_op)(dmabuf, attach)
        else:
            ret = cast(AttachOp3x, attach_op)(dmabuf, dev, attach)
        if ret:
            raise KernelError(-int(ret), "dma_buf_attach")
    dmabuf.attachments.append(attach)
    return attach


@kernel_function("dma_buf_detach", file="drivers/dma-buf/dma-buf.c")
def dma_buf_detach(dmabuf: DmaBuf | None, attach: DmaBufAttachment | None) -> None:
    if dmabuf is None or attach is None or attach.dmabuf is not dmabuf:
        kernel = _kernel_of(dmabuf, attach)
        if kernel is not None:
            kernel.warn("dma_buf_detach", "!dmabuf || !attach || dmabuf != attach->dmabuf")
        return
    if attach.sgt is not None:
        unmap = op(dmabuf.ops, "unmap_dma_buf")
        assert unmap is not None and attach.dir is not None  # mandatory; set with the sgt
        unmap(attach, attach.sgt, attach.dir)
        attach.sgt = None
    if attach in dmabuf.attachments:
        dmabuf.attachments.remove(attach)
    detach = op(dmabuf.ops, "detach")
    if detach is not None:
        detach(dmabuf, attach)


# -- map ----------------------------------------------------------------------------
def _require_resv(dmabuf: DmaBuf, func: str) -> None:
    if dmabuf.kernel.spec.vmap_requires_resv_held and (
        dmabuf.resv is None or not dmabuf.resv.is_locked()
    ):
        raise KernelOops(
            func, "dma_resv_assert_held(dmabuf->resv) failed; use the _unlocked variant"
        )


@kernel_function("dma_buf_map_attachment", file="drivers/dma-buf/dma-buf.c")
def dma_buf_map_attachment(attach: DmaBufAttachment | None, direction: DmaDataDirection) -> SgTable:
    """The exporter's sg table for the device (``ERR_PTR`` → KernelError)."""
    if attach is None:
        raise KernelError(errno.EINVAL, "dma_buf_map_attachment")
    dmabuf = attach.dmabuf
    _require_resv(dmabuf, "dma_buf_map_attachment")
    if attach.sgt is not None:
        if attach.dir not in (direction, DMA_BIDIRECTIONAL):
            raise KernelError(errno.EBUSY, "dma_buf_map_attachment")
        return attach.sgt
    map_dma_buf = op(dmabuf.ops, "map_dma_buf")
    assert map_dma_buf is not None  # mandatory at export
    sgt = map_dma_buf(attach, direction)
    if sgt is None:
        if dmabuf.kernel.spec.export_info_form:
            raise KernelError(errno.ENOMEM, "dma_buf_map_attachment")
        raise KernelOops("dma_buf_map_attachment", "exporter returned NULL (3.x passes it on)")
    if dmabuf.resv is not None:
        # non-dynamic importers wait for the exporter's kernel fences (memory moves)
        dmabuf.resv.wait(DmaResvUsage.KERNEL, False)
    # dma_buf_ops.cache_sgt_mapping exists from ~4.19 until 6.15 ("dma-buf: drop caching
    # of sg_tables" removed the field, the cache and the pin check together), so the spec's
    # cache_sgt-with-pin check doubles as "this kernel has the field"; elsewhere the
    # attribute is an unknown Python attribute that the C core never reads.
    if dmabuf.kernel.spec.export_checks_cache_sgt_with_pin and getattr(
        dmabuf.ops, "cache_sgt_mapping", False
    ):
        attach.sgt = sgt
        attach.dir = direction
    return sgt


@kernel_function("dma_buf_unmap_attachment", file="drivers/dma-buf/dma-buf.c")
def dma_buf_unmap_attachment(
    attach: DmaBufAttachment | None, sgt: SgTable | None, direction: DmaDataDirection
) -> None:
    if attach is None or sgt is None:
        kernel = _kernel_of(attach)
        if kernel is not None:
            kernel.warn("dma_buf_unmap_attachment", "!attach || !sg_table")
        return
    _require_resv(attach.dmabuf, "dma_buf_unmap_attachment")
    if attach.sgt is sgt:
        return  # cached: unmapped at detach
    unmap = op(attach.dmabuf.ops, "unmap_dma_buf")
    assert unmap is not None  # mandatory at export
    unmap(attach, sgt, direction)


def dma_buf_map_attachment_unlocked(
    attach: DmaBufAttachment, direction: DmaDataDirection
) -> SgTable:
    """``dma_buf_map_attachment_unlocked``: take the resv lock around the locked variant."""
    resv = attach.dmabuf.resv
    if resv is None:
        return dma_buf_map_attachment(attach, direction)
    resv.lock()
    try:
        return dma_buf_map_attachment(attach, direction)
    finally:
        resv.unlock()


def dma_buf_unmap_attachment_unlocked(
    attach: DmaBufAttachment, sgt: SgTable, direction: DmaDataDirection
) -> None:
    resv = attach.dmabuf.resv
    if resv is None:
        dma_buf_unmap_attachment(attach, sgt, direction)
        return
    resv.lock()
    try:
        dma_buf_unmap_attachment(attach, sgt, direction)
    finally:
        resv.unlock()


# -- kernel CPU access ----------------------------------------------------------------
def _cpu_args(dmabuf: DmaBuf | None, args: tuple[Any, ...], func: str) -> tuple[Any, ...]:
    kernel = _kernel_of(dmabuf)
    if kernel is None:
        return args
    want = 3 if kernel.spec.cpu_access_has_range_args else 1
    if len(args) != want:
        form = "(dmabuf, start, len, direction)" if want == 3 else "(dmabuf, direction)"
        raise TypeError(f"spec {kernel.spec.name} calls {func}{form}")
    return args


@kernel_function("dma_buf_begin_cpu_access", file="drivers/dma-buf/dma-buf.c")
def dma_buf_begin_cpu_access(dmabuf: DmaBuf | None, *args: Any) -> int:
    """Before the CPU touches the buffer: the exporter's hook, then (modern) the fence wait."""
    if dmabuf is None:
        return -errno.EINVAL  # WARN_ON(!dmabuf) (R52)
    args = _cpu_args(dmabuf, args, "dma_buf_begin_cpu_access")
    kernel = dmabuf.kernel
    hook = op(dmabuf.ops, "begin_cpu_access")
    ret = int(hook(dmabuf, *args)) if hook is not None else 0
    if ret == 0 and kernel.spec.begin_cpu_access_waits_implicit_fences and dmabuf.resv:
        direction = args[-1]
        write = direction in (DMA_BIDIRECTIONAL, DMA_TO_DEVICE)
        ret = dmabuf.resv.wait(dma_resv_usage_rw(write), True)  # R46
    return ret


@kernel_function("dma_buf_end_cpu_access", file="drivers/dma-buf/dma-buf.c")
def dma_buf_end_cpu_access(dmabuf: DmaBuf | None, *args: Any) -> int | None:
    """After the CPU is done: the exporter's hook (int on modern specs, void on 3.x)."""
    if dmabuf is None:
        raise KernelOops("dma_buf_end_cpu_access", "WARN_ON(!dmabuf) then NULL dereference")
    args = _cpu_args(dmabuf, args, "dma_buf_end_cpu_access")
    hook = op(dmabuf.ops, "end_cpu_access")
    ret = hook(dmabuf, *args) if hook is not None else 0
    if not dmabuf.kernel.spec.end_cpu_access_returns_int:
        return None
    return int(ret or 0)


# -- kmap (3.4 - 5.5) -----------------------------------------------------------------
def _kmap(
    dmabuf: DmaBuf | None, page_num: int, name: Literal["kmap", "kmap_atomic"]
) -> KernelMapping | None:
    if dmabuf is None:
        # "WARN_ON(!dmabuf); return dmabuf->ops->kmap(...)": the WARN does not return
        raise KernelOops(f"dma_buf_{name}", "WARN_ON(!dmabuf) then NULL dereference")
    if not dmabuf.kernel.spec.has_kmap:
        raise NotImplementedError(f"{name} was removed in Linux 5.6; spec has no kmap")
    kmap = op(dmabuf.ops, name)
    assert kmap is not None  # mandatory at export while kernels had it
    return kmap(dmabuf, page_num)


@kernel_function("dma_buf_kmap", file="drivers/base/dma-buf.c")
def dma_buf_kmap(dmabuf: DmaBuf | None, page_num: int) -> KernelMapping | None:
    return _kmap(dmabuf, page_num, "kmap")


@kernel_function("dma_buf_kmap_atomic", file="drivers/base/dma-buf.c")
def dma_buf_kmap_atomic(dmabuf: DmaBuf | None, page_num: int) -> KernelMapping | None:
    return _kmap(dmabuf, page_num, "kmap_atomic")


@kernel_function("dma_buf_kunmap", file="drivers/base/dma-buf.c")
def dma_buf_kunmap(dmabuf: DmaBuf | None, page_num: int, vaddr: KernelMapping | None) -> None:
    if dmabuf is None:
        # "WARN_ON(!dmabuf); if (dmabuf->ops->kunmap)": the WARN does not return
        raise KernelOops("dma_buf_kunmap", "WARN_ON(!dmabuf) then NULL dereference")
    kunmap = op(dmabuf.ops, "kunmap")
    if kunmap is not None:
        kunmap(dmabuf, page_num, vaddr)


# -- vmap ------------------------------------------------------------------------------
@kernel_function("dma_buf_vmap", file="drivers/dma-buf/dma-buf.c")
def dma_buf_vmap(dmabuf: DmaBuf | None, map: IosysMap | None = None) -> Any:
    """Modern: ``int dma_buf_vmap(dmabuf, map)`` with the core's counter; 3.5: ``void *``."""
    if dmabuf is None:
        if map is None:
            return None  # 3.5: WARN_ON(!dmabuf) → NULL
        map.vaddr = None  # iosys_map_clear(map) comes before WARN_ON(!dmabuf)
        return -errno.EINVAL
    spec = dmabuf.kernel.spec
    if not spec.has_vmap:
        raise NotImplementedError("dma_buf_vmap arrived in Linux 3.5")
    vmap = op(dmabuf.ops, "vmap")
    if not spec.vmap_returns_errno:
        # 3.5-5.10: void *vmap(dmabuf), no counting in the core
        return cast(VmapOp35, vmap)(dmabuf) if vmap is not None else None
    if map is None:
        raise TypeError(f"spec {spec.name} calls dma_buf_vmap(dmabuf, IosysMap())")
    map.vaddr = None
    _require_resv(dmabuf, "dma_buf_vmap")
    if vmap is None:
        return -errno.EINVAL  # R54
    if dmabuf.vmapping_counter:
        dmabuf.vmapping_counter += 1
        map.vaddr = dmabuf.vmap_ptr.vaddr
        return 0
    tmp = IosysMap()
    ret = int(cast(VmapOp, vmap)(dmabuf, tmp))
    if ret:
        dmabuf.kernel.warn("dma_buf_vmap", "ops->vmap failed")
        return ret
    dmabuf.vmap_ptr = tmp
    dmabuf.vmapping_counter = 1
    map.vaddr = tmp.vaddr
    return 0


@kernel_function("dma_buf_vunmap", file="drivers/dma-buf/dma-buf.c")
def dma_buf_vunmap(dmabuf: DmaBuf | None, map: Any) -> None:
    if dmabuf is None:
        return
    spec = dmabuf.kernel.spec
    vunmap = op(dmabuf.ops, "vunmap")
    if not spec.vmap_returns_errno:
        if vunmap is not None:
            cast(VunmapOp35, vunmap)(dmabuf, map)
        return
    _require_resv(dmabuf, "dma_buf_vunmap")
    if dmabuf.vmap_ptr.is_null():
        raise KernelOops("dma_buf_vunmap", "BUG_ON(iosys_map_is_null(&dmabuf->vmap_ptr))")
    if dmabuf.vmapping_counter == 0:
        raise KernelOops("dma_buf_vunmap", "BUG_ON(dmabuf->vmapping_counter == 0)")
    # iosys_map_is_equal compares the pointer values, not the struct's identity
    if not isinstance(map, IosysMap) or map.vaddr != dmabuf.vmap_ptr.vaddr:
        raise KernelOops("dma_buf_vunmap", "BUG_ON(!iosys_map_is_equal(&dmabuf->vmap_ptr, map))")
    dmabuf.vmapping_counter -= 1
    if dmabuf.vmapping_counter == 0:
        if vunmap is not None:
            cast(VunmapOp, vunmap)(dmabuf, map)
        dmabuf.vmap_ptr = IosysMap()


def dma_buf_vmap_unlocked(dmabuf: DmaBuf, map: IosysMap) -> int:
    resv = dmabuf.resv
    if resv is None or not dmabuf.kernel.spec.vmap_requires_resv_held:
        return int(dma_buf_vmap(dmabuf, map))
    resv.lock()
    try:
        return int(dma_buf_vmap(dmabuf, map))
    finally:
        resv.unlock()


def dma_buf_vunmap_unlocked(dmabuf: DmaBuf, map: IosysMap) -> None:
    resv = dmabuf.resv
    if resv is None or not dmabuf.kernel.spec.vmap_requires_resv_held:
        dma_buf_vunmap(dmabuf, map)
        return
    resv.lock()
    try:
        dma_buf_vunmap(dmabuf, map)
    finally:
        resv.unlock()
