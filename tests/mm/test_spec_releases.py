"""Which spec models which kernel release: SPECS.for_release and its data table."""

from __future__ import annotations

import doctest
import errno
import itertools
import mmap
import os
from pathlib import Path

import pytest

import dmabuf_sim.spec
from dmabuf_sim import Kernel
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.spec import RELEASES, SPECS, Spec, parse_release

PAGE = 4096


@pytest.mark.parametrize(
    ("release", "spec"),
    [
        ("5.10.223", "v5.10"),
        ("5.10.0-32-amd64", "v5.10"),
        ("6.1.192", "v6.1"),
        ("6.12.117+deb12-amd64", "v6.12"),
        ("6.16.12", "v6.12"),
        ("6.17.13", "v6.12"),
        ("6.18.15", "v6.12"),
        ("6.19.14+deb13-amd64", "v6.19"),
        ("7.0.13", "v6.19"),
        ("7.1.3", "v6.19"),
        ("7.1.13", "latest"),
        ("7.2.13", "latest"),
        ("7.3.4+deb13-amd64", "latest"),
        ("3.5", "v3.5"),
        ("3.8.13", "v3.5"),
        ("3.4.0", "v3.4"),
    ],
)
def test_for_release_maps_every_recorded_kernel_to_its_spec(release: str, spec: str) -> None:
    assert SPECS.for_release(release) is SPECS[spec]


@pytest.mark.parametrize("release", ["4.19.0", "2.6.32", "7.4.0", "6.2"])
def test_for_release_of_an_unmodelled_release_says_what_to_do(release: str) -> None:
    with pytest.raises(ValueError, match=r"no built-in spec models Linux .*replace"):
        SPECS.for_release(release)


@pytest.mark.parametrize("bad", ["", "linux", "v6.12", "six"])
def test_parse_release_rejects_what_is_not_a_release(bad: str) -> None:
    with pytest.raises(ValueError, match="uname -r"):
        parse_release(bad)
    with pytest.raises(TypeError):
        parse_release(612)  # type: ignore[arg-type]


def test_release_table_is_data_sorted_without_overlaps() -> None:
    """Ranges are ordered, disjoint and name built-in specs; every spec but the RFC has one."""
    for a, b in itertools.pairwise(RELEASES):
        assert a.first <= a.last < b.first
    assert {r.spec for r in RELEASES} == set(SPECS) - {"rfc-2012"}
    assert SPECS.releases is RELEASES


def test_every_behaviour_has_a_since_and_a_meaning() -> None:
    for f in Spec.behaviours():
        assert f.metadata["since"] and f.metadata["doc"], f.name
        assert set(f.metadata) >= {"since", "doc", "commit", "stable", "rules"}


def test_backports_name_their_stable_release() -> None:
    """A fix that reached a stable line names the upstream commit and the stable release."""
    fields = {f.name: f for f in Spec.behaviours()}
    for name in ("cma_heap_fault_off_by_one", "drm_shmem_rejects_cow", "pseudo_fs_noexec"):
        assert fields[name].metadata["commit"] and fields[name].metadata["stable"], name
    v61 = SPECS["v6.1"]
    assert v61.kernel_version == "6.1.192"
    assert (v61.drm_shmem_rejects_cow, v61.cma_heap_fault_off_by_one) == (True, False)


@pytest.mark.parametrize(
    ("spec", "exporter"),
    [("latest", "system_heap"), ("latest", "udmabuf"), ("latest", "vgem")],
)
def test_pseudo_fs_noexec_refuses_executable_dmabuf_mappings(spec: str, exporter: str) -> None:
    """6de2aeffabaa (latest; 7.1.4 stable): the dmabuf superblock is SB_I_NOEXEC, so
    do_mmap's path_noexec gives EPERM for PROT_EXEC and clears VM_MAYEXEC, and a later
    mprotect adding PROT_EXEC is EACCES.  The check sits after the FMODE_READ test and
    before ->mmap: an unaligned offset still fails first (EINVAL), but an offset past
    the buffer now fails EPERM before dma_buf_mmap_internal could say EINVAL."""
    p = Kernel(spec).spawn("noexec")
    fd = EXPORTERS[exporter].make_fd(p, PAGE, os.O_RDWR)
    rx = mmap.PROT_READ | mmap.PROT_EXEC
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, rx, mmap.MAP_SHARED, fd, 0)
    assert ei.value.errno == errno.EPERM
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, rx, mmap.MAP_SHARED, fd, 1)  # sys_mmap's alignment check
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, rx, mmap.MAP_SHARED, fd, 8 * PAGE)  # past the buffer
    assert ei.value.errno == errno.EPERM
    a = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    with pytest.raises(OSError) as ei:
        p.mprotect(a, PAGE, rx)
    assert ei.value.errno == errno.EACCES
    m = p.memfd_create("m")  # shmem is no pseudo filesystem: exec mappings still work
    p.ftruncate(m, PAGE)
    p.mmap(0, PAGE, rx, mmap.MAP_SHARED, m, 0)


@pytest.mark.parametrize("spec", ["v5.10", "v6.12", "v6.19"])
def test_executable_dmabuf_mappings_before_the_noexec_change(spec: str) -> None:
    p = Kernel(spec).spawn("exec")
    fd = EXPORTERS["vgem"].make_fd(p, PAGE, os.O_RDWR)
    rx = mmap.PROT_READ | mmap.PROT_EXEC
    a = p.mmap(0, PAGE, rx, mmap.MAP_SHARED, fd, 0)
    p.mprotect(a, PAGE, mmap.PROT_READ)
    p.mprotect(a, PAGE, rx)


def test_the_kernel_lines_page_and_the_spec_docstring_run_as_printed() -> None:
    """docs/kernel-lines.md and dmabuf_sim.spec's examples are doctests."""
    page = Path(__file__).parents[2] / "docs" / "kernel-lines.md"
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0
    result = doctest.testmod(dmabuf_sim.spec)
    assert result.attempted >= 4 and result.failed == 0
