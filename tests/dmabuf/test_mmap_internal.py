"""mmap(2) of a dma-buf fd: dma_buf_mmap_internal per spec (R1, R2, R10, R25-R27, R60-R62).

kernel-spec §1, §2.5, §4.2, §5.2.
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest

from dmabuf_sim.dma_buf import dma_buf_fd
from dmabuf_sim.errors import KernelOops
from dmabuf_sim.mm.memory import unmap_mapping_range
from dmabuf_sim.mm.pgtable import pte_pfn
from dmabuf_sim.uapi import DMA_BUF_IOCTL_SYNC, DmaBufSync

MAPPABLE = ["v3.5", "v6.1", "v6.12", "latest"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
RW = 3
SHARED = 1
PRIVATE = 2


def assert_untouched(env: SimpleNamespace, count: int = 1) -> None:
    p = env.proc
    assert p.mm.vmas == ()
    assert len(p.mm.pgtable) == 0
    assert env.file.f_count == count
    assert env.exp.release_calls == 0


# -- R1 / R2: the bound, in whole pages -------------------------------------------------


@pytest.mark.parametrize("spec", MAPPABLE)
@pytest.mark.parametrize(
    ("offset_pages", "length_pages", "ok"),
    [
        (0, 4, True),
        (3, 1, True),
        (1, 3, True),
        (0, 5, False),
        (4, 1, False),
        (3, 2, False),
        (100, 1, False),
    ],
)
def test_r1_mmap_past_the_end_fails_einval(
    kit: SimpleNamespace, spec: str, offset_pages: int, length_pages: int, ok: bool
) -> None:
    """R1: vm_pgoff + len/PAGE > size >> PAGE_SHIFT → EINVAL; nothing survives."""
    env = kit.new_env(spec, 4 * PAGE)
    p = env.proc
    if ok:
        addr = p.mmap(0, length_pages * PAGE, RW, SHARED, env.fd, offset_pages * PAGE)
        assert len(env.exp.mmap_calls) == 1
        assert [v.vm_start for v in p.mm.vmas] == [addr]
        assert env.file.f_count == 2
    else:
        with pytest.raises(OSError) as ei:
            p.mmap(0, length_pages * PAGE, RW, SHARED, env.fd, offset_pages * PAGE)
        assert ei.value.errno == errno.EINVAL
        assert env.exp.mmap_calls == []  # the core rejected it, not the exporter
        assert_untouched(env)


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r2_6000_byte_buffer_maps_one_page_not_two(kit: SimpleNamespace, spec: str) -> None:
    """R2: the bound uses the floored page count: a 6000-byte buffer maps 1 page; a 2-page
    mapping (also a 6000-byte length, which PAGE_ALIGNs to 2 pages) fails EINVAL."""
    env = kit.new_env(spec, 6000)
    p = env.proc
    for length in (2 * PAGE, 6000, PAGE + 1):
        with pytest.raises(OSError) as ei:
            p.mmap(0, length, RW, SHARED, env.fd, 0)
        assert ei.value.errno == errno.EINVAL
        assert_untouched(env)
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, RW, SHARED, env.fd, PAGE)  # the partial second page
    assert ei.value.errno == errno.EINVAL
    addr = p.mmap(0, PAGE, RW, SHARED, env.fd, 0)
    assert p.mm.vma_lookup(addr).vm_end == addr + PAGE
    addr2 = p.mmap(0, 100, RW, SHARED, env.fd, 0)  # 100 bytes = 1 page
    assert p.mm.vma_lookup(addr2).vm_end == addr2 + PAGE


@pytest.mark.parametrize("spec", MAPPABLE)
@pytest.mark.parametrize("size", [1, 100, 4095])
def test_r2_buffer_smaller_than_a_page_cannot_be_mapped(
    kit: SimpleNamespace, spec: str, size: int
) -> None:
    """R2: a dma-buf smaller than one page can never be mapped (EINVAL)."""
    env = kit.new_env(spec, size)
    for length in (1, size, PAGE):
        with pytest.raises(OSError) as ei:
            env.proc.mmap(0, length, RW, SHARED, env.fd, 0)
        assert ei.value.errno == errno.EINVAL
    assert_untouched(env)


# -- R10 / R62 / R61: the specs without a (working) mmap ------------------------------


def test_r10_r62_v34_mmap_fails_enodev(kit: SimpleNamespace) -> None:
    """R10/R62: Linux 3.4's dma_buf_fops has no .mmap: mmap(2) fails ENODEV."""
    env = kit.new_env("v3.4", 4 * PAGE)
    for flags in (SHARED, PRIVATE):
        with pytest.raises(OSError) as ei:
            env.proc.mmap(0, PAGE, RW, flags, env.fd, 0)
        assert ei.value.errno == errno.ENODEV
    assert_untouched(env)


def test_r10_v34_checks_before_enodev_still_win(kit: SimpleNamespace) -> None:
    """R10 with R3/R4: unaligned offset and zero length are rejected before ENODEV."""
    env = kit.new_env("v3.4", 4 * PAGE)
    with pytest.raises(OSError) as ei:
        env.proc.mmap(0, PAGE, RW, SHARED, env.fd, 1)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        env.proc.mmap(0, 0, RW, SHARED, env.fd, 0)
    assert ei.value.errno == errno.EINVAL


@pytest.mark.parametrize(("length", "offset"), [(PAGE, 0), (4 * PAGE, 0), (PAGE, 100 * PAGE)])
def test_r61_rfc_mmap_is_an_oops_not_an_errno(
    kit: SimpleNamespace, length: int, offset: int
) -> None:
    """R61: under the RFC as posted, any mmap that reaches dma_buf_mmap_internal oopses
    (uninitialised dmabuf pointer) — in range or not, never an OSError; the kernel is tainted."""
    env = kit.new_env("rfc-2012", 4 * PAGE)
    assert not env.kernel.tainted
    with pytest.raises(KernelOops) as ei:
        env.proc.mmap(0, length, RW, SHARED, env.fd, offset)
    assert ei.value.rule == "R61"
    assert ei.value.func == "dma_buf_mmap_internal"
    assert env.kernel.tainted
    assert env.exp.mmap_calls == []


def test_r61_rfc_vfs_errors_still_come_first(kit: SimpleNamespace) -> None:
    """R61 scope: the VFS checks before f_op->mmap still give clean errnos under rfc-2012."""
    env = kit.new_env("rfc-2012", 4 * PAGE)
    p = env.proc
    for length, off, err in ((PAGE, 1, errno.EINVAL), (0, 0, errno.EINVAL), (-1, 0, errno.ENOMEM)):
        with pytest.raises(OSError) as ei:
            p.mmap(0, length, RW, SHARED, env.fd, off)
        assert ei.value.errno == err
    assert not env.kernel.tainted


# -- a successful mapping ------------------------------------------------------------------


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r60_r36_remap_exporter_maps_pages_at_vm_pgoff(kit: SimpleNamespace, spec: str) -> None:
    """R60/R36: after dma_buf_mmap_internal the exporter indexes pages by the user's page
    offset; a remap exporter has every PTE present before mmap(2) returns."""
    env = kit.new_env(spec, 8 * PAGE)
    k, p, exp = env.kernel, env.proc, env.exp
    for i in range(8):
        k.mem.write(exp.pfn(i) * PAGE, f"page {i}".encode())
    addr = p.mmap(0, 3 * PAGE, RW, SHARED, env.fd, 2 * PAGE)
    assert exp.mmap_calls[0].vm_start == addr
    assert len(p.mm.pgtable) == 3
    for i in range(3):
        assert pte_pfn(p.mm.pgtable.get((addr >> 12) + i)) == exp.pfn(2 + i)
        assert p.read_memory(addr + i * PAGE, 6) == f"page {2 + i}".encode()


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r60_fault_exporter_sees_vm_pgoff(kit: SimpleNamespace, spec: str) -> None:
    """R60: vm_pgoff is the user's page offset; the fault handler gets pgoff + index."""
    env = kit.new_env(spec, 8 * PAGE, mode="fault")
    p, exp = env.proc, env.exp
    env.kernel.mem.write(exp.pfn(6) * PAGE, b"six")
    addr = p.mmap(0, 3 * PAGE, RW, SHARED, env.fd, 5 * PAGE)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_pgoff == 5
    assert len(p.mm.pgtable) == 0
    assert p.read_memory(addr + PAGE, 3) == b"six"
    assert exp.faults == [6]


@pytest.mark.parametrize("spec", MAPPABLE)
@pytest.mark.parametrize("err", [errno.ENOMEM, errno.EPERM, errno.EAGAIN])
def test_exporter_mmap_error_reaches_userspace_and_leaves_nothing(
    kit: SimpleNamespace, spec: str, err: int
) -> None:
    """§2.5/§4.2: ops->mmap's return value is mmap(2)'s; the failed vma leaves no trace."""
    env = kit.new_env(spec, 4 * PAGE, mmap_errno=err)
    with pytest.raises(OSError) as ei:
        env.proc.mmap(0, PAGE, RW, SHARED, env.fd, 0)
    assert ei.value.errno == err
    assert len(env.exp.mmap_calls) == 1
    assert_untouched(env)


@pytest.mark.parametrize("spec", MODERN)
def test_fault_exporter_rejecting_private_maps_einval(kit: SimpleNamespace, spec: str) -> None:
    """R57-style exporter: MAP_PRIVATE rejected by ops->mmap → EINVAL, nothing left."""
    env = kit.new_env(spec, 4 * PAGE, mode="fault")
    with pytest.raises(OSError) as ei:
        env.proc.mmap(0, PAGE, RW, PRIVATE, env.fd, 0)
    assert ei.value.errno == errno.EINVAL
    assert len(env.exp.mmap_calls) == 1
    assert_untouched(env)


# -- R25-R27: whose address_space the vma is linked into ---------------------------------


def _two_buffers(kit: SimpleNamespace, spec: str) -> SimpleNamespace:
    """Two buffers A and B in one kernel, each mapped (fault mode) and touched."""
    k = kit.make_kernel(spec)
    p = k.spawn("two")
    bufs = []
    for _ in range(2):
        exp = kit.TestExporter(k, 4 * PAGE, mode="fault")
        db = kit.export(k, exp, 4 * PAGE)
        with k.running(p):
            fd = dma_buf_fd(db, 0)
        addr = p.mmap(0, 4 * PAGE, RW, SHARED, fd, 0)
        p.read_memory(addr, 1)
        p.read_memory(addr + 3 * PAGE, 1)
        bufs.append(SimpleNamespace(exp=exp, db=db, fd=fd, addr=addr))
    return SimpleNamespace(k=k, p=p, a=bufs[0], b=bufs[1])


def _ptes(p: object, addr: int) -> int:
    return sum(1 for i in range(4) if p.mm.pgtable.get((addr >> 12) + i) is not None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", ["v3.5"])
def test_r26_shared_anon_inode_shootdown_hits_every_buffer(kit: SimpleNamespace, spec: str) -> None:
    """R26/R56: with the shared anon inode, unmap_mapping_range on A's f_mapping zaps B's
    PTEs too; the next access refaults through B's exporter."""
    t = _two_buffers(kit, spec)
    assert (_ptes(t.p, t.a.addr), _ptes(t.p, t.b.addr)) == (2, 2)
    n = unmap_mapping_range(t.a.db.file.f_mapping, 0, 4 * PAGE, 1)
    assert n == 4
    assert (_ptes(t.p, t.a.addr), _ptes(t.p, t.b.addr)) == (0, 0)
    faults_before = len(t.b.exp.faults)
    t.p.read_memory(t.b.addr, 1)
    assert len(t.b.exp.faults) == faults_before + 1


@pytest.mark.parametrize("spec", MODERN)
def test_r27_per_buffer_inode_shootdown_hits_only_that_buffer(
    kit: SimpleNamespace, spec: str
) -> None:
    """R27: with per-buffer inodes, unmap_mapping_range on A's f_mapping never zaps B."""
    t = _two_buffers(kit, spec)
    n = unmap_mapping_range(t.a.db.file.f_mapping, 0, 4 * PAGE, 1)
    assert n == 2
    assert (_ptes(t.p, t.a.addr), _ptes(t.p, t.b.addr)) == (0, 2)
    assert t.a.db.file.f_mapping.mapped_vmas() == [t.p.mm.vma_lookup(t.a.addr)]


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r25_vma_linked_into_mapping_of_the_file_left_in_vm_file(
    kit: SimpleNamespace, spec: str
) -> None:
    """R25: an exporter that swaps vm_file to its own file gets the vma linked into its own
    address_space: shooting down through it zaps, through the dma-buf file's does not.
    References: the dma-buf file gains none, the exporter's file gains one (the vma's)."""
    env = kit.new_env(spec, 4 * PAGE, mode="fault", swap_file=True)
    p, own = env.proc, env.exp.own_file
    assert own.f_count == 1
    addr = p.mmap(0, 4 * PAGE, RW, SHARED, env.fd, 0)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is own
    assert (env.file.f_count, own.f_count) == (1, 2)
    assert own.f_mapping.mapped_vmas() == [vma]
    assert vma not in env.file.f_mapping.mapped_vmas()
    p.read_memory(addr, 1)
    p.read_memory(addr + PAGE, 1)
    assert unmap_mapping_range(env.file.f_mapping, 0, 0, 1) == 0
    assert len(p.mm.pgtable) == 2
    assert unmap_mapping_range(own.f_mapping, 0, 0, 1) == 2
    assert len(p.mm.pgtable) == 0
    # closing the dma-buf fd now releases the buffer even though the mapping lives on
    p.close(env.fd)
    assert env.exp.release_calls == 1
    p.munmap(addr, 4 * PAGE)
    assert own.f_count == 1


@pytest.mark.parametrize("spec", ["v3.5"])
def test_r26_swapped_vm_file_escapes_the_shared_shootdown(kit: SimpleNamespace, spec: str) -> None:
    """R26 "unless the exporter replaced vm_file": a swapped vma is not in the anon inode's
    i_mmap, so a shoot-down through another dma-buf's f_mapping leaves it alone."""
    env = kit.new_env(spec, 4 * PAGE, mode="fault", swap_file=True)
    p = env.proc
    addr = p.mmap(0, 4 * PAGE, RW, SHARED, env.fd, 0)
    p.read_memory(addr, 1)
    other = kit.export(env.kernel, kit.TestExporter(env.kernel, PAGE), PAGE)
    assert other.file.f_mapping is env.file.f_mapping
    assert unmap_mapping_range(other.file.f_mapping, 0, 0, 1) == 0
    assert len(p.mm.pgtable) == 1


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("v3.5", "anon_inode:dmabuf"),
        ("v6.1", "/dmabuf:"),
        ("v6.12", "/dmabuf:"),
        ("latest", "/dmabuf:"),
    ],
)
def test_maps_names_the_dmabuf(kit: SimpleNamespace, spec: str, name: str) -> None:
    """§2.1/§4.1: /proc/pid/maps shows anon_inode:dmabuf (old) or /dmabuf:<name> (modern)."""
    env = kit.new_env(spec, 4 * PAGE, mode="fault")
    addr = env.proc.mmap(0, 2 * PAGE, RW, SHARED, env.fd, PAGE)
    line = env.proc.maps().splitlines()[0]
    assert line.startswith(f"{addr:08x}-{addr + 2 * PAGE:08x} rw-s 00001000 ")
    assert line.split()[-1] == name
    assert line.split()[4] == str(env.file.f_inode.i_ino)


@pytest.mark.parametrize("spec", MAPPABLE)
def test_readonly_export_shared_mapping_is_read_only(kit: SimpleNamespace, spec: str) -> None:
    """R7 through the dma-buf core: an O_RDONLY export cannot be mapped PROT_WRITE|MAP_SHARED
    (EACCES, before ->mmap); PROT_READ works."""
    env = kit.new_env(spec, 2 * PAGE, flags=os.O_RDONLY)
    with pytest.raises(OSError) as ei:
        env.proc.mmap(0, PAGE, RW, SHARED, env.fd, 0)
    assert ei.value.errno == errno.EACCES
    assert env.exp.mmap_calls == []
    addr = env.proc.mmap(0, PAGE, 1, SHARED, env.fd, 0)
    assert env.proc.read_memory(addr, 1) == b"\0"


def test_r62_linux_3_4_in_one_go(kit: SimpleNamespace) -> None:
    """R62: in Linux 3.4 proper, mmap fails ENODEV, lseek ESPIPE and a dma-buf ioctl ENOTTY,
    while the fd itself works (fdinfo, dup, close releases once)."""
    env = kit.new_env("v3.4", 4 * PAGE)
    p = env.proc
    errs = []
    for call in (
        lambda: p.mmap(0, PAGE, RW, SHARED, env.fd, 0),
        lambda: p.lseek(env.fd, 0, os.SEEK_END),
        lambda: p.ioctl(env.fd, DMA_BUF_IOCTL_SYNC, DmaBufSync(1)),
    ):
        with pytest.raises(OSError) as ei:
            call()
        errs.append(ei.value.errno)
    assert errs == [errno.ENODEV, errno.ESPIPE, errno.ENOTTY]
    fd2 = p.dup(env.fd)
    p.close(env.fd)
    assert env.exp.release_calls == 0
    p.close(fd2)
    assert env.exp.release_calls == 1 and env.exp.calls[-1][0] == "release"
