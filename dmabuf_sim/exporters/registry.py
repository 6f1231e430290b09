"""Every exporter by name, behind one factory interface.

An :class:`ExporterInfo` says how to make a buffer of a given size in a
process (``make_fd``) — through the real uapi where the exporter has one
(dma-heap alloc, udmabuf create), kernel-side otherwise — on which specs it
exists, and what it promises (:class:`Capabilities`).  Scenarios, the
conformance kit and the command line all go through :data:`EXPORTERS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from attrs import frozen

from ..dma_buf.core import dma_buf_fd, dma_buf_put
from ..errors import KernelError, os_error
from ..mm.shmem import F_SEAL_SHRINK, MFD_ALLOW_SEALING, MFD_CLOEXEC
from ..spec import Spec
from ..uapi import (
    DMA_HEAP_IOCTL_ALLOC,
    DRM_CLOEXEC,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_PRIME_HANDLE_TO_FD,
    DRM_RDWR,
    F_ADD_SEALS,
    UDMABUF_CREATE,
    UDMABUF_FLAGS_CLOEXEC,
    DmaHeapAllocationData,
    DrmModeCreateDumb,
    DrmPrimeHandle,
    UdmabufCreate,
)
from .shootdown import ShootdownExporter
from .teaching import TEACHING_EXPORTERS, SimpleExporter

if TYPE_CHECKING:
    from ..dma_buf.core import DmaBuf
    from ..process import Process

__all__ = ["EXPORTERS", "Capabilities", "ExporterInfo", "exporter", "kernel_side"]


@frozen
class Capabilities:
    """What an exporter promises; rules that need a missing capability are skipped."""

    coherent: bool = False
    """The CPU mapping stays coherent with devices without DMA_BUF_IOCTL_SYNC."""
    private_mapping: bool = False
    """Multi-page MAP_PRIVATE mappings are allowed."""
    growable: bool = False
    """mremap may grow a mapping (no VM_DONTEXPAND/VM_PFNMAP)."""
    swaps_vm_file: bool = False
    """mmap puts the exporter's own file in vma->vm_file."""
    min_size: int = 4096
    """The smallest buffer (bytes) the kit asks for."""
    ignores_vm_pgoff: bool = False
    """Pages are indexed from the vma start, not vm_pgoff (drm_gem_shmem; the R60 exception)."""
    zero_filled: bool = True
    """A fresh buffer reads as zeros (every in-tree exporter: heaps allocate with __GFP_ZERO,
    udmabuf wraps a fresh memfd, GEM shmem objects start zeroed)."""


@frozen
class ExporterInfo:
    name: str
    summary: str
    kind: str
    """``reference``, ``teaching`` or ``user``."""
    make_fd: Callable[[Process, int, int], int]
    """``(process, size in bytes, open flags) -> fd`` of a fresh buffer."""
    available: Callable[[Spec], str | None]
    """None if the exporter exists under the spec, else why not."""
    capabilities: Capabilities = Capabilities()
    rules: tuple[str, ...] = ()
    defect: str = ""
    fails: tuple[str, ...] = ()
    """Scenarios the exporter is documented to fail (teaching defects, historical bugs)."""
    fails_on: tuple[str, ...] = ()
    """Specs on which the defect shows (empty: every spec)."""
    capabilities_on: Callable[[Spec], Capabilities] | None = None
    """What the exporter promises where that depends on the kernel (None: ``capabilities``)."""
    kit_fails_on: tuple[str, ...] = ()
    """Specs on which the conformance kit finds the exporter broken, ``rules`` naming what:
    a bug of the kernel driver as that kernel ships it (``defect`` says which)."""
    module: str = ""
    """The loadable module the exporter is built as (its ``THIS_MODULE``); empty when it is
    built in.  The kit unloads a module exporter between buffers and reports a buffer that
    outlives it (SAN-MODULE)."""
    module_code: tuple[object, ...] = ()
    """What that module's code defines (the exporter's ops class), when the kit installs
    the module itself; empty when the kernel does (vgem)."""

    def capabilities_for(self, spec: Spec) -> Capabilities:
        """The capabilities the exporter has under ``spec``."""
        return self.capabilities if self.capabilities_on is None else self.capabilities_on(spec)


def _vgem_capabilities(spec: Spec) -> Capabilities:
    # WC mapping: the CPU bypasses its cache, so it is coherent with DMA.  drm_gem_shmem
    # (5.15+) indexes pages from the vma start, not vm_pgoff (R60); 5.10's own GEM code
    # maps the object's shmem file at vm_pgoff.
    # It also puts that shmem file in vm_file (vgem_prime_mmap), so the mapping holds the
    # file, not the dma-buf, which may go with its last fd (R17 holds for the file).
    helpers = spec.vgem_shmem_helpers
    return Capabilities(coherent=True, ignores_vm_pgoff=helpers, swaps_vm_file=not helpers)


def kernel_side(make_ops: Callable[[], Any]) -> Callable[[Process, int, int], int]:
    """A factory for exporters whose buffers are made in the kernel (``ops.export``)."""

    def make(proc: Process, size: int, flags: int) -> int:
        kernel = proc.kernel
        ops = make_ops()
        with kernel.running(proc):
            try:
                dmabuf: DmaBuf = ops.export(kernel, size, flags & os.O_ACCMODE)
            except KernelError as exc:  # the driver's ioctl would return -errno
                raise os_error(exc.err) from None
            fd = dma_buf_fd(dmabuf, flags & os.O_CLOEXEC)
            if fd < 0:
                dma_buf_put(dmabuf)  # as dma_heap_buffer_alloc does
        if fd < 0:
            raise os_error(fd)
        return fd

    return make


def _heap(name: str) -> Callable[[Process, int, int], int]:
    def make(proc: Process, size: int, flags: int) -> int:
        heap = proc.open(f"/dev/dma_heap/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = DmaHeapAllocationData(len=size, fd_flags=flags & (os.O_ACCMODE | os.O_CLOEXEC))
            proc.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, data)
        finally:
            proc.close(heap)
        return int(data.fd)

    return make


def _udmabuf(proc: Process, size: int, flags: int) -> int:
    size = -(-size // 4096) * 4096
    memfd = proc.memfd_create("udmabuf", MFD_ALLOW_SEALING | MFD_CLOEXEC)
    try:
        proc.ftruncate(memfd, size)
        proc.fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK)
        dev = proc.open("/dev/udmabuf", os.O_RDWR | os.O_CLOEXEC)
        try:
            cloexec = UDMABUF_FLAGS_CLOEXEC if flags & os.O_CLOEXEC else 0
            return proc.ioctl(dev, UDMABUF_CREATE, UdmabufCreate(memfd, cloexec, 0, size))
        finally:
            proc.close(dev)
    finally:
        proc.close(memfd)


def _vgem(proc: Process, size: int, flags: int) -> int:
    """A vgem dumb buffer exported with PRIME (``DRM_RDWR`` unless read-only is asked)."""
    pages = -(-size // 4096)
    card = proc.open("/dev/dri/card0", os.O_RDWR | os.O_CLOEXEC)
    try:
        dumb = DrmModeCreateDumb(height=pages, width=1024, bpp=32)  # 4096-byte rows
        proc.ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, dumb)
        prime_flags = DRM_CLOEXEC if flags & os.O_CLOEXEC else 0
        if flags & os.O_ACCMODE == os.O_RDWR:
            prime_flags |= DRM_RDWR
        prime = DrmPrimeHandle(handle=dumb.handle, flags=prime_flags)
        proc.ioctl(card, DRM_IOCTL_PRIME_HANDLE_TO_FD, prime)
        return int(prime.fd)
    finally:
        proc.close(card)  # the dma-buf keeps the GEM object alive


def _modern(spec: Spec) -> str | None:
    return None if spec.export_info_form else f"spec {spec.name} has no vgem in this model"


def _needs(knob: str, what: str) -> Callable[[Spec], str | None]:
    def check(spec: Spec) -> str | None:
        if not spec.has_mmap_fop:
            return f"spec {spec.name} has no dma-buf mmap"
        if not getattr(spec, knob):
            return f"spec {spec.name} has no {what}"
        return None

    return check


def _mmap_specs(spec: Spec) -> str | None:
    if not spec.config_dma_shared_buffer:
        return f"spec {spec.name} is built without CONFIG_DMA_SHARED_BUFFER"
    return None if spec.has_mmap_fop else f"spec {spec.name} has no dma-buf mmap"


def _teaching(name: str) -> Callable[[], Any]:
    def make() -> Any:
        return TEACHING_EXPORTERS[name]()

    return make


def _shootdown() -> Any:
    return ShootdownExporter()


def _simple() -> Any:
    return SimpleExporter()


def _build() -> dict[str, ExporterInfo]:
    out = [
        ExporterInfo(
            "system_heap",
            "dma-heap system heap: scattered pages, eager remap_pfn_range",
            "reference",
            _heap("system"),
            _needs("has_dma_heaps", "dma-heaps"),
            Capabilities(),
        ),
        ExporterInfo(
            "cma_heap",
            "dma-heap CMA heap: one contiguous block, pages inserted at fault",
            "reference",
            _heap("reserved"),
            _needs("has_dma_heaps", "dma-heaps"),
            Capabilities(),
            # The historical off-by-one in the fault handler (R34), fixed in 6.11 and in
            # 6.1.y since Sept 2024: no built-in spec with heaps shows it any more; a
            # 6.1.0 spec (cma_heap_fault_off_by_one=True) fails grow-past-end.
            rules=("R34",),
        ),
        ExporterInfo(
            "udmabuf",
            "udmabuf: the pages of a sealed memfd",
            "reference",
            _udmabuf,
            _needs("has_udmabuf", "udmabuf"),
            Capabilities(),
            rules=("SAN-STALE-READ",),
            defect="the first DMA_BUF_IOCTL_SYNC START only maps udmabuf's sg table, which"
            " cleans the cache but invalidates nothing: a line the CPU cached before a device"
            " wrote stays stale (non-coherent machines; fixed by 1d0e25c1ddf2 in 7.2 and the"
            " Aug 2026 stable releases: udmabuf_begin_cpu_always_syncs)",
            kit_fails_on=("v6.19",),
        ),
        ExporterInfo(
            "vgem",
            "vgem (DRM GEM shmem helpers): write-combined mapping, PRIME export",
            "reference",
            _vgem,
            _modern,
            Capabilities(coherent=True, ignores_vm_pgoff=True),
            capabilities_on=_vgem_capabilities,
            module="vgem",
            rules=("SAN-STALE-READ",),
            defect="5.10's vgem maps write-combined and still allows MAP_PRIVATE: a COW copy"
            " reads the page through the kernel's cached alias, stale after a store through"
            " the write-combined mapping went past the cache (a CPU that does not snoop its"
            " own cache across memory types; the GEM shmem helpers refuse COW mappings since"
            " 2024: drm_shmem_rejects_cow)",
            kit_fails_on=("v5.10",),
        ),
        ExporterInfo(
            "shootdown",
            "faked coherency: own file, PTE shoot-down, cache sync at fault",
            "reference",
            kernel_side(_shootdown),
            _mmap_specs,
            Capabilities(coherent=True, swaps_vm_file=True),
        ),
        ExporterInfo(
            "simple",
            "contiguous pages, eager remap_pfn_range, begin/end_cpu_access sync",
            "reference",
            kernel_side(_simple),
            _mmap_specs,
            Capabilities(),
        ),
    ]

    for name, cls in TEACHING_EXPORTERS.items():
        out.append(
            ExporterInfo(
                name,
                cls.__doc__.strip().splitlines()[0] if cls.__doc__ else name,
                "teaching",
                kernel_side(_teaching(name)),
                _mmap_specs,
                Capabilities(
                    coherent=name == "shared_file_zap", growable=name == "no_bounds_fault"
                ),
                rules=cls.rules,
                defect=cls.defect,
                fails=cls.fails,
                fails_on=cls.fails_on,
            )
        )
    return {e.name: e for e in out}


EXPORTERS: Mapping[str, ExporterInfo] = MappingProxyType(_build())


def exporter(name: str) -> ExporterInfo:
    try:
        return EXPORTERS[name]
    except KeyError:
        raise ValueError(
            f"unknown exporter {name!r}; choose one of {', '.join(EXPORTERS)}"
        ) from None
