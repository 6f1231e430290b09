"""Every reference exporter out of memory: the kernel's answer, never Python's MemoryError.

With every free page taken, making a buffer fails with ENOMEM where the exporter
allocates up front (dma-heaps, udmabuf pinning, the simple exporter's CMA range),
mapping fails with ENOMEM where pages are pinned at mmap (vgem), and touching a
page fails through VM_FAULT_OOM where pages come at fault time (the shoot-down
exporter): the OOM killer takes the faulting task.  Whatever happened, once the
memory hog lets go and every process has exited, every page is back.
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from dmabuf_sim import SIGKILL, Kernel
from dmabuf_sim.errors import OutOfMemory
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.gfp import __GFP_NOWARN, GFP_KERNEL
from dmabuf_sim.mm.page_alloc import MAX_ORDER
from dmabuf_sim.spec import SPECS

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
REFERENCE = [n for n, e in EXPORTERS.items() if e.kind == "reference"]


def hog(k: Kernel) -> list[tuple[str, int, int]]:
    """Take every free frame, buddy and CMA, the way a kernel-side hog would."""
    held: list[tuple[str, int, int]] = []
    for order in range(MAX_ORDER, -1, -1):
        while True:
            try:
                held.append(("buddy", k.mem.alloc_pages(order, GFP_KERNEL | __GFP_NOWARN), order))
            except OutOfMemory:
                break
    cma = k.mem.nr_free_cma_pages()
    if cma:
        held.append(("cma", k.mem.alloc_contig(cma), cma))
    assert k.mem.nr_free_pages() == 0
    return held


def let_go(k: Kernel, held: list[tuple[str, int, int]]) -> None:
    for kind, pfn, n in held:
        if kind == "buddy":
            k.mem.free_pages(pfn, n)
        else:
            k.mem.free_contig(pfn, n)


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize("spec", ["v6.1", "latest"])
def test_exporter_without_memory_answers_as_the_kernel_does(spec: str, name: str) -> None:
    info = EXPORTERS[name]
    if info.available(SPECS[spec]) is not None:
        pytest.skip(str(info.available(SPECS[spec])))
    k = Kernel(spec, ram_pages=1 << 13)
    baseline = k.mem.allocated_pages
    p = k.spawn("app")
    held = hog(k)
    outcome = "made"
    try:
        fd = info.make_fd(p, 8 * PAGE, os.O_RDWR)
    except OSError as exc:
        assert exc.errno == errno.ENOMEM
        outcome = "ENOMEM at export"
    else:
        try:
            addr = p.mmap(0, 8 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        except OSError as exc:
            assert exc.errno == errno.ENOMEM
            outcome = "ENOMEM at mmap"
        else:
            try:
                p.write_memory(addr, b"needs a page")
            except SIGKILL:
                outcome = "OOM kill at fault"
                assert not p.alive
            else:
                outcome = "pages were there already"
    expected = {
        "system_heap": "ENOMEM at export",
        "cma_heap": "ENOMEM at export",
        "udmabuf": "ENOMEM at export",
        "simple": "ENOMEM at export",
        "vgem": "ENOMEM at mmap",
        "shootdown": "OOM kill at fault",
    }
    assert outcome == expected[name]
    assert k.bad_pages == [] and k.warnings == []
    let_go(k, held)
    if p.alive:
        p.exit()
    k.run_until_idle()
    assert k.dma_bufs == [] and k.mem.allocated_pages == baseline
    k.mem.check_consistency()
