"""``dmabuf-sim differential``: one script on the simulator and on a real kernel.

Exit status: 0 when both sides agree on every line (and meet every stated
expectation), 1 when they differ, 2 when the run could not happen (a bad
script, QEMU or the kernel missing, a VM that never started).
"""

from __future__ import annotations

import argparse
import errno
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from ..spec import DEFAULT_SPEC, SPECS
from .compare import Comparison, absent_devices, compare, load_record, replay_record, write_record
from .interp import ToolMissing, cache_dir
from .kernels import (
    PreparedKernel,
    apt_releases,
    check_release,
    fetch_debian_kernel,
    is_cached,
    own_kernel,
)
from .outcome import render_all
from .releases import spec_for_release
from .report import format_comparison, format_single
from .script import BUNDLED, EXPORTERS, Script, ScriptError, load_script, parse_script
from .simside import run_on_simulator
from .vm import VmError, run_in_vm

__all__ = ["add_parser", "run"]

PROG = "dmabuf-sim differential"


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "differential",
        help="run a syscall script on the simulator and on a real kernel in a VM",
        description="Run a syscall script (docs/differential.md) on the simulator and on a"
        " real Linux kernel booted under QEMU; print both answers side by side.",
    )
    p.add_argument(
        "script",
        nargs="?",
        help="a .syscalls file, or a bundled script by name"
        f" ({', '.join(sorted(x.stem for x in BUNDLED.glob('*.syscalls')))})",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--kernel", metavar="RELEASE", help="a Debian kernel, e.g. 6.12.117+deb12")
    src.add_argument("--kernel-image", metavar="BZIMAGE", help="your own kernel image")
    src.add_argument("--replay", metavar="FILE", help="compare with a recorded run (no VM)")
    src.add_argument("--sim-only", action="store_true", help="run the simulator side only")
    src.add_argument("--list-kernels", action="store_true", help="kernels cached or in apt")
    p.add_argument("--modules", metavar="DIR", help="modules of --kernel-image (.ko files)")
    p.add_argument("--spec", choices=list(SPECS), help="simulator spec (default: by release)")
    p.add_argument(
        "--exporter", choices=EXPORTERS, help="make every dmabuf(...) buffer with this exporter"
    )
    p.add_argument("--record", metavar="FILE", help="save the real kernel's answers (JSON lines)")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the VM (default 300)")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument(
        "--cache", metavar="DIR", help="kernels and builds (default ~/.cache/dmabuf-sim)"
    )
    p.add_argument("--console-log", metavar="FILE", help="where to save the VM's console")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--diff-only", action="store_true", help="print only the lines that differ")
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    return 2


def with_exporter(script: Script, exporter: str) -> Script:
    """The script with every ``dmabuf(EXPORTER, ...)`` using ``exporter`` instead."""
    pattern = re.compile(r"\bdmabuf\(\s*(" + "|".join(EXPORTERS) + r")\b")
    return parse_script(pattern.sub(f"dmabuf({exporter}", script.text), script.name)


def _list_kernels(cache: Path) -> int:
    cached = sorted(p.parent.name for p in (cache / "kernels").glob("*/kernel.json"))
    print(f"cached in {cache / 'kernels'}: {', '.join(cached) or 'none'}")
    offered = apt_releases()
    print(f"in the configured apt sources: {', '.join(offered) or 'none (apt-get update?)'}")
    for rel in cached or offered[-1:]:
        choice = spec_for_release(rel)
        print(
            f"  {rel}: simulator spec {choice.spec}" + (f" ({choice.note})" if choice.note else "")
        )
    return 0


def run(args: argparse.Namespace) -> int:
    cache = cache_dir(args.cache)
    if args.list_kernels:
        return _list_kernels(cache)
    width = shutil.get_terminal_size((120, 24)).columns
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    if args.modules and not args.kernel_image:
        return _fail("--modules goes with --kernel-image")
    if args.record and (args.sim_only or args.replay):
        return _fail(
            "--record saves a real kernel's answers: use it with --kernel or --kernel-image"
        )
    script: Script | None = None
    try:
        if args.script:
            script = load_script(args.script)
            if args.exporter:
                script = with_exporter(script, args.exporter)
    except ScriptError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read {args.script}: {exc.strerror}")
    if args.replay:
        return _replay(args, script, width, color)
    if script is None:
        return _fail("name a script (a .syscalls file or a bundled name), or use --list-kernels")
    if args.sim_only or not (args.kernel or args.kernel_image):
        if not args.sim_only:
            return _fail(
                "say which kernel: --kernel RELEASE (see --list-kernels), --kernel-image BZIMAGE,"
                " --replay FILE, or --sim-only"
            )
        spec = args.spec or DEFAULT_SPEC
        lines = render_all(script, run_on_simulator(script, spec))
        sys.stdout.write(format_single(lines, f"simulator ({spec})", width=width, color=color))
        return 1 if any(ln.expectation_met is False for ln in lines) else 0
    return _real(args, script, cache, width, color)


def _replay(args: argparse.Namespace, script: Script | None, width: int, color: bool) -> int:
    try:
        record = load_record(Path(args.replay))
    except (OSError, ValueError, ScriptError) as exc:
        return _fail(f"cannot read the record {args.replay}: {exc}")
    if script is not None and script.text != record.script.text:
        return _fail(
            f"{args.replay} was recorded from a different script than {args.script};"
            " record it again, or omit the script to replay the recorded one"
        )
    comparison = replay_record(record, args.spec)
    comparison.notes.insert(0, f"recorded answers: {args.replay}")
    return _print(comparison, width, color, args.diff_only)


def _print(comparison: Comparison, width: int, color: bool, only: bool = False) -> int:
    text = format_comparison(comparison, width=width, color=color, only_differences=only)
    sys.stdout.write(text)
    return 0 if comparison.agree else 1


def _real(args: argparse.Namespace, script: Script, cache: Path, width: int, color: bool) -> int:
    try:
        kernel: PreparedKernel
        if args.kernel:
            check_release(args.kernel)
            if not is_cached(args.kernel, cache):
                where = cache / "kernels"
                print(f"fetching Debian kernel {args.kernel} into {where}...", file=sys.stderr)
            kernel = fetch_debian_kernel(args.kernel, cache)
        else:
            modules = Path(args.modules) if args.modules else None
            kernel = own_kernel(Path(args.kernel_image), modules, cache)
        print(f"booting {kernel.release} under QEMU...", file=sys.stderr)
        console = Path(args.console_log) if args.console_log else None
        vm = run_in_vm(
            script, kernel, cache, timeout=args.timeout, accel=args.accel, console_log=console
        )
    except (ToolMissing, VmError, ValueError) as exc:
        return _fail(str(exc))
    header = vm.answers.header
    uname = str(header.get("release", kernel.release))
    release = args.kernel or uname
    notes = [
        f"kernel {uname} ({', '.join(kernel.packages) or kernel.image}), {vm.accel},"
        f" {vm.seconds:.1f} s; console log: {vm.console_log}",
        *vm.notes,
    ]
    spec = args.spec
    if spec is None:
        choice = spec_for_release(release)
        spec = choice.spec
        if choice.note:
            notes.append(choice.note)
    failed = [
        m["name"] for m in header.get("modules", []) if m.get("errno") not in (0, errno.EEXIST)
    ]
    if failed:
        notes.append(f"modules that did not load: {', '.join(failed)} (see the console log)")
    absent = absent_devices(header)
    outcomes = vm.answers.outcomes(script)
    comparison = compare(script, spec, outcomes, f"kernel {release}", absent=absent)
    used = script.uses_devices()
    notes += [
        f"the kernel has no {path} (not in its configuration); the simulator runs without it too"
        for path in sorted(absent)
        if path in used
    ]
    comparison.notes = notes
    comparison.problem = vm.problem
    if args.record:
        write_record(
            Path(args.record),
            script,
            header,
            outcomes,
            release=release,
            packages=kernel.packages,
            accel=vm.accel,
        )
        comparison.notes.append(f"recorded the kernel's answers in {args.record}")
    return _print(comparison, width, color, args.diff_only)
