"""Use case 2 of the RFC: supporting existing mmap interfaces in importers.

"It is again important that the userspace code of a given importing subsystem can use
the same interfaces with a imported dma-buf buffer object as with a native buffer
object."  Here a system-heap buffer is imported into vgem (a DRM driver) and mapped
through the DRM fd, exactly as a GL driver maps its own objects; the GEM shmem helpers
forward the mmap with dma_buf_mmap(obj->dma_buf, vma, 0), which swaps vm_file for the
dma-buf's file and resets vm_pgoff before calling the exporter's mmap.

Run: python examples/importer_mmap.py
"""

import mmap
import os

from dmabuf_sim import Kernel
from dmabuf_sim.exporters.drm_gem import drm_vma_node_offset_addr
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.trace import format_function_graph
from dmabuf_sim.uapi import DMA_BUF_SET_NAME, DRM_IOCTL_PRIME_FD_TO_HANDLE, DrmPrimeHandle

SIZE = 4 * 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE

k = Kernel("v6.12")
app = k.spawn("gl-client")
buf = EXPORTERS["system_heap"].make_fd(app, SIZE, os.O_RDWR)
app.ioctl(buf, DMA_BUF_SET_NAME, "texture")  # names the file: /dmabuf:texture
card = app.open("/dev/dri/card0", os.O_RDWR)
prime = DrmPrimeHandle(fd=buf)
app.ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, prime)  # import: a GEM handle for the dma-buf
# A driver hands userspace the object's fake mmap offset with a private ioctl
# (panfrost/v3d MMAP_BO); vgem has none and MODE_MAP_DUMB refuses imported objects,
# so we read the offset the kernel assigned straight from the GEM object.
obj = app.file(card).private_data.object_idr[prime.handle]
offset = drm_vma_node_offset_addr(obj.vma_node)

heap_view = app.mmap(0, SIZE, RW, mmap.MAP_SHARED, buf, 0)  # use case 1: the dma-buf fd
with k.trace() as events:
    gem_view = app.mmap(0, SIZE, RW, mmap.MAP_SHARED, card, offset)  # the DRM fd, as for GL

print("mmap(/dev/dri/card0, fake offset) is forwarded to the exporter:")
graph = format_function_graph(events, show_task=False).splitlines()
start = next(i for i, line in enumerate(graph) if "drm_gem_mmap() {" in line)
end = next(i for i, line in enumerate(graph) if "} /* drm_gem_mmap =" in line)
cut = graph[start].index("drm_gem_mmap")  # drop the syscall's indentation
shown: list[str] = []
for line in graph[start : end + 1]:
    if "drm_gem_object_" in line:  # GEM refcounting, not the point here
        continue
    if "remap_pfn_range" in line and "remap_pfn_range" in shown[-1]:
        continue  # the system heap remaps one page per call
    shown.append("    " + line[cut:])
print("\n".join(shown))

vma = app.mm.vma_lookup(gem_view)
print(
    f"vm_file: {vma.vm_file.path()} (the dma-buf's file: {vma.vm_file is app.file(buf)},"
    f" not {app.file(card).path()})"
)
print(
    f"vm_pgoff: {vma.vm_pgoff} (mmap asked for fake offset {offset:#x} ="
    f" page {offset >> 12:#x}; dma_buf_mmap reset it)"
)
print(next(line for line in app.maps().splitlines() if line.startswith(f"{gem_view:08x}")))

app.write_memory(heap_view + 4096 + 7, b"heap -> vgem")
seen = app.read_memory(gem_view + 4096 + 7, 12)
print(f"written through the heap mapping, read through vgem: {seen!r}")

app.munmap(gem_view, SIZE)
app.munmap(heap_view, SIZE)
app.close(card)  # drops the GEM handle and with it the import's attachment
app.close(buf)
print("buffer released:", not k.dma_bufs)
