"""Fixtures for the mm-side tests: toy char drivers and a whole-kernel snapshot.

``make_driver`` registers a char device whose ``f_op->mmap`` is written by the
test, the way a kernel driver's would be: it may set ``vm_ops`` and flags,
call ``remap_pfn_range`` / ``vm_insert_page``, or swap ``vm_file``.  The
driver counts every ``->mmap``, ``->open``, ``->close`` and ``->fault`` so a
test can assert exactly which callbacks ran.

``snapshot`` reads the kernel through the back door (vmas, PTEs, file
counts, page bytes, struct pages, cache lines) so "nothing changed" can be
checked without trusting the code under test.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.drivers.simmem import SIMMEM
from dmabuf_sim.fs import File, FileOperations
from dmabuf_sim.mm.memory import get_page
from dmabuf_sim.mm.vma import VM_FAULT_SIGBUS, VmAreaStruct, VmFault, VmOperationsStruct

PAGE = 4096

MmapFn = Callable[["ToyDriver", File, VmAreaStruct], int]


class ToyDriver:
    """A char driver with ``npages`` pages handed out lazily by page offset.

    ``mmap_fn(drv, file, vma)`` is the body of ``f_op->mmap``.  ``vm_ops()``
    builds counting ``vm_operations_struct``s; ``fault`` hands out
    ``pfn(pgoff)`` as ``vmf->page`` (refcounted) or ``VM_FAULT_SIGBUS`` past
    the end.
    """

    def __init__(self, kernel: Kernel, path: str, npages: int, mmap_fn: MmapFn | None) -> None:
        self.kernel = kernel
        self.path = path
        self.npages = npages
        self.mmap_fn = mmap_fn
        self.pfns: dict[int, int] = {}
        self.mmap_calls = 0
        self.opens: list[VmAreaStruct] = []
        self.closes: list[VmAreaStruct] = []
        self.faults: list[int] = []
        self.releases = 0
        self.fops = FileOperations(
            owner="toy", mmap=self.toy_mmap if mmap_fn else None, release=self.toy_release
        )
        self.dev = kernel.register_chrdev(path, self.fops, self)

    # f_op->mmap
    def toy_mmap(self, file: File, vma: VmAreaStruct) -> int:
        self.mmap_calls += 1
        assert self.mmap_fn is not None
        return self.mmap_fn(self, file, vma)

    def toy_release(self, inode: object, file: File) -> int:
        self.releases += 1
        return 0

    # helpers a driver would write
    def pfn(self, pgoff: int) -> int:
        if pgoff not in self.pfns:
            self.pfns[pgoff] = self.kernel.mem.alloc_pages(0)
        return self.pfns[pgoff]

    def toy_open(self, vma: VmAreaStruct) -> None:
        self.opens.append(vma)

    def toy_close(self, vma: VmAreaStruct) -> None:
        self.closes.append(vma)

    def toy_fault(self, vmf: VmFault) -> int:
        self.faults.append(vmf.address)
        if vmf.pgoff >= self.npages:
            return VM_FAULT_SIGBUS
        page = self.kernel.mem.pfn_to_page(self.pfn(vmf.pgoff))
        get_page(page)
        vmf.page = page
        return 0

    def vm_ops(
        self, *, fault: bool = True, open: bool = True, close: bool = True
    ) -> VmOperationsStruct:
        return VmOperationsStruct(
            open=self.toy_open if open else None,
            close=self.toy_close if close else None,
            fault=self.toy_fault if fault else None,
            owner="toy",
        )

    def page_bytes(self, pgoff: int) -> bytes:
        """The DRAM bytes of page ``pgoff`` after writing back the CPU cache."""
        pa = self.pfn(pgoff) * PAGE
        self.kernel.cache.clean_range(pa, PAGE)
        return self.kernel.mem.read(pa, PAGE)


@pytest.fixture(scope="session")
def make_driver() -> Callable[..., ToyDriver]:
    """``make_driver(kernel, mmap_fn, path="/dev/toy", npages=16)``."""

    def make(
        kernel: Kernel, mmap_fn: MmapFn | None, path: str = "/dev/toy", npages: int = 16
    ) -> ToyDriver:
        return ToyDriver(kernel, path, npages, mmap_fn)

    return make


def fault_only_mmap(drv: ToyDriver, file: File, vma: VmAreaStruct) -> int:
    """A plain driver: bounds check, counting vm_ops with a fault handler, no flags."""
    if vma.vm_pgoff + vma.pages() > drv.npages:
        return -errno.EINVAL
    vma.vm_ops = drv.vm_ops()
    return 0


@pytest.fixture(scope="session")
def plain_mmap() -> MmapFn:
    return fault_only_mmap


# -- whole-kernel snapshot ------------------------------------------------------------


def _files_of(kernel: Kernel) -> dict[int, File]:
    files: dict[int, File] = {}
    for proc in kernel.processes.values():
        for f in proc.files.fds.values():
            files[id(f)] = f
        for vma in proc.mm.vmas:
            if vma.vm_file is not None:
                files[id(vma.vm_file)] = vma.vm_file
    return files


def snapshot(kernel: Kernel) -> dict[str, Any]:
    """Everything a failed syscall must leave alone, as plain comparable values."""
    procs = {}
    for pid, proc in sorted(kernel.processes.items()):
        procs[pid] = {
            "vmas": [
                (
                    v.vm_start,
                    v.vm_end,
                    v.vm_flags,
                    v.vm_pgoff,
                    id(v.vm_file),
                    v.vm_page_prot,
                    id(v.vm_ops),
                    v.anon_vma,
                )
                for v in proc.mm.vmas
            ],
            "ptes": dict(proc.mm.pgtable.entries),
            "fds": {fd: id(f) for fd, f in proc.files.fds.items()},
            "cloexec": set(proc.files.cloexec),
            "reserved": dict(proc.files.reserved),
        }
    files = _files_of(kernel)
    file_state = {
        k: (f.f_count, f.f_pos, f.f_flags, f.released, f.f_inode.i_size) for k, f in files.items()
    }
    i_mmap = {}
    for k, f in files.items():
        i_mmap[k] = sorted(
            (
                f.f_mapping.i_mmap.interval_of(v),
                v.vm_mm.owner.pid if v.vm_mm.owner else 0,
                v.vm_start,
                v.vm_end,
            )
            for v in f.f_mapping.i_mmap
        )
    mem = kernel.mem
    simmem = kernel.drivers.get(SIMMEM)
    return {
        "procs": procs,
        "files": file_state,
        "i_mmap": i_mmap,
        "data": {pfn: bytes(buf) for pfn, buf in mem._data.items()},
        "pages": {
            pfn: (p.refcount, p.mapcount, p.anon, p.index, id(p.mapping))
            for pfn, p in mem._pages.items()
        },
        "blocks": dict(mem._blocks),
        "allocated": mem.allocated_pages,
        "cache_lines": {b: bytes(line) for b, line in kernel.cache.lines.items()},
        "cache_dirty": set(kernel.cache.dirty),
        "simmem": (simmem.opens, simmem.closes) if simmem is not None else None,
        "bad_pages": list(kernel.bad_pages),
    }


@pytest.fixture(scope="session")
def snap() -> Callable[[Kernel], dict[str, Any]]:
    return snapshot
