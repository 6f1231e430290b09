"""Every case recorded on a real kernel, replayed through the simulator under its spec.

The recordings live in tests/data/kernel-results/ (copied from shared/reference;
the README there says how the probe made each case): Debian's 5.10.223 (vgem),
6.12.117 (system heap, udmabuf), 6.19.14 (system heap, udmabuf) and 7.3.4
(system heap, udmabuf, vgem).  Each file is replayed under the spec
``SPECS.for_release`` gives for its kernel (``v5.10``, ``v6.12``, ``v6.19``,
``latest``) and every case must match.  Cases are grouped per file and case type,
one test each; a failure lists every mismatching case on its own line.

The 6.12 recordings are also replayed under ``v6.19``: every case must match
there too except where the 6.19 source itself differs from 6.12; each such case is
a strict xfail naming the commit, so an unexpected pass fails the run.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

from dmabuf_sim.replay import Case, CaseResult, load_cases, replay, spec_for_recording

DATA = Path(__file__).parent.parent / "data" / "kernel-results"
FILES = sorted(DATA.glob("linux-*.jsonl"))
FILES_612 = sorted(DATA.glob("linux-6.12-*.jsonl"))
PAGE = 4096
TYPES = {
    "mmap",
    "data",
    "lseek",
    "rw",
    "poll",
    "grow",
    "rofd",
    "sync",
    "ioctl",
    "setname",
    "fdinfo",
    "maps",
}


@cache
def _results(path: str, spec: str) -> dict[int, CaseResult]:
    return {r.case.line: r for r in replay(load_cases(path), spec)}


def _v619_divergence(case: Case) -> str | None:
    """Why 6.19 answers differently from the recorded 6.12, or None.

    Commit 04c7adb5871a ("dma-buf: system_heap: use larger contiguous mappings
    instead of per-page mmap", in 6.19) calls remap_pfn_range once per sg
    chunk.  A MAP_PRIVATE (COW) mapping must be remapped whole in one call
    (R37), so on 6.19 a multi-page private mapping succeeds when it lies inside
    one chunk — the 16-page buffer is a single order-4 chunk — where 6.12,
    remapping page by page, refuses it with EINVAL.
    """
    f = case.fields
    if f["exp"] != "system_heap" or f["t"] != "mmap" or f["flags"] != "private":
        return None
    npages = -(-f["len"] // PAGE)
    off = f["off"] % (1 << 64)
    in_bounds = off % PAGE == 0 and off // PAGE + npages <= f["pages"]
    if f["pages"] == 16 and npages >= 2 and in_bounds:
        return "6.19 remaps whole sg chunks (04c7adb5871a): private mapping within one chunk"
    return None


def _groups() -> list[object]:
    """One param per (file, spec, case type): the cases that must all match."""
    out: list[object] = []
    runs = [(path, spec_for_recording(path).name) for path in FILES]
    runs += [(path, "v6.19") for path in FILES_612]
    for path, spec in runs:
        by_type: dict[str, list[int]] = defaultdict(list)
        for case in load_cases(path):
            if spec == "v6.19" and path in FILES_612 and _v619_divergence(case):
                continue
            by_type[case.fields["t"]].append(case.line)
        kernel = path.name.split("-")[1]
        for t, lines in sorted(by_type.items()):
            out.append(
                pytest.param(
                    str(path),
                    spec,
                    tuple(lines),
                    marks=pytest.mark.kernel_verified(kernel),
                    id=f"{spec}-{path.stem}-{t}({len(lines)})",
                )
            )
    return out


@pytest.mark.parametrize(("path", "spec", "lines"), _groups())
def test_recorded_cases(path: str, spec: str, lines: tuple[int, ...]) -> None:
    results = _results(path, spec)
    bad = [results[line].describe(spec) for line in lines if not results[line].ok]
    assert not bad, f"{len(bad)} of {len(lines)} cases differ:\n" + "\n".join(bad)


def _divergent() -> list[object]:
    out: list[object] = []
    for path in FILES_612:
        for case in load_cases(path):
            why = _v619_divergence(case)
            if why:
                marks = [
                    pytest.mark.kernel_verified("6.12"),
                    pytest.mark.xfail(strict=True, reason=why),
                ]
                out.append(pytest.param(str(path), case, marks=marks, id=f"v6.19-{case.label()}"))
    return out


@pytest.mark.parametrize(("path", "case"), _divergent())
def test_recorded_612_case_where_619_differs(path: str, case: Case) -> None:
    result = _results(path, "v6.19")[case.line]
    assert result.ok, result.describe("v6.19")


def test_all_recordings_are_replayed() -> None:
    """The data set is complete (8 files, 12,064 cases), every case type is understood and
    every file's kernel has a spec."""
    cases = [c for p in FILES for c in load_cases(p)]
    assert len(FILES) == 8 and len(cases) == 12064
    assert {c.fields["t"] for c in cases} == TYPES
    specs = {p.name: spec_for_recording(p).name for p in FILES}
    assert specs == {
        "linux-5.10-vgem.jsonl": "v5.10",
        "linux-6.12-system_heap.jsonl": "v6.12",
        "linux-6.12-udmabuf.jsonl": "v6.12",
        "linux-6.19-system_heap.jsonl": "v6.19",
        "linux-6.19-udmabuf.jsonl": "v6.19",
        "linux-7.3-system_heap.jsonl": "latest",
        "linux-7.3-udmabuf.jsonl": "latest",
        "linux-7.3-vgem.jsonl": "latest",
    }
    assert len(_divergent()) == 9


def test_a_mismatch_is_reported_one_line_per_case() -> None:
    """The replay reports a disagreement in the recording's own vocabulary, one line each."""
    path = str(FILES_612[0])
    result = _results(path, "v6.12")[1]
    fake = CaseResult(result.case, "EPERM" if result.case.expected != "EPERM" else "ok")
    assert not fake.ok
    line = fake.describe("v6.12")
    assert "\n" not in line and "kernel" in line and "sim" in line
