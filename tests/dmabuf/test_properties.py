"""Hypothesis properties of the dma-buf core against independent oracles.

1. mmap(2) on a dma-buf fd: outcome = an oracle written from kernel-spec §5.1 (VFS order),
   §2.5/§4.2 (dma_buf_mmap_internal) and R61/R10; failures leave nothing behind.
2. dma_buf_mmap() from an importer: outcome = §2.6/§4.3 (R20, R22-R24).
3. File reference counting under random dup/close/mmap/munmap/fork/exit/get/put (R16-R19).
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from dmabuf_sim.dma_buf import dma_buf_get, dma_buf_put, get_dma_buf
from dmabuf_sim.errors import KernelOops
from dmabuf_sim.mm.mmap import MMAP_BASE, MMAP_MIN_ADDR, TASK_SIZE
from dmabuf_sim.mm.pgtable import pte_pfn

PAGE = 4096
U64 = 2**64
ULONG_MAX = U64 - 1
ALL = ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"]
FILE_MMAP_OK = {"v6.1", "v6.12", "latest"}  # R6: vfs file_mmap_ok (4.19+)
OLD_SWAP = {"rfc-2012", "v3.5"}  # R23: fput_then_get + mmap_region puts the original file
RW, SHARED = 3, 1
# The simulated machine's free address space for one mapping in an empty mm (top-down
# from mmap_base down to mmap_min_addr; x86-64 TASK_SIZE caps every length).
MAX_MAP = min(TASK_SIZE, MMAP_BASE - MMAP_MIN_ADDR)

OK = "ok"
OOPS = "oops"

# These properties are cheap (a fresh kernel per example costs microseconds): run four times
# the examples of the active profile (default 60 → 240; "deep" 2000 → 8000).
more = settings(max_examples=4 * settings.default.max_examples)

sizes = st.builds(
    lambda n, odd: max(1, n * PAGE + odd), st.integers(0, 64), st.integers(0, PAGE - 1)
)
offsets = st.one_of(
    st.integers(0, 70).map(lambda n: n * PAGE),
    st.integers(0, 70 * PAGE),
    st.integers(1, 70).map(lambda n: U64 - n * PAGE),
    st.integers(U64 - 70 * PAGE, ULONG_MAX),
    st.integers(-(2**63), -1),
    st.integers(0, ULONG_MAX),
    st.sampled_from([2**63, 2**63 - PAGE, 2**52 * PAGE - PAGE, 2**56, (2**52 - 1) * PAGE]),
)
lengths = st.one_of(
    st.integers(0, 70 * PAGE),
    st.integers(0, 70).map(lambda n: n * PAGE),
    st.integers(U64 - 2 * PAGE, ULONG_MAX),
    st.integers(-(2**63), -1),
    st.integers(0, ULONG_MAX),
    st.sampled_from([MAX_MAP, MAX_MAP + 1, TASK_SIZE, TASK_SIZE + 1, 2**63]),
)


def mmap_oracle(spec: str, size: int, offset: int, length: int) -> tuple[str | int, int]:
    """(outcome, pgoff) for mmap(0, length, RW, MAP_SHARED, dmabuf_fd, offset) in an empty mm.

    Written from kernel-spec §5.1 (x86-64 entry + do_mmap order), §2.5/§4.2 and R6/R10/R61;
    it shares no code with the simulator.
    """
    off = offset % U64
    length %= U64
    if off % PAGE:
        return errno.EINVAL, 0  # R3: before the fd is even looked up
    pgoff = off // PAGE
    if length == 0:
        return errno.EINVAL, pgoff  # R4
    alen = -(-length // PAGE) * PAGE % U64  # PAGE_ALIGN in 64-bit arithmetic
    if alen == 0:
        return errno.ENOMEM, pgoff
    npages = alen // PAGE
    if pgoff + npages > ULONG_MAX:
        return errno.EOVERFLOW, pgoff  # R5 (unreachable with byte offsets)
    if alen > MAX_MAP:
        return errno.ENOMEM, pgoff  # get_unmapped_area
    if spec in FILE_MMAP_OK and pgoff > (ULONG_MAX - alen) // PAGE:
        return errno.EOVERFLOW, pgoff  # R6: file_mmap_ok, the inode is not S_IFREG
    if spec == "v3.4":
        return errno.ENODEV, pgoff  # R10: no f_op->mmap
    if spec == "rfc-2012":
        return OOPS, pgoff  # R61: uninitialised dmabuf
    if pgoff + npages > size // PAGE:
        return errno.EINVAL, pgoff  # R1/R2: floored page count
    return OK, pgoff


@st.composite
def mmap_requests(draw: st.DrawFn) -> tuple[int, int, int]:
    """(size, offset, length): anything; near the top of the 64-bit offset space (R6); or
    near the buffer's end (R1/R2)."""
    size = draw(sizes)
    kind = draw(st.sampled_from(["any", "any", "top", "end", "end", "end"]))
    if kind == "any":
        return size, draw(offsets), draw(lengths)
    if kind == "top":
        k = draw(st.integers(1, 70))
        return size, U64 - k * PAGE, draw(st.integers(1, 70)) * PAGE - draw(st.integers(0, 99))
    last = size // PAGE
    first = draw(st.integers(0, last + 1))
    n = draw(st.integers(1, max(1, last - first + 1)))
    length = n * PAGE - draw(st.sampled_from([0, 0, 1, PAGE - 1]))
    return size, first * PAGE, length


@more
@given(
    spec=st.sampled_from(ALL),
    req=mmap_requests(),
    mode=st.sampled_from(["remap", "fault"]),
)
@example(spec="v6.12", req=(4 * PAGE, -PAGE, PAGE), mode="remap")  # R6
@example(spec="v3.5", req=(4 * PAGE, -PAGE, PAGE), mode="remap")  # R6, v3.5
@example(spec="latest", req=(6000, 0, 2 * PAGE), mode="fault")  # R2
@example(spec="v6.1", req=(64 * PAGE + 1, 0, 64 * PAGE), mode="remap")
@example(spec="v6.1", req=(PAGE, 0, -1), mode="remap")  # PAGE_ALIGN wrap
def test_property_mmap_matches_oracle(
    kit: SimpleNamespace, spec: str, req: tuple[int, int, int], mode: str
) -> None:
    """Property (R1-R6, R10, R61): for any size, offset and length, mmap(2) of a dma-buf fd
    fails exactly as the oracle says, or succeeds mapping the pages at the user's offset; a
    failure leaves no vma, no PTE, no reference and never reaches ops->mmap."""
    size, offset, length = req
    env = kit.new_env(spec, size, mode=mode)
    k, p, exp = env.kernel, env.proc, env.exp
    for i in range(exp.npages):
        k.mem.write(exp.pfn(i) * PAGE, b"P" + i.to_bytes(2, "little"))
    want, pgoff = mmap_oracle(spec, size, offset, length)
    event(f"outcome={want if isinstance(want, str) else errno.errorcode[want]}")
    if want == OOPS:
        with pytest.raises(KernelOops) as oops:
            p.mmap(0, length, RW, SHARED, env.fd, offset)
        assert oops.value.rule == "R61" and k.tainted
        return
    if want != OK:
        with pytest.raises(OSError) as ei:
            p.mmap(0, length, RW, SHARED, env.fd, offset)
        assert ei.value.errno == want
        assert p.mm.vmas == () and len(p.mm.pgtable) == 0
        assert env.file.f_count == 1 and exp.mmap_calls == [] and not k.tainted
        return
    addr = p.mmap(0, length, RW, SHARED, env.fd, offset)
    npages = -(-(length % U64) // PAGE)
    (vma,) = p.mm.vmas
    assert (vma.vm_start, vma.vm_end) == (addr, addr + npages * PAGE)
    assert vma.vm_file is env.file and env.file.f_count == 2
    assert len(exp.mmap_calls) == 1
    if mode == "remap":
        assert len(p.mm.pgtable) == npages
        for i in (0, npages - 1):
            assert pte_pfn(p.mm.pgtable.get((addr // PAGE) + i)) == exp.pfn(pgoff + i)
    else:
        assert vma.vm_pgoff == pgoff and len(p.mm.pgtable) == 0
    for i in (0, npages - 1):
        assert p.read_memory(addr + i * PAGE, 3) == b"P" + (pgoff + i).to_bytes(2, "little")


def importer_oracle(
    spec: str, size: int, pgoff: int, npages: int, fails: bool
) -> tuple[str | int, tuple[int, int]]:
    """(outcome, (importer delta, dma-buf delta)) for a forwarded mmap (§2.6, §4.3)."""
    if pgoff + npages > ULONG_MAX:
        return errno.EOVERFLOW, (0, 0)  # R20: unsigned wrap
    if pgoff + npages > size // PAGE:
        return errno.EINVAL, (0, 0)  # R20: past the end
    if fails:
        return errno.ENOMEM, ((-1, +1) if spec in OLD_SWAP else (0, 0))  # R23 / R24
    return OK, (0, +1)  # R22: the vma's reference moved to the dma-buf file


@st.composite
def forwarded_requests(draw: st.DrawFn) -> tuple[int, int, int]:
    """(size, pgoff, npages): half the time anything, half the time near the buffer's end."""
    size = draw(sizes)
    if draw(st.booleans()):
        pgoff = draw(
            st.one_of(
                st.integers(0, 70),
                st.integers(ULONG_MAX - 100, ULONG_MAX),
                st.integers(0, ULONG_MAX),
            )
        )
        return size, pgoff, draw(st.integers(1, 70))
    last = size // PAGE
    pgoff = draw(st.integers(0, last + 1))
    return size, pgoff, draw(st.integers(1, max(1, last - pgoff + 1)))


@more
@given(
    spec=st.sampled_from(["rfc-2012", "v3.5", "v6.1", "v6.12", "latest"]),
    req=forwarded_requests(),
    user_pgoff=st.integers(0, 1 << 20),
    fails=st.booleans(),
)
@example(spec="v3.5", req=(4 * PAGE, 0, 1), user_pgoff=0, fails=True)  # R23
@example(spec="v6.1", req=(4 * PAGE, ULONG_MAX, 1), user_pgoff=3, fails=False)  # R20
def test_property_dma_buf_mmap_matches_oracle(
    kit: SimpleNamespace, spec: str, req: tuple[int, int, int], user_pgoff: int, fails: bool
) -> None:
    """Property (R20, R22-R24): an importer forwarding mmap(2) with any pgoff gets -EOVERFLOW on
    unsigned wrap and -EINVAL past the floored end, both leaving vm_file/vm_pgoff untouched;
    otherwise vm_file/vm_pgoff are re-pointed and the references move as the spec says."""
    size, pgoff, npages = req
    env = kit.new_env(spec, size, mode="fault", mmap_errno=errno.ENOMEM if fails else 0)
    p = env.proc
    imp = kit.Importer(env.kernel, env.dmabuf, pgoff)
    ifd = p.open(kit.IMPORTER_PATH, os.O_RDWR)
    p.dup(ifd)  # a second holder, so R23's double put cannot free the importer's file
    ifile = p.file(ifd)
    want, (d_imp, d_buf) = importer_oracle(spec, size, pgoff, npages, fails)
    event(f"outcome={want if isinstance(want, str) else errno.errorcode[want]}")
    if want == OK:
        addr = p.mmap(0, npages * PAGE, RW, SHARED, ifd, user_pgoff * PAGE)
        vma = p.mm.vma_lookup(addr)
        assert vma.vm_file is env.file and vma.vm_pgoff == pgoff
    else:
        with pytest.raises(OSError) as ei:
            p.mmap(0, npages * PAGE, RW, SHARED, ifd, user_pgoff * PAGE)
        assert ei.value.errno == want
        assert p.mm.vmas == () and len(p.mm.pgtable) == 0
        (r,) = imp.results
        assert r["ret"] == -want
        if want in (errno.EOVERFLOW, errno.EINVAL):
            assert r["file_after"] is ifile and r["pgoff_after"] == user_pgoff
            assert env.exp.mmap_calls == []
        else:
            assert len(env.exp.mmap_calls) == 1
    assert (ifile.f_count - 2, env.file.f_count - 1) == (d_imp, d_buf)
    assert not env.kernel.tainted


# -- 3. reference counting -----------------------------------------------------------------

OPS = ("dup", "close", "mmap", "munmap_page", "munmap_all", "fork", "exit", "get", "get_fd", "put")


class RefcountModel:
    """Applies one op to the simulated machine and to an independent holder model.

    The model knows, per process, which fds name the dma-buf and which address ranges are
    one dma-buf vma each (exporter vmas are VM_PFNMAP/VM_IO so they never merge), plus the
    number of kernel references taken with get_dma_buf/dma_buf_get.
    """

    def __init__(self, kit: SimpleNamespace, spec: str, mode: str, npages: int) -> None:
        self.kit = kit
        self.env = kit.new_env(spec, npages * PAGE, mode=mode)
        self.npages = npages
        self.k, self.file, self.exp = self.env.kernel, self.env.file, self.env.exp
        self.fds: dict[int, list[int]] = {self.env.proc.pid: [self.env.fd]}
        self.maps: dict[int, list[tuple[int, int]]] = {self.env.proc.pid: []}
        self.kernel_refs = 0

    def total(self) -> int:
        return (
            sum(len(v) for v in self.fds.values())
            + sum(len(v) for v in self.maps.values())
            + self.kernel_refs
        )

    def _pick(self, items: list[Any], sel: int) -> Any:
        return items[sel % len(items)] if items else None

    def apply(self, op: str, sel: int) -> str:
        """Run ``op``; returns what was done ("" if it did not apply)."""
        with_fd = [pid for pid in sorted(self.fds) if self.fds[pid]]
        with_map = [pid for pid in sorted(self.maps) if self.maps[pid]]
        k = self.k
        if op == "dup" and with_fd:
            pid = self._pick(with_fd, sel)
            self.fds[pid].append(k.processes[pid].dup(self._pick(self.fds[pid], sel >> 4)))
        elif op == "close" and with_fd:
            pid = self._pick(with_fd, sel)
            fd = self.fds[pid].pop((sel >> 4) % len(self.fds[pid]))
            k.processes[pid].close(fd)
        elif op == "mmap" and with_fd:
            pid = self._pick(with_fd, sel)
            p = k.processes[pid]
            first = (sel >> 4) % self.npages
            n = 1 + (sel >> 8) % (self.npages - first)
            addr = p.mmap(
                0, n * PAGE, RW, SHARED, self._pick(self.fds[pid], sel >> 12), first * PAGE
            )
            self.maps[pid].append((addr, addr + n * PAGE))
            p.read_memory(addr + (n - 1) * PAGE, 1)
        elif op == "munmap_page" and with_map:
            pid = self._pick(with_map, sel)
            start, end = self.maps[pid].pop((sel >> 4) % len(self.maps[pid]))
            a = start + ((sel >> 8) % ((end - start) // PAGE)) * PAGE
            k.processes[pid].munmap(a, PAGE)  # removes, shrinks or splits the vma (R19)
            self.maps[pid] += [r for r in ((start, a), (a + PAGE, end)) if r[0] < r[1]]
        elif op == "munmap_all" and with_map:
            pid = self._pick(with_map, sel)
            start, end = self.maps[pid].pop((sel >> 4) % len(self.maps[pid]))
            k.processes[pid].munmap(start, end - start)
        elif op == "fork" and self.fds and len(self.fds) < 4:
            pid = self._pick(sorted(self.fds), sel)
            child = k.processes[pid].fork()
            self.fds[child.pid] = list(self.fds[pid])
            self.maps[child.pid] = list(self.maps[pid])
        elif op == "exit" and len(self.fds) > 1:  # keep one process: longer histories
            pid = self._pick(sorted(self.fds), sel)
            k.processes[pid].exit()
            del self.fds[pid], self.maps[pid]
        elif op == "get":
            get_dma_buf(self.env.dmabuf)
            self.kernel_refs += 1
        elif op == "get_fd" and with_fd:
            pid = self._pick(with_fd, sel)
            with k.running(k.processes[pid]):
                assert dma_buf_get(k, self._pick(self.fds[pid], sel >> 4)) is self.env.dmabuf
            self.kernel_refs += 1
        elif op == "put" and self.kernel_refs:
            dma_buf_put(self.env.dmabuf)
            self.kernel_refs -= 1
        else:
            return ""
        return op

    def check(self) -> None:
        total = self.total()
        assert self.kit.holders(self.k, self.file, self.kernel_refs) == total
        if total:
            assert self.file.f_count == total
            assert self.exp.release_calls == 0 and not self.file.released
            assert self.k.dma_bufs == [self.env.dmabuf]
        else:
            assert self.file.f_count == 0 and self.file.released
            assert self.exp.release_calls == 1
            assert self.k.dma_bufs == []


@more
@given(
    spec=st.sampled_from(["v3.5", "v6.1", "v6.12", "latest"]),
    mode=st.sampled_from(["remap", "fault"]),
    npages=st.integers(1, 6),
    ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2**16)), min_size=10, max_size=40),
    teardown=st.permutations(["close", "munmap_page", "put"]),
)
def test_property_refcount_equals_holders(
    kit: SimpleNamespace,
    spec: str,
    mode: str,
    npages: int,
    ops: list[tuple[str, int]],
    teardown: list[str],
) -> None:
    """Property (R16-R19): after any sequence of dup/close/mmap/munmap (whole or one page)/
    fork/exit/get_dma_buf/dma_buf_get/dma_buf_put, the dma-buf file's count equals its
    holders (fds in every process + vmas whose vm_file it is + kernel references), and
    ops->release has run exactly once iff that number reached zero — and never again."""
    m = RefcountModel(kit, spec, mode, npages)
    m.check()
    done = [m.apply("mmap", 0), m.apply("dup", 0)]  # start from an fd, a dup and a mapping
    m.check()
    for op, sel in ops:
        if not m.total():
            break
        done.append(m.apply(op, sel))
        m.check()
    # then let every holder go, in a drawn order; release must come with the last one
    for what in teardown:
        while m.total() and m.apply(what, 0):
            m.check()
    assert m.total() == 0
    m.check()
    event(f"ops applied: {sum(1 for d in done if d) // 10 * 10}+")
    event(f"processes at the end: {len(m.fds)}")
    for d in set(done) - {""}:
        event(f"did {d}")
    m.check()
