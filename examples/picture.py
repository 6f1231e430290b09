"""Draw the kernel state behind the RFC's "all the dma_buf files share the same anon inode".

Under v3.5 a process maps two dma-bufs; the picture follows the pointers a crash-dump
reader would: process -> vma -> file -> inode -> address_space (whose i_mmap tracks both
vmas, which is why a shoot-down through one buffer reaches the other) and vma -> page.
It is written as SVG and as Mermaid text, to a temporary directory or to the directory
given on the command line.

Run: python examples/picture.py [OUTPUT_DIR]
"""

import mmap
import os
import sys
import tempfile
from pathlib import Path

from dmabuf_sim import Kernel
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.picture import snapshot_graph, write_picture

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="dmabuf-pic-"))
out.mkdir(parents=True, exist_ok=True)

k = Kernel("v3.5")
app = k.spawn("app")
for name in ("A", "B"):
    fd = EXPORTERS["simple"].make_fd(app, 4096, os.O_RDWR)
    addr = app.mmap(0, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    app.write_memory(addr, f"buffer {name}".encode())  # a dirty cache line in each page

graph = snapshot_graph(k)
kinds = ("process", "vma", "file", "inode", "address_space", "page", "dma_buf")
print("nodes:", ", ".join(f"{len(graph.of_kind(kind))} {kind}" for kind in kinds))
for inode in graph.of_kind("inode"):
    print(f"inode {' / '.join(inode.lines)!r} marks={list(inode.marks)}")

for filename in ("state.svg", "state.mmd"):  # the suffix picks the format
    path = write_picture(out / filename, k)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
