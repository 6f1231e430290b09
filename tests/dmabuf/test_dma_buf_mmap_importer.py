"""dma_buf_mmap(): an importer forwarding its own mmap to the exporter (R20-R24).

The seed's second use case: a driver's ``f_op->mmap`` calls
``dma_buf_mmap(dmabuf, vma, pgoff)``.  kernel-spec §2.6, §4.3, §5.2.
"""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim.dma_buf import dma_buf_mmap
from dmabuf_sim.mm.vma import VmAreaStruct

RFC_AND_LATER = ["rfc-2012", "v3.5", "v6.1", "v6.12", "latest"]
MAPPABLE = ["v3.5", "v6.1", "v6.12", "latest"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096
RW = 3
SHARED = 1
ULONG_MAX = 2**64 - 1


def setup(
    kit: SimpleNamespace, spec: Any, size: int = 4 * PAGE, pgoff: int | None = None, **kw: Any
) -> SimpleNamespace:
    env = kit.new_env(spec, size, mode=kw.pop("mode", "fault"), **kw)
    imp = kit.Importer(env.kernel, env.dmabuf, pgoff)
    ifd = env.proc.open(kit.IMPORTER_PATH, os.O_RDWR)
    return SimpleNamespace(**vars(env), imp=imp, ifd=ifd, ifile=env.proc.file(ifd))


# -- R22: success ----------------------------------------------------------------------


@pytest.mark.parametrize("spec", RFC_AND_LATER)
def test_r22_success_repoints_vm_file_and_pgoff(kit: SimpleNamespace, spec: str) -> None:
    """R22: vm_file becomes the dma-buf file, vm_pgoff the pgoff argument; relative to before
    mmap(2) the importer's file count is unchanged (its vma reference was dropped) and the
    dma-buf file gained the vma's reference."""
    t = setup(kit, spec, 8 * PAGE)
    p = t.proc
    addr = p.mmap(0, 2 * PAGE, RW, SHARED, t.ifd, 3 * PAGE)
    (r,) = t.imp.results
    assert r["ret"] == 0
    assert r["file_before"] is t.ifile and r["pgoff_before"] == 3
    assert r["file_after"] is t.file and r["pgoff_after"] == 3
    # inside the call: the importer's file lost the vma's reference, the dma-buf gained one
    (ib, db), (ia, da) = r["counts_before"], r["counts_after"]
    assert (ia - ib, da - db) == (-1, +1)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is t.file and vma.vm_pgoff == 3
    assert (t.ifile.f_count, t.file.f_count) == (1, 2)
    assert vma in t.file.f_mapping.mapped_vmas()
    assert vma not in t.ifile.f_mapping.mapped_vmas()
    # the exporter's page 3 + 1, seen through the CPU cache
    p.write_memory(addr + PAGE, b"via importer")
    assert t.kernel.cache.load(t.exp.pfn(4) * PAGE, 12) == b"via importer"
    assert t.exp.faults == [4]
    assert p.maps().split()[-1] == t.file.path()


@pytest.mark.parametrize("spec", RFC_AND_LATER)
def test_r22_importer_chosen_pgoff_replaces_the_users(kit: SimpleNamespace, spec: str) -> None:
    """R22: a driver passing its own pgoff (0, like drm_gem_shmem) resets vm_pgoff to it."""
    t = setup(kit, spec, 4 * PAGE, pgoff=0)
    addr = t.proc.mmap(0, PAGE, RW, SHARED, t.ifd, 0x100000 * PAGE)  # a "fake offset"
    assert t.proc.mm.vma_lookup(addr).vm_pgoff == 0
    t.proc.read_memory(addr, 1)
    assert t.exp.faults == [0]


@pytest.mark.parametrize("spec", RFC_AND_LATER)
def test_r22_then_munmap_and_close_balance(kit: SimpleNamespace, spec: str) -> None:
    """R22/R17: the forwarded vma's reference is on the dma-buf file: munmap returns it;
    ops->release runs once when the last holder goes."""
    t = setup(kit, spec)
    p = t.proc
    addr = p.mmap(0, 4 * PAGE, RW, SHARED, t.ifd, 0)
    p.close(t.fd)
    assert t.file.f_count == 1 and t.exp.release_calls == 0
    p.munmap(addr, 4 * PAGE)
    assert t.exp.release_calls == 1
    assert t.ifile.f_count == 1
    p.close(t.ifd)
    assert t.ifile.released


@pytest.mark.parametrize("spec", MAPPABLE)
def test_r22_exporter_may_swap_vm_file_again(kit: SimpleNamespace, spec: str) -> None:
    """R22 "unless the exporter swapped it again": the exporter's own file ends in vm_file,
    the dma-buf file's extra reference is dropped again, the vma links into the exporter's
    address_space."""
    t = setup(kit, spec, swap_file=True)
    own = t.exp.own_file
    addr = t.proc.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    vma = t.proc.mm.vma_lookup(addr)
    assert vma.vm_file is own
    assert (t.ifile.f_count, t.file.f_count, own.f_count) == (1, 1, 2)
    assert own.f_mapping.mapped_vmas() == [vma]


# -- R20 / R21: rejected before anything changes -------------------------------------------


@pytest.mark.parametrize("spec", RFC_AND_LATER)
@pytest.mark.parametrize(
    ("pgoff", "npages", "err"),
    [
        (ULONG_MAX, 1, errno.EOVERFLOW),
        (ULONG_MAX - 1, 2, errno.EOVERFLOW),
        (ULONG_MAX - 1, 1, errno.EINVAL),  # sum is ULONG_MAX: no wrap, but past the end
        (4, 1, errno.EINVAL),
        (3, 2, errno.EINVAL),
        (0, 5, errno.EINVAL),
    ],
)
def test_r20_overflow_and_bounds_leave_the_vma_untouched(
    kit: SimpleNamespace, spec: str, pgoff: int, npages: int, err: int
) -> None:
    """R20: pgoff + npages wrapping → -EOVERFLOW; past the buffer → -EINVAL; vm_file and
    vm_pgoff untouched; mmap(2) fails with that errno and leaves no vma or reference."""
    t = setup(kit, spec, 4 * PAGE, pgoff=pgoff)
    p = t.proc
    with pytest.raises(OSError) as ei:
        p.mmap(0, npages * PAGE, RW, SHARED, t.ifd, 7 * PAGE)
    assert ei.value.errno == err
    (r,) = t.imp.results
    assert r["ret"] == -err
    assert r["file_after"] is t.ifile and r["pgoff_after"] == 7
    assert t.exp.mmap_calls == []
    assert p.mm.vmas == () and len(p.mm.pgtable) == 0
    assert (t.ifile.f_count, t.file.f_count) == (1, 1)
    assert not t.kernel.tainted


@pytest.mark.parametrize("spec", RFC_AND_LATER)
def test_r20_direct_call_on_a_huge_vma(kit: SimpleNamespace, spec: str) -> None:
    """R20 with a vma too large for any process: the overflow check is done on the pages
    of the vma, in unsigned long arithmetic."""
    t = setup(kit, spec)
    mm = t.proc.mm
    vma = VmAreaStruct(mm, 0, 2**63, 0x3B, 0, 5, vm_file=t.ifile)
    assert dma_buf_mmap(t.dmabuf, vma, ULONG_MAX - 2**51 + 1) == -errno.EOVERFLOW
    assert dma_buf_mmap(t.dmabuf, vma, ULONG_MAX - 2**51) == -errno.EINVAL
    assert vma.vm_file is t.ifile and vma.vm_pgoff == 5
    assert t.file.f_count == 1 and t.ifile.f_count == 1


@pytest.mark.parametrize("spec", RFC_AND_LATER)
def test_r21_null_dmabuf_or_vma_is_einval_with_warn(kit: SimpleNamespace, spec: str) -> None:
    """R21: dma_buf_mmap(NULL, vma, ..) and (dmabuf, NULL, ..) → -EINVAL and a WARN."""
    t = setup(kit, spec)
    t.imp.dmabuf = None
    with pytest.raises(OSError) as ei:
        t.proc.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    assert ei.value.errno == errno.EINVAL
    assert t.kernel.warnings == ["dma_buf_mmap: WARN_ON(!dmabuf || !vma)"]
    assert t.imp.results[0]["file_after"] is t.ifile
    assert t.ifile.f_count == 1 and t.proc.mm.vmas == ()
    assert dma_buf_mmap(t.dmabuf, None, 0) == -errno.EINVAL
    assert t.kernel.warnings == ["dma_buf_mmap: WARN_ON(!dmabuf || !vma)"] * 2
    assert t.file.f_count == 1


# -- R23 / R24: the exporter's mmap fails inside dma_buf_mmap ----------------------------


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.5"])
def test_r23_v35_failure_puts_importer_twice_and_leaks_dmabuf(
    kit: SimpleNamespace, spec: str
) -> None:
    """R23: the 3.5-3.8 bug.  Relative to before mmap(2): the importer's file has one
    reference fewer (put by dma_buf_mmap and again by mmap_region's error path), the dma-buf
    file one more (dma_buf_mmap's get_file is never put)."""
    t = setup(kit, spec, mmap_errno=errno.ENOMEM)
    p = t.proc
    ifd2 = p.dup(t.ifd)  # keep the importer's file alive through the double put
    assert (t.ifile.f_count, t.file.f_count) == (2, 1)
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    assert ei.value.errno == errno.ENOMEM
    assert len(t.exp.mmap_calls) == 1
    assert (t.ifile.f_count, t.file.f_count) == (1, 2)
    assert p.mm.vmas == () and len(p.mm.pgtable) == 0
    # the leak: closing every fd does not release the buffer
    p.close(t.fd)
    assert t.exp.release_calls == 0 and t.kernel.dma_bufs == [t.dmabuf]
    # and the importer's file dies one close early
    p.close(ifd2)
    assert t.ifile.released and p.file(t.ifd) is t.ifile


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.5"])
def test_r23_single_importer_fd_file_is_freed_under_it(kit: SimpleNamespace, spec: str) -> None:
    """R23 consequence: with a single fd the importer's file count reaches 0 inside mmap(2)
    although the fd still names it (the use-after-free the 3.9 fix closed)."""
    t = setup(kit, spec, mmap_errno=errno.EIO)
    with pytest.raises(OSError) as ei:
        t.proc.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    assert ei.value.errno == errno.EIO
    assert t.ifile.f_count == 0 and t.ifile.released
    assert t.proc.file(t.ifd) is t.ifile


@pytest.mark.parametrize("spec", MODERN)
def test_r24_modern_failure_balances(kit: SimpleNamespace, spec: str) -> None:
    """R24: vma_set_file + mmap_region fputting vma->vm_file: every count balances."""
    t = setup(kit, spec, mmap_errno=errno.ENOMEM)
    p = t.proc
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    assert ei.value.errno == errno.ENOMEM
    assert t.imp.results[0]["file_after"] is t.file  # no restore: the vma keeps the dma-buf
    assert (t.ifile.f_count, t.file.f_count) == (1, 1)
    assert p.mm.vmas == ()
    p.close(t.fd)
    assert t.exp.release_calls == 1
    p.close(t.ifd)
    assert t.ifile.released


def test_r23_restore_on_error_what_if_3_9(kit: SimpleNamespace) -> None:
    """R23 fixed the 3.9 way (custom spec): restore vm_file on failure → balanced; success
    still drops the importer's reference."""
    spec = kit.custom("v3.5", dma_buf_mmap_swap="restore_on_error")
    t = setup(kit, spec, mmap_errno=errno.ENOMEM)
    with pytest.raises(OSError) as ei:
        t.proc.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    assert ei.value.errno == errno.ENOMEM
    assert t.imp.results[0]["file_after"] is t.ifile  # restored
    assert (t.ifile.f_count, t.file.f_count) == (1, 1)
    t.exp.mmap_errno = 0
    addr = t.proc.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    assert t.proc.mm.vma_lookup(addr).vm_file is t.file
    assert (t.ifile.f_count, t.file.f_count) == (1, 2)


@pytest.mark.parametrize("base", ["v3.5", "v6.12"])
@pytest.mark.parametrize(
    ("swap", "error_fputs", "delta"),
    [
        ("fput_then_get", "original_file", (-1, +1)),  # 3.5-3.8
        ("restore_on_error", "original_file", (0, 0)),  # 3.9-5.10
        ("vma_set_file", "vm_file", (0, 0)),  # 5.11+
        ("vma_set_file", "original_file", (-1, +1)),  # what VSF had to avoid
        ("fput_then_get", "vm_file", (0, 0)),
        ("restore_on_error", "vm_file", (0, 0)),
    ],
)
def test_r23_r24_swap_times_error_path_table(
    kit: SimpleNamespace, base: str, swap: str, error_fputs: str, delta: tuple[int, int]
) -> None:
    """R23/R24 as a table over the two knobs: the reference deltas (importer, dma-buf) after a
    failed forwarded mmap follow from which file each side puts."""
    spec = kit.custom(base, dma_buf_mmap_swap=swap, mmap_region_error_fputs=error_fputs)
    t = setup(kit, spec, mmap_errno=errno.EAGAIN)
    t.proc.dup(t.ifd)
    before = (t.ifile.f_count, t.file.f_count)
    with pytest.raises(OSError) as ei:
        t.proc.mmap(0, PAGE, RW, SHARED, t.ifd, 0)
    assert ei.value.errno == errno.EAGAIN
    after = (t.ifile.f_count, t.file.f_count)
    assert (after[0] - before[0], after[1] - before[1]) == delta
