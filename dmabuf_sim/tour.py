"""The guided tour: short live runs, each traced in the kernel's own words.

Each :class:`Step` explains in two or three sentences what is about to
happen, runs it on a live :class:`~dmabuf_sim.kernel.Kernel`, and prints the
function-graph trace plus a one-line summary of what changed.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any, TextIO

from attrs import define, field

from .errors import Signal
from .kernel import Kernel
from .process import Process
from .trace import format_function_graph

__all__ = ["Step", "TourContext", "run_tour", "tour_steps"]

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


@define(eq=False)
class TourContext:
    """State shared by the steps of one tour."""

    kernel: Kernel
    proc: Process
    vars: dict[str, Any] = field(factory=dict)


@define(frozen=True)
class Step:
    title: str
    explain: str
    action: Callable[[TourContext], str]
    """Runs the step; returns a one-line outcome."""


def _map_driver(ctx: TourContext) -> str:
    p = ctx.proc
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, RW, mmap.MAP_SHARED, fd, 0)
    ctx.vars.update(fd=fd, addr=addr)
    return f"mmap returned {addr:#x}; no page is mapped yet ({len(p.mm.pgtable)} PTEs)"


def _fault_in(ctx: TourContext) -> str:
    p, addr = ctx.proc, ctx.vars["addr"]
    p.write_memory(addr, b"hello, dma-buf")
    p.read_memory(addr + 2 * PAGE, 8)
    return f"two faults, two PTEs now present: {len(p.mm.pgtable)}"


def _split(ctx: TourContext) -> str:
    p, addr = ctx.proc, ctx.vars["addr"]
    p.munmap(addr + PAGE, PAGE)
    return "the vma is now two vmas:\n" + p.maps()


def _touch_hole(ctx: TourContext) -> str:
    p, addr = ctx.proc, ctx.vars["addr"]
    try:
        p.read_memory(addr + PAGE, 1)
    except Signal as sig:
        return f"the CPU faulted and the kernel sent {sig}"
    return "unexpectedly readable"


def _fork(ctx: TourContext) -> str:
    p, addr = ctx.proc, ctx.vars["addr"]
    child = p.fork()
    ctx.vars["child"] = child
    data = child.read_memory(addr, 14)
    return f"child {child.pid} faulted its own PTE and reads {data!r}"


def tour_steps() -> list[Step]:
    return [
        Step(
            "A driver's mmap",
            "A process opens a device node and maps four pages of it. do_mmap checks "
            "the arguments in the kernel's order, mmap_region builds a vma holding a "
            "reference on the file, and the driver's f_op->mmap decides how pages arrive.",
            _map_driver,
        ),
        Step(
            "Faulting pages in",
            "The first touch of each page finds no PTE, so the CPU faults. The fault "
            "path finds the vma and calls the driver's vm_ops->fault, which hands back "
            "the page; the core installs the PTE and the access is retried.",
            _fault_in,
        ),
        Step(
            "Splitting a mapping with munmap",
            "Unmapping the middle page splits the vma: the new piece takes its own file "
            "reference, the removed piece drops one. Each piece stays in the file's i_mmap.",
            _split,
        ),
        Step(
            "Touching the hole",
            "Nothing maps the middle page any more, so an access finds no vma and the "
            "kernel delivers SIGSEGV with SEGV_MAPERR at the faulting address.",
            _touch_hole,
        ),
        Step(
            "fork",
            "dup_mmap copies every vma into the child with one more file reference. A "
            "plain shared file mapping's PTEs are not copied: the child faults its own.",
            _fork,
        ),
    ]


def run_tour(
    *, spec: str = "v6.12", out: TextIO, trace: bool = True, only: int | None = None
) -> None:
    kernel = Kernel(spec)
    ctx = TourContext(kernel, kernel.spawn("tour"))
    steps = tour_steps()
    out.write(f"dmabuf_sim guided tour — spec {kernel.spec.name}\n\n")
    for i, step in enumerate(steps, 1):
        with kernel.trace() as events:
            outcome = step.action(ctx)
        if only is not None and i != only:
            continue
        out.write(f"== Step {i}: {step.title}\n{step.explain}\n\n")
        if trace:
            out.write(format_function_graph(events))
        out.write(f"\n=> {outcome}\n\n")
