"""Fixtures for the dma-buf core tests: a configurable test exporter and an importer.

:class:`TestExporter` is a ``DmaBufOps`` subclass written the way a kernel
exporter would be.  It allocates its pages with ``alloc_contig`` (one
physically contiguous block, so ``pfn(i) = base + i``) and records every op
call.  Its ``mmap`` either remaps the whole vma eagerly (``mode="remap"``)
or installs a fault handler that uses ``vmf_insert_pfn``
(``mode="fault"``).  Options let a test model the things a real exporter
does:

* ``missing=("mmap", "kmap")`` — those ops are NULL;
* ``mmap_errno=ENOMEM`` — ``ops->mmap`` fails with ``-ENOMEM``;
* ``swap_file=True`` — ``ops->mmap`` puts the exporter's own file (with its
  own inode and address_space) into ``vma->vm_file``, as the RFC advises
  shoot-down exporters to do;
* ``begin_ret``/``end_ret``/``attach_ret`` — what those hooks return;
* ``cache_sgt``/``pin`` — ``cache_sgt_mapping`` and a pin/unpin pair.

Ops take ``*args`` where the 3.x and modern signatures differ, so one class
serves every spec.

:class:`Importer` is a char driver (``/dev/test-importer``) whose
``f_op->mmap`` forwards to ``dma_buf_mmap(dmabuf, vma, pgoff)`` — the seed's
second use case — and records ``vm_file``/``vm_pgoff`` as they were right
after the call.

Kernels are built with ``load_drivers=False`` so that nothing but the test's
own drivers exists.
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.device import Device, SgTable
from dmabuf_sim.dma_buf import DmaBuf, DmaBufExportInfo, DmaBufOps, dma_buf_export, dma_buf_fd
from dmabuf_sim.dma_buf.core import IosysMap
from dmabuf_sim.dma_buf.mmap import dma_buf_mmap
from dmabuf_sim.fs import File, FileOperations, alloc_anon_inode, alloc_file_pseudo
from dmabuf_sim.mm.memory import remap_pfn_range, vmf_insert_pfn
from dmabuf_sim.mm.util import vma_set_file
from dmabuf_sim.mm.vma import (
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_FAULT_SIGBUS,
    VM_IO,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
    VmAreaStruct,
    VmFault,
    VmOperationsStruct,
)
from dmabuf_sim.process import Process
from dmabuf_sim.spec import SPECS, Spec

PAGE = 4096
EXP_NAME = "test-exporter"
IMPORTER_PATH = "/dev/test-importer"
KVADDR = 0xFFFF_C900_0000_0000  # where the test exporter "vmaps" its buffer


class TestExporter(DmaBufOps):
    """A configurable exporter; see the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        kernel: Kernel,
        size: int,
        *,
        mode: str = "remap",
        missing: tuple[str, ...] = (),
        mmap_errno: int = 0,
        swap_file: bool = False,
        begin_ret: int = 0,
        end_ret: int = 0,
        attach_ret: int = 0,
        vmap_ret: int = 0,
        cache_sgt: bool = False,
        pin: bool | str = False,
    ) -> None:
        assert mode in ("remap", "fault"), mode
        self.kernel = kernel
        self.size = size
        self.mode = mode
        self.mmap_errno = mmap_errno
        self.begin_ret = begin_ret
        self.end_ret = end_ret
        self.attach_ret = attach_ret
        self.vmap_ret = vmap_ret
        self.cache_sgt_mapping = cache_sgt
        # back the whole buffer, partial last page included
        self.npages = max(1, -(-size // PAGE))
        self.base_pfn = kernel.mem.alloc_contig(self.npages)
        self.freed = False
        # what the core handed us
        self.calls: list[tuple[Any, ...]] = []
        self.release_calls = 0
        self.mmap_calls: list[VmAreaStruct] = []
        self.faults: list[int] = []
        self.opens = 0
        self.closes = 0
        self.vmap_calls = 0
        self.vunmap_calls = 0
        self.own_file: File | None = None
        if swap_file:
            inode = alloc_anon_inode(kernel, "test-exporter-fs")
            self.own_file = alloc_file_pseudo(
                inode, "test-exporter-own", os.O_RDWR, FileOperations()
            )
        if pin:
            if pin in (True, "both", "pin"):
                self.pin = self._pin
            if pin in (True, "both", "unpin"):
                self.unpin = self._unpin
        for name in missing:
            setattr(self, name, None)

    # -- helpers ---------------------------------------------------------------------
    def pfn(self, pgoff: int) -> int:
        return self.base_pfn + pgoff

    def ops_called(self, name: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == name]

    # -- dma_buf_ops -----------------------------------------------------------------
    def attach(self, dmabuf: DmaBuf, *args: Any) -> int:
        self.calls.append(("attach", dmabuf, *args))
        return self.attach_ret

    def detach(self, dmabuf: DmaBuf, attach: Any) -> None:
        self.calls.append(("detach", dmabuf, attach))

    def _pin(self, attach: Any) -> int:
        self.calls.append(("pin", attach))
        return 0

    def _unpin(self, attach: Any) -> None:
        self.calls.append(("unpin", attach))

    def map_dma_buf(self, attach: Any, direction: Any) -> SgTable:
        self.calls.append(("map_dma_buf", attach, direction))
        return SgTable([(self.base_pfn, self.npages)])

    def unmap_dma_buf(self, attach: Any, sgt: SgTable, direction: Any) -> None:
        self.calls.append(("unmap_dma_buf", attach, sgt, direction))

    def release(self, dmabuf: DmaBuf) -> None:
        self.calls.append(("release", dmabuf))
        self.release_calls += 1
        if not self.freed:
            self.kernel.mem.free_contig(self.base_pfn, self.npages)
            self.freed = True

    def begin_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        self.calls.append(("begin_cpu_access", *args))
        return self.begin_ret

    def end_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        self.calls.append(("end_cpu_access", *args))
        return self.end_ret

    def kmap(self, dmabuf: DmaBuf, page_num: int) -> Any:
        self.calls.append(("kmap", page_num))
        return ("kmap", self.pfn(page_num))

    def kmap_atomic(self, dmabuf: DmaBuf, page_num: int) -> Any:
        self.calls.append(("kmap_atomic", page_num))
        return ("kmap_atomic", self.pfn(page_num))

    def kunmap(self, dmabuf: DmaBuf, page_num: int, vaddr: Any) -> None:
        self.calls.append(("kunmap", page_num, vaddr))

    def vmap(self, dmabuf: DmaBuf, *args: Any) -> Any:
        self.vmap_calls += 1
        if not args:  # 3.5: void *vmap(dmabuf)
            return KVADDR
        if self.vmap_ret:
            return self.vmap_ret
        map_: IosysMap = args[0]
        map_.vaddr = KVADDR + 0  # a fresh int object every time is fine: compared by value
        return 0

    def vunmap(self, dmabuf: DmaBuf, map_: Any) -> None:
        self.vunmap_calls += 1

    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        self.mmap_calls.append(vma)
        if self.mmap_errno:
            return -self.mmap_errno
        if self.own_file is not None:
            vma_set_file(vma, self.own_file)
        if self.mode == "remap":
            return remap_pfn_range(
                vma,
                vma.vm_start,
                self.pfn(vma.vm_pgoff),
                vma.vm_end - vma.vm_start,
                vma.vm_page_prot,
            )
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
            return -errno.EINVAL  # like the cma heap / udmabuf: shared mappings only
        vma.vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP
        vma.vm_ops = VmOperationsStruct(
            open=self._vm_open, close=self._vm_close, fault=self._vm_fault, owner=EXP_NAME
        )
        vma.vm_private_data = self
        return 0

    def _vm_open(self, vma: VmAreaStruct) -> None:
        self.opens += 1

    def _vm_close(self, vma: VmAreaStruct) -> None:
        self.closes += 1

    def _vm_fault(self, vmf: VmFault) -> int:
        self.faults.append(vmf.pgoff)
        if vmf.pgoff >= self.npages:
            return VM_FAULT_SIGBUS
        return vmf_insert_pfn(vmf.vma, vmf.address, self.pfn(vmf.pgoff))


def export(
    kernel: Kernel,
    exporter: Any,
    size: int,
    *,
    flags: int = os.O_RDWR,
    priv: Any = "default",
    exp_name: str = EXP_NAME,
    resv: Any = None,
) -> DmaBuf:
    """``dma_buf_export`` in the form the kernel's spec uses (raises KernelError)."""
    if priv == "default":
        priv = exporter
    if kernel.spec.export_info_form:
        info = DmaBufExportInfo(
            ops=exporter, size=size, priv=priv, flags=flags, exp_name=exp_name, resv=resv
        )
        return dma_buf_export(kernel, info)
    return dma_buf_export(kernel, priv, exporter, size, flags)


class Env(SimpleNamespace):
    """One kernel, one process, one exported buffer (and maybe its fd)."""

    kernel: Kernel
    proc: Process
    exp: TestExporter
    dmabuf: DmaBuf
    fd: int
    file: File


def make_kernel(spec: str | Spec) -> Kernel:
    return Kernel(spec, load_drivers=False)


def new_env(
    spec: str | Spec,
    size: int = 4 * PAGE,
    *,
    flags: int = os.O_RDWR,
    fd: bool = True,
    fd_flags: int = 0,
    **exporter_kw: Any,
) -> Env:
    """Export a ``size``-byte buffer from a :class:`TestExporter`; install an fd."""
    kernel = make_kernel(spec)
    proc = kernel.spawn("test")
    exp = TestExporter(kernel, size, **exporter_kw)
    dmabuf = export(kernel, exp, size, flags=flags)
    env = Env(kernel=kernel, proc=proc, exp=exp, dmabuf=dmabuf, fd=-1, file=dmabuf.file)
    if fd:
        with kernel.running(proc):
            env.fd = dma_buf_fd(dmabuf, fd_flags)
        assert env.fd >= 0
    return env


class Importer:
    """A char driver whose ``f_op->mmap`` forwards to ``dma_buf_mmap``.

    ``pgoff=None`` forwards the user's page offset (``vma->vm_pgoff``);
    an int forwards that page offset instead (a driver-computed one, e.g. 0
    as drm_gem_shmem does).
    """

    def __init__(self, kernel: Kernel, dmabuf: DmaBuf | None, pgoff: int | None = None) -> None:
        self.kernel = kernel
        self.dmabuf = dmabuf
        self.pgoff = pgoff
        self.results: list[dict[str, Any]] = []
        self.fops = FileOperations(owner="test-importer", mmap=self.importer_mmap)
        self.dev = kernel.register_chrdev(IMPORTER_PATH, self.fops, self)

    def _counts(self, file: File) -> tuple[int, int | None]:
        dfile = self.dmabuf.file if self.dmabuf is not None else None
        return file.f_count, (dfile.f_count if dfile is not None else None)

    def importer_mmap(self, file: File, vma: VmAreaStruct) -> int:
        before = (vma.vm_file, vma.vm_pgoff)
        counts_before = self._counts(file)
        pgoff = vma.vm_pgoff if self.pgoff is None else self.pgoff
        ret = dma_buf_mmap(self.dmabuf, vma, pgoff)
        self.results.append(
            {
                "ret": ret,
                "file_before": before[0],
                "pgoff_before": before[1],
                "file_after": vma.vm_file,
                "pgoff_after": vma.vm_pgoff,
                "importer_file": file,
                "counts_before": counts_before,
                "counts_after": self._counts(file),
            }
        )
        return ret


def holders(kernel: Kernel, file: File, extra: int = 0) -> int:
    """Who may hold a reference on ``file``: fds of every process + vmas + ``extra``."""
    n = extra
    for proc in kernel.processes.values():
        n += sum(1 for f in proc.files.fds.values() if f is file)
        n += sum(1 for v in proc.mm.vmas if v.vm_file is file)
    return n


def custom(spec: str, **changes: Any) -> Spec:
    return SPECS[spec].replace(**changes)


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for tests (conftest modules cannot be imported directly)."""
    return SimpleNamespace(
        PAGE=PAGE,
        EXP_NAME=EXP_NAME,
        IMPORTER_PATH=IMPORTER_PATH,
        KVADDR=KVADDR,
        TestExporter=TestExporter,
        Importer=Importer,
        Device=Device,
        export=export,
        new_env=new_env,
        make_kernel=make_kernel,
        holders=holders,
        custom=custom,
    )
