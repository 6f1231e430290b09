"""The guided tour: the RFC's documentation as live runs, traced in the kernel's own words.

Each :class:`Step` explains in two or three sentences what is about to
happen, runs it on fresh kernels of the spec the user chose (``--spec``,
:data:`~dmabuf_sim.spec.DEFAULT_SPEC` by default), prints the function-graph
trace of the interesting part, and ends with the outcome in one or two lines,
each naming the spec it ran under.  Where a step needs what the chosen kernel
does not have (no dma-buf mmap before 3.5, no dma-heaps before 5.6, no
implicit fences before 3.17...), it uses what that kernel offers instead and
says so, or says plainly that it cannot run there and why.  Two steps compare
kernels on purpose; their extra runs are labelled "for contrast".

Plumbing functions (fd bookkeeping, reference counting) are left out of the
traces by default, like ftrace's ``set_graph_notrace``; ``--full-trace``
shows everything.  :func:`tour_walkthrough` records the tour for the
step-through view (:mod:`dmabuf_sim.stepview`), once per spec.
"""

from __future__ import annotations

import io
import mmap
import os
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from attrs import define, field

from .coherency import CoherencyChecker
from .device import DMA_BIDIRECTIONAL, Device
from .dma_buf import (
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_get,
    dma_buf_map_attachment_unlocked,
    dma_buf_put,
    dma_buf_unmap_attachment_unlocked,
)
from .dma_buf.core import dma_buf_export, dma_buf_fd
from .dma_buf.dma_fence import DmaFence
from .dma_buf.dma_resv import DmaResvUsage
from .dma_buf.mmap import dma_buf_mmap
from .errors import KernelOops, Signal
from .exporters.drm_gem import drm_vma_node_offset_addr
from .exporters.registry import EXPORTERS
from .exporters.teaching import SimpleBuffer, SimpleExporter
from .fs import FileOperations
from .kernel import Kernel
from .spec import DEFAULT_SPEC, SPECS, Spec, get_spec
from .stepview import Frame, Recorder, RunView, Walkthrough
from .stories import STORIES
from .trace import NOTRACE, TraceEvent, format_function_graph, hide_harness, hide_plumbing
from .uapi import DMA_BUF_IOCTL_SYNC, DRM_IOCTL_PRIME_FD_TO_HANDLE, DmaBufSync, DrmPrimeHandle

__all__ = ["NOTRACE", "Step", "run_tour", "tour_steps", "tour_walkthrough"]

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


class CannotRun(Exception):
    """The chosen spec lacks what the step is about (the message says what, and why)."""


@define(eq=False)
class Tour:
    """What the steps share: the chosen spec, the output, trace options, the recording."""

    spec: str
    out: TextIO
    trace: bool = True
    full_trace: bool = False
    record: bool = False
    """Attach a :class:`~dmabuf_sim.stepview.Recorder` to every kernel a step makes."""
    frames: list[Frame] = field(factory=list)
    chapter: str = ""
    cannot: list[str] = field(factory=list)
    """``Step N: why`` for every step that could not run under the spec."""
    _recorders: list[Recorder] = field(factory=list)

    @property
    def s(self) -> Spec:
        return get_spec(self.spec)

    def kernel(self, spec: str | None = None) -> Kernel:
        """A fresh kernel of the chosen spec (or of ``spec``, for a contrast)."""
        k = Kernel(spec or self.spec)
        if self.record:
            self._recorders.append(
                Recorder.attach(k, self.frames, chapter=self.chapter, full_trace=self.full_trace)
            )
            k.tracer.enabled = True
        return k

    def show(self, events: list[TraceEvent], *, title: str = "") -> None:
        if not self.trace:
            return
        shown = events if self.full_trace else hide_plumbing(hide_harness(events))
        if title:
            self.out.write(f"-- trace: {title}\n")
        self.out.write(format_function_graph(shown))

    def say(self, line: str) -> None:
        self.out.write(f"   {line}\n")
        if self.record:
            self.flush()
            graph = self._recorders[-1].graph if self._recorders else None
            self.frames.append(Frame("note", "", "", line, "", graph, chapter=self.chapter))

    def flush(self) -> None:
        for rec in self._recorders:
            rec.finish()

    def begin(self, chapter: str, explain: str) -> None:
        self.flush()
        self._recorders.clear()
        self.chapter = chapter
        if self.record:
            self.frames.append(Frame("note", "", "", explain, "", None, chapter=chapter))

    def require_mmap(self) -> None:
        """Stop the step where a dma-buf cannot be mapped at all."""
        spec = self.s
        if not spec.has_mmap_fop:
            raise CannotRun(
                f"{spec.name} has no dma-buf mmap (it arrived in 3.5): mmap fails with ENODEV"
                " (R10); try --spec v3.5 or later"
            )
        if spec.mmap_internal_reads_uninitialised_dmabuf:
            raise CannotRun(
                f"under {spec.name} every mmap of a dma-buf oopses (the RFC reads dmabuf->size"
                " through an uninitialised pointer, R61; step 1 shows it); try --spec v3.5"
            )


@define(frozen=True)
class Step:
    title: str
    explain: str
    run: Callable[[Tour], None]


def _exporter_for(t: Tour, preferred: str = "system_heap") -> str:
    """``preferred`` where the kernel has it, else the kernel-side ``simple`` exporter (said)."""
    if EXPORTERS[preferred].available(t.s) is None:
        return preferred
    t.say(
        f"[{t.spec}] {EXPORTERS[preferred].available(t.s)}: this step uses the kernel-side"
        " 'simple' exporter instead (contiguous pages, remap_pfn_range)"
    )
    return "simple"


_LABEL = {"system_heap": "system heap", "simple": "simple exporter"}


def _buffer_fd(proc: Any, pages: int, exporter: str) -> int:
    return EXPORTERS[exporter].make_fd(proc, pages * PAGE, os.O_RDWR | os.O_CLOEXEC)


def _kernel_side_fd(k: Kernel, proc: Any, pages: int) -> int:
    """A buffer exported in the kernel and installed as an fd, on any spec (3.4 included)."""
    buf = SimpleBuffer(k.mem.alloc_contig(pages), pages)
    with k.running(proc):
        dmabuf = dma_buf_export(k, buf, SimpleExporter(), pages * PAGE, os.O_RDWR)
        return dma_buf_fd(dmabuf, os.O_CLOEXEC)


def _device_job(kernel: Kernel, proc: Any, fd: int, dev: Any, fn: Callable[[Any], Any]) -> Any:
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
    proc.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags))


def _try_sync(t: Tour, proc: Any, fd: int, flags: int) -> bool:
    """DMA_BUF_IOCTL_SYNC where it exists; says so where it does not (before 4.6)."""
    try:
        _sync(proc, fd, flags)
    except OSError as exc:
        t.say(
            f"[{t.spec}] DMA_BUF_IOCTL_SYNC fails: {os.strerror(exc.errno or 0)} — it arrived"
            " in 4.6; userspace had no way to bracket its access"
        )
        return False
    return True


# -- the steps -------------------------------------------------------------------------------
def step_mmap(t: Tour) -> None:
    k = t.kernel()
    p = k.spawn("viewer")
    spec = t.s
    if not spec.has_mmap_fop or spec.mmap_internal_reads_uninitialised_dmabuf:
        fd = _kernel_side_fd(k, p, 4)
        with k.trace() as ev:
            try:
                p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
                outcome = "mmap worked"
            except OSError as exc:
                outcome = (
                    f"mmap fails: {exc.strerror} (ENODEV): Linux {spec.kernel_version} has no"
                    " dma-buf mmap at all (R10); it arrived in 3.5"
                )
            except KernelOops as oops:
                outcome = (
                    f"the kernel oopses: {oops.reason} (R61) — the RFC as posted checks the size"
                    " before it has the dma-buf; the merged patch (v3.5) fixed it"
                )
        t.show(ev)
        t.say(f"[{t.spec}] {outcome}")
        return
    exporter = _exporter_for(t)
    fd = _buffer_fd(p, 4, exporter)
    with k.trace() as ev:
        addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    t.show(ev)
    t.say(
        f"[{t.spec}] mmap returned {addr:#x}; the {_LABEL[exporter]} remapped every"
        f" page at once: {len(p.mm.pgtable)} PTEs present before any access"
    )
    t.say(f"[{t.spec}] /proc/self/maps: " + p.maps().splitlines()[0])
    outcome = "a 5-page mapping of the 4-page buffer worked?!"
    with k.trace() as ev:
        try:
            p.mmap(0, 5 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
        except OSError as exc:
            outcome = f"a 5-page mapping of the 4-page buffer fails: {exc.strerror} (R1)"
    t.show(ev, title="one page too many")
    t.say(f"[{t.spec}] {outcome}")


def step_cpu_fallback(t: Tour) -> None:
    t.require_mmap()
    exporter = _exporter_for(t)
    k = t.kernel()
    p = k.spawn("thumbnailer")
    camera = Device(k, "camera")
    fd = _buffer_fd(p, 4, exporter)
    frame = bytes((x * 4 + y * 2) & 0xFF for y in range(64) for x in range(256))
    _device_job(k, p, fd, camera, lambda sgt: camera.dma_write(sgt, 0, frame))
    addr = p.mmap(0, 4 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    with k.trace() as ev:
        synced = _try_sync(t, p, fd, 0 | 1)  # DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ
    t.show(ev, title="DMA_BUF_IOCTL_SYNC START|READ")
    pixels = p.read_memory(addr, len(frame))
    thumb = [sum(pixels[y * 256 + x] for y in range(0, 64, 16)) // 4 for x in range(0, 256, 32)]
    if synced:
        _sync(p, fd, 4 | 1)  # DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ
    t.say(
        f"[{t.spec}] the camera wrote a 256x64 frame; the CPU read it through the mapping:"
        f" thumbnail row {thumb}"
    )


def step_importer(t: Tour) -> None:
    t.require_mmap()
    exporter = _exporter_for(t)
    k = t.kernel()
    p = k.spawn("gl-app")
    fd = _buffer_fd(p, 2, exporter)
    if "vgem" in k.drivers and k.spec.vgem_shmem_helpers:
        card = p.open("/dev/dri/card0", os.O_RDWR)
        prime = DrmPrimeHandle(fd=fd)
        p.ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, prime)
        offset = _vgem_offset(k, p, card, prime.handle)
        importer = "the DRM file"
    else:
        why = (
            "vgem before 5.15 cannot map an import (its MAP_DUMB refuses objects without a"
            " shmem file)"
            if "vgem" in k.drivers
            else "this model has no vgem before 5.10"
        )
        t.say(
            f"[{t.spec}] {why}: a minimal importer driver (/dev/importer) forwards its mmap"
            " with dma_buf_mmap instead"
        )
        card, offset, importer = _minimal_importer(k, p, fd), 0, "/dev/importer"
    with k.trace() as ev:
        addr = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, card, offset)
    t.show(ev)
    vma = p.mm.vma_lookup(addr)
    assert vma is not None and vma.vm_file is not None
    pgoff = (
        f" and vm_pgoff {vma.vm_pgoff:#x}: dma_buf_mmap swapped the file and reset the offset,"
        " then remap_pfn_range over the whole vma set vm_pgoff to the pfn, as 3.x did (R22, R36)"
        if t.s.remap_pfn_range_sets_pgoff_whole_vma
        else f" with vm_pgoff {vma.vm_pgoff}: dma_buf_mmap swapped the file and reset the"
        " offset (R22)"
    )
    t.say(f"[{t.spec}] the vma now holds {vma.vm_file.path()} (not {importer}){pgoff}")


def _minimal_importer(k: Kernel, p: Any, fd: int) -> int:
    """A character device whose mmap forwards to the dma-buf ``fd`` refers to."""
    with k.running(p):
        dmabuf = dma_buf_get(k, fd)
    k.register_chrdev(
        "/dev/importer", FileOperations(mmap=lambda f, vma: dma_buf_mmap(dmabuf, vma, 0))
    )
    return int(p.open("/dev/importer", os.O_RDWR))


def _vgem_offset(k: Kernel, p: Any, card: int, handle: int) -> int:
    """The imported object's fake mmap offset.  vgem has no ioctl for it (MAP_DUMB refuses
    imports); drivers like panfrost return it from their MMAP_BO ioctl."""
    obj = p.file(card).private_data.object_idr[handle]
    return drm_vma_node_offset_addr(obj.vma_node)


def step_shootdown(t: Tour) -> None:
    t.require_mmap()
    k = t.kernel()
    p = k.spawn("app")
    dsp = Device(k, "dsp")
    fd = _buffer_fd(p, 2, "shootdown")
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
    t.say(
        f"[{t.spec}] the device read {seen!r}; the CPU's PTEs were zapped: {len(p.mm.pgtable)} left"
    )
    with k.trace() as ev:
        got = p.read_memory(addr, 12)
    t.show(ev, title="the CPU's next touch")
    t.say(
        f"[{t.spec}] the fault re-synced the page for the CPU, which reads {got!r} — no SYNC"
        " ioctl anywhere: coherency was faked by the exporter"
    )


def step_own_file(t: Tour) -> None:
    story = STORIES["shared-inode"]
    t.require_mmap()
    contrast = "v6.12" if not t.s.per_buffer_inode else "v3.5"
    for spec, label in ((t.spec, ""), (contrast, ", for contrast")):
        obs = list(story.run(t.kernel(spec)).values())
        t.say(
            f"[{spec}{label}] buffers share one inode: {obs[0]}; B's PTEs {obs[1]} -> {obs[2]}"
            " after A leaves the CPU domain"
        )
    t.say(
        "the exporter that shoots down through the dma-buf file zaps buffer B too where all"
        " dma-bufs share the anon inode (before 5.3, R26); with its own file, or per-buffer"
        " inodes since 5.3, B is left alone (R27)"
    )


def step_no_fault_sync(t: Tour) -> None:
    t.require_mmap()
    for name in ("simple", "waits_in_fault"):
        k = t.kernel()
        p = k.spawn("app")
        fd = _buffer_fd(p, 1, name)
        dmabuf = p.file(fd).private_data
        if dmabuf.resv is None:
            raise CannotRun(
                f"{t.spec} has no implicit fences on a dma-buf (dma_resv arrived in 3.17):"
                " no device work can be pending for a fault handler to wait on;"
                " try --spec v6.1 or later"
            )
        fence = DmaFence(k, "gpu-job", 1, completes_at=k.clock + 16_000_000)
        dmabuf.resv.add_fence(fence, DmaResvUsage.WRITE)
        addr = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        with k.trace() as ev:
            p.read_memory(addr, 1)
        if name == "waits_in_fault":
            t.show(ev, title="a fault handler that waits")
        t.say(
            f"[{t.spec}] [{name}] the touch took {k.clock / 1e6:.0f} ms of device time;"
            f" waits inside the fault: {len(k.fault_waits)}"
        )
    t.say(
        "the RFC forbids it: if some exporters synchronised at fault time, userspace would"
        " come to rely on it and break on the others (R55)"
    )


def step_sync_ioctl(t: Tour) -> None:
    t.require_mmap()
    contrast = "v6.12" if not t.s.has_sync_ioctl else "v3.5"
    for spec, label in ((t.spec, ""), (contrast, ", for contrast")):
        k = t.kernel(spec)
        p = k.spawn("app")
        fd = _buffer_fd(p, 1, "simple")
        try:
            _sync(p, fd, 1)
            t.say(f"[{spec}{label}] DMA_BUF_IOCTL_SYNC: ok — begin_cpu_access runs for userspace")
        except OSError as exc:
            t.say(
                f"[{spec}{label}] DMA_BUF_IOCTL_SYNC: {os.strerror(exc.errno or 0)} — no way for"
                " userspace to bracket its access; the mapping had to be coherent"
            )
    exporter = _exporter_for(t)
    k = t.kernel()
    checker = CoherencyChecker.attach(k)
    p = k.spawn("app")
    gpu = Device(k, "gpu")
    fd = _buffer_fd(p, 1, exporter)
    addr = p.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0)
    with k.running(p):
        dmabuf = dma_buf_get(k, fd)
    sgt = dma_buf_map_attachment_unlocked(dma_buf_attach(dmabuf, gpu), DMA_BIDIRECTIONAL)
    p.read_memory(addr, 9)  # the CPU reads: the line is now in its cache
    gpu.dma_write(sgt, 0, b"new frame")  # the device writes DRAM behind the cache's back
    stale = p.read_memory(addr, 9)
    t.say(f"[{t.spec}] without SYNC the CPU read {stale!r} from a stale cache line")
    t.say(f"        the checker: {checker.stale[0] if checker.stale else 'no stale read'}")
    if not t.s.has_sync_ioctl:
        t.say(f"[{t.spec}] there is no SYNC ioctl to fix it: only kernel code could sync")
        return
    _sync(p, fd, 1)  # SYNC_START|READ: the exporter invalidates the CPU cache for the device
    fresh = p.read_memory(addr, 9)
    t.say(f"        after SYNC_START it reads {fresh!r}")


def step_signals(t: Tour) -> None:
    t.require_mmap()
    exporter = _exporter_for(t)
    k = t.kernel()
    p = k.spawn("app")
    fd = _buffer_fd(p, 3, exporter)
    addr = p.mmap(0, 3 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    with k.trace() as ev:
        p.munmap(addr + PAGE, PAGE)
    t.show(ev, title="munmap of the middle page")
    try:
        p.read_memory(addr + PAGE, 1)
    except Signal as sig:
        t.say(f"[{t.spec}] the middle is gone: {sig} (R32); the ends still map the buffer:")
    for line in p.maps().splitlines():
        t.say(line)
    child = p.fork()
    t.say(
        f"[{t.spec}] after fork the child has {len(child.mm.vmas)} vmas and"
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
    spec: str = DEFAULT_SPEC,
    out: TextIO,
    trace: bool = True,
    only: int | None = None,
    full_trace: bool = False,
) -> Tour:
    """Print the tour to ``out``: every step under ``spec`` (or only step ``only``).

    Raises :class:`ValueError` for a step number that does not exist.  Returns the
    :class:`Tour` (its ``cannot`` lists the steps the spec could not run).
    """
    return _run(Tour(spec, out, trace, full_trace), only)


def _run(tour: Tour, only: int | None = None) -> Tour:
    steps = tour_steps()
    if only is not None and not 1 <= only <= len(steps):
        raise ValueError(
            f"there is no step {only}: the tour has steps 1 to {len(steps)}"
            f" (e.g. --step {len(steps)})"
        )
    spec = get_spec(tour.spec)
    default = " (the default; choose another with --spec)" if spec.name == DEFAULT_SPEC else ""
    tour.out.write(f"dmabuf_sim guided tour — spec {spec.name}{default}\n\n")
    for i, step in enumerate(steps, 1):
        if only is not None and i != only:
            continue
        tour.out.write(f"== Step {i}: {step.title}\n{step.explain}\n\n")
        tour.begin(f"Step {i}: {step.title}", step.explain)
        try:
            step.run(tour)
        except CannotRun as why:
            tour.cannot.append(f"Step {i}: {why}")
            tour.say(f"[{spec.name}] this step cannot run: {why}")
        tour.flush()
        tour.out.write("\n")
    return tour


def _grouped(cannot: list[str]) -> list[str]:
    """``Steps 2-8: why`` for consecutive steps that cannot run for the same reason."""
    out: list[tuple[list[str], str]] = []
    for line in cannot:
        step, why = line.split(": ", 1)
        if out and out[-1][1] == why:
            out[-1][0].append(step.split()[1])
        else:
            out.append(([step.split()[1]], why))
    return [
        f"Step {nums[0]}: {why}" if len(nums) == 1 else f"Steps {nums[0]}-{nums[-1]}: {why}"
        for nums, why in out
    ]


def tour_walkthrough(
    *,
    specs: Iterable[str] | None = None,
    default_spec: str = DEFAULT_SPEC,
    full_trace: bool = False,
) -> Walkthrough:
    """The tour recorded under each of ``specs`` (all by default) for the step-through view."""
    runs = {}
    for name in specs if specs is not None else SPECS:
        tour = _run(Tour(name, io.StringIO(), trace=False, full_trace=full_trace, record=True))
        total = len(tour_steps())
        ending = [f"tour on {name}: {total - len(tour.cannot)} of {total} steps ran"]
        ending += _grouped(tour.cannot)
        runs[name] = RunView(name, "ran", tuple(ending), tuple(tour.frames))
    intro = (
        "The RFC's documentation as live runs: mmap of a dma-buf, its two use cases,"
        " faked coherency, and the rules that came with it."
    )
    return Walkthrough("dmabuf_sim guided tour", intro, runs, default_spec)
