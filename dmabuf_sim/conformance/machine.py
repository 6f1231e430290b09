"""The conformance state machine: one kernel, one exporter, and the steps a program takes.

:func:`make_machine` binds :class:`DmaBufMachine` to an exporter and a spec.
Every public method is one *step* — what a process, an importing driver or a
device does — and each step checks everything after itself: its own
expectations (a read returns what the model says, an in-bounds access works,
a refused call fails with the right errno) and the sanitizers of
:mod:`.sanitizers`.  The first broken rule raises :class:`RuleViolation`, so a
program of steps is its own test and a reproducer is just the steps::

    from dmabuf_sim.conformance import make_machine

    Machine = make_machine("simple", "v6.12")
    state = Machine()
    b1 = state.new_buffer(size=8192)
    m1 = state.mmap(b1, offset=1, pages=1)
    state.sync_start(b1, "rw")
    state.cpu_write(m1, offset=0, data=b"hi")
    state.sync_end(b1)
    state.dma_job(b1, "read", offset=4096, n=2)
    state.teardown()

The steps, by what they exercise:

* buffers: :meth:`new_buffer`, :meth:`close`;
* mappings: :meth:`mmap` (shared or private, read-only or writable, inside
  the buffer or past its end), :meth:`mmap_after` (MAP_FIXED next to a mapping:
  the merge that skips ``->mmap``, R35), :meth:`munmap`, :meth:`munmap_page`
  (a split), :meth:`mremap_grow`, :meth:`touch_past_end`, :meth:`mprotect`;
* processes: :meth:`fork`, :meth:`exit`;
* CPU access: :meth:`sync_start` / :meth:`sync_end` (the ioctl, or the kernel's
  begin/end_cpu_access), :meth:`cpu_read`, :meth:`cpu_write` (any holder of a
  mapping), :meth:`vmap`, :meth:`vunmap`, :meth:`kernel_read`,
  :meth:`kernel_write` (through a vmap, or kmap on the 3.x specs);
* devices: :meth:`attach`, :meth:`map_attachment`, :meth:`dma_read`,
  :meth:`dma_write`, :meth:`unmap_attachment`, :meth:`detach` — a device may keep
  a buffer mapped across CPU accesses — and :meth:`dma_job`, one importer job
  (attach, map, DMA, unmap, detach);
* :meth:`add_fence`, :meth:`finish_device_work`: device work pending on the
  buffer's reservation;
* :meth:`import_mmap`: the buffer imported into vgem and mapped through the DRM
  fd, which forwards with ``dma_buf_mmap``;
* :meth:`teardown`: everything closed; every buffer released exactly once,
  every page and kernel mapping given back.

What a read must return follows the protocol: the CPU's view is definite
inside a SYNC bracket that reads (READ or RW), and, for an exporter that
declares itself coherent, also outside any bracket while no device holds the
buffer mapped; a device's view is definite while no CPU bracket is open.
Steps that would break the protocol (a device DMA inside a CPU bracket, a CPU
write outside one on a non-coherent exporter) are refused with
:class:`ValueError` — the generator never takes them.
"""

from __future__ import annotations

import errno
import functools
import mmap as _mmap
import os
import re
import signal
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, Device, SgTable
from ..dma_buf.access import (
    dma_buf_attach,
    dma_buf_begin_cpu_access,
    dma_buf_detach,
    dma_buf_end_cpu_access,
    dma_buf_kmap,
    dma_buf_kunmap,
    dma_buf_map_attachment_unlocked,
    dma_buf_unmap_attachment_unlocked,
    dma_buf_vmap_unlocked,
    dma_buf_vunmap_unlocked,
)
from ..dma_buf.core import DmaBuf, IosysMap, dma_buf_get, dma_buf_put
from ..dma_buf.dma_fence import DmaFence
from ..dma_buf.dma_resv import DmaResvUsage
from ..errors import KernelError, KernelOops, Signal, UsageError, errname
from ..exporters.drm_gem import drm_vma_node_offset_addr
from ..exporters.registry import ExporterInfo
from ..kernel import Kernel
from ..mm.mmap import MAP_FIXED
from ..mm.page_alloc import PAGE_SHIFT, PAGE_SIZE, page_pieces
from ..mm.vmalloc import KernelMapping
from ..module import Module, find_module, register_module_file, request_module
from ..spec import get_spec
from ..uapi import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
    DRM_IOCTL_PRIME_FD_TO_HANDLE,
    DmaBufSync,
    DrmPrimeHandle,
)
from .model import AttRef, Bracket, BufRef, ChildRef, MapRef, VmapRef
from .sanitizers import Finding, RuleViolation, World, check_released

if TYPE_CHECKING:
    from ..exporters.registry import ExporterInfo
    from ..process import Process

__all__ = ["DmaBufMachine", "KitError", "make_machine", "run_operations"]

PAGE = PAGE_SIZE
MAX_LIVE_BUFFERS = 3
MAX_CHILDREN = 2

_SYNC_FLAGS = {"read": DMA_BUF_SYNC_READ, "write": DMA_BUF_SYNC_WRITE, "rw": DMA_BUF_SYNC_RW}
_CPU_DIR = {"read": DMA_FROM_DEVICE, "write": DMA_TO_DEVICE, "rw": DMA_BIDIRECTIONAL}
_DEV_DIR = {
    "to_device": DMA_TO_DEVICE,
    "from_device": DMA_FROM_DEVICE,
    "bidirectional": DMA_BIDIRECTIONAL,
}

# Kernel functions whose BUG/oops is evidence of a specific rule.
_OOPS_RULES = {
    "remap_pfn_range": "R36",
    "remap_pte_range": "R36",
    "vm_insert_page": "R39",
    "vmf_insert_pfn": "R38",
    "vmf_insert_mixed": "R38",
    "dma_buf_vunmap": "R54",
    "dma_buf_release": "R54",
    "vmap access": "R54",
    "dma_buf_mmap": "R12",
    "dma_resv_lock": "R58",
    "dma_resv_unlock": "R58",
}


class KitError(Exception):
    """The kit itself failed (a bug in dmabuf_sim, not in the exporter): please report it."""


T = TypeVar("T")


def _step(fn: Callable[..., T]) -> Callable[..., T]:
    """Make ``fn`` a step: refuse it when the machine already failed, judge it after."""

    @functools.wraps(fn)
    def wrapper(self: DmaBufMachine, *args: Any, **kwargs: Any) -> T:
        if self.failed:
            raise ValueError("this machine already found a violation: make a new one")
        call = format_call(fn.__name__, args, kwargs)
        self.calls.append(call)
        self._current_call = call
        self._private_access = False
        try:
            result = fn(self, *args, **kwargs)
        except _Precondition:
            self.calls.pop()
            raise
        except RuleViolation as exc:  # the world refused to track a buffer
            self.failed = True
            exc.findings[:0] = self.world.check(())
            _note(exc, call)
            raise
        except (KitError, UsageError):
            raise
        except Exception as exc:
            self._fail_with(exc, call)
            raise AssertionError("unreachable") from None
        findings = self.world.check()
        if findings:
            self.failed = True
            err = RuleViolation(findings)
            _note(err, call)
            raise err
        return result

    return wrapper


def _kmapped(vaddr: KernelMapping | None) -> KernelMapping:
    """What a kernel caller of ``dma_buf_kmap`` does with the address: use it."""
    if vaddr is None:
        raise KernelOops("dma_buf_kmap", "ops->kmap returned NULL and the caller dereferenced it")
    return vaddr


def _note(err: BaseException, call: str) -> None:
    note = f"raised by: state.{call}"
    if note not in getattr(err, "__notes__", []):
        err.add_note(note)


class _Precondition(ValueError):
    """A step was asked for in a state where the protocol does not allow it."""


def format_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``name(arg, key=value)`` as a reproducer writes it (references by their names)."""
    parts = [_literal(a) for a in args] + [f"{k}={_literal(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _literal(value: Any) -> str:
    if isinstance(value, (BufRef, MapRef, AttRef, ChildRef, VmapRef)):
        return value.name
    return repr(value)


class DmaBufMachine:
    """A kernel with one exporter under test; see the module docstring for the steps."""

    exporter: ClassVar[ExporterInfo]
    spec: ClassVar[str]
    target: ClassVar[str] = ""
    """How a reproducer names the exporter (``make_machine(target, spec)``)."""

    def __init__(self) -> None:
        self.kernel = Kernel(self.spec)
        self.caps = self.exporter.capabilities_for(self.kernel.spec)
        self.world = World(
            self.kernel, ignores_vm_pgoff=self.caps.ignores_vm_pgoff, stale_reads=False
        )
        self.gpu = Device(self.kernel, "gpu")
        self.dsp = Device(self.kernel, "dsp", coherent=True)
        self.proc = self.kernel.spawn("kit")
        self.bufs: list[BufRef] = []
        self.maps: list[MapRef] = []
        self.atts: list[AttRef] = []
        self.children: list[ChildRef] = []
        self.vmaps: list[VmapRef] = []
        self.calls: list[str] = []
        self.failed = False
        self.torn_down = False
        self._counts: dict[str, int] = {}
        self._card: int | None = None
        self._fences = 0
        self._current_call = ""
        self._private_access = False
        self.baseline_pages = self.kernel.mem.allocated_pages
        if self.exporter.module:
            self._load_module()

    def _load_module(self) -> None:
        """``modprobe`` the exporter's module; one the kernel does not ship (a user's
        exporter) is installed first, its code being the exporter's ops class."""
        name = self.exporter.module
        if self.exporter.module_code and find_module(self.kernel, name) is None:
            register_module_file(
                self.kernel, name, exit=_no_module_exit, code=self.exporter.module_code
            )
        ret = request_module(self.kernel, name)
        if ret:
            raise KitError(
                f"exporter {self.exporter.name} declares module {name!r}, which cannot be"
                f" loaded ({errname(-ret)}): set module to the name the exporter passes as"
                " exp_info.owner, or leave it empty for a built-in exporter"
            )

    # -- naming and small helpers ------------------------------------------------------
    def _name(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0) + 1
        self._counts[prefix] = n
        return f"{prefix}{n}"

    def _find(self, rule: str, message: str) -> None:
        self.world.pending.append(Finding(rule, f"{self._current_call}: {message}"))

    def _require(self, ok: bool, why: str) -> None:
        if not ok:
            raise _Precondition(f"{self._current_call} is not possible now: {why}")

    def live_buffers(self) -> list[BufRef]:
        return [b for b in self.bufs if not b.tracked.dmabuf.released]

    def _fail_with(self, exc: BaseException, call: str) -> None:
        self.failed = True
        finding = self._classify(exc, call)
        findings = [*self.world.check(()), finding]
        err = RuleViolation(findings)
        _note(err, call)
        raise err from exc

    def _classify(self, exc: BaseException, call: str) -> Finding:
        if isinstance(exc, KernelOops):
            rule = exc.rule or _OOPS_RULES.get(exc.func, "SAN-OOPS")
            private = self._private_access or (call.startswith("mmap(") and "private=True" in call)
            if private and rule in ("SAN-OOPS", "R36", "R38", "R39"):
                rule = "R37"  # a private mapping must be refused or work, never oops (R57)
            return Finding(rule, f"{call}: the kernel oopsed: {exc}")
        if isinstance(exc, Signal):
            return Finding("SAN-ACCESS", f"{call}: unexpected {exc}")
        where = _where(exc)
        if where.startswith("dmabuf_sim/conformance/"):
            raise KitError(
                f"internal error in the conformance kit during {call} (please report):\n"
                + "".join(traceback.format_exception(exc))
            ) from exc
        if isinstance(exc, OSError):
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            return Finding("SAN-OOPS", f"{call}: unexpected {name} from {where}")
        what = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (TypeError, ValueError)) and where.startswith("dmabuf_sim/"):
            return Finding(
                "SAN-OOPS",
                f"{call}: the exporter called the kernel wrongly for spec {self.spec}: {what}"
                f" (at {where})",
            )
        return Finding(
            "SAN-OOPS",
            f"{call}: {what} at {where} (in C this is an oops: a NULL dereference or a BUG)",
        )

    # -- the protocol -----------------------------------------------------------------
    def cpu_view_definite(self, buf: BufRef) -> bool:
        """Must a CPU read of ``buf`` return the model's bytes now?"""
        if buf.bracket is not None:
            return buf.bracket.reads
        return self.caps.coherent and not buf.device_mapped()

    def cpu_may_write(self, buf: BufRef) -> bool:
        if buf.bracket is not None:
            return buf.bracket.writes
        return self.caps.coherent and not buf.device_mapped()

    def cpu_may_touch(self, buf: BufRef) -> bool:
        """May the CPU read at all (judged or not)?  Not while a device holds it mapped."""
        return buf.bracket is not None or not buf.device_mapped()

    def _sync_call(self, buf: BufRef, start: bool, direction: str, via: str) -> int:
        spec = self.kernel.spec
        if via == "ioctl":
            flags = (DMA_BUF_SYNC_START if start else DMA_BUF_SYNC_END) | _SYNC_FLAGS[direction]
            assert buf.fd is not None
            try:
                return self.proc.ioctl(buf.fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(flags))
            except OSError as exc:
                return -(exc.errno or errno.EIO)
        dmabuf = buf.tracked.dmabuf
        dirn = _CPU_DIR[direction]
        args: tuple[Any, ...] = (0, buf.size, dirn) if spec.cpu_access_has_range_args else (dirn,)
        with self.kernel.running(self.proc):
            if start:
                return int(dma_buf_begin_cpu_access(dmabuf, *args))
            ret = dma_buf_end_cpu_access(dmabuf, *args)
        return int(ret or 0)

    # -- buffers ------------------------------------------------------------------------
    @_step
    def new_buffer(self, size: int) -> BufRef:
        """Export a buffer of ``size`` bytes (through its uapi) with an O_RDWR fd."""
        self._require(isinstance(size, int) and size > 0, "size must be a positive int")
        self._require(
            size >= self.caps.min_size, f"the exporter's min_size is {self.caps.min_size}"
        )
        self._require(len(self.live_buffers()) < MAX_LIVE_BUFFERS, "three buffers are alive")
        fd = self.exporter.make_fd(self.proc, size, os.O_RDWR | os.O_CLOEXEC)
        dmabuf = self.proc.file(fd).private_data
        if not isinstance(dmabuf, DmaBuf):
            raise TypeError(f"exporter {self.exporter.name} returned an fd that is no dma-buf")
        name = self._name("b")
        tracked = self.world.track(name, dmabuf)
        zero = 1 if self.caps.zero_filled else 0
        buf = BufRef(
            name,
            tracked,
            fd,
            dmabuf.size,
            bytearray(dmabuf.size),
            bytearray([zero]) * dmabuf.size,
            ["the page allocator (a fresh buffer reads zero)"] * tracked.backing,
        )
        self.bufs.append(buf)
        return buf

    @_step
    def close(self, buf: BufRef) -> None:
        """close(2) the buffer's fd; mappings and attachments keep it alive (R16, R17)."""
        self._require(buf.fd is not None, f"{buf} has no open fd")
        self._require(buf.bracket is None or buf.bracket.via != "ioctl", "a SYNC is open on it")
        assert buf.fd is not None
        try:
            self.proc.close(buf.fd)
        except OSError as exc:
            self._find("R16", f"close failed with {errname(exc.errno or 0)}")
            return
        buf.fd = None

    # -- mappings -----------------------------------------------------------------------
    @_step
    def mmap(
        self,
        buf: BufRef,
        offset: int,
        pages: int,
        *,
        writable: bool = True,
        private: bool = False,
    ) -> MapRef | None:
        """mmap(2) ``pages`` pages of ``buf`` from page ``offset``.

        Inside the buffer a shared mapping must work (R1, R60); past its end it
        must fail EINVAL (R1) unless the kernel merged it into a neighbour
        without asking the exporter (R35).  A private mapping must fail EINVAL
        or work privately, never oops (R37, R57).
        """
        self._require(buf.fd is not None, f"{buf} has no open fd")
        self._require(offset >= 0 and pages >= 1, "offset >= 0 and pages >= 1")
        prot = _mmap.PROT_READ | (_mmap.PROT_WRITE if writable else 0)
        flags = _mmap.MAP_PRIVATE if private else _mmap.MAP_SHARED
        return self._do_mmap(buf, 0, offset, pages, prot, flags)

    def _do_mmap(
        self, buf: BufRef, hint: int, offset: int, pages: int, prot: int, flags: int
    ) -> MapRef | None:
        assert buf.fd is not None
        inside = offset + pages <= buf.mappable
        private = bool(flags & _mmap.MAP_PRIVATE)
        before = {v: (v.vm_start, v.vm_end) for v in self.proc.mm.vmas}
        try:
            addr = self.proc.mmap(hint, pages * PAGE, prot, flags, buf.fd, offset * PAGE)
        except OSError as exc:
            err = exc.errno or 0
            if private and err == errno.EINVAL and not self.caps.private_mapping:
                return None  # the exporter refuses MAP_PRIVATE (R57)
            if inside:
                kind = "a private" if private else "a shared"
                self._find(
                    "R1",
                    f"{kind} mmap of pages {offset}..{offset + pages - 1} of a"
                    f" {buf.mappable}-page buffer, inside it, failed with {errname(err)}"
                    " (the core alone bounds a mapping: SEED-BOUNDS, R60)",
                )
            elif err != errno.EINVAL:
                self._find("R1", f"mmap past the end failed with {errname(err)}, not EINVAL")
            return None
        vma = self.proc.mm.vma_lookup(addr)
        assert vma is not None
        merged = vma in before or vma.vm_start != addr or vma.vm_end != addr + pages * PAGE
        if not inside and not merged:
            self._find(
                "R1",
                f"mmap of pages {offset}..{offset + pages - 1} of a {buf.mappable}-page buffer"
                " succeeded past the end",
            )
            return None
        first = 0 if self.caps.ignores_vm_pgoff else offset
        self.world.add_mapping(self.proc, addr, pages * PAGE, buf.tracked, first)
        m = MapRef(
            self._name("m"),
            buf,
            self.proc,
            addr,
            pages,
            first,
            writable=bool(prot & _mmap.PROT_WRITE),
            private=private,
            holders=[self.proc],
        )
        self.maps.append(m)
        return m

    @_step
    def mmap_after(self, m: MapRef, pages: int) -> MapRef | None:
        """MAP_FIXED right after ``m``, the pages that follow it in the buffer (R35)."""
        self._live_for_owner(m)
        self._require(m.buf.fd is not None, f"{m.buf} has no open fd")
        self._require(not m.private and not m.imported, "only plain shared mappings")
        at = m.addr + m.pages * PAGE
        self._require(
            not self.proc.mm.vmas_in(at, at + pages * PAGE), "the range after it is in use"
        )
        prot = _mmap.PROT_READ | (_mmap.PROT_WRITE if m.writable else 0)
        flags = _mmap.MAP_SHARED | MAP_FIXED
        return self._do_mmap(m.buf, at, m.first_page + m.pages, pages, prot, flags)

    def _live_for_owner(self, m: MapRef) -> None:
        self._require(m.owner in m.holders and m.owner.alive, f"{m} is no longer mapped")

    def _retire(self, m: MapRef, proc: Process) -> None:
        if proc in m.holders:
            m.holders.remove(proc)
        if not m.holders and m in self.maps:
            self.maps.remove(m)

    @_step
    def munmap(self, m: MapRef) -> None:
        """munmap(2) the whole range in its owner (children keep their copies)."""
        self._live_for_owner(m)
        if self._munmap(m.owner, m.addr, m.pages * PAGE):
            self._retire(m, m.owner)

    def _munmap(self, proc: Process, addr: int, length: int) -> bool:
        try:
            proc.munmap(addr, length)
        except OSError as exc:
            vma = proc.mm.vma_lookup(addr)
            if (
                exc.errno == errno.EINVAL
                and vma is not None
                and vma.vm_ops is not None
                and vma.vm_ops.may_split is not None
            ):
                return False  # the exporter's ->may_split vetoed the split
            self._find("R19", f"munmap failed with {errname(exc.errno or 0)}")
            return False
        return True

    @_step
    def munmap_page(self, m: MapRef, page: int) -> tuple[MapRef | None, MapRef | None]:
        """Unmap one page of ``m``: the vma splits (R19); returns the pieces below and above."""
        self._live_for_owner(m)
        self._require(m.pages >= 2 and 0 <= page < m.pages, "a page inside a 2+ page mapping")
        if not self._munmap(m.owner, m.addr + page * PAGE, PAGE):
            return None, None
        self._retire(m, m.owner)
        low = high = None
        if page > 0:
            low = self._piece(m, 0, page)
        if page < m.pages - 1:
            high = self._piece(m, page + 1, m.pages - page - 1)
            # drm_gem_shmem-like exporters index from vm_start: after a split the pages
            # the high piece kept and the ones it faults in disagree (judge nothing).
            high.judge = m.judge and not self.caps.ignores_vm_pgoff
        return low, high

    def _piece(self, m: MapRef, start: int, pages: int) -> MapRef:
        piece = MapRef(
            self._name("m"),
            m.buf,
            m.owner,
            m.addr + start * PAGE,
            pages,
            m.first_page + start,
            writable=m.writable,
            private=m.private,
            imported=m.imported,
            judge=m.judge,
            holders=[m.owner],
            cow={k - start: v for k, v in m.cow.items() if start <= k < start + pages},
        )
        self.maps.append(piece)
        return piece

    @_step
    def mremap_grow(self, m: MapRef) -> MapRef | None:
        """mremap(2) ``m`` one page larger (MREMAP_MAYMOVE): EFAULT or growth (R33, R34)."""
        self._live_for_owner(m)
        try:
            new = m.owner.mremap(m.addr, m.pages * PAGE, (m.pages + 1) * PAGE, 1)
        except OSError as exc:
            err = exc.errno or 0
            if err != errno.EFAULT:
                self._find("R33", f"growing the mapping failed with {errname(err)}, not EFAULT")
            elif self.caps.growable:
                self._find("R33", "the exporter declares growable mappings, but mremap gave EFAULT")
            return None
        self._retire(m, m.owner)
        grown = MapRef(
            self._name("m"),
            m.buf,
            m.owner,
            new,
            m.pages + 1,
            m.first_page,
            writable=m.writable,
            private=m.private,
            imported=m.imported,
            judge=m.judge,
            holders=[m.owner],
            cow=dict(m.cow),
        )
        self.maps.append(grown)
        return grown

    @_step
    def touch_past_end(self, m: MapRef) -> None:
        """Read the first page of ``m`` past the buffer's memory: it must be refused (R34)."""
        self._live_for_owner(m)
        page = m.buf.backing - m.first_page
        self._require(
            0 <= page < m.pages and not m.private, "a shared mapping reaching past the end"
        )
        addr = m.addr + page * PAGE
        try:
            m.owner.read_memory(addr, 1)
        except Signal:
            return  # refused: SIGBUS from the fault handler (or SIGSEGV)
        self._find(
            "R34",
            f"a read {page} page(s) into {m}, past the {m.buf.backing}-page buffer, returned"
            " data: the fault handler must bounds-check and return VM_FAULT_SIGBUS",
        )

    @_step
    def mprotect(self, m: MapRef, writable: bool) -> None:
        """mprotect(2) the whole range read-only, or back to read-write (R7, R19)."""
        self._live_for_owner(m)
        prot = _mmap.PROT_READ | (_mmap.PROT_WRITE if writable else 0)
        try:
            m.owner.mprotect(m.addr, m.pages * PAGE, prot)
        except OSError as exc:
            self._find("R7", f"mprotect failed with {errname(exc.errno or 0)}")
            return
        m.writable = writable
        m.holders[:] = [m.owner]  # children keep their copies with the old protection

    # -- processes ------------------------------------------------------------------------
    @_step
    def fork(self) -> ChildRef:
        """fork(2): the child inherits every vma but VM_DONTCOPY ones (R18, R40)."""
        self._require(len(self.children) < MAX_CHILDREN, "two children are alive")
        child = self.proc.fork()
        for m in self.maps:
            if self.proc not in m.holders:
                continue
            vma = child.mm.vma_lookup(m.addr)
            if vma is not None and self.world.page_of(child, m.addr) == self.world.page_of(
                self.proc, m.addr
            ):
                m.holders.append(child)
        ref = ChildRef(self._name("c"), child)
        self.children.append(ref)
        return ref

    @_step
    def exit(self, child: ChildRef) -> None:
        """The child exits: its fds close and its mappings go (R17, R18)."""
        self._require(child in self.children, f"{child} is not alive")
        child.proc.exit()
        self.children.remove(child)
        for m in list(self.maps):
            self._retire(m, child.proc)

    # -- CPU access ---------------------------------------------------------------------------
    @_step
    def sync_start(self, buf: BufRef, direction: str, via: str = "ioctl") -> None:
        """Begin CPU access: DMA_BUF_IOCTL_SYNC START, or dma_buf_begin_cpu_access (R44, R46)."""
        self._require(direction in _SYNC_FLAGS, "direction is 'read', 'write' or 'rw'")
        self._require(via in ("ioctl", "kernel"), "via is 'ioctl' or 'kernel'")
        self._require(buf.bracket is None, f"a CPU access to {buf} is already open")
        self._require(buf.fd is not None, f"{buf} has no open fd")
        self._require(
            via == "kernel" or self.kernel.spec.has_sync_ioctl,
            f"spec {self.kernel.spec.name} has no DMA_BUF_IOCTL_SYNC",
        )
        self.world.acting_on = buf.tracked
        try:
            ret = self._sync_call(buf, True, direction, via)
        finally:
            self.world.acting_on = None
        if ret < 0:
            self._find("R44", f"beginning CPU access failed with {errname(ret)}")
            return
        buf.bracket = Bracket(direction, via)

    @_step
    def sync_end(self, buf: BufRef) -> None:
        """End CPU access (the buffer may leave the CPU domain: a shoot-down, a clean)."""
        self._require(buf.bracket is not None, f"no CPU access to {buf} is open")
        assert buf.bracket is not None
        bracket = buf.bracket
        self._require(bracket.via == "kernel" or buf.fd is not None, f"{buf} has no open fd")
        self.world.acting_on = buf.tracked
        try:
            ret = self._sync_call(buf, False, bracket.direction, bracket.via)
        finally:
            self.world.acting_on = None
        buf.bracket = None
        if ret < 0:
            self._find("R44", f"ending CPU access failed with {errname(ret)}")

    def _holder(self, m: MapRef, proc: ChildRef | None) -> Process:
        p = m.owner if proc is None else proc.proc
        self._require(p in m.holders and p.alive, f"{m} is not mapped in that process")
        return p

    @_step
    def cpu_write(self, m: MapRef, offset: int, data: bytes, proc: ChildRef | None = None) -> None:
        """Store ``data`` through ``m`` at ``offset`` (inside the buffer)."""
        p = self._holder(m, proc)
        self._require(m.writable, f"{m} is read-only")
        self._require(bool(data) and offset >= 0 and offset + len(data) <= m.usable, "in bounds")
        self._require(not m.private or p is m.owner, "private mappings are the owner's")
        buf = m.buf
        if m.private:
            self._require(self.cpu_may_touch(buf), "a device holds the buffer mapped")
        else:
            self._require(self.cpu_may_write(buf), "the protocol does not let the CPU write now")
        if self._access(p, m, offset, len(data), data) is None:
            return
        if m.private:
            self._cow_write(m, offset, data)
            return
        if m.judge:
            whole = buf.bracket is None or buf.bracket.direction == "rw"
            pos = m.first_page * PAGE + offset
            buf.store(pos, data, f"the CPU (pid {p.pid}, {self._current_call})", whole_lines=whole)
        else:
            self._forget(buf)

    def _forget(self, buf: BufRef) -> None:
        buf.known[:] = bytes(buf.size)  # an unjudgeable write: nothing is known any more

    def _cow_write(self, m: MapRef, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, off = divmod(offset + pos, PAGE)
            chunk = min(len(data) - pos, PAGE - off)
            if page not in m.cow:
                src = (m.first_page + page) * PAGE
                definite = self.cpu_view_definite(m.buf)
                known = m.buf.known[src : src + PAGE] if definite else bytearray(PAGE)
                m.cow[page] = (bytearray(m.buf.model[src : src + PAGE]), bytearray(known))
            content, known_mask = m.cow[page]
            content[off : off + chunk] = data[pos : pos + chunk]
            known_mask[off : off + chunk] = b"\x01" * chunk
            pos += chunk

    @_step
    def cpu_read(self, m: MapRef, offset: int, n: int, proc: ChildRef | None = None) -> None:
        """Load ``n`` bytes through ``m``: judged when the protocol makes the view definite."""
        p = self._holder(m, proc)
        self._require(n >= 1 and offset >= 0 and offset + n <= m.usable, "in bounds")
        self._require(not m.private or p is m.owner, "private mappings are the owner's")
        buf = m.buf
        self._require(self.cpu_may_touch(buf), "a device holds the buffer mapped")
        definite = self.cpu_view_definite(buf) and m.judge
        got = self._access(p, m, offset, n, None)
        if got is None:
            return
        if m.private:
            self._judge_private(m, offset, got, definite)
        elif definite:
            self._judge(buf, m.first_page * PAGE + offset, got, f"the CPU (pid {p.pid})")

    def _judge_private(self, m: MapRef, offset: int, got: bytes, definite: bool) -> None:
        self._drop_discarded_copies(m, offset, len(got))
        for i, byte in enumerate(got):
            page, off = divmod(offset + i, PAGE)
            if page in m.cow:
                content, known = m.cow[page]
                if known[off] and content[off] != byte:
                    self._find(
                        "SAN-STALE-READ",
                        f"a private mapping read byte {offset + i} as {byte:#04x}, but its own"
                        f" copy holds {content[off]:#04x} (writes to a MAP_PRIVATE mapping stay"
                        " private)",
                    )
                    return
            elif definite:
                pos = (m.first_page + page) * PAGE + off
                if m.buf.known[pos] and m.buf.model[pos] != byte:
                    self._judge(m.buf, pos, bytes([byte]), f"the CPU (private {m})")
                    return

    def _drop_discarded_copies(self, m: MapRef, offset: int, n: int) -> None:
        """Forget the private copies a shoot-down discarded (``even_cows``, as DRM's
        ``drm_vma_node_unmap`` and omapdrm do): the page reads the buffer again."""
        mem = self.kernel.mem
        table = m.owner.mm.pgtable
        for page in range(offset // PAGE, (offset + n - 1) // PAGE + 1):
            if page not in m.cow:
                continue
            pte = table.get((m.addr >> PAGE_SHIFT) + page)
            frame = mem.page_if_exists(pte >> PAGE_SHIFT) if pte is not None else None
            if frame is None or not frame.anon:
                del m.cow[page]

    def _access(
        self, p: Process, m: MapRef, offset: int, n: int, data: bytes | None
    ) -> bytes | None:
        """One user access; a signal inside the buffer is a finding (returns None then)."""
        addr = m.addr + offset
        self._private_access = m.private
        try:
            if data is None:
                return p.read_memory(addr, n)
            p.write_memory(addr, data)
            return b""
        except Signal as sig:
            self._find(*self._signal_finding(p, sig, m))
            return None

    def _signal_finding(self, p: Process, sig: Signal, m: MapRef) -> tuple[str, str]:
        vma = p.mm.vma_lookup(sig.addr)
        page = (sig.addr - m.addr) >> PAGE_SHIFT
        where = f"page {page} of {m} (buffer page {m.first_page + page}, inside the buffer)"
        if sig.signo == signal.SIGBUS:
            if vma is not None and vma.vm_ops is not None and vma.vm_ops.fault is not None:
                return "R34", f"{sig} on {where}: the fault handler refused a page of the buffer"
            return (
                "R30",
                f"{sig} on {where}: the exporter's mmap left the page without a PTE and"
                " installed no fault handler (R36)",
            )
        reason = "no vma there" if vma is None else f"the vma forbids it ({vma.vm_flags:#x})"
        return "SAN-ACCESS", f"{sig} on {where}: {reason}"

    def _judge(self, buf: BufRef, pos: int, got: bytes, who: str) -> None:
        i = buf.first_mismatch(pos, got)
        if i is None:
            return
        at = pos + i
        saw = got[i : i + 8]
        want = bytes(buf.model[at : at + len(saw)])
        self._find(
            "SAN-STALE-READ",
            f"{who} read buffer {buf} at byte {at} as {saw.hex()}, but"
            f" {buf.writer[at // PAGE]} put {want.hex()} there",
        )

    # -- kernel CPU access (vmap; kmap on the 3.x specs) --------------------------------------
    @_step
    def vmap(self, buf: BufRef) -> VmapRef | None:
        """dma_buf_vmap with a dma_buf_get reference held; None where the exporter has none."""
        self._require(buf.fd is not None, f"{buf} has no open fd")
        spec = self.kernel.spec
        self._require(spec.has_vmap and spec.vmap_returns_errno, "the iosys_map vmap (5.11+)")
        dmabuf = self._get(buf)
        ioismap = IosysMap()
        with self.kernel.running(self.proc):
            ret = dma_buf_vmap_unlocked(dmabuf, ioismap)
        if ret:
            self._put(buf)
            if ret != -errno.EINVAL or getattr(dmabuf.ops, "vmap", None) is not None:
                self._find("R54", f"dma_buf_vmap failed with {errname(ret)}")
            return None
        vaddr = ioismap.vaddr
        if not isinstance(vaddr, KernelMapping) or vaddr.size < buf.size:
            self._find("R54", f"vmap returned {vaddr!r}, not a mapping of the whole buffer")
            return None
        ref = VmapRef(self._name("v"), buf, ioismap, vaddr)
        buf.vmaps.append(ref)
        self.vmaps.append(ref)
        return ref

    @_step
    def vunmap(self, v: VmapRef) -> None:
        self._require(v in self.vmaps, f"{v} is not mapped")
        self._vunmap(v)

    def _vunmap(self, v: VmapRef) -> None:
        with self.kernel.running(self.proc):
            dma_buf_vunmap_unlocked(v.buf.tracked.dmabuf, v.map)
        self.vmaps.remove(v)
        v.buf.vmaps.remove(v)
        self._put(v.buf)

    def _get(self, buf: BufRef) -> DmaBuf:
        assert buf.fd is not None
        with self.kernel.running(self.proc):
            dmabuf = dma_buf_get(self.kernel, buf.fd)
        buf.tracked.kernel_refs += 1
        return dmabuf

    def _put(self, buf: BufRef) -> None:
        buf.tracked.kernel_refs -= 1
        with self.kernel.running(self.proc):
            dma_buf_put(buf.tracked.dmabuf)

    def _kernel_bracket(self, buf: BufRef, write: bool) -> None:
        self._require(buf.bracket is not None, "kernel access needs begin_cpu_access first")
        assert buf.bracket is not None
        self._require(not write or buf.bracket.writes, "the open access does not write")

    @_step
    def kernel_write(self, v: VmapRef, offset: int, data: bytes) -> None:
        """The kernel writes through a vmap (inside begin/end_cpu_access)."""
        self._require(v in self.vmaps, f"{v} is not mapped")
        self._require(bool(data) and offset >= 0 and offset + len(data) <= v.buf.size, "in bounds")
        self._kernel_bracket(v.buf, True)
        v.vaddr.write(offset, data)
        whole = v.buf.bracket is not None and v.buf.bracket.direction == "rw"
        v.buf.store(offset, data, f"the kernel ({self._current_call})", whole_lines=whole)

    @_step
    def kernel_read(self, v: VmapRef, offset: int, n: int) -> None:
        """The kernel reads through a vmap: judged like a CPU read."""
        self._require(v in self.vmaps, f"{v} is not mapped")
        self._require(n >= 1 and offset >= 0 and offset + n <= v.buf.size, "in bounds")
        self._kernel_bracket(v.buf, False)
        got = v.vaddr.read(offset, n)
        if self.cpu_view_definite(v.buf):
            self._judge(v.buf, offset, got, "the kernel (vmap)")

    @_step
    def kmap_write(self, buf: BufRef, offset: int, data: bytes) -> None:
        """The kernel writes through dma_buf_kmap page by page (3.x, inside begin/end)."""
        self._require(self.kernel.spec.has_kmap, f"spec {self.kernel.spec.name} has no kmap")
        self._require(bool(data) and offset >= 0 and offset + len(data) <= buf.size, "in bounds")
        self._kernel_bracket(buf, True)
        dmabuf = buf.tracked.dmabuf
        for page, off, pos, chunk in page_pieces(offset, len(data)):
            vaddr = _kmapped(dma_buf_kmap(dmabuf, page))
            vaddr.write(off, data[pos : pos + chunk])
            dma_buf_kunmap(dmabuf, page, vaddr)
        whole = buf.bracket is not None and buf.bracket.direction == "rw"
        buf.store(offset, data, f"the kernel ({self._current_call})", whole_lines=whole)

    @_step
    def kmap_read(self, buf: BufRef, offset: int, n: int) -> None:
        """The kernel reads through dma_buf_kmap page by page: judged like a CPU read."""
        self._require(self.kernel.spec.has_kmap, f"spec {self.kernel.spec.name} has no kmap")
        self._require(n >= 1 and offset >= 0 and offset + n <= buf.size, "in bounds")
        self._kernel_bracket(buf, False)
        dmabuf = buf.tracked.dmabuf
        got = b""
        for page, off, _pos, chunk in page_pieces(offset, n):
            vaddr = _kmapped(dma_buf_kmap(dmabuf, page))
            got += vaddr.read(off, chunk)
            dma_buf_kunmap(dmabuf, page, vaddr)
        if self.cpu_view_definite(buf):
            self._judge(buf, offset, got, "the kernel (kmap)")

    # -- devices ------------------------------------------------------------------------------
    @_step
    def attach(self, buf: BufRef, dev: str = "gpu") -> AttRef | None:
        """A driver takes a reference (dma_buf_get) and attaches its device ("gpu" or "dsp")."""
        self._require(dev in ("gpu", "dsp"), "dev is 'gpu' (non-coherent) or 'dsp' (coherent)")
        self._require(buf.fd is not None, f"{buf} has no open fd")
        device = self.gpu if dev == "gpu" else self.dsp
        dmabuf = self._get(buf)
        try:
            attach = dma_buf_attach(dmabuf, device)
        except KernelError:
            self._put(buf)
            return None  # an exporter may refuse a device (-EBUSY: incompatible storage)
        ref = AttRef(self._name("a"), buf, device, attach)
        buf.atts.append(ref)
        self.atts.append(ref)
        return ref

    @_step
    def map_attachment(self, a: AttRef, direction: str) -> None:
        """dma_buf_map_attachment: the device takes the buffer (it leaves the CPU domain)."""
        self._require(direction in _DEV_DIR, f"direction is one of {', '.join(_DEV_DIR)}")
        self._require(a in self.atts and a.sgt is None, f"{a} is not attached, or mapped already")
        self._require(a.buf.bracket is None, "a CPU access is open on the buffer")
        dirn = _DEV_DIR[direction]
        self.world.acting_on = a.buf.tracked
        try:
            sgt = dma_buf_map_attachment_unlocked(a.attach, dirn)
        except KernelError as exc:
            # -EBUSY: the core cached a table mapped for another direction
            # (cache_sgt_mapping, ~4.19-6.15); anything else is the exporter's
            if exc.err != errno.EBUSY:
                self._find("SAN-SGT", f"map_dma_buf failed: {exc}")
            return
        finally:
            self.world.acting_on = None
        if not self._sgt_ok(a.buf, sgt, a.dev.name):
            return
        a.sgt, a.direction = sgt, dirn

    def _sgt_ok(self, buf: BufRef, sgt: SgTable, dev: str) -> bool:
        """The table covers the buffer, and its pages agree with what was seen of them."""
        if sgt.npages() << PAGE_SHIFT < buf.size:
            self._find(
                "SAN-SGT",
                f"map_dma_buf handed {dev} {sgt.npages()} page(s) for a {buf.size}-byte buffer",
            )
            return False
        found = self.world.observe_sgt(buf.tracked, sgt.pfns(), f"the sg table of {dev}")
        self.world.pending.extend(found)
        return not found

    @_step
    def unmap_attachment(self, a: AttRef) -> None:
        """dma_buf_unmap_attachment: the device is done (the buffer may come back to the CPU)."""
        self._require(a in self.atts and a.sgt is not None, f"{a} is not mapped")
        self._require(a.buf.bracket is None, "a CPU access is open on the buffer")
        assert a.sgt is not None and a.direction is not None
        self.world.acting_on = a.buf.tracked
        try:
            dma_buf_unmap_attachment_unlocked(a.attach, a.sgt, a.direction)
        finally:
            self.world.acting_on = None
        a.sgt = a.direction = None

    @_step
    def detach(self, a: AttRef) -> None:
        self._require(a in self.atts and a.sgt is None, f"{a} is not attached, or still mapped")
        self._detach(a)

    def _detach(self, a: AttRef) -> None:
        dma_buf_detach(a.buf.tracked.dmabuf, a.attach)
        self.atts.remove(a)
        a.buf.atts.remove(a)
        self._put(a.buf)

    def _dma_ok(self, a: AttRef, write: bool) -> None:
        self._require(a in self.atts and a.sgt is not None, f"{a} is not mapped")
        self._require(a.buf.bracket is None, "a CPU access is open on the buffer")
        ok = (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL) if write else (DMA_TO_DEVICE, DMA_BIDIRECTIONAL)
        self._require(a.direction in ok, f"{a} is not mapped for that direction")

    @_step
    def dma_write(self, a: AttRef, offset: int, data: bytes) -> None:
        """The device writes ``data`` at ``offset`` through its mapping."""
        self._dma_ok(a, True)
        self._require(bool(data) and offset >= 0 and offset + len(data) <= a.buf.size, "in bounds")
        assert a.sgt is not None
        a.dev.dma_write(a.sgt, offset, data)
        a.buf.store(
            offset, data, f"the device {a.dev.name} ({self._current_call})", whole_lines=True
        )

    @_step
    def dma_read(self, a: AttRef, offset: int, n: int) -> None:
        """The device reads ``n`` bytes at ``offset``: it must see the last write (R44)."""
        self._dma_ok(a, False)
        self._require(n >= 1 and offset >= 0 and offset + n <= a.buf.size, "in bounds")
        assert a.sgt is not None
        got = a.dev.dma_read(a.sgt, offset, n)
        self._judge(a.buf, offset, got, f"the device {a.dev.name}")

    @_step
    def dma_job(
        self,
        buf: BufRef,
        op: str,
        offset: int,
        data: bytes = b"",
        n: int = 0,
        dev: str = "gpu",
    ) -> None:
        """One importer job: attach, map for the job's direction, DMA, unmap, detach."""
        self._require(op in ("read", "write"), "op is 'read' or 'write'")
        self._require(dev in ("gpu", "dsp"), "dev is 'gpu' or 'dsp'")
        self._require(buf.fd is not None, f"{buf} has no open fd")
        self._require(buf.bracket is None, "a CPU access is open on the buffer")
        length = len(data) if op == "write" else n
        self._require(length >= 1 and offset >= 0 and offset + length <= buf.size, "in bounds")
        device = self.gpu if dev == "gpu" else self.dsp
        dirn = DMA_FROM_DEVICE if op == "write" else DMA_TO_DEVICE
        dmabuf = self._get(buf)
        self.world.acting_on = buf.tracked
        try:
            try:
                attach = dma_buf_attach(dmabuf, device)
            except KernelError:
                return  # the exporter refuses this device
            try:
                sgt = dma_buf_map_attachment_unlocked(attach, dirn)
            except KernelError as exc:
                self._find("SAN-SGT", f"map_dma_buf failed: {exc}")
                dma_buf_detach(dmabuf, attach)
                return
            if not self._sgt_ok(buf, sgt, device.name):
                pass
            elif op == "write":
                device.dma_write(sgt, offset, data)
                buf.store(
                    offset, data, f"the device {dev} ({self._current_call})", whole_lines=True
                )
            else:
                got = device.dma_read(sgt, offset, n)
                self._judge(buf, offset, got, f"the device {dev}")
            dma_buf_unmap_attachment_unlocked(attach, sgt, dirn)
            dma_buf_detach(dmabuf, attach)
        finally:
            self.world.acting_on = None
            self._put(buf)

    # -- device work pending ---------------------------------------------------------------------
    @_step
    def add_fence(self, buf: BufRef) -> None:
        """The device has a write pending on ``buf`` (an unsignalled fence in its dma_resv)."""
        self._require(buf.fd is not None, f"{buf} has no open fd")
        resv = buf.tracked.dmabuf.resv
        self._require(resv is not None, "implicit fences need a dma_resv (3.17+)")
        assert resv is not None
        self._fences += 1
        fence = DmaFence(
            self.kernel, "kit-gpu", self._fences, completes_at=self.kernel.clock + 1_000_000_000
        )
        resv.add_fence(fence, DmaResvUsage.WRITE)

    @_step
    def finish_device_work(self) -> None:
        """Let every pending device job complete (the virtual clock runs on)."""
        self.kernel.run_until_idle()

    # -- importer forwarding ----------------------------------------------------------------------
    @_step
    def import_mmap(self, buf: BufRef, pages: int) -> MapRef | None:
        """Import ``buf`` into vgem and mmap the GEM object through the DRM fd (R22, SEED)."""
        spec = self.kernel.spec
        self._require("vgem" in self.kernel.drivers, f"spec {spec.name} has no vgem importer")
        self._require(
            spec.drm_shmem_resv_locking,
            "the 6.1 GEM shmem importer oopses at munmap of forwarded imports",
        )
        self._require(buf.fd is not None, f"{buf} has no open fd")
        self._require(1 <= pages <= buf.mappable, "1 <= pages <= the buffer's pages")
        assert buf.fd is not None
        try:
            if self._card is None:
                self._card = self.proc.open("/dev/dri/card0", os.O_RDWR | os.O_CLOEXEC)
            prime = DrmPrimeHandle(fd=buf.fd)
            self.proc.ioctl(self._card, DRM_IOCTL_PRIME_FD_TO_HANDLE, prime)
            buf.handle = prime.handle
            # vgem has no ioctl returning an import's fake offset (drivers like panfrost
            # return it from MMAP_BO), so the kit reads it, as the scenarios do.
            obj = self.proc.file(self._card).private_data.object_idr[prime.handle]
            offset = drm_vma_node_offset_addr(obj.vma_node)
            rw = _mmap.PROT_READ | _mmap.PROT_WRITE
            addr = self.proc.mmap(0, pages * PAGE, rw, _mmap.MAP_SHARED, self._card, offset)
        except OSError as exc:
            self._find(
                "SEED-IMPORTER-MMAP",
                f"forwarding the mmap of an import through vgem failed with"
                f" {errname(exc.errno or 0)} (R22)",
            )
            return None
        self.world.add_mapping(self.proc, addr, pages * PAGE, buf.tracked, 0)
        m = MapRef(
            self._name("m"), buf, self.proc, addr, pages, 0, imported=True, holders=[self.proc]
        )
        self.maps.append(m)
        return m

    # -- the end ---------------------------------------------------------------------------
    @_step
    def rmmod(self) -> None:
        """``rmmod`` the exporter's module (``delete_module`` with ``O_NONBLOCK``).

        Every buffer keeps its exporter's module loaded: ``dma_buf_export`` takes a
        reference on ``exp_info->owner`` and ``dma_buf_release`` puts it, so the unload
        fails ``EWOULDBLOCK`` while any buffer lives (an fd, a mapping, an attachment, a
        kernel reference) and works once none does; vgem's open DRM fd holds it too.  An
        unload that works is followed by ``modprobe``, as a developer reloading it would.
        """
        name = self.exporter.module
        self._require(bool(name), f"exporter {self.exporter.name} is built in (no module)")
        live = [b.name for b in self.live_buffers()]
        held = live + self._module_files(name)
        try:
            self.proc.delete_module(name, os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.EWOULDBLOCK or not held:
                self._find(
                    "SAN-MODULE",
                    f"rmmod {name} failed with {errname(exc.errno or 0)} while nothing of the"
                    " exporter is alive: a module reference leaked (try_module_get without"
                    " module_put)",
                )
            return
        if live:
            self._find(
                "SAN-MODULE",
                f"rmmod {name} unloaded the module while {', '.join(live)} still use its code:"
                " the export must pass exp_info.owner = THIS_MODULE",
            )
        self._load_module()

    def _module_files(self, name: str) -> list[str]:
        """Open files of the kit's processes whose ``f_op`` the module provides."""
        mod = find_module(self.kernel, name)
        procs = [self.proc, *(c.proc for c in self.children)]
        return [
            f"fd {fd} of {p.comm}"
            for p in procs
            if p.alive
            for fd, file in p.files.fds.items()
            if mod is not None and file.f_op.module is mod
        ]

    @_step
    def teardown(self) -> None:
        """Close everything; every buffer is released once, every page given back (R17)."""
        self._require(not self.torn_down, "already torn down")
        self.torn_down = True
        for buf in self.bufs:
            if buf.bracket is not None and not buf.tracked.dmabuf.released:
                if buf.bracket.via == "kernel" or buf.fd is not None:
                    self._sync_call(buf, False, buf.bracket.direction, buf.bracket.via)
                buf.bracket = None
        for v in list(self.vmaps):
            self._vunmap(v)
        for a in list(self.atts):
            if a.sgt is not None and a.direction is not None:
                dma_buf_unmap_attachment_unlocked(a.attach, a.sgt, a.direction)
                a.sgt = a.direction = None
            self._detach(a)
        for child in list(self.children):
            child.proc.exit()
        self.children.clear()
        if self.proc.alive:
            self.proc.exit()
        self.maps.clear()
        self.kernel.run_until_idle()
        findings = self.world.check() + check_released(self.world)
        mod = find_module(self.kernel, self.exporter.module) if self.exporter.module else None
        if mod is not None and mod.refcnt:
            findings.append(
                Finding(
                    "SAN-MODULE",
                    f"module {mod.name} still has {mod.refcnt} reference(s) after every buffer"
                    " was released and every process exited: it can never be unloaded",
                )
            )
        leaked = self.kernel.mem.allocated_pages - self.baseline_pages
        if leaked > 0 and not any(f.rule in ("SAN-LEAK", "SAN-REFCOUNT") for f in findings):
            findings.append(
                Finding(
                    "SAN-LEAK",
                    f"{leaked} page(s) are still allocated after every buffer was released"
                    " and every process exited",
                )
            )
        if findings:
            self.world.pending.extend(findings)


def _no_module_exit(mod: Module) -> None:
    """A user exporter's ``module_exit``: nothing of its own to undo."""


def _where(exc: BaseException) -> str:
    """``path:line in function`` of the innermost frame (package-relative for dmabuf_sim)."""
    tb = exc.__traceback__
    frame = None
    while tb is not None:
        frame = tb
        tb = tb.tb_next
    if frame is None:
        return "?"
    code = frame.tb_frame.f_code
    path = code.co_filename.replace(os.sep, "/")
    marker = "/dmabuf_sim/"
    if marker in path:
        path = "dmabuf_sim/" + path.rsplit(marker, 1)[1]
    return f"{path}:{frame.tb_lineno} in {code.co_name}"


def _camel(name: str) -> str:
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    return "".join(p if p[0].isupper() else p.capitalize() for p in parts)


def machine_class_name(exporter: ExporterInfo, spec: str) -> str:
    label = exporter.name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]  # MODULE:ATTR -> ATTR
    return f"DmaBufMachine_{_camel(label)}_{re.sub(r'[^A-Za-z0-9]', '_', spec)}"


def make_machine(exporter: Any, spec: str, *, target: str = "") -> type[DmaBufMachine]:
    """A machine class bound to ``exporter`` and ``spec``, named after them.

    ``exporter`` is anything :func:`~dmabuf_sim.conformance.kit.resolve_exporter`
    takes: a registered name, ``"module:attr"`` or ``"path/file.py:attr"``, an
    exporter class, object or factory, or an ``ExporterInfo``.
    """
    from .kit import reproducer_target, resolve_exporter  # noqa: PLC0415  # cycle: kit.py drives this machine

    spec_name = get_spec(spec).name
    info = exporter if isinstance(exporter, ExporterInfo) else resolve_exporter(exporter)
    if not target:
        target = reproducer_target(exporter, info)
    attrs = {"exporter": info, "spec": spec_name, "target": target}
    return type(machine_class_name(info, spec_name), (DmaBufMachine,), attrs)


def run_operations(exporter: ExporterInfo, spec: str, ops: Any) -> None:
    """Replay a list of :class:`~.strategies.Operation` on a fresh machine, then tear down.

    Objects are referred to by index into those made so far; an operation whose
    objects do not exist, or that the protocol does not allow at that point, is
    left out.  Raises :class:`RuleViolation` at the first step that breaks a rule.
    """
    state = make_machine(exporter, spec)()
    made: dict[type, list[Any]] = {BufRef: [], MapRef: [], AttRef: [], ChildRef: [], VmapRef: []}
    kinds = {"buf": BufRef, "m": MapRef, "a": AttRef, "child": ChildRef, "v": VmapRef}
    for op in ops:
        kwargs: dict[str, Any] = {}
        ok = True
        for key, value in op.args:
            kind = kinds.get(key)
            if kind is None:
                kwargs[key] = value
                continue
            pool = made[kind]
            if not pool:
                ok = False
                break
            kwargs[key] = pool[int(value) % len(pool)]
        if not ok:
            continue
        if "child" in kwargs and op.rule != "exit":
            kwargs["proc"] = kwargs.pop("child")
        try:
            result = getattr(state, op.rule)(**kwargs)
        except _Precondition:
            continue
        values = result if isinstance(result, tuple) else (result,)
        for v in values:
            if v is not None and type(v) in made:
                made[type(v)].append(v)
    state.teardown()
