"""One or two sentences saying what a userspace call (or a stretch of kernel-side work) did.

The step-through view narrates each step from three things only: the strace
record of the call, the kernel's trace events it caused, and counts taken from
the kernel before and after (:class:`Counts`).  So a narration never claims
what the trace does not show::

    app-1 unmaps 4096 bytes at 0x7effffffe000.
    app-1 calls mmap, which fails with EINVAL (Invalid argument). dma_buf_mmap_internal returned it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from attrs import frozen

from .errors import errname
from .trace import KERNEL_FUNCTIONS, TraceEvent, vm_fault_name

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Counts", "changes", "narrate_call", "narrate_kernel", "split_args"]


@frozen
class Counts:
    """What a reader counts in the state picture, taken from the kernel."""

    processes: int
    vmas: int
    ptes: int
    fds: int
    dma_bufs: int
    dirty_lines: int

    @classmethod
    def of(cls, kernel: Kernel) -> Counts:
        procs = list(kernel.processes.values())
        return cls(
            len(procs),
            sum(len(p.mm.vmas) for p in procs),
            sum(len(p.mm.pgtable) for p in procs),
            sum(len(p.files.fds) for p in procs),
            len(kernel.dma_bufs),
            len(kernel.cache.dirty),
        )


_LABELS = (
    ("processes", "processes"),
    ("vmas", "vmas"),
    ("ptes", "PTEs"),
    ("fds", "open fds"),
    ("dma_bufs", "dma-bufs"),
    ("dirty_lines", "dirty cache lines"),
)


def changes(before: Counts, after: Counts) -> tuple[str, ...]:
    """``("PTEs 0 → 2", ...)``: every count that moved."""
    out = []
    for attr, label in _LABELS:
        a, b = getattr(before, attr), getattr(after, attr)
        if a != b:
            out.append(f"{label} {a} → {b}")
    return tuple(out)


def split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments of a strace argument list."""
    parts: list[str] = []
    depth, quoted, start, i = 0, False, 0, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def _field(struct: str, name: str) -> str:
    m = re.search(rf"\b{name}=([^,}}]+)", struct)
    return m.group(1) if m else "?"


def _bytes(n: str) -> str:
    return "1 byte" if n == "1" else f"{n} bytes"


def _success(record: TraceEvent, a: list[str]) -> str:
    who, name, ret = f"{record.comm}-{record.pid}", record.func, record.ret
    if name == "mmap" and len(a) == 6:
        where = f" at offset {a[5]}" if a[5] != "0" else ""
        return (
            f"{who} maps {_bytes(a[1])} of fd {a[4]}{where} ({a[2]}, {a[3]});"
            f" the mapping starts at {ret:#x}."
            if isinstance(ret, int)
            else f"{who} maps {_bytes(a[1])} of fd {a[4]}."
        )
    if name == "munmap":
        return f"{who} unmaps {_bytes(a[1])} at {a[0]}."
    if name == "mremap":
        at = f"; it is now at {ret:#x}" if isinstance(ret, int) else ""
        return f"{who} resizes the mapping at {a[0]} from {a[1]} to {_bytes(a[2])}{at}."
    if name == "mprotect":
        return f"{who} changes {_bytes(a[1])} at {a[0]} to {a[2]}."
    if name == "open":
        return f"{who} opens {a[0]}: fd {ret}."
    if name == "close":
        return f"{who} closes fd {a[0]}."
    if name == "dup":
        return f"{who} duplicates fd {a[0]} as fd {ret}."
    if name == "lseek":
        return f"{who} seeks fd {a[0]} ({a[2]}, offset {a[1]}): the position is {ret}."
    if name in ("read", "write"):
        return f"{who} {name}s {_bytes(str(ret))} of fd {a[0]}."
    if name == "ioctl":
        return _ioctl(who, a, ret)
    if name == "poll":
        ready = record.note or "nothing ready"
        return f"{who} polls fd {a[0].split('=')[1].split(',')[0]}: {ready}."
    if name == "fcntl":
        return f"{who} calls fcntl {a[1]} on fd {a[0]}" + (f" ({a[2]})." if len(a) > 2 else ".")
    if name == "memfd_create":
        return f"{who} creates the memfd {a[0]}: fd {ret}."
    if name == "ftruncate":
        return f"{who} sizes fd {a[0]} to {_bytes(a[1])}."
    if name == "fork":
        return f"{who} forks: the child is pid {ret}, with copies of its vmas and fds."
    if name == "exit_group":
        return f"{who} exits: its fds are closed and its address space is torn down."
    if name == "read_memory":
        return f"{who} loads {_bytes(a[1])} at {a[0]}."
    if name == "write_memory":
        return f"{who} stores {_bytes(a[2] if len(a) > 2 else '?')} at {a[0]}."
    return f"{who} calls {name}."


def _ioctl(who: str, a: list[str], ret: object) -> str:
    fd, req, arg = a[0], a[1], a[2] if len(a) > 2 else ""
    if req == "DMA_BUF_IOCTL_SYNC":
        how = {"RW": "read and write", "READ": "read", "WRITE": "write"}.get(
            arg.split("DMA_BUF_SYNC_")[-1].rstrip("}"), "access"
        )
        if "SYNC_END" in arg:
            return (
                f"{who} ends its CPU access ({how}) to dma-buf fd {fd}: the exporter's"
                " end_cpu_access may hand the buffer back to devices."
            )
        return (
            f"{who} starts a CPU access ({how}) to dma-buf fd {fd}: the exporter's"
            " begin_cpu_access makes the CPU's view of the buffer current."
        )
    if req == "DMA_HEAP_IOCTL_ALLOC":
        return (
            f"{who} allocates {_bytes(_field(arg, 'len'))} from the heap on fd {fd};"
            f" the new dma-buf is fd {_field(arg, 'fd')}."
        )
    if req.startswith("DMA_BUF_SET_NAME"):
        return f"{who} names dma-buf fd {fd} {arg}."
    if req == "DRM_IOCTL_PRIME_FD_TO_HANDLE":
        return (
            f"{who} imports dma-buf fd {_field(arg, 'fd')} into the DRM device:"
            f" GEM handle {_field(arg, 'handle')}."
        )
    if req == "DRM_IOCTL_PRIME_HANDLE_TO_FD":
        return (
            f"{who} exports GEM handle {_field(arg, 'handle')} as dma-buf fd {_field(arg, 'fd')}."
        )
    if req == "DRM_IOCTL_GEM_CLOSE":
        return f"{who} closes GEM handle {_field(arg, 'handle')}."
    if req == "UDMABUF_CREATE":
        return (
            f"{who} wraps {_bytes(_field(arg, 'size'))} of memfd {_field(arg, 'memfd')}"
            f" in a dma-buf: fd {ret}."
        )
    return f"{who} calls ioctl {req} on fd {fd}."


def _origin(events: Sequence[TraceEvent], ret: int) -> str:
    """The innermost kernel function that returned ``ret`` first (where the error arose)."""
    for ev in events:
        if ev.kind == "exit" and ev.ret == ret:
            return ev.func
    return ""


def _fault_story(events: Sequence[TraceEvent]) -> str:
    """What the page fault inside a call did, by the handler that answered it."""
    entered = {ev.func for ev in events if ev.kind == "entry"}
    if "handle_mm_fault" not in entered:
        return ""
    answers = [
        ev
        for ev in events
        if ev.kind == "exit"
        and (info := KERNEL_FUNCTIONS.get(ev.func)) is not None
        and info.returns == "vm_fault_t"
    ]
    driver = next(
        (ev for ev in answers if not KERNEL_FUNCTIONS[ev.func].file.startswith("mm/")), None
    )
    if driver is not None:
        return f"The access faulted: {driver.func} answered {_answer(driver)}."
    if "do_anonymous_page" in entered:
        return (
            "The access faulted and no driver's fault handler ran: do_anonymous_page gave it"
            " an anonymous page."
        )
    core = next((ev for ev in answers if ev.func in ("do_fault", "__do_fault")), None)
    if core is not None and isinstance(core.ret, int) and core.ret:
        return (
            f"The access faulted; there is no fault handler, so {core.func} answered"
            f" {_answer(core)}."
        )
    last = answers[-1] if answers else None
    return (
        f"The access faulted: {last.func} answered {_answer(last)}."
        if last
        else "The access faulted."
    )


def _answer(ev: TraceEvent) -> str:
    return vm_fault_name(ev.ret) if isinstance(ev.ret, int) else str(ev.ret)


def _events_story(events: Sequence[TraceEvent]) -> list[str]:
    out = []
    zapped = sum(
        ev.ret
        for ev in events
        if ev.kind == "exit" and ev.func == "unmap_mapping_range" and isinstance(ev.ret, int)
    )
    if zapped:
        vmas = sum(1 for ev in events if ev.kind == "event" and ev.func == "zap_page_range_single")
        where = f" in {vmas} vmas" if vmas > 1 else ""
        out.append(
            f"unmap_mapping_range shot down {zapped} PTE{'s' if zapped != 1 else ''}{where}."
        )
    for ev in events:
        if ev.kind != "event":
            continue
        if ev.func == "force_sig_fault":
            out.append(f"The kernel delivered {ev.args or ev.note}.".replace("  ", " "))
        elif ev.func == "oops":
            out.append(f"The kernel oopsed: {ev.args or ev.note}.")
        elif ev.func == "stale_read":
            out.append("The CPU read stale data from its cache!")
        elif ev.func == "WARN_ON":
            out.append(f"WARN_ON fired ({ev.note}).")
        elif ev.func == "fault_wait":
            out.append("A fault handler waited for the device.")
    return list(dict.fromkeys(out))


def narrate_call(record: TraceEvent, events: Sequence[TraceEvent]) -> str:
    """What a ``syscall``/``access`` record and the kernel events it caused amount to."""
    if record.note.startswith("SIG"):  # the signal is said once, from the record
        events = [ev for ev in events if ev.func != "force_sig_fault"]
    who = f"{record.comm}-{record.pid}"
    a = split_args(record.args)
    ret, note = record.ret, record.note
    if isinstance(ret, int) and ret < 0:
        where = _origin(events, ret)
        origin = f" {where} returned it." if where else ""
        text = (
            f"{who} calls {record.func}, which fails with {errname(ret)}"
            f" ({os.strerror(-ret)}).{origin}"
        )
    elif note.startswith("SIG"):
        verb = {"read_memory": "load", "write_memory": "store"}.get(record.func, record.func)
        text = f"{who}'s {verb} at {a[0] if a else '?'} ends in {note.split(' {')[0]}."
    elif note.startswith("oops"):
        text = f"{who} calls {record.func} and the kernel oopses ({note})."
    elif note.startswith("raised"):
        text = f"{who} calls {record.func}: the Python API refused it ({note})."
    else:
        text = _success(record, a)
    extra = [_fault_story(events), *_events_story(events)]
    return " ".join([text, *(x for x in extra if x)])


_KERNEL_WORDS = {
    "dma_buf_begin_cpu_access": "begin_cpu_access brackets a kernel CPU access",
    "dma_buf_end_cpu_access": "end_cpu_access ends it",
    "dma_buf_export": "a buffer is exported",
    "dma_buf_fd": "it gets an fd",
    "dma_buf_vmap": "the kernel vmaps the buffer",
    "dma_buf_vunmap": "vunmaps it",
    "dma_buf_put": "a reference is dropped",
    "dma_buf_get": "a reference is taken",
    "dma_buf_map_attachment": "the buffer is mapped for DMA",
    "dma_buf_unmap_attachment": "it is unmapped",
}
_JOB_STEPS = {"device_dma_read": "reads it", "device_dma_write": "writes it"}


def _device_jobs(top: Sequence[TraceEvent]) -> list[str]:
    """Kernel-side calls in words; attach ... detach becomes one device job."""
    parts: list[str] = []
    job: list[str] | None = None
    dev = "a device"
    for ev in top:
        if ev.func == "dma_buf_attach":
            m = re.search(r"dev\(([^)]*)\)", ev.args)
            dev, job = (f"the device {m.group(1)}" if m else "a device"), []
        elif job is not None and ev.func in _JOB_STEPS:
            job.append(_JOB_STEPS[ev.func])
        elif job is not None and ev.func in ("dma_buf_map_attachment", "dma_buf_unmap_attachment"):
            continue
        elif job is not None and ev.func == "dma_buf_detach":
            did = f", {' and '.join(job)} by DMA" if job else ""
            parts.append(f"{dev} maps the buffer{did}, then unmaps it")
            job = None
        else:
            parts.append(_KERNEL_WORDS.get(ev.func, f"{ev.func} runs"))
    if job is not None:
        did = f", {' and '.join(job)} by DMA" if job else ""
        parts.append(f"{dev} maps the buffer{did}")
    return parts


def narrate_kernel(events: Sequence[TraceEvent]) -> tuple[str, str]:
    """``(title, narration)`` for kernel work no userspace call made (devices, drivers)."""
    top = [ev for ev in events if ev.kind == "entry" and ev.depth == min_depth(events)]
    names = [ev.func for ev in top]
    names = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    title = "kernel: " + " → ".join(names) if names else "kernel"
    parts = _device_jobs(top)
    body = ("Kernel side, no system call: " + "; ".join(parts) + ".") if parts else ""
    extra = [_fault_story(events), *_events_story(events)]
    return title, " ".join([body, *(x for x in extra if x)]).strip()


def min_depth(events: Sequence[TraceEvent]) -> int:
    depths = [ev.depth for ev in events if ev.kind == "entry"]
    return min(depths) if depths else 0
