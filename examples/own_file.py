"""Why a shoot-down exporter must put its own file in vma->vm_file.

The RFC: "all the dma_buf files share the same anon inode, hence the exporter needs to
replace the dma_buf file stored in vma->vm_file with it's own if pte shootdown is
required.  This is because the kernel uses the underlying inode's address_space for vma
tracking (and hence pte tracking at shootdown time with unmap_mapping_range)."

Two buffers A and B are mapped and touched; then A leaves the CPU domain (a device maps
it) and its exporter zaps "its" PTEs with unmap_mapping_range.  Both buffers' vmas start
at page offset 0, so on an address_space holding both, the zap hits B as well:

* v3.5 + shared_file_zap: zaps through dmabuf->file, i.e. the one shared anon inode;
* v3.5 + shootdown: swapped its own shmem file into vm_file, so only A is tracked there;
* v6.12 + shared_file_zap: every dma-buf has had its own inode since 5.3.

Run: python examples/own_file.py
"""

import mmap
import os

from dmabuf_sim import Kernel, Process
from dmabuf_sim.device import DMA_BIDIRECTIONAL, Device
from dmabuf_sim.dma_buf import dma_buf_attach, dma_buf_get, dma_buf_map_attachment_unlocked
from dmabuf_sim.exporters.registry import EXPORTERS

PAGES = 2
SIZE = PAGES * 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def ptes(app: Process, addr: int) -> int:
    """Present PTEs in the buffer's mapping."""
    return sum(app.mm.pgtable.get((addr >> 12) + i) is not None for i in range(PAGES))


def run(spec: str, exporter: str) -> None:
    k = Kernel(spec)
    app = k.spawn("app")
    fd_a = EXPORTERS[exporter].make_fd(app, SIZE, os.O_RDWR)
    fd_b = EXPORTERS[exporter].make_fd(app, SIZE, os.O_RDWR)
    va_a = app.mmap(0, SIZE, RW, mmap.MAP_SHARED, fd_a, 0)
    va_b = app.mmap(0, SIZE, RW, mmap.MAP_SHARED, fd_b, 0)
    app.write_memory(va_a, bytes(SIZE))  # fault every page of both buffers in
    app.write_memory(va_b, bytes(SIZE))
    b_before = ptes(app, va_b)

    with k.running(app):
        dmabuf_a = dma_buf_get(k, fd_a)
    dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf_a, Device(k, "gpu")), DMA_BIDIRECTIONAL)

    print(
        f"{spec:5} {exporter:15}: A's PTEs -> {ptes(app, va_a)};"
        f" B's PTEs {b_before} -> {ptes(app, va_b)}"
    )
    for line in app.maps().splitlines():  # /proc/<pid>/maps: range perms off dev inode name
        span, _perms, _off, dev, ino, name = line.split(maxsplit=5)
        tag = "A" if line.startswith(f"{va_a:08x}") else "B"
        print(f"    {tag} {span} dev {dev} inode {ino:>2} {name}")


run("v3.5", "shared_file_zap")  # B zapped too: the bug the RFC warns about
run("v3.5", "shootdown")  # own file: B untouched
run("v6.12", "shared_file_zap")  # per-buffer inodes: B untouched
