"""Every case recorded on a real Linux 6.12 kernel, replayed through the simulator.

The recordings live in tests/data/kernel-results/ (copied from
shared/reference; see the README there for how the probe made each case).
Under spec ``v6.12`` — the kernel that was recorded — every case must match.
Under ``latest`` (6.19) every case must match too, except where the 6.19
source itself differs from 6.12; each such exclusion is a strict xfail that
names the commit, so an unexpected pass fails the run.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from dmabuf_sim.replay import Case, CaseResult, load_cases, replay

DATA = Path(__file__).parent.parent / "data" / "kernel-results"
FILES = sorted(DATA.glob("linux-6.12-*.jsonl"))
PAGE = 4096


@cache
def _results(path: str, spec: str) -> dict[int, CaseResult]:
    return {r.case.line: r for r in replay(load_cases(path), spec)}


def _latest_divergence(case: Case) -> str | None:
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


def _params() -> list[object]:
    out: list[object] = []
    for path in FILES:
        for case in load_cases(path):
            for spec in ("v6.12", "latest"):
                marks = [pytest.mark.kernel_verified("6.12")]
                why = _latest_divergence(case) if spec == "latest" else None
                if why:
                    marks.append(pytest.mark.xfail(strict=True, reason=why))
                out.append(
                    pytest.param(str(path), case, spec, marks=marks, id=f"{spec}-{case.label()}")
                )
    return out


@pytest.mark.parametrize(("path", "case", "spec"), _params())
def test_recorded_case(path: str, case: Case, spec: str) -> None:
    result = _results(path, spec)[case.line]
    assert result.ok, result.describe(spec)


def test_all_recordings_are_replayed() -> None:
    """The data set is complete (3,016 cases) and every case type is understood."""
    cases = [c for p in FILES for c in load_cases(p)]
    assert len(cases) == 3016
    types = {c.fields["t"] for c in cases}
    assert types == {
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
