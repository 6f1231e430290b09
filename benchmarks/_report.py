"""What the benchmark scripts share: rows and sections, the table format, timing.

Timings are wall-clock (``time.perf_counter``) with the cyclic GC off while the
clock runs, as ``timeit`` does; a figure is the best of a few runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dmabuf_sim
from dmabuf_sim import Process
from dmabuf_sim.mm.page_alloc import PAGE_SIZE

__all__ = [
    "Row",
    "Section",
    "best",
    "format_row",
    "npages_label",
    "page_addrs",
    "print_section",
    "run_benchmarks",
    "timed",
    "touch_read",
    "touch_write",
]

# -- rows and sections ------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One figure: a stable ``key`` (for tests), a label, a value, its unit, the method."""

    key: str
    label: str
    value: float
    unit: str
    method: str


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)

    def add(self, key: str, label: str, value: float, unit: str, method: str) -> None:
        self.rows.append(Row(key, label, value, unit, method))

    def values(self) -> dict[str, float]:
        return {r.key: r.value for r in self.rows}


_LABEL_W = 50
_VALUE_W = 13
_UNIT_W = 9


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_row(row: Row) -> str:
    label = row.label if len(row.label) <= _LABEL_W else row.label[: _LABEL_W - 1] + "…"
    return (
        f"  {label:<{_LABEL_W}} {_fmt(row.value):>{_VALUE_W}} {row.unit:<{_UNIT_W}} {row.method}"
    ).rstrip()


def print_section(section: Section) -> None:
    print(f"\n{section.title}")
    print(f"  {'-' * _LABEL_W} {'-' * _VALUE_W} {'-' * _UNIT_W} {'-' * 6}")
    for row in section.rows:
        print(format_row(row))
    sys.stdout.flush()


# -- timing helpers ---------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes, with the cyclic GC off (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        if was_enabled:
            gc.enable()


def best(run: Callable[[], float], runs: int) -> float:
    """The minimum of ``runs`` calls of ``run`` (each returns the seconds it measured).

    Garbage from the previous run (kernels are full of reference cycles) is
    collected first, untimed, so runs start alike and memory stays bounded.
    """
    times = []
    for _ in range(runs):
        gc.collect()
        times.append(run())
    return min(times)


def npages_label(n: int) -> str:
    """``2**28`` for large powers of two, else ``1,000``."""
    return f"2**{n.bit_length() - 1}" if n >= 1 << 16 and n & (n - 1) == 0 else f"{n:,}"


def touch_read(proc: Process, addrs: Sequence[int]) -> None:
    read = proc.read_memory
    for a in addrs:
        read(a, 1)


def touch_write(proc: Process, addrs: Sequence[int]) -> None:
    write = proc.write_memory
    for a in addrs:
        write(a, b"\x01")


def page_addrs(addr: int, n: int, stride: int = 1) -> range:
    """Addresses of ``n`` pages from ``addr``, ``stride`` pages apart."""
    return range(addr, addr + n * stride * PAGE_SIZE, stride * PAGE_SIZE)


Bench = tuple[Callable[..., "Section"], dict[str, object]]


def run_benchmarks(
    argv: Sequence[str] | None,
    *,
    description: str,
    title: str,
    spec: str,
    runs: int,
    benches: Callable[[str], list[Bench]],
) -> int:
    """The shared command line: ``--quick``, a header naming the machine, the sections."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few seconds)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    start = time.perf_counter()
    print(f"dmabuf_sim {dmabuf_sim.__version__} {title} ({mode}), spec {spec!r}")
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on"
        f" {platform.system()} {platform.machine()}, os.cpu_count() = {os.cpu_count()}"
    )
    print(f"timings: best of {runs} runs, GC off while timing; memory: tracemalloc")
    for bench, kwargs in benches(mode):
        print_section(bench(**kwargs))
    print(f"\ntotal runtime: {time.perf_counter() - start:.1f} s")
    return 0
