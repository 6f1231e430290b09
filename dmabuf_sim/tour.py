"""The guided tour: the RFC's documentation as live runs, traced in the kernel's own words.

Each :class:`Step` explains in two or three sentences what is about to
happen, runs it on a fresh :class:`~dmabuf_sim.kernel.Kernel` (of the spec
the step needs, or the one the user chose), prints the function-graph trace
of the interesting part, and ends with the outcome in one or two lines.

Plumbing functions (fd bookkeeping, reference counting) are left out of the
traces by default, like ftrace's ``set_graph_notrace``; ``--full-trace``
shows everything.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any, TextIO

from attrs import define, field

from .errors import Signal
from .kernel import Kernel
from .trace import NOTRACE, TraceEvent, format_function_graph, hide_plumbing

__all__ = ["NOTRACE", "Step", "run_tour", "tour_steps"]

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


@define(eq=False)
class Tour:
    """What the steps share: the chosen spec, the output, trace options."""

    spec: str
    out: TextIO
    trace: bool = True
    full_trace: bool = False
    notes: list[str] = field(factory=list)

    def kernel(self, spec: str | None = None) -> Kernel:
        return Kernel(spec or self.spec)

    def show(self, events: list[TraceEvent], *, title: str = "") -> None:
        if not self.trace:
            return
        shown = events if self.full_trace else hide_plumbing(events)
        if title:
            self.out.write(f"-- trace: {title}\n")
        self.out.write(format_function_graph(shown))

    def say(self, line: str) -> None:
        self.out.write(f"   {line}\n")


@define(frozen=True)
class Step:
    title: str
    explain: str
    run: Callable[[Tour], None]


def _heap_fd(proc: Any, pages: int) -> int:
    from .exporters.registry import EXPORTERS

    return EXPORTERS["system_heap"].make_fd(proc, pages * PAGE, os.O_RDWR | os.O_CLOEXEC)


def _device_job(kernel: Kernel, proc: Any, fd: int, dev: Any, fn: Callable[[Any], Any]) -> Any:
    from .device import DMA_BIDIRECTIONAL
    from .dma_buf import (
        dma_buf_attach,
        dma_buf_detach,
        dma_buf_get,
        dma_buf_map_attachment_unlocked,
        dma_buf_put,
        dma_buf_unmap_attachment_unlocked,
    )

    with kernel.running(proc):
        dmabuf = dma_buf_get(kernel, fd)
    attach = dma_buf_attach(dmabuf, dev)
    sgt = dma_buf_map_attachment_unlocked(attach, DMA_BIDIRECTIONAL)
    result = fn(sgt)
    dma_buf_unmap_attachment_unlocked(attach, sgt, DMA_BIDIRECTIONAL)
    dma_buf_detach(dmabuf, attach)
    dma_buf_put(dmabuf)
    return result


def _sync(proc: Any, fd: int, flags: int) -> None:
    from .uapi import DMA_BUF_IOCTL_SYNC, DmaBufSync

    proc.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags))


# -- the steps -------------------------------------------------------------------------------
def step_mmap(t: Tour) -> None:
    k = t.kernel("v6.12" if not Kernel(t.spec).spec.has_dma_heaps else None)
    p = k.spawn("viewer")
    fd = _heap_fd(p, 4)
    with k.trace() as ev:
        addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    t.show(ev)
    t.say(
        f"mmap returned {addr:#x}; the system heap remapped every page at once:"
        f" {len(p.mm.pgtable)} PTEs present before any access"
    )
    t.say("/proc/self/maps: " + p.maps().splitlines()[0])
    with k.trace() as ev:
        try:
            p.mmap(0, 5 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        except OSError as exc:
            t.notes.append(str(exc.errno))
            outcome = f"a 5-page mapping of the 4-page buffer fails: {exc.strerror} (R1)"
    t.show(ev, title="one page too many")
    t.say(outcome)


def step_cpu_fallback(t: Tour) -> None:
    from .device import Device

    k = t.kernel("v6.12" if not Kernel(t.spec).spec.has_dma_heaps else None)
    p = k.spawn("thumbnailer")
    camera = Device(k, "camera")
    fd = _heap_fd(p, 4)
    frame = bytes((x * 4 + y * 2) & 0xFF for y in range(64) for x in range(256))
    _device_job(k, p, fd, camera, lambda sgt: camera.dma_write(sgt, 0, frame))
    addr = p.mmap(0, 4 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    with k.trace() as ev:
        _sync(p, fd, 0 | 1)  # DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ
    t.show(ev, title="DMA_BUF_IOCTL_SYNC START|READ")
    pixels = p.read_memory(addr, len(frame))
    thumb = [sum(pixels[y * 256 + x] for y in range(0, 64, 16)) // 4 for x in range(0, 256, 32)]
    _sync(p, fd, 4 | 1)  # DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ
    t.say(
        f"the camera wrote a 256x64 frame; the CPU read it through the mapping: thumbnail row"
        f" {thumb}"
    )


def step_importer(t: Tour) -> None:
    k = t.kernel("v6.12")
    p = k.spawn("gl-app")
    from .uapi import DRM_IOCTL_PRIME_FD_TO_HANDLE, DrmPrimeHandle

    fd = _heap_fd(p, 2)
    card = p.open("/dev/dri/card0", os.O_RDWR)
    prime = DrmPrimeHandle(fd=fd)
    p.ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, prime)
    offset = _vgem_offset(k, p, card, prime.handle)
    with k.trace() as ev:
        addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, card, offset)
    t.show(ev)
    vma = p.mm.vma_lookup(addr)
    assert vma is not None and vma.vm_file is not None
    t.say(
        f"the vma now holds {vma.vm_file.path()} (not the DRM file) with vm_pgoff"
        f" {vma.vm_pgoff}: dma_buf_mmap swapped the file and reset the offset (R22)"
    )


def _vgem_offset(k: Kernel, p: Any, card: int, handle: int) -> int:
    """The imported object's fake mmap offset.  vgem has no ioctl for it (MAP_DUMB refuses
    imports); drivers like panfrost return it from their MMAP_BO ioctl."""
    from .exporters.drm_gem import drm_vma_node_offset_addr

    obj = p.file(card).private_data.object_idr[handle]
    return drm_vma_node_offset_addr(obj.vma_node)


def step_shootdown(t: Tour) -> None:
    from .device import Device
    from .exporters.registry import EXPORTERS

    k = t.kernel()
    if not k.spec.has_mmap_fop or k.spec.mmap_internal_reads_uninitialised_dmabuf:
        k = t.kernel("v6.12")
    p = k.spawn("app")
    dsp = Device(k, "dsp")
    fd = EXPORTERS["shootdown"].make_fd(p, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    p.write_memory(addr, b"written by the CPU")
    with k.trace() as ev:
        seen = _device_job(
            k,
            p,
            fd,
            dsp,
            lambda sgt: (dsp.dma_read(sgt, 0, 18), dsp.dma_write(sgt, 0, b"DSP was here"))[0],
        )
    t.show(ev, title="the device maps the buffer: leaving the CPU domain")
    t.say(f"the device read {seen!r}; the CPU's PTEs were zapped: {len(p.mm.pgtable)} left")
    with k.trace() as ev:
        got = p.read_memory(addr, 12)
    t.show(ev, title="the CPU's next touch")
    t.say(
        f"the fault re-synced the page for the CPU, which reads {got!r} — no SYNC ioctl"
        " anywhere: coherency was faked by the exporter"
    )


def step_own_file(t: Tour) -> None:
    from .stories import run_story

    for spec in ("v3.5", "v6.12"):
        obs = list(run_story("shared-inode", spec).values())
        t.say(
            f"[{spec}] buffers share one inode: {obs[0]}; B's PTEs {obs[1]} -> {obs[2]}"
            " after A leaves the CPU domain"
        )
    t.say(
        "on v3.5 the exporter that shoots down through the dma-buf file zapped buffer B too"
        " (R26); with its own file (or per-buffer inodes since 5.3) B is left alone (R27)"
    )


def step_no_fault_sync(t: Tour) -> None:
    from .dma_buf.dma_fence import DmaFence
    from .dma_buf.dma_resv import DmaResvUsage
    from .exporters.registry import EXPORTERS

    for name in ("simple", "waits_in_fault"):
        k = t.kernel("v6.12")
        p = k.spawn("app")
        fd = EXPORTERS[name].make_fd(p, PAGE, os.O_RDWR | os.O_CLOEXEC)
        dmabuf = p.file(fd).private_data
        fence = DmaFence(k, "gpu-job", 1, completes_at=k.clock + 16_000_000)
        dmabuf.resv.add_fence(fence, DmaResvUsage.WRITE)
        addr = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        with k.trace() as ev:
            p.read_memory(addr, 1)
        if name == "waits_in_fault":
            t.show(ev, title="a fault handler that waits")
        t.say(
            f"[{name}] the touch took {k.clock / 1e6:.0f} ms of device time;"
            f" waits inside the fault: {len(k.fault_waits)}"
        )
    t.say(
        "the RFC forbids it: if some exporters synchronised at fault time, userspace would"
        " come to rely on it and break on the others (R55)"
    )


def step_sync_ioctl(t: Tour) -> None:
    from .coherency import CoherencyChecker
    from .device import Device
    from .exporters.registry import EXPORTERS

    for spec in ("v3.5", "v6.12"):
        k = t.kernel(spec)
        p = k.spawn("app")
        fd = EXPORTERS["simple"].make_fd(p, PAGE, os.O_RDWR | os.O_CLOEXEC)
        try:
            _sync(p, fd, 1)
            t.say(f"[{spec}] DMA_BUF_IOCTL_SYNC: ok — begin_cpu_access runs for userspace")
        except OSError as exc:
            t.say(
                f"[{spec}] DMA_BUF_IOCTL_SYNC: {os.strerror(exc.errno or 0)} — no way for"
                " userspace to bracket its access; the mapping had to be coherent"
            )
    k = t.kernel("v6.12")
    checker = CoherencyChecker.attach(k)
    p = k.spawn("app")
    gpu = Device(k, "gpu")
    fd = _heap_fd(p, 1)
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    from .device import DMA_BIDIRECTIONAL
    from .dma_buf import dma_buf_attach, dma_buf_get, dma_buf_map_attachment_unlocked

    with k.running(p):
        dmabuf = dma_buf_get(k, fd)
    sgt = dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, gpu), DMA_BIDIRECTIONAL)
    p.read_memory(addr, 9)  # the CPU reads: the line is now in its cache
    gpu.dma_write(sgt, 0, b"new frame")  # the device writes DRAM behind the cache's back
    stale = p.read_memory(addr, 9)
    _sync(p, fd, 1)  # SYNC_START|READ: the heap invalidates the CPU cache for the device
    fresh = p.read_memory(addr, 9)
    t.say(f"[v6.12] without SYNC the CPU read {stale!r} from a stale cache line")
    t.say(f"        the checker: {checker.stale[0] if checker.stale else 'no stale read'}")
    t.say(f"        after SYNC_START it reads {fresh!r}")


def step_signals(t: Tour) -> None:
    k = t.kernel("v6.12")
    p = k.spawn("app")
    fd = _heap_fd(p, 3)
    addr = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    with k.trace() as ev:
        p.munmap(addr + PAGE, PAGE)
    t.show(ev, title="munmap of the middle page")
    try:
        p.read_memory(addr + PAGE, 1)
    except Signal as sig:
        t.say(f"the middle is gone: {sig} (R32); the ends still map the buffer:")
    for line in p.maps().splitlines():
        t.say(line)
    child = p.fork()
    t.say(
        f"after fork the child has {len(child.mm.vmas)} vmas and"
        f" {len(child.mm.pgtable)} PTEs (PFNMAP PTEs are copied, R40)"
    )


def tour_steps() -> list[Step]:
    return [
        Step(
            "Userspace simply calls mmap on the dma-buf fd",
            "A process allocates a buffer from the system dma-heap and maps the fd. do_mmap "
            "checks the arguments, mmap_region builds the vma, and dma_buf_mmap_internal — the "
            "function the RFC adds — checks the size and hands the vma to the exporter.",
            step_mmap,
        ),
        Step(
            "Use case 1: CPU fallback processing in a pipeline",
            "A camera writes a frame by DMA; a thumbnailer reads it through the mapping. On a "
            "non-coherent system the read is bracketed with DMA_BUF_IOCTL_SYNC so the exporter "
            "can invalidate the CPU's cache first.",
            step_cpu_fallback,
        ),
        Step(
            "Use case 2: an importer's existing mmap, forwarded with dma_buf_mmap",
            "An OpenGL-style app imports the buffer into a DRM driver (vgem) and maps it through "
            "the DRM fd, as its userspace always did. The driver forwards the vma to "
            "dma_buf_mmap, which swaps in the dma-buf file and calls the exporter.",
            step_importer,
        ),
        Step(
            "Faking coherency: shoot down PTEs, flush at fault time",
            "An exporter on a non-coherent device that must look coherent zaps every user PTE "
            "when the buffer leaves the CPU domain; the next CPU touch faults, and the fault "
            "handler takes the page back for the CPU before mapping it again.",
            step_shootdown,
        ),
        Step(
            "Why the exporter must put its own file in vm_file",
            "unmap_mapping_range finds vmas through an address_space. Before 5.3 every dma-buf "
            "file shared one anon inode, so shooting down through the dma-buf's own file hit "
            "every dma-buf mapping in the system.",
            step_own_file,
        ),
        Step(
            "Why a fault handler must not wait for the device",
            "The same buffer, device work still pending, a CPU touch that faults: one exporter "
            "maps the page at once, the other waits for the device inside its fault handler.",
            step_no_fault_sync,
        ),
        Step(
            "The dropped prepare/finish came back as DMA_BUF_IOCTL_SYNC",
            "The RFC dropped explicit begin/end ioctls; Linux 4.6 brought them back as "
            "DMA_BUF_IOCTL_SYNC, and today userspace must bracket every CPU access with it.",
            step_sync_ioctl,
        ),
        Step(
            "Splitting, signals and fork",
            "Unmapping the middle of a mapping splits the vma; touching the hole is SIGSEGV; a "
            "forked child gets copies of the vmas, and of the PTEs where they cannot be refaulted.",
            step_signals,
        ),
    ]


def run_tour(
    *,
    spec: str = "v6.12",
    out: TextIO,
    trace: bool = True,
    only: int | None = None,
    full_trace: bool = False,
) -> None:
    tour = Tour(spec, out, trace, full_trace)
    steps = tour_steps()
    if only is not None and not 1 <= only <= len(steps):
        raise ValueError(f"--step must be between 1 and {len(steps)}")
    out.write(f"dmabuf_sim guided tour — default spec {spec}\n\n")
    for i, step in enumerate(steps, 1):
        if only is not None and i != only:
            continue
        out.write(f"== Step {i}: {step.title}\n{step.explain}\n\n")
        step.run(tour)
        out.write("\n")
