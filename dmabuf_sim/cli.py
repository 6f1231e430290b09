"""``dmabuf-sim``: the command line (``python -m dmabuf_sim`` works too).

Subcommands:

``tour``        a guided run through the simulator, each step traced and explained;
``scenarios``   ``list`` and ``run NAME [--spec] [--exporter] [--trace strace|text|jsonl]
                [--picture F] [--html F]``;
``diff-specs``  ``NAME SPEC_A [SPEC_B]``: one story under two kernels, what differs, which
                side is the bug;
``specs``       the spec versions and the behaviours that tell them apart;
``check``       run the conformance kit on an exporter (yours or a registered one);
``functions``   every simulated kernel function and the kernel file it mirrors;
``differential`` a syscall script on the simulator and on a real kernel in a VM.

Every command that runs a kernel defaults to :data:`~dmabuf_sim.spec.DEFAULT_SPEC`
and names the spec it used in its first line.  Usage errors end in one line on
stderr saying what to do (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .conformance.budget import DEEP, DEFAULT_EXAMPLES, DEFAULT_STEPS
from .spec import DEFAULT_SPEC, SPECS, Spec

__all__ = ["main"]


def _fail(command: str, message: str) -> int:
    """One line on stderr saying what to do; exit status 2 (a usage error)."""
    print(f"dmabuf-sim {command}: {message}", file=sys.stderr)
    return 2


def _spec_note(spec: str) -> str:
    return f"spec {spec}" + (" (the default)" if spec == DEFAULT_SPEC else "")


def _writable(path: str, what: str) -> str | None:
    """Why ``path`` cannot be written (in words that say what to do), or None."""
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        return f"{path} is a directory; give a file name, e.g. {target / ('out' + what)}"
    if not parent.is_dir():
        return (
            f"cannot write {path}: directory {parent} does not exist;"
            " create it first or choose another path"
        )
    if not os.access(parent, os.W_OK):
        return f"cannot write {path}: directory {parent} is not writable; choose another path"
    return None


def _picture_problem(path: str, kind: str) -> str | None:
    """Why ``--picture path`` cannot be drawn, or None."""
    from .picture import FORMATS

    if Path(path).is_dir():
        return _writable(path, ".svg")
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        stem = Path(path).with_suffix("")
        return (
            f"cannot draw {Path(path).name}: this tool writes .svg (open it in a browser),"
            " .mmd or .md (Mermaid) and .dot (Graphviz: turn it into a PNG with"
            f" 'dot -Tpng {stem}.dot -o {stem}.png'); choose one of those suffixes"
        )
    if kind == "sequence" and FORMATS[suffix] == "dot":
        return "sequence pictures have no DOT form: use .svg, .mmd or .md"
    return _writable(path, suffix)


def _write(path: str, write: Callable[[], object]) -> str | None:
    """Run ``write()``; an OSError becomes one line (None when it worked)."""
    try:
        write()
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}; choose another path"
    return None


def _cmd_tour(args: argparse.Namespace) -> int:
    from .tour import run_tour, tour_steps, tour_walkthrough

    steps = len(tour_steps())
    if args.step is not None and not 1 <= args.step <= steps:
        return _fail(
            "tour",
            f"there is no step {args.step}: the tour has steps 1 to {steps};"
            f" run 'dmabuf-sim tour --step 1' .. '--step {steps}', or 'dmabuf-sim tour'",
        )
    if args.html:
        problem = _writable(args.html, ".html")
        if problem:
            return _fail("tour", problem)
        view = tour_walkthrough(default_spec=args.spec, full_trace=args.full_trace)
        problem = _write(args.html, lambda: view.write(args.html))
        if problem:
            return _fail("tour", problem)
        print(
            f"step-through view of the tour written to {args.html}: open it in a browser"
            f" ({_spec_note(args.spec)} first; every spec is inside)"
        )
        return 0
    run_tour(
        spec=args.spec,
        out=sys.stdout,
        trace=not args.no_trace,
        only=args.step,
        full_trace=args.full_trace,
    )
    return 0


def _spec_value(v: object) -> str:
    """A behaviour's value in full: yes/no, hex for flag words, the text otherwise."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return hex(v)
    return str(v)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _cmd_specs(args: argparse.Namespace) -> int:
    """The release table (``SPECS.for_release``) and the behaviours, values in full."""
    names = list(SPECS)
    print("Kernel releases and the spec that models them (SPECS.for_release):")
    rows = [["releases", "spec", "recorded", "note"]]
    rows += [[r.describe(), r.spec, r.recorded, r.note] for r in SPECS.releases]
    print(_table(rows))
    print()
    if args.all:
        print("Every behaviour:")
    else:
        print("Behaviours that differ between the specs (--all for every one):")
    rows = [["behaviour", *names, "since", "meaning"]]
    for f in Spec.behaviours():
        vals = [_spec_value(getattr(SPECS[n], f.name)) for n in names]
        if not args.all and len(set(vals)) == 1:
            continue
        rows.append([f.name, *vals, f.metadata["since"], f.metadata["doc"]])
    print(_table(rows))
    return 0


def _cmd_functions(args: argparse.Namespace) -> int:
    from . import load_everything
    from .trace import KERNEL_FUNCTIONS

    load_everything()
    for key in sorted(KERNEL_FUNCTIONS):
        info = KERNEL_FUNCTIONS[key]
        print(f"{info.name:32} {info.file}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import time

    from .conformance.kit import UsageError, check_exporter

    specs = args.spec or [DEFAULT_SPEC]
    examples, steps = DEEP if args.deep else (args.max_examples, args.steps)
    if args.deep and args.max_examples is not None:
        examples = args.max_examples
    failed = False
    for spec in specs:
        start = time.monotonic()

        def progress(msg: str, spec: str = spec) -> None:
            print(f"  [{spec}] {msg} ...", file=sys.stderr, flush=True)

        try:
            report = check_exporter(
                args.exporter,
                spec=spec,
                max_examples=examples or DEFAULT_EXAMPLES,
                steps=steps,
                shrink=not args.no_shrink,
                database=args.db,
                explore_after_failure=args.explore_anyway,
                progress=None if args.quiet else progress,
            )
        except UsageError as exc:
            print(f"dmabuf-sim check: {exc}", file=sys.stderr)
            return 2
        if args.verbose:
            print(report.verbose())
        print(report.summary())
        if not args.quiet:
            print(f"  [{spec}] done in {time.monotonic() - start:.1f} s", file=sys.stderr)
        failed = failed or not report.ok
    return 1 if failed else 0


def _plain(text: str) -> str:
    """Docstring text without reStructuredText markup (roles, double backquotes)."""
    text = re.sub(r":[\w:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)
    return text.replace("``", "").replace("`", "")


def _cmd_scenarios(args: argparse.Namespace) -> int:
    from .conformance.scenarios import SCENARIOS
    from .exporters.registry import EXPORTERS
    from .stories import STORIES

    if args.action == "list":
        print("Shared scenarios (run one with an exporter: --exporter NAME):")
        for name, fn in SCENARIOS.items():
            print(f"  {name:24} {_plain((fn.__doc__ or '').strip().splitlines()[0])}")
        print("\nStories (outcomes that differ between kernels; see diff-specs):")
        for story in STORIES.values():
            print(f"  {story.name:24} {story.summary} ({', '.join(story.rules)})")
        print("\nExporters:")
        for info in EXPORTERS.values():
            print(f"  {info.name:24} [{info.kind}] {_plain(info.summary)}")
        print(
            f"\nRun one: dmabuf-sim scenarios run NAME [--spec SPEC] (default {DEFAULT_SPEC})"
            " [--trace strace|text|jsonl] [--html view.html]"
        )
        return 0
    if not args.name:
        return _fail("scenarios run", "name a scenario or story (see 'dmabuf-sim scenarios list')")
    return _run_named(args)


def _run_named(args: argparse.Namespace) -> int:
    from .exporters.registry import EXPORTERS
    from .runs import is_named, run_named
    from .strace import format_strace
    from .trace import format_function_graph, format_jsonl, hide_harness, hide_plumbing

    name = args.name
    if not is_named(name):
        return _fail(
            "scenarios run", f"unknown scenario {name!r} (see 'dmabuf-sim scenarios list')"
        )
    if args.exporter not in EXPORTERS:
        return _fail(
            "scenarios run",
            f"unknown exporter {args.exporter!r}; choose one of {', '.join(EXPORTERS)}",
        )
    if args.script:  # the run as a syscall script, for 'dmabuf-sim differential'
        from .differential.export import export_named

        try:
            sys.stdout.write(export_named(name, args.spec, args.exporter))
        except ValueError as exc:
            return _fail("scenarios run", str(exc))
        return 0
    kind = "sequence" if args.picture_kind == "sequence" else "state"
    for option, path, problem in (
        ("--picture", args.picture, args.picture and _picture_problem(args.picture, kind)),
        ("--html", args.html, args.html and _writable(args.html, ".html")),
    ):
        if problem:
            return _fail("scenarios run", f"{option} {path}: {problem}")
    run = run_named(name, args.spec, args.exporter)
    jsonl = args.trace == "jsonl"
    info = sys.stderr if jsonl else sys.stdout  # JSON lines stay pure JSON
    events = run.events if args.full_trace else hide_plumbing(hide_harness(run.events))
    if jsonl:
        sys.stdout.write(format_jsonl(events))
        result = {
            "kind": "result",
            "name": run.name,
            "spec": run.spec,
            "exporter": run.exporter,
            "status": run.status,
            "observations": run.observations,
        }
        if run.status == "skipped":
            result |= {"reason": run.reason, "hint": run.hint}
        print(json.dumps(result, sort_keys=True))
    else:
        who = f"{run.kind} {run.name}" + (f", exporter {run.exporter}" if run.exporter else "")
        print(f"== {who}, {_spec_note(run.spec)}")
        if args.trace == "text":
            sys.stdout.write(format_function_graph(events))
        elif args.trace == "strace":
            sys.stdout.write(format_strace(events))
        for line in run.lines():
            print(line)
    if args.picture and run.kernel is not None:
        from .picture import write_picture

        problem = _write(
            args.picture,
            lambda: write_picture(
                args.picture, run.kernel, run.events, kind=kind, compact=not args.full_trace
            ),
        )
        if problem:
            return _fail("scenarios run", problem)
        print(f"{kind} picture written to {args.picture}", file=info)
    if args.html:
        from .stepview import walkthrough

        view = walkthrough(name, args.exporter, default_spec=run.spec, full_trace=args.full_trace)
        problem = _write(args.html, lambda: view.write(args.html))
        if problem:
            return _fail("scenarios run", problem)
        print(
            f"step-through view written to {args.html}: open it in a browser"
            f" ({run.spec} first; every spec is inside)",
            file=info,
        )
    return 1 if run.status == "failed" else 0


def _cmd_diff_specs(args: argparse.Namespace) -> int:
    from .stories import STORIES, diff_story, verdict

    if args.name not in STORIES:
        return _fail(
            "diff-specs",
            f"unknown story {args.name!r}; choose one of {', '.join(STORIES)}",
        )
    spec_a, spec_b = args.spec_a, args.spec_b
    rows = diff_story(args.name, spec_a, spec_b)
    story = STORIES[args.name]
    print(f"{story.name}: {story.summary} ({', '.join(story.rules)})")
    if not rows:
        print(f"no difference between {spec_a} and {spec_b}")
        return 0
    width = max(len(r[0]) for r in rows)
    wa = max(len(spec_a), *(len(r[1]) for r in rows))
    print(f"{'':{width}}  {spec_a:{wa}}  {spec_b}")
    for key, a, b in rows:
        print(f"{key:{width}}  {a:{wa}}  {b}")
    summary, lines = verdict(args.name, spec_a, spec_b, rows)
    print(f"verdict: {summary}")
    for line in lines:
        print(f"  {line}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line saying what to do (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dmabuf-sim", description="An executable model of Linux dma-buf and its mmap."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"dmabuf-sim {__version__} (default spec {DEFAULT_SPEC})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="a guided run, step by step, with kernel traces")
    tour.add_argument(
        "--spec", default=DEFAULT_SPEC, choices=list(SPECS), help=f"default {DEFAULT_SPEC}"
    )
    tour.add_argument("--no-trace", action="store_true", help="explanations only")
    tour.add_argument("--step", type=int, default=None, help="run only this step number")
    tour.add_argument(
        "--full-trace", action="store_true", help="do not hide plumbing or harness calls"
    )
    tour.add_argument(
        "--html", metavar="FILE", help="write the step-through view (one HTML file, every spec)"
    )
    tour.set_defaults(func=_cmd_tour)
    specs = sub.add_parser("specs", help="spec versions and how they differ")
    specs.add_argument("--all", action="store_true", help="also list behaviours all share")
    specs.set_defaults(func=_cmd_specs)
    scen = sub.add_parser("scenarios", help="list or run scenarios and stories")
    scen.add_argument("action", choices=["list", "run"])
    scen.add_argument("name", nargs="?", help="scenario or story name (for run)")
    scen.add_argument(
        "--spec", default=DEFAULT_SPEC, choices=list(SPECS), help=f"default {DEFAULT_SPEC}"
    )
    scen.add_argument("--exporter", default="system_heap", help="exporter for shared scenarios")
    scen.add_argument(
        "--trace",
        choices=["strace", "text", "jsonl"],
        help="print the userspace calls (strace), with the kernel's function graph (text),"
        " or everything as JSON lines (jsonl: stdout is pure JSON, the result last)",
    )
    scen.add_argument(
        "--full-trace", action="store_true", help="do not hide plumbing or harness calls"
    )
    scen.add_argument("--picture", metavar="FILE", help="write a picture (.svg, .mmd, .md, .dot)")
    scen.add_argument("--picture-kind", choices=["state", "sequence"], default="state")
    scen.add_argument(
        "--html", metavar="FILE", help="write the step-through view (one HTML file, every spec)"
    )
    scen.add_argument(
        "--script", action="store_true", help="print the run as a syscall script (differential)"
    )
    scen.set_defaults(func=_cmd_scenarios)
    diff = sub.add_parser(
        "diff-specs", help="run a story under two kernels; show differences and the bug"
    )
    diff.add_argument("name")
    diff.add_argument("spec_a", choices=list(SPECS))
    diff.add_argument(
        "spec_b",
        nargs="?",
        default=DEFAULT_SPEC,
        choices=list(SPECS),
        help=f"default {DEFAULT_SPEC}",
    )
    diff.set_defaults(func=_cmd_diff_specs)
    check = sub.add_parser("check", help="run the conformance kit on an exporter")
    check.add_argument(
        "exporter",
        help="a registered exporter name, MODULE:ATTR or path/to/file.py:ATTR naming a factory"
        " make(kernel, size, flags) -> DmaBuf or a class with export(kernel, size, flags)",
    )
    check.add_argument(
        "--spec",
        action="append",
        choices=list(SPECS),
        help=f"repeatable (default {DEFAULT_SPEC})",
    )
    check.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help=f"random programs to run (default {DEFAULT_EXAMPLES}, about a second)",
    )
    check.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="steps per random program at most"
    )
    check.add_argument(
        "--deep",
        action="store_true",
        help=f"a deeper budget: {DEEP[0]} random programs of up to {DEEP[1]} steps",
    )
    check.add_argument(
        "--db",
        metavar="DIR",
        help="keep failing random programs in DIR and try them first next time (edit-test loop)",
    )
    check.add_argument(
        "--explore-anyway",
        action="store_true",
        help="explore at random even when a directed program already failed",
    )
    check.add_argument("--no-shrink", action="store_true", help="report the first failure found")
    check.add_argument("-v", "--verbose", action="store_true", help="list every check and rule")
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
