"""Smoke test of benchmarks/bench_exporters.py: the API it drives still works.

Runs every measurement function with tiny sizes and checks only the structural
figures (PTE, zap and page counts), never a time.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_exporters.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_exporters", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_faults_section_counts_one_pte_per_page(bench: ModuleType) -> None:
    sec = bench.bench_faults(npages=32, runs=1)
    values = sec.values()
    for key in (
        "cma_heap",
        "udmabuf",
        "shootdown",
        "shootdown-refault",
        "udmabuf-latest",
        "system_heap-v6.12",
        "system_heap-latest",
        "simple-v6.12",
    ):
        assert values[f"ptes[{key}]"] == 32, key
    assert all(bench.format_row(row) for row in sec.rows)


def test_shootdown_zaps_exactly_the_present_ptes(bench: ModuleType) -> None:
    values = bench.bench_shootdown_vs_ptes(
        npages=64, present_counts=(1, 4, 16), reps=2, runs=1
    ).values()
    assert [values[f"zapped[{n}]"] for n in (1, 4, 16)] == [1, 4, 16]
    assert {"end_us[16]", "zap_us[16]", "end_ns_per_pte"} <= set(values)


def test_shootdown_vs_size_holds_only_the_touched_pages(bench: ModuleType) -> None:
    values = bench.bench_shootdown_vs_size(sizes=(16, 256), present=4, reps=2, runs=1).values()
    assert values["allocated[16]"] == values["allocated[256]"] == 4
    assert {"end_ratio", "map_ms[256]", "end_after_map_us[256]", "end_after_map_ratio"} <= set(
        values
    )


def test_untouched_system_heap_buffer_costs_no_pages(bench: ModuleType) -> None:
    values = bench.bench_system_heap_memory(npages=4096, touched=10).values()
    assert values["alloc_data_pages"] == 0
    assert values["alloc_struct_pages"] == 0
    assert values["map_ptes"] == 4096
    assert values["touch_data_pages"] == 10
    assert values["touch_struct_pages"] == 0


def test_machine_end_cpu_access_zaps_every_pte(bench: ModuleType) -> None:
    m = bench.Machine.new("shootdown", 8)
    addr = m.map()
    m.proc.write_memory(addr, b"x" * 8 * 4096)
    counter = bench.ZapCounter()
    m.kernel.add_instrument(counter)
    m.end_cpu_access()
    assert (m.ptes, counter.ptes, counter.calls) == (0, 8, 1)
    m.device_map()
    assert m.dmabuf.priv.device_owned == set(range(8))


def test_main_quick_preset_names_every_bench(bench: ModuleType) -> None:
    assert set(bench.PRESETS["quick"]) == set(bench.PRESETS["full"])
