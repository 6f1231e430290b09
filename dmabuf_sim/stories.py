"""Stories: small runs whose outcomes differ between kernels.

Each story runs on one :class:`~dmabuf_sim.kernel.Kernel` and returns its
observations as ``name -> text``; ``dmabuf-sim diff-specs STORY A B`` runs
it under two specs and shows only the observations that differ — the 3.5
refcount bug, SIGBUS versus silent anonymous memory, the inode change,
ioctls that did not exist yet, the RFC's uninitialised read.

Each observation carries a :class:`Judgement`: the outcome the rules call
right (so a difference names the side with the bug) or, where kernels differ
by design, why neither side is wrong.  :func:`verdict` turns a diff into
those lines.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

from attrs import field, frozen

from .dma_buf.access import dma_buf_end_cpu_access
from .dma_buf.core import dma_buf_export, dma_buf_fd
from .dma_buf.mmap import dma_buf_mmap
from .errors import KernelOops, Signal
from .exporters.registry import EXPORTERS, kernel_side
from .exporters.teaching import SimpleBuffer, SimpleExporter
from .fs import FileOperations
from .kernel import Kernel
from .spec import DEFAULT_SPEC, Spec, get_spec
from .uapi import DMA_BUF_IOCTL_SYNC, DMA_BUF_SET_NAME, POLLIN, POLLOUT, DmaBufSync

__all__ = ["STORIES", "Judgement", "Story", "diff_story", "run_story", "verdict"]

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


@frozen
class Judgement:
    """What an observation should be, by the rules.

    ``right`` is the outcome the rules call correct (a side that differs from
    it has the bug); ``None`` means kernels differ here by design (a feature
    arrived, an earlier check answers first) and neither side is wrong.
    """

    why: str
    right: str | None = None


@frozen
class Story:
    name: str
    summary: str
    rules: tuple[str, ...]
    run: Callable[[Kernel], dict[str, str]]
    judge: dict[str, Judgement] = field(factory=dict)
    """Observation name -> how to judge a difference in it."""


def _outcome(fn: Callable[[], Any]) -> str:
    """``ok``, ``ok: value``, the errno name, the signal, or ``oops`` — never a traceback."""
    try:
        value = fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    except Signal as sig:
        return str(sig).split(" at ")[0]
    except KernelOops as oops:
        return f"oops ({oops.rule or oops.func})"
    return "ok" if value is None else f"ok: {value}"


def _simple_fd(kernel: Kernel, pages: int = 2) -> tuple[Any, int]:
    proc = kernel.spawn("story")
    return proc, EXPORTERS["simple"].make_fd(proc, pages * PAGE, os.O_RDWR | os.O_CLOEXEC)


# -- the stories ---------------------------------------------------------------------------
def story_mmap_bounds(k: Kernel) -> dict[str, str]:
    """mmap of a 2-page dma-buf at the edges: in bounds, past the end, huge offsets (R1, R6)."""
    if not k.spec.has_mmap_fop:
        proc, fd = _simple_fd_or_none(k)
    else:
        proc, fd = _simple_fd(k)

    def attempt(length: int, off: int) -> str:
        return _outcome(lambda: proc.mmap(0, length, RW, mmap.MAP_SHARED, fd, off) and None)

    return {
        "mmap 2 pages at 0": attempt(2 * PAGE, 0),
        "mmap 3 pages at 0": attempt(3 * PAGE, 0),
        "mmap 1 page at page 2": attempt(PAGE, 2 * PAGE),
        "mmap 1 page at offset -4096": attempt(PAGE, -PAGE),
    }


def _simple_fd_or_none(k: Kernel) -> tuple[Any, int]:
    """On v3.4 dma-buf mmap does not exist; export kernel-side anyway (kmap era)."""
    proc = k.spawn("story")
    ops = SimpleExporter()
    buf = SimpleBuffer(k.mem.alloc_contig(2), 2)
    with k.running(proc):
        dmabuf = dma_buf_export(k, buf, ops, 2 * PAGE, os.O_RDWR)
        return proc, dma_buf_fd(dmabuf, 0)


def story_file_ops(k: Kernel) -> dict[str, str]:
    """lseek, the sync ioctl, poll and /proc maps on a dma-buf fd (R41, R42, R47, R48, R50, R62)."""
    if k.spec.has_mmap_fop:
        proc, fd = _simple_fd(k)
    else:
        proc, fd = _simple_fd_or_none(k)
    out = {
        "lseek(0, SEEK_END)": _outcome(lambda: proc.lseek(fd, 0, os.SEEK_END)),
        "DMA_BUF_IOCTL_SYNC START|RW": _outcome(
            lambda: proc.ioctl(fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(3)) and None
        ),
        "DMA_BUF_SET_NAME 'frame'": _outcome(
            lambda: proc.ioctl(fd, DMA_BUF_SET_NAME, "frame") and None
        ),
        "poll(POLLIN|POLLOUT)": f"revents {proc.poll(fd, POLLIN | POLLOUT):#x}",
    }
    if k.spec.has_mmap_fop and not k.spec.mmap_internal_reads_uninitialised_dmabuf:
        addr = proc.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        line = next(x for x in proc.maps().splitlines() if x.startswith(f"{addr:08x}"))
        out["/proc/self/maps name"] = line.split()[-1]
    return out


def story_no_fault_handler(k: Kernel) -> dict[str, str]:
    """An exporter whose mmap installs neither PTEs nor a fault handler (R30, R31)."""

    class Lazy(SimpleExporter):
        def mmap(self, dmabuf: Any, vma: Any) -> int:
            return 0  # nothing backs the mapping: no PTEs, no vm_ops->fault

    proc = k.spawn("story")
    fd = kernel_side(Lazy)(proc, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    out: dict[str, str] = {}
    addr: list[int] = []
    out["mmap"] = _outcome(lambda: addr.append(proc.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fd, 0)))
    if addr:
        out["read first byte"] = _outcome(lambda: proc.read_memory(addr[0], 1).hex())
        out["write 'x'"] = _outcome(lambda: proc.write_memory(addr[0], b"x"))
        dmabuf = proc.file(fd).private_data
        first = dmabuf.priv.first_pfn
        out["buffer byte 0 afterwards"] = k.mem.read(first << 12, 1).hex()
    return out


def story_shared_inode(k: Kernel) -> dict[str, str]:
    """Two buffers of an exporter that shoots down through the dma-buf file (R26, R27, R56)."""
    if not k.spec.has_mmap_fop or k.spec.mmap_internal_reads_uninitialised_dmabuf:
        return {"mmap": "not possible on this spec"}
    proc = k.spawn("story")
    info = EXPORTERS["shared_file_zap"]
    fa = info.make_fd(proc, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    fb = info.make_fd(proc, 2 * PAGE, os.O_RDWR | os.O_CLOEXEC)
    a = proc.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fa, 0)
    b = proc.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, fb, 0)
    proc.write_memory(a, b"A" * 16)
    proc.write_memory(b, b"B" * 16)
    ptes = proc.mm.pgtable

    def b_ptes() -> int:
        return sum(1 for _ in ptes.iter_range(b >> 12, (b >> 12) + 2))

    before = b_ptes()
    dmabuf_a = proc.file(fa).private_data
    args: tuple[Any, ...] = (0, 2 * PAGE, 1) if k.spec.cpu_access_has_range_args else (1,)
    with k.running(proc):
        dma_buf_end_cpu_access(dmabuf_a, *args)  # A leaves the CPU domain
    return {
        "all dma-bufs share one inode": str(proc.file(fa).f_inode is proc.file(fb).f_inode),
        "B's PTEs before A's shootdown": str(before),
        "B's PTEs after A's shootdown": str(b_ptes()),
    }


def story_importer_mmap_failure(k: Kernel) -> dict[str, str]:
    """An importer forwards mmap with dma_buf_mmap and the exporter fails it (R22-R24)."""
    if not k.spec.has_mmap_fop or k.spec.mmap_internal_reads_uninitialised_dmabuf:
        return {"dma_buf_mmap": "not possible on this spec"}

    class Failing(SimpleExporter):
        def mmap(self, dmabuf: Any, vma: Any) -> int:
            return -errno.ENOMEM

    proc = k.spawn("story")
    with k.running(proc):
        dmabuf = Failing().export(k, 2 * PAGE, os.O_RDWR)
    k.register_chrdev(
        "/dev/importer", FileOperations(mmap=lambda f, vma: dma_buf_mmap(dmabuf, vma, 0))
    )
    fd = proc.open("/dev/importer", os.O_RDWR)
    importer_file = proc.file(fd)
    assert dmabuf.file is not None
    before = (importer_file.f_count, dmabuf.file.f_count)
    result = _outcome(lambda: proc.mmap(0, PAGE, RW, mmap.MAP_SHARED, fd, 0) and None)
    after = (importer_file.f_count, dmabuf.file.f_count)
    return {
        "mmap through the importer": result,
        "importer file refs (before -> after)": f"{before[0]} -> {after[0]}",
        "dma-buf file refs (before -> after)": f"{before[1]} -> {after[1]}",
    }


def story_rfc_uninitialised_read(k: Kernel) -> dict[str, str]:
    """mmap of a dma-buf fd under the RFC as posted reads dmabuf->size uninitialised (R61)."""
    if not k.spec.has_mmap_fop:
        proc, fd = _simple_fd_or_none(k)
    else:
        proc, fd = _simple_fd(k)
    return {
        "mmap 1 page": _outcome(
            lambda: proc.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0) and None
        ),
        "kernel tainted": str(k.tainted),
    }


STORIES: dict[str, Story] = {
    s.name: s
    for s in (
        Story(
            "mmap-bounds",
            "mmap of a 2-page dma-buf at the edges",
            ("R1", "R6", "R10"),
            story_mmap_bounds,
            {
                "mmap 2 pages at 0": Judgement("R1: a mapping inside the buffer works", "ok"),
                "mmap 3 pages at 0": Judgement("R1: a mapping past the end fails", "EINVAL"),
                "mmap 1 page at page 2": Judgement("R1: a mapping past the end fails", "EINVAL"),
                "mmap 1 page at offset -4096": Judgement(
                    "both refuse the huge offset: since 4.19 file_mmap_ok answers EOVERFLOW"
                    " before the dma-buf is asked; before, dma_buf_mmap_internal said EINVAL (R6)"
                ),
            },
        ),
        Story(
            "file-ops",
            "lseek, the sync ioctl, set-name, poll, /proc maps",
            ("R41", "R42", "R47", "R48", "R50", "R62"),
            story_file_ops,
            {
                "lseek(0, SEEK_END)": Judgement(
                    "dma-buf lseek arrived in 3.12 (R41); before, lseek fails ESPIPE (R42)"
                ),
                "DMA_BUF_IOCTL_SYNC START|RW": Judgement(
                    "DMA_BUF_IOCTL_SYNC arrived in 4.6 (R43); before, a dma-buf knows no ioctl"
                    " and answers ENOTTY (R47)"
                ),
                "DMA_BUF_SET_NAME 'frame'": Judgement("DMA_BUF_SET_NAME arrived in 5.3 (R48)"),
                "poll(POLLIN|POLLOUT)": Judgement("dma-buf poll arrived in 3.17 (R50)"),
                "/proc/self/maps name": Judgement(
                    "since 5.3 each dma-buf has its own inode and shows its name in /proc maps"
                    " (R48); before, every one was anon_inode:dmabuf"
                ),
            },
        ),
        Story(
            "no-fault-handler",
            "a mapping with no PTEs and no fault handler",
            ("R30", "R31"),
            story_no_fault_handler,
            {
                "mmap": Judgement("R1: mapping the whole buffer works", "ok"),
                "read first byte": Judgement(
                    "R31: with no PTE and no fault handler, kernels before the fix silently gave"
                    " the shared mapping anonymous memory (reads zero, writes never reach the"
                    " buffer); R30: now it is SIGBUS",
                    "SIGBUS (si_code=2)",
                ),
                "write 'x'": Judgement(
                    "R31: the write landed in anonymous memory the buffer never sees; R30: now"
                    " it is SIGBUS",
                    "SIGBUS (si_code=2)",
                ),
                "buffer byte 0 afterwards": Judgement("nothing reached the buffer", "00"),
            },
        ),
        Story(
            "shared-inode",
            "shoot-down through the dma-buf file zaps other buffers",
            ("R26", "R27", "R56"),
            story_shared_inode,
            {
                "all dma-bufs share one inode": Judgement(
                    "per-buffer inodes arrived in 5.3 (R25-R27)"
                ),
                "B's PTEs before A's shootdown": Judgement("B's page is mapped", "1"),
                "B's PTEs after A's shootdown": Judgement(
                    "R56: the exporter shoots down through the dma-buf file; where all dma-bufs"
                    " share the anon inode (before 5.3, R26) that zaps buffer B as well;"
                    " per-buffer inodes keep it to A (R27)",
                    "1",
                ),
            },
        ),
        Story(
            "importer-mmap-failure",
            "dma_buf_mmap when the exporter's mmap fails",
            ("R22", "R23", "R24"),
            story_importer_mmap_failure,
            {
                "mmap through the importer": Judgement(
                    "the exporter's error reaches userspace", "ENOMEM"
                ),
                "importer file refs (before -> after)": Judgement(
                    "R23: 3.5-3.8 put the importer's file once too often when the exporter's"
                    " mmap failed inside dma_buf_mmap (fixed in 3.9); R24: references balance",
                    "1 -> 1",
                ),
                "dma-buf file refs (before -> after)": Judgement(
                    "R23: the same error path leaked a reference to the dma-buf file (fixed in"
                    " 3.9); R24: references balance",
                    "1 -> 1",
                ),
            },
        ),
        Story(
            "rfc-uninitialised-read",
            "the RFC as posted reads an uninitialised pointer",
            ("R61",),
            story_rfc_uninitialised_read,
            {
                "mmap 1 page": Judgement(
                    "R61: the RFC as posted checks dmabuf->size before it has the dma-buf;"
                    " the merged patch (3.5) fixed it",
                    "ok",
                ),
                "kernel tainted": Judgement("an oops taints the kernel (R61)", "False"),
            },
        ),
    )
}


def run_story(name: str, spec: str | Spec = DEFAULT_SPEC) -> dict[str, str]:
    if name not in STORIES:
        raise ValueError(f"unknown story {name!r}; choose one of {', '.join(STORIES)}")
    return STORIES[name].run(Kernel(spec))


def diff_story(
    name: str, spec_a: str | Spec, spec_b: str | Spec = DEFAULT_SPEC
) -> list[tuple[str, str, str]]:
    """``(observation, outcome under A, outcome under B)`` for every observation that differs."""
    a = run_story(name, spec_a)
    b = run_story(name, spec_b)
    keys = list(dict.fromkeys([*a, *b]))
    return [(k, a.get(k, "-"), b.get(k, "-")) for k in keys if a.get(k) != b.get(k)]


_ABSENT = ("-", "not possible on this spec")


def _judge_row(
    story: Story, key: str, spec_a: Spec, a: str, spec_b: Spec, b: str
) -> tuple[str, set[str]]:
    """One verdict line for a differing observation, and the specs it finds buggy."""
    for spec, value, other in ((spec_a, a, b), (spec_b, b, a)):
        if value.startswith("oops"):
            detail = value.removeprefix("oops").strip(" ()")
            return (
                f"{key}: {spec.name} is the bug: it oopses ({detail}), undefined behaviour"
                f" where the other kernel answers {other!r}",
                {spec.name},
            )
    for spec, value in ((spec_a, a), (spec_b, b)):
        if value in _ABSENT:
            return f"{key}: not comparable: {spec.name} cannot get this far", set()
        if value == "ENODEV" and not spec.has_mmap_fop:
            return (
                f"{key}: neither is a bug: {spec.name} has no dma-buf mmap at all (R10:"
                " ENODEV); it arrived in 3.5",
                set(),
            )
    judgement = story.judge.get(key)
    if judgement is None:
        return f"{key}: no judgement recorded for this observation", set()
    if judgement.right is None:
        return f"{key}: neither is a bug: {judgement.why}", set()
    wrong = {spec.name for spec, value in ((spec_a, a), (spec_b, b)) if value != judgement.right}
    if len(wrong) == 2:
        return f"{key}: both differ from {judgement.right!r}: {judgement.why}", wrong
    return f"{key}: {''.join(wrong)} is the bug: {judgement.why}", wrong


def verdict(
    name: str, spec_a: str | Spec, spec_b: str | Spec, rows: list[tuple[str, str, str]]
) -> tuple[str, list[str]]:
    """``(summary, one line per row)`` saying which side of a :func:`diff_story` is the bug."""
    story = STORIES[name]
    a, b = get_spec(spec_a), get_spec(spec_b)
    lines: list[str] = []
    buggy: dict[str, int] = {}
    for key, va, vb in rows:
        line, wrong = _judge_row(story, key, a, va, b, vb)
        lines.append(line)
        for spec in wrong:
            buggy[spec] = buggy.get(spec, 0) + 1
    if not buggy:
        return "neither side is buggy: the kernels differ in features, not in bugs", lines
    if len(buggy) == 2:
        return (
            f"both have bugs here ({a.name} in {buggy[a.name]}, {b.name} in {buggy[b.name]})",
            lines,
        )
    ((spec, count),) = buggy.items()
    rest = len(rows) - count
    tail = ""
    if rest == 1:
        tail = "; the other difference is a feature"
    elif rest:
        tail = f"; the other {rest} differences are features"
    return f"{spec} has the bug ({count} of {len(rows)} differences){tail}", lines
