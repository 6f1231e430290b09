"""``dmabuf-sim``: the command line (``python -m dmabuf_sim`` works too).

Subcommands:

``tour``        a guided run through the simulator, each step traced and explained;
``specs``       the spec versions and the behaviours that tell them apart;
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
    funcs = sub.add_parser("functions", help="simulated kernel functions and their C files")
    funcs.set_defaults(func=_cmd_functions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `dmabuf-sim tour | head`
        return 0
