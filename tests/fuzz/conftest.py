"""The fuzzer's back door: a snapshot of what a failed syscall must leave alone, and the
end-of-run leak check.

The snapshot reads the kernel directly (never through the code under test): for every
process its vmas (/proc/maps), fd table and close-on-exec set, and PTEs; every reachable
file's refcount, position and flags; every live dma-buf; the allocator's blocks, the
refcount and mapcount of every ``struct page``, and what a CPU load would read from every
allocated page that holds data (DRAM with the CPU cache's lines over it, so a write-back
or a line fill, which change nothing a program can observe, do not count as changes).
"""

from __future__ import annotations

from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.fs import File
from dmabuf_sim.mm.cache import LINE_SIZE

PAGE = 4096


def _files(kernel: Kernel) -> dict[int, File]:
    files: dict[int, File] = {}
    for proc in kernel.processes.values():
        for f in proc.files.fds.values():
            files[id(f)] = f
        for vma in proc.mm.vmas:
            if vma.vm_file is not None:
                files[id(vma.vm_file)] = vma.vm_file
    for dmabuf in kernel.dma_bufs:
        if dmabuf.file is not None:
            files[id(dmabuf.file)] = dmabuf.file
    return files


def _cpu_view(kernel: Kernel, pfn: int) -> bytes:
    """What a CPU load through a cached mapping would read, without touching the cache."""
    mem, cache = kernel.mem, kernel.cache
    page = bytearray(mem.read(pfn * PAGE, PAGE))
    base = pfn * PAGE
    for off in range(0, PAGE, LINE_SIZE):
        line = cache.lines.get(base + off)
        if line is not None:
            page[off : off + LINE_SIZE] = line
    return bytes(page)


def machine_snapshot(kernel: Kernel) -> dict[str, Any]:
    """Everything a failed call must leave as it was, as plain comparable values."""
    mem = kernel.mem
    procs = {}
    for pid, proc in sorted(kernel.processes.items()):
        procs[pid] = (
            proc.alive,
            [
                (v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, id(v.vm_file), v.vm_page_prot)
                for v in proc.mm.vmas
            ],
            {fd: id(f) for fd, f in proc.files.fds.items()},
            frozenset(proc.files.cloexec),
            dict(proc.mm.pgtable.entries),
        )
    files = {k: (f.f_count, f.f_pos, f.f_flags, f.released) for k, f in _files(kernel).items()}
    line_pfns = {base // PAGE for base in kernel.cache.lines}
    touched = sorted(p for p in set(mem._data) | line_pfns if mem.pfn_allocated(p))
    return {
        "procs": procs,
        "files": files,
        "dma_bufs": [id(d) for d in kernel.dma_bufs],
        "allocated": mem.allocated_pages,
        "blocks": dict(mem._blocks),
        "contig": dict(mem._contig),
        "pages": {p: (pg.refcount, pg.mapcount) for p, pg in mem._pages.items()},
        "bytes": {p: _cpu_view(kernel, p) for p in touched},
        "bad_pages": len(kernel.bad_pages),
        "warnings": len(kernel.warnings),
    }


@pytest.fixture(scope="session")
def snapshot_of() -> Any:
    return machine_snapshot
