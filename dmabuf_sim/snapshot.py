"""A snapshot of what a process holds, to compare before and after a call.

``snapshot(process)`` records what ``/proc/PID/maps``, the fd table and the page
tables show, with the reference counts behind them: each vma, each open file
(its flags, position and ``f_count``), each present PTE, the ``struct page``
counts of the pages those PTEs map and the dma-bufs the process reaches through
an fd or a mapping.  Snapshots are immutable values; two taken in the same
kernel compare equal exactly when none of that changed, and :meth:`diff` says
what did::

    from dmabuf_sim import Kernel, snapshot

    p = Kernel("v6.12").spawn()
    before = snapshot(p)
    try:
        p.munmap(0x1001, 4096)  # unaligned: EINVAL
    except OSError:
        pass
    assert snapshot(p) == before  # a failed call changes nothing

``snapshot(kernel)`` takes every process, plus what the kernel as a whole holds
(allocated pages, live dma-bufs, pages reported bad).

A file is told apart by its identity, not only its name: the same fd number on
another file is a change.  Simplified: no cache lines or page contents (the
kit's sanitizers judge bytes), no signal or event state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import overload

from attrs import field, frozen

from .dma_buf.core import DmaBuf
from .fs import File
from .kernel import Kernel
from .mm.page_alloc import PAGE_SHIFT
from .mm.pgtable import cache_mode_name, pte_cache_mode, pte_pfn, pte_special, pte_write
from .mm.vma import vm_flags_str, vma_perms
from .process import Process

__all__ = [
    "DmaBufState",
    "FileState",
    "KernelSnapshot",
    "PageState",
    "ProcessSnapshot",
    "PteState",
    "VmaState",
    "snapshot",
]


@frozen
class VmaState:
    """One line of ``/proc/PID/maps`` and the vma's ``VmFlags``."""

    start: int
    end: int
    perms: str
    pgoff: int
    file: str
    flags: str

    def __str__(self) -> str:
        name = f" {self.file}" if self.file else ""
        return f"{self.start:#x}-{self.end:#x} {self.perms} pgoff {self.pgoff}{name} [{self.flags}]"


@frozen
class FileState:
    """An fd and the open file behind it."""

    fd: int
    path: str
    f_flags: int
    f_pos: int
    f_count: int
    cloexec: bool
    identity: int = field(repr=False)
    """Which ``struct file`` (equal only within one kernel's lifetime)."""

    def __str__(self) -> str:
        cloexec = " cloexec" if self.cloexec else ""
        return (
            f"fd {self.fd}: {self.path} flags {self.f_flags:#o} pos {self.f_pos}"
            f" f_count {self.f_count}{cloexec}"
        )


@frozen
class PteState:
    """A present PTE: the page it maps and how."""

    addr: int
    pfn: int
    writable: bool
    special: bool
    cache: str

    def __str__(self) -> str:
        mode = "rw" if self.writable else "ro"
        special = " special" if self.special else ""
        return f"pte {self.addr:#x} -> pfn {self.pfn:#x} {mode}{special} {self.cache}"


@frozen
class PageState:
    """A ``struct page`` the process maps: who holds it."""

    pfn: int
    refcount: int
    mapcount: int

    def __str__(self) -> str:
        return f"page {self.pfn:#x} refcount {self.refcount} mapcount {self.mapcount}"


@frozen
class DmaBufState:
    """A dma-buf: its file's count, its attachments and kernel mappings."""

    ino: int
    exp_name: str
    size: int
    f_count: int
    attachments: int
    vmaps: int
    released: bool
    identity: int = field(repr=False)

    def __str__(self) -> str:
        state = " released" if self.released else ""
        return (
            f"dma-buf ino {self.ino} ({self.exp_name}, {self.size} bytes) f_count"
            f" {self.f_count} attachments {self.attachments} vmaps {self.vmaps}{state}"
        )


_Item = VmaState | FileState | PteState | PageState | DmaBufState


@frozen
class ProcessSnapshot:
    """What one process holds; see the module docstring."""

    pid: int
    comm: str
    alive: bool
    maps: tuple[VmaState, ...]
    fds: tuple[FileState, ...]
    ptes: tuple[PteState, ...]
    pages: tuple[PageState, ...]
    dma_bufs: tuple[DmaBufState, ...]

    def diff(self, after: ProcessSnapshot) -> list[str]:
        """What changed from this snapshot to ``after``: ``- old`` / ``+ new`` lines."""
        if not isinstance(after, ProcessSnapshot):
            raise TypeError(f"diff takes another ProcessSnapshot, not {type(after).__name__}")
        out = []
        if (self.pid, self.alive) != (after.pid, after.alive):
            out.append(f"- pid {self.pid} alive={self.alive}")
            out.append(f"+ pid {after.pid} alive={after.alive}")
        for name in ("maps", "fds", "ptes", "pages", "dma_bufs"):
            out += _diff_items(getattr(self, name), getattr(after, name))
        return out


@frozen
class KernelSnapshot:
    """Every process, and what the kernel itself holds."""

    processes: tuple[ProcessSnapshot, ...]
    dma_bufs: tuple[DmaBufState, ...]
    allocated_pages: int
    bad_pages: int

    def diff(self, after: KernelSnapshot) -> list[str]:
        """What changed from this snapshot to ``after``, process by process."""
        if not isinstance(after, KernelSnapshot):
            raise TypeError(f"diff takes another KernelSnapshot, not {type(after).__name__}")
        out = []
        old = {p.pid: p for p in self.processes}
        new = {p.pid: p for p in after.processes}
        for pid in sorted(old.keys() | new.keys()):
            if pid not in new:
                out.append(f"- process {pid} ({old[pid].comm})")
            elif pid not in old:
                out.append(f"+ process {pid} ({new[pid].comm})")
            else:
                out += [f"pid {pid}: {line}" for line in old[pid].diff(new[pid])]
        out += _diff_items(self.dma_bufs, after.dma_bufs)
        for name in ("allocated_pages", "bad_pages"):
            was, now = getattr(self, name), getattr(after, name)
            if was != now:
                out += [f"- {name} {was}", f"+ {name} {now}"]
        return out


def _diff_items(before: Iterable[_Item], after: Iterable[_Item]) -> list[str]:
    was, now = list(before), list(after)
    gone = [f"- {item}" for item in was if item not in now]
    came = [f"+ {item}" for item in now if item not in was]
    return gone + came


@overload
def snapshot(target: Process) -> ProcessSnapshot: ...
@overload
def snapshot(target: Kernel) -> KernelSnapshot: ...
def snapshot(target: Process | Kernel) -> ProcessSnapshot | KernelSnapshot:
    """A :class:`ProcessSnapshot` of a process, or a :class:`KernelSnapshot` of a kernel."""
    if isinstance(target, Process):
        return _process(target)
    if isinstance(target, Kernel):
        return KernelSnapshot(
            tuple(_process(p) for _pid, p in sorted(target.processes.items())),
            tuple(_dma_buf(d) for d in target.dma_bufs if not d.released),
            target.mem.allocated_pages,
            len(target.bad_pages),
        )
    raise TypeError(f"snapshot takes a Process or a Kernel, not {type(target).__name__}")


def _process(p: Process) -> ProcessSnapshot:
    mem = p.kernel.mem
    maps = tuple(
        VmaState(
            v.vm_start,
            v.vm_end,
            vma_perms(v.vm_flags),
            v.vm_pgoff,
            v.vm_file.path() if v.vm_file is not None else "",
            vm_flags_str(v.vm_flags),
        )
        for v in p.mm.vmas
    )
    fds = tuple(
        FileState(fd, f.path(), f.f_flags, f.f_pos, f.f_count, fd in p.files.cloexec, id(f))
        for fd, f in sorted(p.files.fds.items())
    )
    ptes = []
    pages = []
    for vpn, pte in sorted(p.mm.pgtable.entries.items()):
        pfn = pte_pfn(pte)
        ptes.append(
            PteState(
                vpn << PAGE_SHIFT,
                pfn,
                pte_write(pte),
                pte_special(pte),
                cache_mode_name(pte_cache_mode(pte)),
            )
        )
        page = None if pte_special(pte) else mem.page_if_exists(pfn)
        if page is not None:
            pages.append(PageState(pfn, page.refcount, page.mapcount))
    files = [f for f in p.files.fds.values()] + [
        v.vm_file for v in p.mm.vmas if v.vm_file is not None
    ]
    bufs: dict[int, DmaBuf] = {}
    for f in files:
        if isinstance(f, File) and isinstance(f.private_data, DmaBuf):
            bufs.setdefault(id(f.private_data), f.private_data)
    return ProcessSnapshot(
        p.pid,
        p.comm,
        p.alive,
        maps,
        fds,
        tuple(ptes),
        tuple(sorted(set(pages), key=lambda s: s.pfn)),
        tuple(_dma_buf(d) for d in bufs.values()),
    )


def _dma_buf(d: DmaBuf) -> DmaBufState:
    return DmaBufState(
        d.ino,
        d.exp_name,
        d.size,
        d.file.f_count if d.file is not None else 0,
        len(d.attachments),
        d.vmapping_counter,
        d.released,
        id(d),
    )
