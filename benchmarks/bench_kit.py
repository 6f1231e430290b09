"""Figures for the conformance kit: speed of the state machine, cost of a whole check,
and how short the shrunk reproducers are.

    python benchmarks/bench_kit.py            # full (about a minute)
    python benchmarks/bench_kit.py --quick    # a few seconds

Timings are wall-clock on this machine (best of N where repeated); the
reproducer lengths are exact and deterministic (the kit pins its seed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

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


def reproducer(exporter: str, spec: str) -> tuple[str, int, float]:
    start = time.perf_counter()
    report = check_exporter(exporter, spec=spec, scenarios=[])
    elapsed = time.perf_counter() - start
    result = report.results[-1]
    lines = [
        x
        for x in result.steps.splitlines()
        if x.startswith(("state.", "buffers_", "mappings_", "children_"))
    ]
    steps = len([x for x in lines if "teardown" not in x])
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
    print(f"{'whole kit, default settings (8 scenarios + 100 examples)':58}{'seconds':>10}")
    for name, spec in (("system_heap", "v6.12"), ("udmabuf", "latest"), ("shootdown", "v3.5")):
        secs = whole_kit_seconds(name, spec, repeat)
        print(f"  {name + ' [' + spec + ']':56}{secs:10.2f}", flush=True)
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
