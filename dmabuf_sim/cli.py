"""``dmabuf-sim``: the command line (``python -m dmabuf_sim`` works too).

Subcommands:

``tour``        a guided run through the simulator, each step traced and explained;
``specs``       the spec versions and the behaviours that tell them apart;
``check``       run the conformance kit on an exporter (yours or a registered one);
``functions``   every simulated kernel function and the kernel file it mirrors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .spec import SPECS, Spec

__all__ = ["main"]


def _cmd_tour(args: argparse.Namespace) -> int:
    from .tour import run_tour

    run_tour(spec=args.spec, out=sys.stdout, trace=not args.no_trace, only=args.step)
    return 0


def _cmd_specs(args: argparse.Namespace) -> int:
    names = list(SPECS)
    fields = Spec.behaviours()
    width = max(len(f.name) for f in fields)
    print(" " * width + "  " + "  ".join(n.ljust(8) for n in names))
    for f in fields:
        vals = [getattr(SPECS[n], f.name) for n in names]
        if not args.all and len({repr(v) for v in vals}) == 1:
            continue
        cells = []
        for v in vals:
            text = (
                ("yes" if v else "no")
                if isinstance(v, bool)
                else (hex(v) if isinstance(v, int) else str(v))
            )
            cells.append(text[:8].ljust(8))
        print(f.name.ljust(width) + "  " + "  ".join(cells))
    return 0


def _cmd_functions(args: argparse.Namespace) -> int:
    from . import load_everything
    from .trace import KERNEL_FUNCTIONS

    load_everything()
    for name in sorted(KERNEL_FUNCTIONS):
        info = KERNEL_FUNCTIONS[name]
        print(f"{name:32} {info.file}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import time

    from .conformance.kit import UsageError, check_exporter

    specs = args.spec or ["latest"]
    failed = False
    for spec in specs:
        start = time.monotonic()

        def progress(msg: str, spec: str = spec) -> None:
            print(f"  [{spec}] {msg} ...", file=sys.stderr, flush=True)

        try:
            report = check_exporter(
                args.exporter, spec=spec, max_examples=args.max_examples,
                shrink=not args.no_shrink, progress=None if args.quiet else progress,
            )
        except UsageError as exc:
            print(f"dmabuf-sim check: {exc}", file=sys.stderr)
            return 2
        print(report.summary())
        if not args.quiet:
            print(f"  ({time.monotonic() - start:.1f} s)")
        failed = failed or not report.ok
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmabuf-sim", description="An executable model of Linux dma-buf and its mmap."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="a guided run, step by step, with kernel traces")
    tour.add_argument("--spec", default="v6.12", choices=list(SPECS))
    tour.add_argument("--no-trace", action="store_true", help="explanations only")
    tour.add_argument("--step", type=int, default=None, help="run only this step number")
    tour.set_defaults(func=_cmd_tour)
    specs = sub.add_parser("specs", help="spec versions and how they differ")
    specs.add_argument("--all", action="store_true", help="also list behaviours all share")
    specs.set_defaults(func=_cmd_specs)
    check = sub.add_parser("check", help="run the conformance kit on an exporter")
    check.add_argument(
        "exporter",
        help="a registered exporter name, MODULE:ATTR or path/to/file.py:ATTR naming a factory"
        " make(kernel, size, flags) -> DmaBuf or a class with export(kernel, size, flags)",
    )
    check.add_argument("--spec", action="append", choices=list(SPECS), help="repeatable")
    check.add_argument("--max-examples", type=int, default=100)
    check.add_argument("--no-shrink", action="store_true", help="report the first failure found")
    check.add_argument("--quiet", action="store_true", help="no progress lines")
    check.set_defaults(func=_cmd_check)
    funcs = sub.add_parser("functions", help="simulated kernel functions and their C files")
    funcs.set_defaults(func=_cmd_functions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `dmabuf-sim tour | head`
        return 0
