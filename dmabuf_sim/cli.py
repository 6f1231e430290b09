"""``dmabuf-sim``: the command line (``python -m dmabuf_sim`` works too).

Subcommands:

``tour``        a guided run through the simulator, each step traced and explained;
``scenarios``   ``list`` and ``run NAME [--spec] [--exporter] [--trace text|jsonl] [--picture F]``;
``diff-specs``  ``NAME SPEC_A SPEC_B``: one story under two kernels, only what differs;
``specs``       the spec versions and the behaviours that tell them apart;
``check``       run the conformance kit on an exporter (yours or a registered one);
``functions``   every simulated kernel function and the kernel file it mirrors;
``differential`` a syscall script on the simulator and on a real kernel in a VM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .spec import SPECS, Spec

__all__ = ["main"]


def _cmd_tour(args: argparse.Namespace) -> int:
    from .tour import run_tour

    run_tour(
        spec=args.spec,
        out=sys.stdout,
        trace=not args.no_trace,
        only=args.step,
        full_trace=args.full_trace,
    )
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
                args.exporter,
                spec=spec,
                max_examples=args.max_examples,
                shrink=not args.no_shrink,
                progress=None if args.quiet else progress,
            )
        except UsageError as exc:
            print(f"dmabuf-sim check: {exc}", file=sys.stderr)
            return 2
        print(report.summary())
        if not args.quiet:
            print(f"  ({time.monotonic() - start:.1f} s)")
        failed = failed or not report.ok
    return 1 if failed else 0


def _cmd_scenarios(args: argparse.Namespace) -> int:
    from .conformance.scenarios import SCENARIOS
    from .exporters.registry import EXPORTERS
    from .stories import STORIES

    if args.action == "list":
        print("Shared scenarios (run one with an exporter: --exporter NAME):")
        for name, fn in SCENARIOS.items():
            print(f"  {name:24} {(fn.__doc__ or '').strip().splitlines()[0]}")
        print("\nStories (outcomes that differ between kernels; see diff-specs):")
        for story in STORIES.values():
            print(f"  {story.name:24} {story.summary} ({', '.join(story.rules)})")
        print("\nExporters:")
        for info in EXPORTERS.values():
            print(f"  {info.name:24} [{info.kind}] {info.summary}")
        return 0
    if not args.name:
        print(
            "dmabuf-sim scenarios run: name a scenario or story (see 'scenarios list')",
            file=sys.stderr,
        )
        return 2
    return _run_named(args)


def _run_named(args: argparse.Namespace) -> int:
    from .conformance.scenarios import SCENARIOS, Harness, Skip
    from .exporters.registry import exporter
    from .kernel import Kernel
    from .stories import STORIES
    from .trace import format_function_graph, format_jsonl

    name = args.name
    if name not in SCENARIOS and name not in STORIES:
        print(
            f"dmabuf-sim: unknown scenario {name!r} (see 'dmabuf-sim scenarios list')",
            file=sys.stderr,
        )
        return 2
    if args.script:  # the run as a syscall script, for 'dmabuf-sim differential'
        from .differential.export import export_named

        try:
            sys.stdout.write(export_named(name, args.spec, args.exporter))
        except ValueError as exc:
            print(f"dmabuf-sim: {exc}", file=sys.stderr)
            return 2
        return 0
    if name in STORIES:
        kernel = Kernel(args.spec, trace=True)
        observations = STORIES[name].run(kernel)
        events = kernel.tracer.events
        status = 0
    else:
        try:
            info = exporter(args.exporter)
        except ValueError as exc:
            print(f"dmabuf-sim: {exc}", file=sys.stderr)
            return 2
        why = info.available(Kernel(args.spec, load_drivers=False).spec)
        if why:
            print(f"{name} [{info.name}, {args.spec}]: skipped ({why})")
            return 0
        h = Harness.create(info, args.spec)
        kernel = h.kernel
        kernel.tracer.enabled = True
        try:
            SCENARIOS[name](h)
        except Skip as skip:
            print(f"{name} [{info.name}, {args.spec}]: skipped ({skip})")
            return 0
        events = kernel.tracer.events
        observations = {"status": "failed" if h.findings else "passed"}
        observations.update({f"finding {i + 1}": str(f) for i, f in enumerate(h.findings)})
        status = 1 if h.findings else 0
    if args.trace == "jsonl":
        sys.stdout.write(format_jsonl(events))
    elif args.trace == "text":
        sys.stdout.write(format_function_graph(events))
    for key, value in observations.items():
        print(f"{key}: {value}")
    if args.picture:
        from .picture import write_picture

        kind = "sequence" if args.picture_kind == "sequence" else "state"
        path = write_picture(args.picture, kernel, events, kind=kind)
        print(f"picture written to {path}")
    return status


def _cmd_diff_specs(args: argparse.Namespace) -> int:
    from .stories import STORIES, diff_story

    if args.name not in STORIES:
        print(
            f"dmabuf-sim diff-specs: unknown story {args.name!r}; choose one of"
            f" {', '.join(STORIES)}",
            file=sys.stderr,
        )
        return 2
    rows = diff_story(args.name, args.spec_a, args.spec_b)
    story = STORIES[args.name]
    print(f"{story.name}: {story.summary} ({', '.join(story.rules)})")
    if not rows:
        print(f"no difference between {args.spec_a} and {args.spec_b}")
        return 0
    width = max(len(r[0]) for r in rows)
    wa = max(len(args.spec_a), *(len(r[1]) for r in rows))
    print(f"{'':{width}}  {args.spec_a:{wa}}  {args.spec_b}")
    for key, a, b in rows:
        print(f"{key:{width}}  {a:{wa}}  {b}")
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
    tour.add_argument("--full-trace", action="store_true", help="do not hide plumbing calls")
    tour.set_defaults(func=_cmd_tour)
    specs = sub.add_parser("specs", help="spec versions and how they differ")
    specs.add_argument("--all", action="store_true", help="also list behaviours all share")
    specs.set_defaults(func=_cmd_specs)
    scen = sub.add_parser("scenarios", help="list or run scenarios and stories")
    scen.add_argument("action", choices=["list", "run"])
    scen.add_argument("name", nargs="?", help="scenario or story name (for run)")
    scen.add_argument("--spec", default="v6.12", choices=list(SPECS))
    scen.add_argument("--exporter", default="system_heap", help="exporter for shared scenarios")
    scen.add_argument("--trace", choices=["text", "jsonl"], help="print the kernel trace")
    scen.add_argument("--picture", metavar="FILE", help="write a picture (.svg, .mmd, .md, .dot)")
    scen.add_argument("--picture-kind", choices=["state", "sequence"], default="state")
    scen.add_argument(
        "--script", action="store_true", help="print the run as a syscall script (differential)"
    )
    scen.set_defaults(func=_cmd_scenarios)
    diff = sub.add_parser("diff-specs", help="run a story under two kernels; show differences")
    diff.add_argument("name")
    diff.add_argument("spec_a", choices=list(SPECS))
    diff.add_argument("spec_b", choices=list(SPECS))
    diff.set_defaults(func=_cmd_diff_specs)
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
    from .differential.command import add_parser as add_differential

    add_differential(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `dmabuf-sim tour | head`
        return 0
