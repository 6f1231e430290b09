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

KNOWN: dict[str, tuple[frozenset[int], str]] = {}
"""Recordings known to differ, and why.  Empty: the two differences the first runs found
were fixed in the simulator — a sync_file's fd is O_RDONLY (sync_file_alloc passes 0 to
anon_inode_getfile), and spec v6.1 models 6.1.192 with the GEM shmem COW backport
(39bc27bd6880), which refuses MAP_PRIVATE with EINVAL."""


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


def test_a_replay_names_the_spec_and_agrees_on_the_lines_that_once_differed() -> None:
    """fdinfo of a sync_file (flags 02000000: O_RDONLY) and MAP_PRIVATE of vgem on 6.1 (EINVAL)."""
    comparison = _replayed(DATA / "file-ops-vgem@6.1.0-57.jsonl")
    assert comparison.spec == "v6.1" and comparison.kernel_label == "kernel 6.1.0-57"
    row = next(r for r in comparison.rows if r.line == 56)
    assert row.sim.text == row.kernel.text == '"pos: 0; flags: 02000000"'
    cow = _replayed(DATA / "vgem-prime@6.1.0-57.jsonl")
    row = next(r for r in cow.rows if r.line == 24)
    assert row.sim.text == row.kernel.text
