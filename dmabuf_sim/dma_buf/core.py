"""``struct dma_buf``, export, fds, get/put and release (drivers/dma-buf/dma-buf.c).

An exporter is any object whose attributes are the ``dma_buf_ops`` of the
spec in force; an attribute that is missing or ``None`` is a NULL op.
:class:`DmaBufOps` documents the signatures and may be subclassed.

Export (kernel-spec §2.2, §4.1):

* 3.x form ``dma_buf_export(kernel, priv, ops, size, flags)``: mandatory
  ``map_dma_buf, unmap_dma_buf, release, kmap_atomic, kmap`` and, since the
  mmap patch, ``mmap`` (R11, R13); one file on the **shared anon inode**;
* modern form ``dma_buf_export(kernel, exp_info)``: mandatory
  ``map_dma_buf, unmap_dma_buf, release``; pin/unpin in pairs (R14); a
  **per-buffer inode** on the dmabuf pseudo-filesystem (R25-R27).

The exporter's caller owns the file's single reference; :func:`dma_buf_fd`
moves it into the fd table without taking another (R16).  The last ``fput``
releases: ``ops->release`` runs exactly once, after every fd, vma and kernel
reference is gone (R17).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

from attrs import define, field

from ..errors import KernelError, KernelOops
from ..fs import (
    FMODE_LSEEK,
    File,
    FileOperations,
    Inode,
    alloc_anon_inode,
    alloc_file_pseudo,
    anon_inode_getfile,
    fput,
    get_file,
)
from ..fs_file import fd_install, fget, get_unused_fd_flags
from ..kstate import Key
from ..mm.page_alloc import PAGE_SIZE
from ..module import Module, find_module, module_put, try_module_get
from ..trace import kernel_function
from .dma_resv import DmaResv

if TYPE_CHECKING:
    from ..device import Device, DmaDataDirection, SgTable
    from ..kernel import Kernel
    from ..mm.vma import VmAreaStruct
    from ..mm.vmalloc import KernelMapping
    from ..process import Process

__all__ = [
    "AttachOp",
    "AttachOp3x",
    "BeginCpuAccessOp3x",
    "CpuAccessOp",
    "DetachOp",
    "DmaBuf",
    "DmaBufAttachment",
    "DmaBufExportInfo",
    "DmaBufOps",
    "EndCpuAccessOp3x",
    "IosysMap",
    "KmapOp",
    "KunmapOp",
    "MapDmaBufOp",
    "MmapOp",
    "OpName",
    "PinOp",
    "ReleaseOp",
    "UnmapDmaBufOp",
    "UnpinOp",
    "VmapOp",
    "VmapOp35",
    "VunmapOp",
    "VunmapOp35",
    "dma_buf_export",
    "dma_buf_fd",
    "dma_buf_get",
    "dma_buf_put",
    "get_dma_buf",
    "is_dma_buf_file",
    "op",
]


# -- the exporter interface: one callable type per op and spec form ---------------------
class AttachOp(Protocol):
    """``int (*attach)(struct dma_buf *, struct dma_buf_attachment *)`` (since 4.19)."""

    def __call__(self, dmabuf: DmaBuf, attachment: DmaBufAttachment, /) -> int: ...


class AttachOp3x(Protocol):
    """Until 4.18: ``attach(struct dma_buf *, struct device *, struct dma_buf_attachment *)``."""

    def __call__(self, dmabuf: DmaBuf, dev: Device, attachment: DmaBufAttachment, /) -> int: ...


class DetachOp(Protocol):
    def __call__(self, dmabuf: DmaBuf, attachment: DmaBufAttachment, /) -> None: ...


class PinOp(Protocol):
    def __call__(self, attachment: DmaBufAttachment, /) -> int: ...


class UnpinOp(Protocol):
    def __call__(self, attachment: DmaBufAttachment, /) -> None: ...


class MapDmaBufOp(Protocol):
    """Return the sg table for the attachment's device; raise KernelError for ``ERR_PTR``
    (a 3.x exporter may return None: NULL, which the 3.x core passes on)."""

    def __call__(
        self, attachment: DmaBufAttachment, direction: DmaDataDirection, /
    ) -> SgTable | None: ...


class UnmapDmaBufOp(Protocol):
    def __call__(
        self, attachment: DmaBufAttachment, sgt: SgTable, direction: DmaDataDirection, /
    ) -> None: ...


class ReleaseOp(Protocol):
    def __call__(self, dmabuf: DmaBuf, /) -> None: ...


class CpuAccessOp(Protocol):
    """``begin_cpu_access``/``end_cpu_access`` since 4.6: ``(dmabuf, direction) -> int``."""

    def __call__(self, dmabuf: DmaBuf, direction: DmaDataDirection, /) -> int: ...


class BeginCpuAccessOp3x(Protocol):
    """3.x-4.5: ``begin_cpu_access(dmabuf, start, len, direction) -> int``."""

    def __call__(
        self, dmabuf: DmaBuf, start: int, length: int, direction: DmaDataDirection, /
    ) -> int: ...


class EndCpuAccessOp3x(Protocol):
    """3.x-4.5: ``void end_cpu_access(dmabuf, start, len, direction)``."""

    def __call__(
        self, dmabuf: DmaBuf, start: int, length: int, direction: DmaDataDirection, /
    ) -> None: ...


class MmapOp(Protocol):
    def __call__(self, dmabuf: DmaBuf, vma: VmAreaStruct, /) -> int: ...


class VmapOp(Protocol):
    """Since 5.11: ``int (*vmap)(struct dma_buf *, struct iosys_map *)``."""

    def __call__(self, dmabuf: DmaBuf, map: IosysMap, /) -> int: ...


class VmapOp35(Protocol):
    """3.5-5.10: ``void *(*vmap)(struct dma_buf *)`` (None is NULL)."""

    def __call__(self, dmabuf: DmaBuf, /) -> KernelMapping | None: ...


class VunmapOp(Protocol):
    def __call__(self, dmabuf: DmaBuf, map: IosysMap, /) -> None: ...


class VunmapOp35(Protocol):
    def __call__(self, dmabuf: DmaBuf, vaddr: KernelMapping | None, /) -> None: ...


class KmapOp(Protocol):
    """3.4-5.5: ``void *(*kmap)(struct dma_buf *, unsigned long page_num)`` (and kmap_atomic)."""

    def __call__(self, dmabuf: DmaBuf, page_num: int, /) -> KernelMapping | None: ...


class KunmapOp(Protocol):
    def __call__(self, dmabuf: DmaBuf, page_num: int, vaddr: KernelMapping | None, /) -> None: ...


class DmaBufOps:
    """``struct dma_buf_ops``: subclass and define the ops you implement.

    Every op defaults to ``None`` (NULL).  Each is typed with the signature the
    kernel gives it, or with each signature where kernels differ (the 3.x form
    carries ``3x``), so ``mypy`` rejects an op whose signature matches no kernel:

    * ``attach(dmabuf, attachment) -> int``  [3.x: ``attach(dmabuf, dev, attachment)``]
    * ``detach(dmabuf, attachment)``
    * ``pin(attachment) -> int``, ``unpin(attachment)``
    * ``map_dma_buf(attachment, direction) -> SgTable`` (raise KernelError for ERR_PTR)
    * ``unmap_dma_buf(attachment, sgt, direction)``
    * ``release(dmabuf)``
    * ``begin_cpu_access(dmabuf, direction) -> int``  [3.x: ``(dmabuf, start, len, direction)``]
    * ``end_cpu_access(dmabuf, direction) -> int``  [3.x: ``(dmabuf, start, len, direction)``, void]
    * ``mmap(dmabuf, vma) -> int``
    * ``vmap(dmabuf, map: IosysMap) -> int``  [3.5: ``vmap(dmabuf) -> vaddr or None``]
    * ``vunmap(dmabuf, map)``  [3.5: ``vunmap(dmabuf, vaddr)``]
    * ``kmap(dmabuf, page_num)``, ``kmap_atomic(...)``, ``kunmap(dmabuf, page_num, vaddr)`` (3.x)

    An exporter that serves both forms takes ``(dmabuf, *args)``.  Any object with
    these attributes works as ops at run time; subclassing is what lets mypy check it.
    ``cache_sgt_mapping = True`` asks the core to cache the sg table per attachment
    (kernels that have the field: ~4.19 until 6.15).
    """

    attach: AttachOp | AttachOp3x | None = None
    detach: DetachOp | None = None
    pin: PinOp | None = None
    unpin: UnpinOp | None = None
    map_dma_buf: MapDmaBufOp | None = None
    unmap_dma_buf: UnmapDmaBufOp | None = None
    release: ReleaseOp | None = None
    begin_cpu_access: CpuAccessOp | BeginCpuAccessOp3x | None = None
    end_cpu_access: CpuAccessOp | EndCpuAccessOp3x | None = None
    mmap: MmapOp | None = None
    vmap: VmapOp | VmapOp35 | None = None
    vunmap: VunmapOp | VunmapOp35 | None = None
    kmap: KmapOp | None = None
    kmap_atomic: KmapOp | None = None
    kunmap: KunmapOp | None = None
    kunmap_atomic: KunmapOp | None = None
    cache_sgt_mapping: bool = False


OpName = Literal[
    "attach",
    "detach",
    "pin",
    "unpin",
    "map_dma_buf",
    "unmap_dma_buf",
    "release",
    "begin_cpu_access",
    "end_cpu_access",
    "mmap",
    "vmap",
    "vunmap",
    "kmap",
    "kmap_atomic",
    "kunmap",
    "kunmap_atomic",
]


# `op()` reads an op of any object, as the core must (an exporter need not subclass
# DmaBufOps); the overloads give each op the type DmaBufOps declares for it.
@overload
def op(ops: object, name: Literal["attach"]) -> AttachOp | AttachOp3x | None: ...
@overload
def op(ops: object, name: Literal["detach"]) -> DetachOp | None: ...
@overload
def op(ops: object, name: Literal["pin"]) -> PinOp | None: ...
@overload
def op(ops: object, name: Literal["unpin"]) -> UnpinOp | None: ...
@overload
def op(ops: object, name: Literal["map_dma_buf"]) -> MapDmaBufOp | None: ...
@overload
def op(ops: object, name: Literal["unmap_dma_buf"]) -> UnmapDmaBufOp | None: ...
@overload
def op(ops: object, name: Literal["release"]) -> ReleaseOp | None: ...
@overload
def op(
    ops: object, name: Literal["begin_cpu_access"]
) -> CpuAccessOp | BeginCpuAccessOp3x | None: ...
@overload
def op(ops: object, name: Literal["end_cpu_access"]) -> CpuAccessOp | EndCpuAccessOp3x | None: ...
@overload
def op(ops: object, name: Literal["mmap"]) -> MmapOp | None: ...
@overload
def op(ops: object, name: Literal["vmap"]) -> VmapOp | VmapOp35 | None: ...
@overload
def op(ops: object, name: Literal["vunmap"]) -> VunmapOp | VunmapOp35 | None: ...
@overload
def op(ops: object, name: Literal["kmap", "kmap_atomic"]) -> KmapOp | None: ...
@overload
def op(ops: object, name: Literal["kunmap", "kunmap_atomic"]) -> KunmapOp | None: ...
def op(ops: object, name: OpName) -> object:
    """The op ``name`` of an exporter, or None (a NULL function pointer)."""
    return getattr(ops, name, None)


@define(eq=False, slots=True)
class IosysMap:
    """``struct iosys_map``: where a vmap put the buffer (``vaddr`` None = NULL)."""

    vaddr: KernelMapping | None = None

    def is_null(self) -> bool:
        return self.vaddr is None


@define(slots=True)
class DmaBufExportInfo:
    """``struct dma_buf_export_info`` (``DEFINE_DMA_BUF_EXPORT_INFO`` sets exp_name)."""

    ops: DmaBufOps | None
    """The exporter's ops: a :class:`DmaBufOps` (any object with the op attributes works at
    run time; None is a NULL ``ops``, which export refuses)."""
    size: int
    priv: Any
    flags: int = 0o2  # O_RDWR
    exp_name: str = ""
    owner: Module | str | None = None
    """``THIS_MODULE`` of the exporter: a :class:`~dmabuf_sim.module.Module` (or the name of
    a loaded one); None or "" for built-in code.  Export holds a reference on it."""
    resv: DmaResv | None = None


@define(eq=False, slots=True)
class DmaBuf:
    """``struct dma_buf``."""

    kernel: Kernel = field(repr=False)
    size: int
    ops: DmaBufOps = field(repr=False)
    priv: Any = field(repr=False)
    """The exporter's ``void *priv``."""
    exp_name: str = ""
    name: str | None = None
    file: File | None = field(default=None, repr=False)
    attachments: list[DmaBufAttachment] = field(factory=list, repr=False)
    vmapping_counter: int = 0
    vmap_ptr: IosysMap = field(factory=IosysMap, repr=False)
    resv: DmaResv | None = field(default=None, repr=False)
    poll_cb_in: Any = field(default=None, repr=False)
    poll_cb_out: Any = field(default=None, repr=False)
    released: bool = False
    release_calls: int = 0
    ino: int = 0
    owner: Module | None = field(default=None, repr=False)
    """The exporter's module, referenced from export to release."""

    def trace_name(self) -> str:
        label = self.name or self.exp_name or "dmabuf"
        return f"dmabuf({label}, {self.size:#x})"


@define(eq=False, slots=True)
class DmaBufAttachment:
    """``struct dma_buf_attachment``."""

    dmabuf: DmaBuf = field(repr=False)
    dev: Device
    priv: Any = field(default=None, repr=False)
    sgt: SgTable | None = field(default=None, repr=False)
    dir: DmaDataDirection | None = None
    importer_ops: Any = field(default=None, repr=False)
    importer_priv: Any = field(default=None, repr=False)

    @property
    def kernel(self) -> Kernel:
        return self.dmabuf.kernel

    def trace_name(self) -> str:
        return f"attach({self.dev.name})"


# -- the per-kernel dma-buf "filesystem" ------------------------------------------
@define(eq=False, slots=True)
class DmaBufSubsys:
    """What dma-buf.c keeps in statics: the fops table and the dmabuf pseudo-fs."""

    kernel: Kernel = field(repr=False)
    fops: FileOperations = field(repr=False)


DMA_BUF_SUBSYS: Key[DmaBufSubsys] = Key("dma-buf")


def dma_buf_subsys(kernel: Kernel) -> DmaBufSubsys:
    """dma-buf.c's statics in this kernel (made at the first use, as by ``dma_buf_init``)."""
    return kernel.subsys.setdefault(
        DMA_BUF_SUBSYS, lambda: DmaBufSubsys(kernel, _build_fops(kernel))
    )


def _build_fops(kernel: Kernel) -> FileOperations:
    """``dma_buf_fops`` as the spec's kernel defined it."""
    from . import fops as f  # noqa: PLC0415  # cycle: fops.py uses DmaBuf and is_dma_buf_file from here
    from .mmap import dma_buf_mmap_internal  # noqa: PLC0415  # cycle: mmap.py uses DmaBuf and op() from here

    spec = kernel.spec
    has_ioctl = spec.has_sync_ioctl or spec.has_set_name or spec.has_sync_file_ioctls
    return FileOperations(
        owner="dma-buf",
        release=dma_buf_file_release if spec.per_buffer_inode else dma_buf_release_3x,
        mmap=dma_buf_mmap_internal if spec.has_mmap_fop else None,
        llseek=f.dma_buf_llseek if spec.has_llseek else None,
        poll=f.dma_buf_poll if spec.has_poll else None,
        unlocked_ioctl=f.dma_buf_ioctl if has_ioctl else None,
        show_fdinfo=f.dma_buf_show_fdinfo if spec.has_fdinfo else None,
    )


def is_dma_buf_file(file: File | None) -> bool:
    """``is_dma_buf_file``: ``file->f_op == &dma_buf_fops``."""
    return file is not None and file.f_op is dma_buf_subsys(file.kernel).fops


def _dmabuf_dname(file: File) -> str:
    dmabuf = file.private_data
    name = dmabuf.name if isinstance(dmabuf, DmaBuf) and dmabuf.name else ""
    return f"/dmabuf:{name}"


# -- export -----------------------------------------------------------------------
_MANDATORY_3X: tuple[OpName, ...] = (
    "map_dma_buf",
    "unmap_dma_buf",
    "release",
    "kmap_atomic",
    "kmap",
)
_MANDATORY_MODERN: tuple[OpName, ...] = ("map_dma_buf", "unmap_dma_buf", "release")


def dma_buf_export(kernel: Kernel, *args: Any) -> DmaBuf:
    """Export a buffer; raises :class:`KernelError` for ``ERR_PTR(-errno)``.

    ``dma_buf_export(kernel, exp_info)`` on modern specs,
    ``dma_buf_export(kernel, priv, ops, size, flags)`` on the 3.x ones.
    """
    spec = kernel.spec
    if not spec.config_dma_shared_buffer:
        raise KernelError(errno.ENODEV, "dma_buf_export")  # the !CONFIG stub (R53)
    if spec.export_info_form:
        if len(args) != 1 or not isinstance(args[0], DmaBufExportInfo):
            raise TypeError(
                f"spec {spec.name} exports with dma_buf_export(kernel, DmaBufExportInfo(...))"
            )
        info = args[0]
    else:
        if len(args) != 4:
            raise TypeError(
                f"spec {spec.name} exports with dma_buf_export(kernel, priv, ops, size, flags)"
            )
        priv, ops, size, flags = args
        info = DmaBufExportInfo(ops=ops, size=size, priv=priv, flags=flags)
    if not isinstance(info.size, int) or info.size < 0:
        raise ValueError(f"size must be a non-negative int (bytes), not {info.size!r}")
    return _dma_buf_export(kernel, info)


@kernel_function("dma_buf_export", file="drivers/dma-buf/dma-buf.c")
def _dma_buf_export(kernel: Kernel, info: DmaBufExportInfo) -> DmaBuf:
    spec = kernel.spec
    ops = info.ops
    mandatory = _MANDATORY_MODERN if spec.export_info_form else _MANDATORY_3X
    missing: list[OpName] = [name for name in mandatory if op(ops, name) is None]
    if spec.mmap_op_mandatory and op(ops, "mmap") is None:
        missing.append("mmap")
    if not spec.kmap_ops_mandatory:
        missing = [m for m in missing if m not in ("kmap", "kmap_atomic")]
    if info.priv is None or ops is None or missing:
        what = "priv" if info.priv is None else "ops" if ops is None else f"ops->{missing[0]}"
        kernel.warn("dma_buf_export", f"!{what}")
        raise KernelError(errno.EINVAL, "dma_buf_export")  # R11, R13
    if (
        spec.export_checks_cache_sgt_with_pin
        and getattr(ops, "cache_sgt_mapping", False)
        and (op(ops, "pin") is not None or op(ops, "unpin") is not None)
    ):
        kernel.warn("dma_buf_export", "ops->cache_sgt_mapping && (ops->pin || ops->unpin)")
        raise KernelError(errno.EINVAL, "dma_buf_export")
    if spec.export_checks_pin_unpin_pair and (op(ops, "pin") is None) != (op(ops, "unpin") is None):
        kernel.warn("dma_buf_export", "!ops->pin != !ops->unpin")
        raise KernelError(errno.EINVAL, "dma_buf_export")  # R14
    owner = _owner_module(kernel, info.owner)
    if not try_module_get(owner):
        raise KernelError(errno.ENOENT, "dma_buf_export")  # the module is going away
    exp_name = info.exp_name or getattr(ops, "exp_name", "") or type(ops).__name__
    dmabuf = DmaBuf(kernel, info.size, ops, info.priv, exp_name=exp_name, owner=owner)
    if spec.per_buffer_inode:
        dmabuf.resv = info.resv or DmaResv(kernel)
        dmabuf.file = dma_buf_getfile(kernel, dmabuf, info.flags)
    else:
        dmabuf.file = anon_inode_getfile(
            kernel, "dmabuf", dma_buf_subsys(kernel).fops, dmabuf, info.flags
        )
    kernel.dma_bufs.append(dmabuf)
    return dmabuf


def _owner_module(kernel: Kernel, owner: Module | str | None) -> Module | None:
    """``exp_info->owner`` as a module: a name is looked up among the loaded modules, or
    those unloaded before (a dangling ``THIS_MODULE``, whose get fails)."""
    if owner is None or owner == "":
        return None
    if isinstance(owner, Module):
        return owner
    if isinstance(owner, str):
        mod = find_module(kernel, owner)
        if mod is not None:
            return mod
        if any(u.name == owner for u in kernel.module_unloads):
            return Module(kernel, owner, state="unloaded")
        raise ValueError(
            f"exp_info.owner={owner!r} names no module: pass the Module from load_module()"
            " (THIS_MODULE), or None for built-in code"
        )
    raise TypeError(f"exp_info.owner must be a Module, a module name or None, not {owner!r}")


@kernel_function("dma_buf_getfile", file="drivers/dma-buf/dma-buf.c")
def dma_buf_getfile(kernel: Kernel, dmabuf: DmaBuf, flags: int) -> File:
    """A file on a fresh inode of the dmabuf pseudo-fs (since 5.3: its own address_space)."""
    inode: Inode = alloc_anon_inode(kernel, "dmabuf")
    inode.i_size = dmabuf.size
    dmabuf.ino = inode.i_ino
    file = alloc_file_pseudo(
        inode, "dmabuf", flags, dma_buf_subsys(kernel).fops, private_data=dmabuf
    )
    file.f_mode |= FMODE_LSEEK  # alloc_file sets it because dma_buf_fops has ->llseek
    file.d_dname = _dmabuf_dname
    file.d_release = dma_buf_release
    return file


# -- fds and references ----------------------------------------------------------------
@kernel_function("dma_buf_fd", file="drivers/dma-buf/dma-buf.c")
def dma_buf_fd(dmabuf: DmaBuf | None, flags: int) -> int:
    """Install the export reference in the current task's fd table (no new reference, R16)."""
    if dmabuf is None or dmabuf.file is None:
        return -errno.EINVAL
    task = _current(dmabuf.kernel)
    fd = get_unused_fd_flags(task, flags)
    if fd < 0:
        return fd
    fd_install(task, fd, dmabuf.file)
    return fd


def _current(kernel: Kernel) -> Process:
    if kernel.current is None:
        raise ValueError("this kernel function needs a current task: call it from a syscall")
    return kernel.current


@kernel_function("dma_buf_get", file="drivers/dma-buf/dma-buf.c")
def dma_buf_get(kernel: Kernel, fd: int) -> DmaBuf:
    """The dma-buf behind ``fd`` with a file reference held (R15); raises KernelError."""
    file = fget(_current(kernel), fd)
    if file is None:
        raise KernelError(errno.EBADF, "dma_buf_get")
    if not is_dma_buf_file(file):
        fput(file)
        raise KernelError(errno.EINVAL, "dma_buf_get")
    dmabuf = file.private_data
    assert isinstance(dmabuf, DmaBuf)
    return dmabuf


@kernel_function("dma_buf_put", file="drivers/dma-buf/dma-buf.c")
def dma_buf_put(dmabuf: DmaBuf | None) -> None:
    if dmabuf is None or dmabuf.file is None:
        if dmabuf is not None:
            dmabuf.kernel.warn("dma_buf_put", "!dmabuf->file")
        return
    fput(dmabuf.file)


@kernel_function("get_dma_buf", file="include/linux/dma-buf.h")
def get_dma_buf(dmabuf: DmaBuf) -> None:
    """Take a file reference (``get_file(dmabuf->file)``)."""
    assert dmabuf.file is not None
    get_file(dmabuf.file)


# -- release ----------------------------------------------------------------------------
def _release(dmabuf: DmaBuf, *, warn_attachments: bool = True) -> None:
    kernel = dmabuf.kernel
    if dmabuf.vmapping_counter:
        raise KernelOops("dma_buf_release", "BUG_ON(dmabuf->vmapping_counter)")
    if dmabuf.poll_cb_in is not None or dmabuf.poll_cb_out is not None:
        raise KernelOops("dma_buf_release", "BUG_ON(poll callback still armed)")
    dmabuf.release_calls += 1
    release = op(dmabuf.ops, "release")
    assert release is not None
    release(dmabuf)
    if warn_attachments and dmabuf.attachments:
        kernel.warn("dma_buf_release", "!list_empty(&dmabuf->attachments)")
    module_put(dmabuf.owner)
    dmabuf.released = True
    if dmabuf in kernel.dma_bufs:
        kernel.dma_bufs.remove(dmabuf)


@kernel_function("dma_buf_release", file="drivers/base/dma-buf.c", key="dma_buf_release@3.x")
def dma_buf_release_3x(inode: Inode, file: File) -> int:
    """3.x ``f_op->release``: the buffer goes with its file.

    ``ops->release`` then ``kfree``: no check for leftover attachments (that WARN
    arrived in 5.15 in the dentry release).
    """
    dmabuf = file.private_data
    assert isinstance(dmabuf, DmaBuf)
    _release(dmabuf, warn_attachments=False)
    return 0


@kernel_function("dma_buf_file_release", file="drivers/dma-buf/dma-buf.c")
def dma_buf_file_release(inode: Inode, file: File) -> int:
    """Modern ``f_op->release``: only unlinks from the debug list; d_release frees."""
    if not is_dma_buf_file(file):
        return -errno.EINVAL
    return 0


@kernel_function("dma_buf_release", file="drivers/dma-buf/dma-buf.c")
def dma_buf_release(file: File) -> None:
    """The dentry's ``d_release``: ``ops->release`` and the end of the dma_buf."""
    dmabuf = file.private_data
    assert isinstance(dmabuf, DmaBuf)
    _release(dmabuf)


def dma_buf_pages(size: int) -> int:
    """The floored page count the core bounds mmap with (R2)."""
    return size // PAGE_SIZE
