"""Smoke test of benchmarks/bench_floor.py: the simulator and its floor do the same work.

Runs the measurement with tiny sizes and checks only structure — both sides leave one
PTE per page, the floor's loads and stores land where they should — never a time.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_floor.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_floor", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_simulator_and_floor_leave_one_pte_per_page(bench: ModuleType) -> None:
    values = bench.bench_floor(npages=16, runs=1).values()
    for key in ("udmabuf", "vgem", "system_heap-v6.12", "system_heap-latest"):
        assert values[f"ptes[{key}]"] == values[f"floor_ptes[{key}]"] == 16, key
    ratios = {k for k in values if k.startswith("ratio[")}
    assert len(ratios) == 5
    assert all(values[k] > 0 for k in ratios)


@pytest.mark.parametrize("cached", [True, False])
def test_the_floor_stores_and_loads_bytes(bench: ModuleType, cached: bool) -> None:
    fm = bench.FloorMachine(cached=cached, capacity=2)
    pfns = list(range(100, 108))
    addr = fm.mmap(8 * 4096, bench.floor_udmabuf(fm, pfns))
    for i in range(8):
        fm.write(addr + i * 4096 + 5, bytes([i + 1]))
    if cached:
        assert len(fm.lines) == 2  # the capacity: the others were written back
        assert [fm.read(addr + i * 4096 + 5, 1) for i in range(8)] == [
            bytes([i + 1]) for i in range(8)
        ]
    else:
        assert [fm.data[100 + i][5] for i in range(8)] == [i + 1 for i in range(8)]
    with pytest.raises(MemoryError, match="SIGSEGV"):
        fm.write(addr + 8 * 4096, b"x")


def test_main_quick_preset_names_every_bench(bench: ModuleType) -> None:
    assert set(bench.PRESETS["quick"]) == set(bench.PRESETS["full"])
