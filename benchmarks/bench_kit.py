"""Figures for the conformance kit: speed of the state machine, cost of a whole check,
the edit-test loop with an example database, and how short the shrunk reproducers are.

    python benchmarks/bench_kit.py            # full (about a minute)
    python benchmarks/bench_kit.py --quick    # a few seconds

Timings are wall-clock on this machine (best of N where repeated); a command-line
check also pays for importing the kit once (its row says how much).  The
reproducer lengths are exact and deterministic (the kit pins its seed).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dmabuf_sim.conformance.kit import check_exporter
from dmabuf_sim.exporters.registry import EXPORTERS


def steps_per_second(exporter: str, spec: str, examples: int) -> tuple[float, int]:
    start = time.perf_counter()
    report = check_exporter(exporter, spec=spec, scenarios=[], max_examples=examples)
    elapsed = time.perf_counter() - start
    steps = report.results[-1].steps_run
    return steps / elapsed, steps


def whole_kit_seconds(exporter: str, spec: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        check_exporter(exporter, spec=spec)
        best = min(best, time.perf_counter() - start)
    return best


def import_seconds(repeat: int) -> float:
    """What a command-line check pays before it starts: a fresh interpreter importing the kit."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import dmabuf_sim.cli, dmabuf_sim.conformance.kit"], check=True
        )
        best = min(best, time.perf_counter() - start)
    return best


def recheck_seconds(exporter: str, spec: str) -> tuple[float, float, int, int]:
    """A still-failing exporter checked twice with an example database: (first s, again s,
    programs run the first time, programs run again).  Directed programs are left out,
    so the random exploration has to find the failure (and, the second time, replay it)."""
    with tempfile.TemporaryDirectory() as db:
        times, runs = [], []
        for _ in range(2):
            start = time.perf_counter()
            report = check_exporter(exporter, spec=spec, programs=[], database=Path(db))
            times.append(time.perf_counter() - start)
            runs.append(report.results[-1].examples)
    return times[0], times[1], runs[0], runs[1]


def reproducer(exporter: str, spec: str) -> tuple[str, int, float]:
    start = time.perf_counter()
    # no directed programs: a failing one would skip the random exploration measured here
    report = check_exporter(exporter, spec=spec, programs=[])
    elapsed = time.perf_counter() - start
    result = report.results[-1]
    steps = sum(1 for x in result.steps.splitlines() if "state." in x and "teardown" not in x)
    return result.rule or "(passed)", steps, elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    examples = 20 if args.quick else 100
    repeat = 1 if args.quick else 3
    print(
        f"dmabuf_sim kit benchmarks — Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs{' (quick)' if args.quick else ''}"
    )
    print()
    print(
        f"{'state machine (hypothesis, ' + str(examples) + ' examples x 30 steps)':58}"
        f"{'steps/s':>10}{'steps':>8}"
    )
    for name, spec in (
        ("system_heap", "v6.12"),
        ("udmabuf", "v6.12"),
        ("vgem", "v6.12"),
        ("shootdown", "v3.5"),
        ("simple", "latest"),
    ):
        rate, steps = steps_per_second(name, spec, examples)
        print(f"  {name + ' [' + spec + ']':56}{rate:10.0f}{steps:8d}", flush=True)
    print()
    print(f"{'whole kit, default settings (24 programs + 200 random)':58}{'seconds':>10}")
    example = str(Path(__file__).resolve().parents[1] / "examples" / "my_exporter.py")
    for name, spec, label in (
        (f"{example}:MyExporter", "v6.12", "examples/my_exporter.py"),
        ("system_heap", "v6.12", "system_heap"),
        ("udmabuf", "latest", "udmabuf"),
        ("shootdown", "v3.5", "shootdown"),
    ):
        secs = whole_kit_seconds(name, spec, repeat)
        print(f"  {label + ' [' + spec + ']':56}{secs:10.2f}", flush=True)
    label = "+ a fresh interpreter importing the kit (per command)"
    print(f"  {label:56}{import_seconds(repeat):10.2f}")
    print()
    print(
        f"{'a still-failing exporter re-checked with --db':44}{'first s':>9}{'again s':>9}"
        f"{'runs':>6}{'again':>6}"
    )
    for name in ("no_coherency", "frees_while_mapped", "leaks_file_ref"):
        first, again, n1, n2 = recheck_seconds(name, "v6.12")
        print(f"  {name + ' [v6.12]':42}{first:9.2f}{again:9.2f}{n1:6d}{n2:6d}", flush=True)
    print()
    print(f"{'shrunk reproducer of each teaching exporter':44}{'rule':>20}{'steps':>7}{'s':>7}")
    for name, info in EXPORTERS.items():
        if info.kind != "teaching":
            continue
        spec = (info.fails_on or ("v6.12",))[-1]
        rule, steps, secs = reproducer(name, spec)
        print(f"  {name + ' [' + spec + ']':42}{rule:>20}{steps:7d}{secs:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
