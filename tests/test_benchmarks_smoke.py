"""Smoke test of benchmarks/bench_mm.py: the API it drives still works.

Runs the cheap measurement functions with tiny sizes and checks only the
structural figures (PTE and page counts), never a time.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mm.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_mm", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_mapping_cost_leaves_no_ptes_or_struct_pages(bench: ModuleType) -> None:
    sec = bench.bench_mapping_cost(sizes=(1, bench.HUGE_PAGES), reps=2, runs=1)
    values = sec.values()
    for npages in (1, bench.HUGE_PAGES):
        assert values[f"ptes[{npages}]"] == 0
        assert values[f"struct_pages[{npages}]"] == 0
    assert all(bench.format_row(row) for row in sec.rows)


def test_untouched_pages_cost_nothing_until_touched(bench: ModuleType) -> None:
    values = bench.bench_untouched_memory(npages=4096, touched=10).values()
    assert values["alloc_data_pages"] == 0
    assert values["alloc_struct_pages"] == 0
    assert values["touch_data_pages"] == 10
    assert values["touch_struct_pages"] == 10
    assert values["touch_ptes"] == 10


def test_unmap_mapping_range_sizes_run(bench: ModuleType) -> None:
    sec = bench.bench_unmap_mapping_range(
        huge=1 << 16, present_counts=(1, 4), fixed_present=2, other_ptes=4, nvmas=4, reps=1, runs=1
    )
    keys = set(sec.values())
    assert {"a_us[1]", "a_us[4]", "b_us[16]", "b_us[65536]", "c_us[4,all]"} <= keys


def test_unmap_mapping_range_zaps_exactly_the_present_ptes(bench: ModuleType) -> None:
    m = bench.Machine.new(64)
    addr = m.map(64)
    refault = bench.page_addrs(addr, 8, 8)
    _seconds, zapped = bench.zap_cost(m, refault, 0, 0, reps=2, runs=1)
    assert zapped == 8
    assert m.ptes == 0
    assert m.drv.faults == 16  # 8 pages faulted in, twice
