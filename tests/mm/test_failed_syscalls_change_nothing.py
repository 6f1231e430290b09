"""Property: a syscall that fails leaves the whole kernel exactly as it was.

A small but busy world (shared, private and anonymous mappings with data,
COW pages, a memfd, a fork child) takes random calls biased towards failure;
after each failing call the snapshot of conftest.snapshot — vmas, PTEs, fd
tables, file counts, i_mmap trees, page bytes, struct pages, cache lines and
driver counters of every process — must be unchanged.

Where Linux itself is not atomic the failure is excluded, with the kernel
reference next to the exclusion.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any

from hypothesis import event, given, note
from hypothesis import strategies as st

from dmabuf_sim import Kernel

PAGE = 4096
R, W, X = mmap.PROT_READ, mmap.PROT_WRITE, mmap.PROT_EXEC
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_POPULATE = 0x10, 0x100000, 0x8000
MAP_GROWSDOWN, MAP_NORESERVE, MAP_SYNC = 0x100, 0x4000, 0x80000
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
TASK_SIZE = 0x7FFFFFFFF000
BASE = 0x10000000
F_ADD_SEALS, F_GET_SEALS, F_SETFL = 1033, 1034, 4


def build(spec: str) -> tuple[Kernel, list[Any]]:
    k = Kernel(spec)
    p = k.spawn("parent")
    rw = p.open("/dev/simmem", os.O_RDWR)  # fd 0
    ro = p.open("/dev/simmem", os.O_RDONLY)  # fd 1
    p.open("/dev/simmem", os.O_WRONLY)  # fd 2
    m = p.memfd_create("m", 2)  # fd 3, sealable
    p.ftruncate(m, 4 * PAGE)
    p.close(p.open("/dev/simmem"))  # fd 4 is now free
    p.mmap(BASE, 4 * PAGE, R | W, SH | MAP_FIXED, rw, 0)
    p.write_memory(BASE + PAGE, b"shared data")
    p.mmap(BASE + 6 * PAGE, 2 * PAGE, R | W, PR | MAP_FIXED, rw, 4 * PAGE)
    p.write_memory(BASE + 6 * PAGE, b"cow copy")
    p.read_memory(BASE + 7 * PAGE, 1)
    p.mmap(BASE + 10 * PAGE, 3 * PAGE, R | W, PR | ANON | MAP_FIXED)
    p.write_memory(BASE + 11 * PAGE, b"anon")
    p.mmap(BASE + 14 * PAGE, 2 * PAGE, R | W, SH | ANON | MAP_FIXED)
    p.write_memory(BASE + 14 * PAGE, b"shmem")
    p.mmap(BASE + 18 * PAGE, 4 * PAGE, R, SH | MAP_FIXED, m, 0)
    p.read_memory(BASE + 18 * PAGE, 2 * PAGE)
    p.mmap(BASE + 24 * PAGE, PAGE, R, SH | MAP_FIXED, ro, 8 * PAGE)
    child = p.fork()
    child.write_memory(BASE + 11 * PAGE, b"child")
    return k, [p, child]


u64 = st.integers(-(2**63), 2**64 - 1)


def mostly(values: list[int]) -> st.SearchStrategy[int]:
    """Three parts plausible values, one part any 64-bit int."""
    sample = st.sampled_from(values)
    return st.one_of(sample, sample, sample, u64)


addrs = mostly(
    [
        0,
        0,
        1,
        BASE,
        BASE + PAGE,
        BASE + 2 * PAGE,
        BASE + 5 * PAGE,
        BASE + 6 * PAGE,
        BASE + 10 * PAGE + 1,
        BASE + 14 * PAGE,
        BASE + 18 * PAGE,
        BASE + 24 * PAGE,
        BASE + 40 * PAGE,
        TASK_SIZE,
        TASK_SIZE - PAGE,
        2**64 - PAGE,
        2**63,
    ]
)
lens = mostly(
    [
        0,
        1,
        PAGE,
        PAGE,
        2 * PAGE,
        3 * PAGE,
        8 * PAGE,
        17 * PAGE,
        30 * PAGE,
        -1,
        -PAGE,
        2**63,
        TASK_SIZE,
        TASK_SIZE + PAGE,
    ]
)
prots = st.one_of(
    st.sampled_from(
        [
            0,
            R,
            R | W,
            R | W,
            W,
            R | W | X,
            0x10,
            0x100,
            R | PROT_GROWSDOWN,
            R | PROT_GROWSUP,
            R | PROT_GROWSDOWN | PROT_GROWSUP,
        ]
    ),
    st.integers(0, 2**32),
)
map_types = st.sampled_from([SH, SH, PR, PR, 3, 0, 4, 0xF])
map_extra = st.one_of(
    st.just(0),
    st.sets(
        st.sampled_from(
            [
                MAP_FIXED,
                MAP_FIXED_NOREPLACE,
                ANON,
                MAP_POPULATE,
                MAP_GROWSDOWN,
                MAP_NORESERVE,
                MAP_SYNC,
            ]
        )
    ).map(sum),
)
fds = st.sampled_from([0, 0, 1, 1, 2, 3, 3, 4, -1, 99, 2**31 - 1])
offsets = mostly([0, 0, 1, PAGE, 4 * PAGE, 15 * PAGE, 16 * PAGE, -PAGE, 2**63, 2**63 - PAGE])


def near(name: str, base: dict[str, Any], **fields: st.SearchStrategy[Any]) -> Any:
    """A call that starts valid and has some of its arguments replaced by bad ones,
    so that the later checks of a syscall are reached, not just the first."""
    return st.fixed_dictionaries({}, optional=fields).map(lambda d: (name, *{**base, **d}.values()))


ops = st.one_of(
    near(
        "mmap",
        {"addr": 0, "length": 2 * PAGE, "prot": R | W, "flags": SH, "fd": 0, "offset": 0},
        addr=addrs,
        length=lens,
        prot=prots,
        flags=st.tuples(map_types, map_extra).map(sum),
        fd=fds,
        offset=offsets,
    ),
    near("munmap", {"addr": BASE + PAGE, "length": PAGE}, addr=addrs, length=lens),
    near(
        "mprotect", {"addr": BASE, "length": PAGE, "prot": R}, addr=addrs, length=lens, prot=prots
    ),
    near(
        "mremap",
        {"addr": BASE + 10 * PAGE, "old": PAGE, "new": 2 * PAGE, "flags": 0},
        addr=addrs,
        old=lens,
        new=lens,
        flags=st.sampled_from([0, 1, 2, 4, 5, 8]),
    ),
    st.tuples(st.just("close"), fds),
    st.tuples(st.just("lseek"), fds, u64, st.sampled_from([0, 1, 2, 3, 4, 5, -1])),
    st.tuples(
        st.just("ioctl"),
        fds,
        st.sampled_from([0x1234, 0xC0086201, 0x40086200, 0]),
        st.integers(0, 2**64 - 1),
    ),
    st.tuples(st.just("ftruncate"), fds, st.sampled_from([-1, 0, PAGE, 2**63, 2 * PAGE])),
    st.tuples(
        st.just("fcntl"),
        fds,
        st.sampled_from([F_ADD_SEALS, F_GET_SEALS, 9999, F_SETFL]),
        st.sampled_from([0, 1, 2, 8, 0x1000, -1]),
    ),
)


def overlaps_a_mapping(p: Any, op: tuple[Any, ...]) -> bool:
    """Does this mmap's [addr, addr + PAGE_ALIGN(len)) intersect a vma now?"""
    if op[0] != "mmap":
        return False
    addr, length = op[1] % 2**64, op[2] % 2**64
    end = min(addr + ((length + PAGE - 1) & ~(PAGE - 1)), 2**64)
    return bool(p.mm.vmas_in(addr, end))


def not_atomic_in_linux(p: Any, op: tuple[Any, ...], events: list[Any], overlapped: bool) -> str:
    """Why Linux itself may change state on this failure, or ''."""
    name = op[0]
    if name == "mprotect":
        start, length = op[1] % 2**64, op[2] % 2**64
        first = p.mm.vma_lookup(start)
        end = start + ((length + PAGE - 1) & ~(PAGE - 1))
        # mm/mprotect.c: do_mprotect_pkey calls mprotect_fixup vma by vma; an error on a
        # later vma (EACCES) or a hole (ENOMEM) returns with the earlier vmas changed.
        if first is not None and end > first.vm_end:
            return "mprotect across vmas"
    reached_region = any(e.kind == "entry" and e.func == "mmap_region" for e in events)
    if name == "mmap" and overlapped and reached_region:
        # mm/mmap.c mmap_region (v6.1: do_mas_munmap first; 6.12: vms_clean_up_area
        # before ->mmap): MAP_FIXED over a mapping destroys it even if the mmap fails.
        return "MAP_FIXED replaced a mapping, then failed"
    # (munmap/mprotect with a ->may_split veto on the end edge also keep the start
    # split, see test_munmap_split; simmem and shmem have no ->may_split.)
    return ""


def call(p: Any, op: tuple[Any, ...]) -> None:
    name, *args = op
    getattr(p, name)(*args)


@given(
    spec=st.sampled_from(["v3.5", "v6.1", "v6.12", "latest"]),
    steps=st.lists(st.tuples(st.integers(0, 1), ops), min_size=1, max_size=12),
)
def test_failed_syscall_leaves_kernel_unchanged(
    snap: Callable[[Kernel], Any], spec: str, steps: list[tuple[int, tuple[Any, ...]]]
) -> None:
    k, procs = build(spec)
    for who, op in steps:
        p = procs[who]
        before = snap(k)
        note(f"{p.comm}: {op!r}")
        overlapped = overlaps_a_mapping(p, op)
        with k.trace() as events:
            try:
                call(p, op)
            except OSError as e:
                failed = e
            except NotImplementedError:
                event("not modelled")
                continue
            else:
                event(f"{op[0]} succeeded")
                continue
        why = not_atomic_in_linux(p, op, events, overlapped)
        if why:
            event(f"excluded: {why}")
            continue
        event(f"{op[0]} failed")
        after = snap(k)
        assert after == before, f"{op!r} failed with {failed!r} but changed {diff(before, after)}"
    assert k.bad_pages == []


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [key for key in a if a[key] != b.get(key)]
