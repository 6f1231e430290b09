"""A fuzzer over random syscall programs: any input, any sequence, and the machine keeps working.

Hypothesis writes programs of syscalls (open, close, dup, mmap, munmap, mprotect,
mremap, ioctl with every uapi struct, lseek, read, write, fcntl, ftruncate,
memfd_create, poll, fork, exit) plus loads and stores, with arguments that are
mostly plausible and sometimes hostile (any 64-bit value, values wider than the C
type, wrong Python types), over every spec and every reference exporter, on a
small machine (32 MiB) so that running out of memory is reachable.  Rules checked
(issue 15, item 4):

* Only ``OSError``, a :class:`~dmabuf_sim.Signal` (from loads and stores), a
  documented :class:`~dmabuf_sim.KernelOops` (a modelled kernel bug carrying its
  rule), ``NotImplementedError`` naming a kernel feature, or ``TypeError`` /
  ``ValueError`` for an argument the program got wrong ever escapes.
* A call that fails leaves the machine snapshot (conftest.machine_snapshot)
  unchanged, apart from the failures the kernel itself does not undo (README):
  mprotect across vmas, MAP_FIXED over a mapping, an ioctl whose copy-out faults,
  shmem pages read into a page cache before memory ran out.
* The page allocator's invariants hold after every step, no bad page is ever
  reported, no WARN fires, and once every process has exited every page is back.

The default profile runs 180 programs (about 3,500 steps, a few seconds);
``HYPOTHESIS_PROFILE=deep`` runs 6,000 (about 110,000 steps); ``FUZZ_STATS=1``
prints how many steps ran and how fast.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from dmabuf_sim import Kernel, KernelOops, Process, Signal
from dmabuf_sim.errors import SIGKILL, OutOfMemory
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.spec import SPECS
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SET_NAME_A,
    DMA_BUF_SET_NAME_B,
    DMA_HEAP_IOCTL_ALLOC,
    DRM_IOCTL_GEM_CLOSE,
    DRM_IOCTL_MODE_CREATE_DUMB,
    DRM_IOCTL_MODE_MAP_DUMB,
    DRM_IOCTL_PRIME_FD_TO_HANDLE,
    DRM_IOCTL_PRIME_HANDLE_TO_FD,
    DRM_IOCTL_VGEM_FENCE_ATTACH,
    DRM_IOCTL_VGEM_FENCE_SIGNAL,
    F_ADD_SEALS,
    F_GET_SEALS,
    FIOCLEX,
    FIONBIO,
    FIONCLEX,
    UDMABUF_CREATE,
    UDMABUF_CREATE_LIST,
    DmaBufExportSyncFile,
    DmaBufImportSyncFile,
    DmaBufSync,
    DmaHeapAllocationData,
    DrmGemClose,
    DrmModeCreateDumb,
    DrmModeMapDumb,
    DrmPrimeHandle,
    DrmVgemFenceAttach,
    DrmVgemFenceSignal,
    UapiStruct,
    UdmabufCreate,
)

Snapshot = Callable[[Kernel], dict[str, Any]]

MREMAP_FIXED = 2
PAGE = 4096
RAM_PAGES = 1 << 13  # 32 MiB: exhaustion is a few allocations away
BASE = 0x40000000
TASK_SIZE = 0x7FFFFFFFF000
MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_POPULATE = 0x10, 0x100000, 0x8000
MAX_PROCS = 4
POPULATE_LIMIT = 1 << 26
"""MAP_POPULATE walks every page, as the kernel does; page-table memory is not simulated,
so a read-only populate of a huge range would cost O(pages) with no memory running out.
The fuzzer keeps MAP_POPULATE to ranges of at most 64 MiB."""

PAIRS = [
    (spec, name)
    for spec in SPECS
    for name, info in EXPORTERS.items()
    if info.kind == "reference" and info.available(SPECS[spec]) is None
] + [("v3.4", None)]

KNOWN_OOPSES = {
    ("v6.1", "BUG_ON(VM_PFNMAP && is_cow_mapping)"): (
        "vgem MAP_PRIVATE on v6.1 (issue 15, item 4): the real 6.1.192 refuses the mapping;"
        " the kernel-lines issue fixes that spec"
    ),
}
"""KernelOopses without a rule that the fuzzer tolerates, each with the issue that owns it."""


# -- symbolic arguments, resolved against the live world when the step runs --------------------
@dataclass(frozen=True)
class Fd:
    """The i-th open fd of the calling process (modulo how many there are)."""

    i: int


@dataclass(frozen=True)
class Buf:
    """The i-th buffer fd the exporter made (dma-buf fds, in creation order)."""

    i: int


@dataclass(frozen=True)
class Dev:
    """The calling process's fd of the device node at ``path`` (opened at boot)."""

    path: str


@dataclass(frozen=True)
class Map:
    """An address ``pages`` pages into the i-th mapping the program made."""

    i: int
    pages: int = 0


@dataclass(frozen=True)
class Free:
    """A size that leaves ``spare`` pages of the machine free: a memory hog."""

    spare: int


@dataclass(frozen=True)
class Bad:
    """A value the Python API must refuse (wrong type, wider than the C type)."""

    value: Any


u64 = st.integers(-(2**63), 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**32 - 1)  # what a C int (or unsigned int) argument can hold
wrong_type = st.sampled_from([None, "3", 1.5, b"\0", True]).map(Bad)
too_wide = st.sampled_from([2**64, -(2**63) - 1, 2**80]).map(Bad)


def mostly(plausible: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any] = u64) -> Any:
    """Mostly plausible, one part in six any C value, one in thirty a Python mistake.

    (``one_of`` drops repeated strategies, so the weights are distinct copies.)"""
    return st.one_of(
        *[plausible.map(_same) for _ in range(24)],
        *[hostile.map(_same) for _ in range(5)],
        wrong_type,
    )


def _same(x: Any) -> Any:
    return x


fds = mostly(
    st.one_of(st.builds(Buf, st.integers(0, 3)), st.builds(Fd, st.integers(0, 7))),
    st.one_of(st.sampled_from([-1, 99, 1023, 2**31 - 1, 2**32 - 1]), too_wide),
)
addrs = mostly(
    st.builds(Map, st.integers(0, 5), st.sampled_from([0, 0, 1, 2, 3, -1, 5])),
    st.one_of(
        st.sampled_from([0, 1, BASE, TASK_SIZE - PAGE, TASK_SIZE, 2**64 - PAGE, 2**63]),
        u64,
        too_wide,
    ),
)
lengths = mostly(
    st.sampled_from([PAGE, PAGE, 2 * PAGE, 3 * PAGE, 4 * PAGE, 4 * PAGE, 8 * PAGE, 16 * PAGE, 0]),
    st.one_of(st.sampled_from([1, -1, -PAGE, 2**63, TASK_SIZE, 1 << 40, 1 << 46]), u64, too_wide),
)
prots = mostly(st.sampled_from([1, 3, 3, 0, 7, 2]), st.one_of(u32, too_wide))
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
map_flags = mostly(
    st.sampled_from(
        [
            SH,
            SH,
            SH,
            PR,
            PR,
            PR | ANON,
            SH | ANON,
            SH | MAP_FIXED,
            PR | MAP_FIXED,
            PR | ANON | MAP_FIXED,
            SH | MAP_FIXED_NOREPLACE,
            SH | MAP_POPULATE,
            PR | ANON | MAP_POPULATE,
            3,  # MAP_SHARED_VALIDATE
        ]
    ),
    st.one_of(u64, too_wide),
)
offsets = mostly(st.sampled_from([0, 0, 0, 0, PAGE, 2 * PAGE, 3 * PAGE, 15 * PAGE, 16 * PAGE]))
sizes = mostly(
    st.one_of(
        st.sampled_from([PAGE, PAGE, 2 * PAGE, 4 * PAGE, 8 * PAGE, 3 * PAGE + 1]),
        st.builds(Free, st.sampled_from([0, 1, 2, 16])),
    ),
    st.sampled_from([0, 1, 1 << 30, 1 << 40, 2**64 - 1]),
)
whos = st.integers(0, MAX_PROCS - 1)
small_counts = st.one_of(st.integers(0, 3 * PAGE), wrong_type)
datas = st.one_of(
    st.integers(1, 2 * PAGE).map(lambda n: bytes((i * 7) & 0xFF for i in range(n))), wrong_type
)
paths = st.sampled_from(
    [
        "/dev/simmem",
        "/dev/dma_heap/system",
        "/dev/dma_heap/reserved",
        "/dev/udmabuf",
        "/dev/dri/card0",
        "/proc/self/fd/0",
        "/proc/self/fd/3",
        "/dev/nonexistent",
    ]
)
open_flags = mostly(
    st.sampled_from([os.O_RDONLY, os.O_RDWR, os.O_WRONLY, os.O_RDWR | os.O_CLOEXEC]),
    st.one_of(i32, too_wide),
)
handles = mostly(st.integers(0, 4), st.one_of(u32, too_wide))


def struct_of(cls: type[UapiStruct], **fields: st.SearchStrategy[Any]) -> Any:
    return st.fixed_dictionaries({}, optional=fields).map(lambda d: (cls, d))


ioctls = st.one_of(
    st.tuples(
        st.just(DMA_BUF_IOCTL_SYNC),
        struct_of(DmaBufSync, flags=mostly(st.sampled_from([1, 2, 3, 5, 6, 7]), u64)),
    ),
    st.tuples(
        st.sampled_from([DMA_BUF_SET_NAME_A, DMA_BUF_SET_NAME_B]),
        st.sampled_from(["buf", "x" * 40, "", b"no-nul", 0]),
    ),
    st.tuples(
        st.just(DMA_BUF_IOCTL_EXPORT_SYNC_FILE),
        struct_of(DmaBufExportSyncFile, flags=mostly(st.sampled_from([1, 2, 3]), u32), fd=fds),
    ),
    st.tuples(
        st.just(DMA_BUF_IOCTL_IMPORT_SYNC_FILE),
        struct_of(DmaBufImportSyncFile, flags=mostly(st.sampled_from([1, 2, 3]), u32), fd=fds),
    ),
    st.tuples(
        st.just(DMA_HEAP_IOCTL_ALLOC),
        struct_of(
            DmaHeapAllocationData,
            len=sizes,
            fd=mostly(st.just(0), u32),
            fd_flags=mostly(st.sampled_from([os.O_RDWR, os.O_RDWR | os.O_CLOEXEC, 0]), u32),
            heap_flags=mostly(st.just(0), u64),
        ),
    ),
    st.tuples(
        st.just(UDMABUF_CREATE),
        struct_of(
            UdmabufCreate,
            memfd=fds,
            flags=mostly(st.sampled_from([0, 1]), u32),
            offset=offsets,
            size=sizes,
        ),
    ),
    st.tuples(st.just(UDMABUF_CREATE_LIST), st.binary(max_size=40)),
    st.tuples(
        st.just(DRM_IOCTL_MODE_CREATE_DUMB),
        struct_of(
            DrmModeCreateDumb,
            height=mostly(st.integers(0, 16), u32),
            width=mostly(st.sampled_from([1024, 1, 0]), u32),
            bpp=mostly(st.sampled_from([32, 8, 0]), u32),
            flags=mostly(st.just(0), u32),
        ),
    ),
    st.tuples(
        st.just(DRM_IOCTL_MODE_MAP_DUMB),
        struct_of(DrmModeMapDumb, handle=handles, pad=mostly(st.just(0), u32)),
    ),
    st.tuples(
        st.just(DRM_IOCTL_PRIME_HANDLE_TO_FD),
        struct_of(
            DrmPrimeHandle, handle=handles, flags=mostly(st.sampled_from([0, 2, 0o2000002]), u32)
        ),
    ),
    st.tuples(st.just(DRM_IOCTL_PRIME_FD_TO_HANDLE), struct_of(DrmPrimeHandle, fd=fds)),
    st.tuples(st.just(DRM_IOCTL_GEM_CLOSE), struct_of(DrmGemClose, handle=handles)),
    st.tuples(
        st.just(DRM_IOCTL_VGEM_FENCE_ATTACH),
        struct_of(
            DrmVgemFenceAttach,
            handle=handles,
            flags=mostly(st.sampled_from([0, 1]), u32),
            pad=mostly(st.just(0), u32),
        ),
    ),
    st.tuples(
        st.just(DRM_IOCTL_VGEM_FENCE_SIGNAL),
        struct_of(DrmVgemFenceSignal, fence=handles, flags=mostly(st.just(0), u32)),
    ),
    st.tuples(st.sampled_from([FIONBIO, FIOCLEX, FIONCLEX]), st.sampled_from([b"\1\0\0\0", 0])),
    st.tuples(st.one_of(u64, too_wide, wrong_type), st.just(0)),
)
arg_forms = st.sampled_from(["struct", "struct", "bytes", "address", "null"])

ops = st.one_of(
    st.tuples(st.just("new_buffer"), sizes, open_flags),
    st.tuples(st.just("open"), paths, open_flags),
    st.tuples(st.just("close"), fds),
    st.tuples(st.just("dup"), fds),
    st.tuples(st.just("mmap"), addrs, lengths, prots, map_flags, fds, offsets),
    st.tuples(st.just("mmap"), addrs, lengths, prots, map_flags, fds, offsets),
    st.tuples(st.just("munmap"), addrs, lengths),
    st.tuples(st.just("mprotect"), addrs, lengths, prots),
    st.tuples(
        st.just("mremap"),
        addrs,
        lengths,
        lengths,
        mostly(st.sampled_from([0, 1, 3, 5, 4]), st.one_of(u64, too_wide)),
        addrs,
    ),
    st.tuples(st.just("ioctl"), st.just(None), ioctls, arg_forms),
    st.tuples(st.just("ioctl"), st.just(None), ioctls, arg_forms),
    st.tuples(st.just("ioctl"), fds, ioctls, arg_forms),
    st.tuples(st.just("lseek"), fds, offsets, mostly(st.sampled_from([0, 1, 2, 3, 4, 5, -1]), i32)),
    st.tuples(st.just("read"), fds, small_counts),
    st.tuples(st.just("write"), fds, datas),
    st.tuples(
        st.just("fcntl"),
        fds,
        mostly(st.sampled_from([1, 2, 3, 4, 0, 1030, F_ADD_SEALS, F_GET_SEALS]), i32),
        mostly(st.sampled_from([0, 1, 2, 8, 0x800, 3]), st.one_of(i32, too_wide)),
    ),
    st.tuples(st.just("ftruncate"), fds, mostly(st.integers(0, 20).map(lambda n: n * PAGE))),
    st.tuples(
        st.just("memfd_create"),
        st.one_of(st.sampled_from(["m", "x" * 300]), wrong_type),
        mostly(st.sampled_from([0, 1, 2, 3]), i32),
    ),
    st.tuples(st.just("poll"), fds, st.sampled_from([1, 4, 5, 0, 0xFFFF])),
    st.tuples(st.just("read_memory"), addrs, small_counts),
    st.tuples(st.just("write_memory"), addrs, datas),
    st.tuples(st.just("fork")),
    st.tuples(st.just("exit")),
)
programs = st.lists(st.tuples(whos, ops), min_size=10, max_size=40)
MEMORY_OPS = {"read_memory", "write_memory"}
CMA_EXPORTERS = {"cma_heap", "simple"}
STATS = {"steps": 0, "programs": 0, "seconds": 0.0}


# -- the world ---------------------------------------------------------------------------------
@dataclass
class World:
    kernel: Kernel
    exporter: str | None
    procs: list[Process]
    baseline: int
    buffers: list[int] = field(default_factory=list)
    mappings: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def boot(cls, spec: str, exporter: str | None) -> World:
        """A busy start, so that most steps meet something: the simmem driver open, a
        buffer of the exporter mapped shared, anonymous memory written."""
        k = Kernel(spec, ram_pages=RAM_PAGES)
        w = cls(k, exporter, [k.spawn("fuzz")], k.mem.allocated_pages)
        p = w.procs[0]
        for dev in ("/dev/simmem", "/dev/dma_heap/system", "/dev/udmabuf", "/dev/dri/card0"):
            if dev in k.chrdevs:
                p.open(dev, os.O_RDWR)
        if exporter is not None:
            fd = EXPORTERS[exporter].make_fd(p, 4 * PAGE, os.O_RDWR)
            w.buffers.append(fd)
            if not k.spec.mmap_internal_reads_uninitialised_dmabuf:  # rfc-2012: R61 oops
                w.mappings.append((p.mmap(0, 4 * PAGE, 3, mmap.MAP_SHARED, fd, 0), 4 * PAGE))
        anon = p.mmap(0, 4 * PAGE, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        p.write_memory(anon + PAGE, b"anonymous")
        w.mappings.append((anon, 4 * PAGE))
        return w

    def live(self) -> list[Process]:
        self.procs = [p for p in self.procs if p.alive]
        return self.procs


@dataclass
class Step:
    """A step made ready to run: the call, its resolved arguments, and whether the
    program handed the Python API something it must refuse."""

    name: str
    args: list[Any]
    run: Callable[[], Any]
    misuse: bool


def resolve(w: World, p: Process, value: Any, misuse: list[bool]) -> Any:
    if isinstance(value, Bad):
        misuse.append(True)
        return value.value
    if isinstance(value, Fd):
        fds_ = sorted(p.files.fds)
        return fds_[value.i % len(fds_)] if fds_ else 99
    if isinstance(value, Buf):
        bufs = [fd for fd in w.buffers if fd in p.files.fds]
        return bufs[value.i % len(bufs)] if bufs else 98
    if isinstance(value, Free):
        mem = w.kernel.mem
        cma = mem.nr_free_cma_pages()
        free = cma if w.exporter in CMA_EXPORTERS else mem.nr_free_pages() - cma
        return max(1, free - value.spare) * PAGE
    if isinstance(value, Dev):
        found = [fd for fd, f in sorted(p.files.fds.items()) if f.name == value.path]
        return found[0] if found else 97
    if isinstance(value, Map):
        if not w.mappings:
            return BASE
        addr, _n = w.mappings[value.i % len(w.mappings)]
        return addr + value.pages * PAGE
    return value


def target_of(request: Any) -> Any:
    """The fd an ioctl is meant for: a dma-buf, a heap, udmabuf or the DRM card."""
    if request in (DMA_HEAP_IOCTL_ALLOC,):
        return Dev("/dev/dma_heap/system")
    if request in (UDMABUF_CREATE, UDMABUF_CREATE_LIST):
        return Dev("/dev/udmabuf")
    if isinstance(request, int) and (request >> 8) & 0xFF == ord("d"):
        return Dev("/dev/dri/card0")
    return Buf(0)


def ioctl_argument(w: World, p: Process, spec: Any, form: str, misuse: list[bool]) -> Any:
    """The ioctl ``arg`` in one of its forms; a struct goes to user memory for "address"."""
    if not isinstance(spec, tuple):
        return resolve(w, p, spec, misuse)
    cls, fields = spec
    values = {k: resolve(w, p, v, misuse) for k, v in fields.items()}
    obj = cls(**values)  # a value the field cannot hold raises here, before any syscall
    if form == "bytes":
        return obj.pack()  # read-only memory: the copy-out faults
    if form == "null":
        return 0
    if form == "address":
        for addr, _n in w.mappings:
            vma = p.mm.vma_lookup(addr)
            if vma is not None and vma.vm_flags & 2 and vma.vm_end - addr >= cls.sizeof():
                p.write_memory(addr, obj.pack())  # the program's store, before the call
                return addr
    return obj


def prepare(w: World, p: Process, op: tuple[Any, ...]) -> Step:
    name, *raw = op
    misuse: list[bool] = []
    if name == "ioctl":
        request = resolve(w, p, raw[1][0], misuse)
        fd = resolve(w, p, raw[0] if raw[0] is not None else target_of(request), misuse)
        arg = ioctl_argument(w, p, raw[1][1], raw[2], misuse)
        return Step(name, [fd, request, arg], lambda: p.ioctl(fd, request, arg), bool(misuse))
    args = [resolve(w, p, a, misuse) for a in raw]
    run: Callable[[], Any]
    if name == "new_buffer":
        exporter = w.exporter
        size, flags = args
        if isinstance(size, int) and not isinstance(size, bool) and not 0 < size < 1 << 44:
            misuse.append(True)  # the factory's callers pass a real size

        def run() -> Any:
            if exporter is not None:
                w.buffers.append(EXPORTERS[exporter].make_fd(p, size, flags))

    elif name == "mmap":
        flags, length = args[3], args[1]
        if isinstance(flags, int) and isinstance(length, int) and flags & MAP_POPULATE:
            if not 0 <= length <= POPULATE_LIMIT:
                args[3] = flags & ~MAP_POPULATE

        def run() -> Any:
            got = p.mmap(*args)
            w.mappings = [*w.mappings[-7:], (got, args[1])]

    elif name == "mremap":

        def run() -> Any:
            got = p.mremap(*args)
            w.mappings = [*w.mappings[-7:], (got, args[2])]

    elif name == "fork":

        def run() -> Any:
            if len(w.live()) < MAX_PROCS:
                w.procs.append(p.fork())

    elif name == "exit":

        def run() -> Any:
            if len(w.live()) > 1:
                p.exit()

    else:
        method = getattr(p, name)

        def run() -> Any:
            return method(*args)

    return Step(name, args, run, bool(misuse))


def exempt(step: Step, err: OSError, vmas: list[tuple[int, ...]]) -> str:
    """Why the kernel itself may change state on this failure (README), or ''."""
    if step.name == "mprotect":
        start = step.args[0] % 2**64
        end = start + step.args[1] % 2**64
        first = [v for v in vmas if v[0] <= start < v[1]]
        if first and end > first[0][1]:
            return "mprotect changed the vmas before the failing one"
    if step.name == "mmap":
        addr, length, flags = step.args[0] % 2**64, step.args[1] % 2**64, step.args[3]
        end = addr + ((length + PAGE - 1) & ~(PAGE - 1))
        fixed = flags & MAP_FIXED and not flags & MAP_FIXED_NOREPLACE
        if fixed and any(v[0] < end and addr < v[1] for v in vmas):
            return "MAP_FIXED unmapped the old range before ->mmap"
    if step.name == "ioctl" and err.errno == errno.EFAULT:
        return "the command ran before its copy-out faulted"
    if step.name == "mremap" and len(step.args) > 4 and step.args[3] % 2**64 & MREMAP_FIXED:
        new_addr, new_len = step.args[4] % 2**64, step.args[2] % 2**64
        if any(v[0] < new_addr + new_len and new_addr < v[1] for v in vmas):
            return "MREMAP_FIXED unmapped the target range before the move failed"
        addr, old_len = step.args[0] % 2**64, step.args[1] % 2**64
        if sum(v[0] < addr + old_len and addr < v[1] for v in vmas) > 1:
            return "a multi-vma move (6.17+) keeps the vmas it moved before failing"
        tail = addr + new_len
        if old_len > new_len and any(v[0] < addr + old_len and tail < v[1] for v in vmas):
            return "a shrinking MREMAP_FIXED unmapped the old tail before the source was checked"
    return ""


def without_new_page_cache(k: Kernel, before: Any, after: Any) -> Any:
    """``after`` without the pages the failed call left in a shmem page cache.

    Pinning a shmem-backed object (udmabuf create, vgem and shoot-down pinning) reads
    its pages into the page cache one by one; when memory runs out part-way, the
    kernel drops its references but the pages read so far stay cached with their
    object (README: the kernel's own exception), and go when the object goes."""
    new = set(after["blocks"]) - set(before["blocks"])
    cached = set()
    for pfn in new:
        page = k.mem.page_if_exists(pfn)
        if after["blocks"][pfn] == 0 and page is not None and page.mapping is not None:
            cached.add(pfn)
    if not cached:
        return after
    out = dict(after)
    out["blocks"] = {p: o for p, o in after["blocks"].items() if p not in cached}
    out["pages"] = {p: v for p, v in after["pages"].items() if p not in cached}
    out["bytes"] = {p: v for p, v in after["bytes"].items() if p not in cached}
    out["allocated"] = after["allocated"] - len(cached)
    return out


def check_oops(oops: KernelOops, spec: str) -> str:
    if isinstance(oops, OutOfMemory):
        raise AssertionError(f"a NULL from the page allocator went unchecked: {oops}") from oops
    if oops.rule:
        return f"documented kernel bug {oops.rule}"
    for (known_spec, text), why in KNOWN_OOPSES.items():
        if spec == known_spec and text in oops.reason:
            return why
    raise AssertionError(f"an undocumented KernelOops escaped: {oops}") from oops


def run_program(
    snapshot: Snapshot, spec: str, exporter: str | None, steps: list[tuple[int, tuple[Any, ...]]]
) -> int:
    w = World.boot(spec, exporter)
    k = w.kernel
    done = 0
    for who, op in steps:
        live = w.live()
        if not live:
            break  # the OOM killer took the last process
        p = live[who % len(live)]
        note(f"pid {p.pid}: {op!r}")
        try:
            step = prepare(w, p, op)
        except (TypeError, ValueError, Signal):
            continue  # the program's own mistake while building the call: no syscall ran
        done += 1
        before = snapshot(k)
        try:
            step.run()
        except OSError as err:
            event(f"{step.name}: {errno.errorcode.get(err.errno or 0, err.errno)}")
            vmas = before["procs"][p.pid][1]
            if not exempt(step, err, vmas):
                after = without_new_page_cache(k, before, snapshot(k))
                assert after == before, f"{op!r} failed ({err}) but changed {diff(before, after)}"
        except SIGKILL:
            assert step.name in MEMORY_OPS, f"{op!r}: SIGKILL outside a page fault"
            assert not p.alive
            event("OOM kill")
        except Signal:
            assert step.name in MEMORY_OPS, f"{op!r}: a signal escaped a syscall"
        except KernelOops as oops:
            event(f"oops: {check_oops(oops, spec)}")
            return done  # the machine is tainted: nothing after an oops is defined
        except NotImplementedError as exc:
            assert str(exc), f"{op!r}: NotImplementedError without naming the feature"
            assert snapshot(k) == before, f"{op!r}: NotImplementedError after changing state"
            event(f"not modelled: {str(exc)[:40]}")
        except (TypeError, ValueError) as exc:
            assert step.misuse, f"{op!r}: {type(exc).__name__} for a valid call: {exc}"
            after = snapshot(k)
            assert after == before, f"{op!r} raised {exc!r} but changed {diff(before, after)}"
            event(f"{step.name}: {type(exc).__name__} (misuse)")
        else:
            event(f"{step.name} ok")
        k.mem.check_consistency()
        assert k.bad_pages == [], k.bad_pages
        assert k.warnings == [], k.warnings
    for p in w.live():
        p.exit()
    k.run_until_idle()
    assert k.processes == {} and k.dma_bufs == []
    assert k.mem.leaked_pages == 0 and k.bad_pages == []
    assert k.mem.allocated_pages == w.baseline, "pages leaked after every process exited"
    k.mem.check_consistency()
    return done


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [key for key in before if before[key] != after.get(key)]


@pytest.fixture(scope="module", autouse=True)
def _stats() -> Iterator[None]:
    yield
    if os.environ.get("FUZZ_STATS") and STATS["programs"]:
        rate = STATS["steps"] / STATS["seconds"]
        print(
            f"\nfuzzer: {STATS['programs']} programs, {STATS['steps']} steps"
            f" in {STATS['seconds']:.1f} s ({rate:.0f} steps/s)"
        )


@settings(max_examples=3 * settings.default.max_examples)  # the profile's, times three
@given(pair=st.sampled_from(PAIRS), steps=programs)
def test_random_syscall_programs_keep_the_machine_working(
    snapshot_of: Snapshot, pair: tuple[str, str | None], steps: list[tuple[int, tuple[Any, ...]]]
) -> None:
    spec, exporter = pair
    t0 = time.perf_counter()
    STATS["steps"] += run_program(snapshot_of, spec, exporter, steps)
    STATS["programs"] += 1
    STATS["seconds"] += time.perf_counter() - t0
