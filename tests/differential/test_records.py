"""Real kernels' recorded answers to the project's scripts, replayed through the simulator.

tests/data/differential/ holds what Debian's kernels answered when
``dmabuf-sim differential SCRIPT --exporter E --kernel RELEASE --record FILE``
ran the bundled scripts in QEMU: 6.12.117 and 6.12.118 (system heap, udmabuf,
vgem), 6.1.170 and 6.1.192 (vgem only: Debian's 6.1 builds neither the heaps
nor udmabuf).  The answers came from those kernels; nothing in the files is
written by hand.  Each file is replayed under the spec for its release, and
the lines where the simulator answers differently must be exactly the ones
:data:`KNOWN` explains, so a fix, or a new divergence, fails the test.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from dmabuf_sim.differential.command import with_exporter
from dmabuf_sim.differential.compare import Comparison, load_record, replay_record
from dmabuf_sim.differential.script import load_script

DATA = Path(__file__).parents[1] / "data" / "differential"
RECORDS = sorted(DATA.glob("*.jsonl"))

SYNC_FILE_FLAGS = (
    "simulator bug: sync_file_alloc() gets its file from anon_inode_getfile(..., 0), so a"
    " sync_file fd is O_RDONLY (fdinfo 'flags: 02000000'); dma_buf/sync_file.py passes O_RDWR"
)
SHMEM_COW_BACKPORT = (
    "spec to add: commit 39bc27bd6880 ('drm/shmem-helper: Fix BUG_ON() on mmap(PROT_WRITE,"
    " MAP_PRIVATE)', Cc stable 5.2+) is in Debian's 6.1.170 and 6.1.192, so GEM shmem"
    " refuses MAP_PRIVATE with EINVAL; spec v6.1 (drm_shmem_rejects_cow=False) models 6.1"
    " before the backport: it maps, and the first access hits the BUG_ON in"
    " vmf_insert_pfn (an oops), so every later line of $main is skipped"
)

KNOWN: dict[str, tuple[frozenset[int], str]] = {
    r"file-ops-.*": (frozenset({56}), SYNC_FILE_FLAGS),
    r"mmap-bounds-vgem@6\.1\.0-.*": (
        frozenset({34, 35, 36, 37, 38, *range(40, 49)}),
        SHMEM_COW_BACKPORT,
    ),
    r"data-vgem@6\.1\.0-.*": (
        frozenset({23, 24, 25, 26, 27, 28, 30, 31, 32, 33, *range(35, 51)}),
        SHMEM_COW_BACKPORT,
    ),
    r"vgem-prime@6\.1\.0-.*": (frozenset({24}), SHMEM_COW_BACKPORT),
}


def _known(path: Path) -> tuple[frozenset[int], str]:
    for pattern, entry in KNOWN.items():
        if re.fullmatch(pattern, path.stem):
            return entry
    return frozenset(), ""


@cache
def _replayed(path: Path) -> Comparison:
    return replay_record(load_record(path))


def test_the_recordings_cover_three_kernels_and_every_bundled_script() -> None:
    releases = {p.stem.split("@")[1] for p in RECORDS}
    assert {"6.12.117+deb12", "6.12.118+deb12", "6.1.0-57"} <= releases
    scripts = {_split(p.stem.split("@")[0])[0] for p in RECORDS}
    assert scripts >= {"mmap-bounds", "data", "mremap", "file-ops", "udmabuf-create", "vgem-prime"}


@pytest.mark.kernel_verified("6.1, 6.12")
@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_simulator_against_a_recorded_kernel(path: Path) -> None:
    comparison = _replayed(path)
    known, why = _known(path)
    differing = {r.line for r in comparison.differing}
    details = "\n".join(
        f"line {r.line} {r.sim.statement.text}: simulator {r.sim.text}, kernel {r.kernel.text}"
        for r in comparison.differing
        if r.line not in known
    )
    assert differing == known, f"{why or 'unexpected differences'}\n{details}"


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_a_recording_is_a_whole_real_run_of_the_current_script(path: Path) -> None:
    record = load_record(path)
    kernel = record.header["kernel"]
    name, release = path.stem.split("@")
    assert record.release == release
    assert kernel["release"].startswith(release) and "Debian" in kernel["version"]
    assert kernel["machine"] == "x86_64" and kernel["page_size"] == 4096
    assert all(o.kind not in ("not run", "hung") for o in record.outcomes)
    base, exporter = _split(name)
    expected = load_script(base)
    if exporter:
        expected = with_exporter(expected, exporter)
    assert record.script.text == expected.text, "the bundled script changed: record it again"


def _split(name: str) -> tuple[str, str]:
    for exporter in ("system_heap", "udmabuf", "vgem"):
        if name.endswith("-" + exporter):
            return name[: -len(exporter) - 1], exporter
    return name, ""


def test_a_replay_names_the_spec_and_marks_the_differences() -> None:
    comparison = _replayed(DATA / "file-ops-vgem@6.1.0-57.jsonl")
    assert comparison.spec == "v6.1" and comparison.kernel_label == "kernel 6.1.0-57"
    row = next(r for r in comparison.rows if r.line == 56)
    assert (row.sim.text, row.kernel.text) == (
        '"pos: 0; flags: 02000002"',
        '"pos: 0; flags: 02000000"',
    )
