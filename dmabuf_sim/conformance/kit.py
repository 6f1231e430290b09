"""``check_exporter``: run the whole kit on one exporter and get a verdict.

For one spec, the kit runs

1. the directed programs (:mod:`.programs`): short fixed step sequences, each
   aimed at one way exporters go wrong — deterministic and quick;
2. random exploration (:mod:`.explore`): hypothesis builds programs step by
   step from what the protocol allows, looking for any sequence that breaks a
   rule.

The first broken rule of a program is its finding.  The failing program is
shrunk to the steps the failure needs and printed as a self-contained Python
reproducer, which the kit runs once more to make sure it raises the same
finding as printed.

An exporter is given as any of:

* a registered name (``"system_heap"``) or an :class:`ExporterInfo`;
* a factory ``make(kernel, size, flags) -> DmaBuf`` that exports a buffer;
* a class or object with an ``export(kernel, size, flags) -> DmaBuf`` method
  (its ``capabilities`` attribute, a :class:`Capabilities`, says what it promises);
* a ``"module:attr"`` or ``"path/to/file.py:attr"`` string naming one of those.

The verdict is a :class:`KitReport`; ``report.raise_for_failures()`` raises
:class:`RuleViolation` whose message names the rule and whose notes carry the
reproducer.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import random
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field, frozen
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from ..dma_buf.core import DmaBuf, dma_buf_fd
from ..errors import KernelError, UsageError, os_error
from ..exporters.registry import EXPORTERS, Capabilities, ExporterInfo
from ..spec import DEFAULT_SPEC, Spec, get_spec
from .budget import DEEP, DEFAULT_EXAMPLES, DEFAULT_STEPS
from .explore import Recorder, generate
from .machine import DmaBufMachine, KitError, make_machine
from .program import Failure, Program, check_replays, replay, reproducer, shrink, simplify
from .programs import PROGRAMS
from .rules import RULES
from .sanitizers import Finding, RuleViolation
from .scenarios import run_scenario

__all__ = [
    "DEEP",
    "DEFAULT_EXAMPLES",
    "DEFAULT_STEPS",
    "KitReport",
    "KitResult",
    "UsageError",
    "check_exporter",
    "reproducer_target",
    "resolve_exporter",
]

_SEED = 0x5EED
"""Every check explores the same programs: a verdict never depends on the exporter's name."""


@frozen
class KitResult:
    name: str
    status: str
    """``passed``, ``failed``, ``skipped`` or ``error`` (the kit itself broke)."""
    findings: tuple[Finding, ...] = ()
    steps: str = ""
    """For a failure: the shortest program that shows it, as a runnable Python snippet."""
    reason: str = ""
    examples: int = 0
    steps_run: int = 0
    """Programs run and steps taken (diagnostics for the kit's figures)."""
    rules: tuple[str, ...] = ()
    """The rules this check exercises."""
    summary: str = ""
    seconds: float = 0.0

    @property
    def rule(self) -> str:
        return self.findings[0].rule if self.findings else ""

    def describe(self) -> str:
        if self.status == "skipped":
            return f"{self.name}: skipped ({self.reason})"
        if self.status == "passed":
            return f"{self.name}: passed"
        if self.status == "error":
            return f"{self.name}: error in the kit itself (please report): {self.reason}"
        lines = [f"{self.name}: {self.findings[0]}"]
        lines += [f"    then: {f}" for f in self.findings[1:3]]
        statement = _statement(self.findings[0].rule)
        if statement and self.steps:
            lines.append(f"    the rule: {statement}")
        if self.steps:
            lines.append("shortest program that breaks it (runs as printed):")
            lines.extend("    " + line for line in self.steps.splitlines())
        if self.reason:
            lines.append(f"note: {self.reason}")
        return "\n".join(lines)


def _statement(rule_id: str) -> str:
    found = RULES.get(rule_id)
    return found.statement if found is not None else ""


@define
class KitReport:
    exporter: str
    spec: str
    results: list[KitResult] = field(factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status in ("passed", "skipped") for r in self.results)

    @property
    def failures(self) -> list[KitResult]:
        return [r for r in self.results if r.status in ("failed", "error")]

    @property
    def broken_rules(self) -> list[str]:
        """The rule of every failing check's first finding (its verdict), sorted."""
        return sorted({r.findings[0].rule for r in self.failures if r.findings})

    def summary(self) -> str:
        counts = {
            s: sum(r.status == s for r in self.results) for s in ("passed", "failed", "skipped")
        }
        head = (
            f"dmabuf-sim kit: exporter {self.exporter}, spec {self.spec}: "
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        )
        if self.ok:
            head += " — the exporter keeps every rule the kit checks"
        else:
            head += f" — broken: {', '.join(self.broken_rules) or 'see below'}"
        return "\n".join([head, *(r.describe() for r in self.failures)])

    def verbose(self) -> str:
        """Every check with its outcome and the rules it exercises (``check -v``)."""
        lines = [f"dmabuf-sim kit: exporter {self.exporter}, spec {self.spec}"]
        for r in self.results:
            verdict = r.status if r.status != "failed" else f"FAILED ({r.rule})"
            rules = f" [{', '.join(r.rules)}]" if r.rules else ""
            extra = f" — {r.summary}" if r.summary else ""
            if r.status == "skipped":
                extra += f" ({r.reason})"
            lines.append(f"  {verdict:24} {r.name}{rules}{extra}")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        if self.failures:
            first = self.failures[0]
            err = RuleViolation(list(first.findings) or [Finding("SAN-OOPS", first.describe())])
            err.add_note(self.summary())
            raise err


# -- resolving what the user gave us ------------------------------------------------------
def resolve_exporter(obj: Any, *, capabilities: Capabilities | None = None) -> ExporterInfo:
    """Turn a name, ``module:attr``, factory or exporter object into an :class:`ExporterInfo`."""
    if isinstance(obj, ExporterInfo):
        return obj
    label = ""
    if isinstance(obj, str):
        if obj in EXPORTERS:
            return EXPORTERS[obj]
        if ":" not in obj:
            raise UsageError(
                f"unknown exporter {obj!r}: give a registered name ({', '.join(EXPORTERS)})"
                " or MODULE:ATTR naming a factory make(kernel, size, flags) -> DmaBuf"
            )
        label = obj
        obj = _import(obj)
    factory = _factory_of(obj, label or getattr(obj, "__qualname__", repr(obj)))
    name = label or getattr(obj, "__qualname__", type(obj).__name__)
    caps = capabilities or getattr(obj, "capabilities", None) or Capabilities()
    if not isinstance(caps, Capabilities):
        raise UsageError(
            f"{name}.capabilities must be a dmabuf_sim.exporters.registry.Capabilities,"
            f" not {type(caps).__name__}"
        )
    module = getattr(obj, "module", "")
    if not isinstance(module, str):
        raise UsageError(
            f"{name}.module must be a str: the name of the kernel module the exporter is"
            f" built as (what it passes as exp_info.owner), not {type(module).__name__}"
        )
    return ExporterInfo(
        name=name,
        summary=(inspect.getdoc(obj) or name).splitlines()[0],
        kind="user",
        make_fd=_user_make_fd(factory, name),
        available=_user_available,
        capabilities=caps,
        module=module,
        module_code=(obj if inspect.isclass(obj) else type(obj),) if module else (),
    )


def _import(spec: str) -> Any:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise UsageError(f"{spec!r}: expected MODULE:ATTR, e.g. mypkg.myexporter:make")
    try:
        if module_name.endswith(".py"):
            module = _import_path(module_name)
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cannot import {module_name!r} for exporter {spec!r}: {exc}. Install the package"
            " that provides it (pip install -e .), run from the directory that contains it"
            " (python -m pytest adds the current directory), or name the file:"
            f" path/to/{module_name.rsplit('.', 1)[-1]}.py:{attr}"
        ) from exc
    except UsageError:
        raise
    except Exception as exc:  # an error inside the user's module
        raise UsageError(
            f"cannot import {module_name!r} for exporter {spec!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        value = module
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return value


def _import_path(path: str) -> Any:
    """Import a module from a file path (its directory joins sys.path, as for a script)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise UsageError(f"no such file: {path}")
    key = f"dmabuf_sim_user_{abs(hash(str(file)))}"
    if key in sys.modules:
        return sys.modules[key]
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    mod_spec = importlib.util.spec_from_file_location(file.stem, file)
    if mod_spec is None or mod_spec.loader is None:
        raise UsageError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[key] = module
    sys.modules.setdefault(file.stem, module)
    mod_spec.loader.exec_module(module)
    return module


def _factory_of(obj: Any, label: str) -> Callable[[Any, int, int], Any]:
    if inspect.isclass(obj):
        cls = obj
        try:
            obj = cls()
        except Exception as exc:
            raise UsageError(
                f"exporter class {label} could not be instantiated without arguments: {exc!r}"
            ) from exc
        if callable(getattr(obj, "export", None)):
            # One exporter object per kernel, as a driver is per machine: state it keeps
            # (a page pool, a device) must not leak from one program into the next.
            per_kernel: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

            def export_per_kernel(kernel: Any, size: int, flags: int) -> Any:
                ops: Any = per_kernel.get(kernel)
                if ops is None:
                    ops = per_kernel[kernel] = cls()
                return ops.export(kernel, size, flags)

            return export_per_kernel
    export: Any = getattr(obj, "export", None)
    if callable(export):
        return export  # type: ignore[no-any-return]
    if callable(obj):
        return obj  # type: ignore[no-any-return]
    raise UsageError(
        f"{label} is neither a factory make(kernel, size, flags) -> DmaBuf nor an object"
        " with an export(kernel, size, flags) method"
    )


def _user_available(spec: Spec) -> str | None:
    if not spec.has_mmap_fop:
        return f"spec {spec.name} has no dma-buf mmap"
    if not spec.config_dma_shared_buffer:
        return f"spec {spec.name} is built without CONFIG_DMA_SHARED_BUFFER"
    return None


def _user_make_fd(factory: Callable[[Any, int, int], Any], name: str) -> Callable[..., int]:
    def make(proc: Any, size: int, flags: int) -> int:
        kernel = proc.kernel
        with kernel.running(proc):
            try:
                dmabuf = factory(kernel, size, flags & os.O_ACCMODE)
            except KernelError:
                raise
            except TypeError as exc:
                if not _signature_mismatch(exc):
                    raise
                raise UsageError(
                    f"exporter {name}: calling it as make(kernel, size, flags) failed: {exc}"
                ) from exc
            if not isinstance(dmabuf, DmaBuf):
                raise UsageError(
                    f"exporter {name} returned {type(dmabuf).__name__}; expected the DmaBuf"
                    " that dma_buf_export(kernel, ...) returns"
                )
            fd = dma_buf_fd(dmabuf, flags & os.O_CLOEXEC)
        if fd < 0:
            raise os_error(fd)
        return fd

    return make


def _signature_mismatch(exc: TypeError) -> bool:
    """Did the call itself fail (wrong arity), rather than code inside the factory?"""
    tb = exc.__traceback__
    depth = 0
    while tb is not None:
        depth += 1
        tb = tb.tb_next
    return depth <= 1


def reproducer_target(given: Any, info: ExporterInfo) -> str:
    """The string a reproducer passes to ``make_machine`` to find this exporter again."""
    if isinstance(given, str):
        if given in EXPORTERS:
            return given
        module, _, attr = given.rpartition(":")
        if module.endswith(".py"):
            return f"{Path(module).resolve()}:{attr}"
        return given
    if isinstance(given, ExporterInfo):
        return given.name if EXPORTERS.get(given.name) is given else ""
    target: Any = given
    if not inspect.isclass(target) and not inspect.isfunction(target):
        target = type(target)  # an exporter object: name its class
    qualname = str(getattr(target, "__qualname__", ""))
    if not qualname or "<locals>" in qualname:
        return ""
    home = sys.modules.get(str(getattr(target, "__module__", "") or ""))
    if home is None:
        return ""
    if home.__spec__ is not None and home.__spec__.parent and home.__name__ != "__main__":
        return f"{home.__name__}:{qualname}"  # inside a package: import it by name
    file = getattr(home, "__file__", None)
    return f"{Path(file).resolve()}:{qualname}" if file else ""


# -- running --------------------------------------------------------------------------------
def check_exporter(
    exporter: Any,
    *,
    spec: str = DEFAULT_SPEC,
    max_examples: int = DEFAULT_EXAMPLES,
    steps: int = DEFAULT_STEPS,
    programs: Sequence[str] | None = None,
    scenarios: Sequence[str] = (),
    machine: bool = True,
    shrink: bool = True,
    database: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    explore_after_failure: bool = False,
) -> KitReport:
    """Run the kit on ``exporter`` under ``spec``; returns a :class:`KitReport`.

    ``programs`` picks directed programs by name (default: all); ``machine``
    turns random exploration on (``max_examples`` programs of up to ``steps``
    steps); ``database`` is a directory where failing random programs are kept,
    so that re-checking a still-failing exporter finds them at once;
    ``scenarios`` also runs the named shared scenarios (:mod:`.scenarios`).
    """
    for label, value in (("max_examples", max_examples), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{label} must be a positive int, not {value!r}")
    start = time.perf_counter()
    spec_obj = get_spec(spec)
    info = resolve_exporter(exporter)
    names = list(PROGRAMS) if programs is None else list(programs)
    unknown = [n for n in names if n not in PROGRAMS]
    if unknown:
        raise UsageError(f"unknown program(s) {unknown}; choose from {', '.join(PROGRAMS)}")
    report = KitReport(info.name, spec_obj.name)
    why = _unavailable(info, spec_obj)
    cls = make_machine(info, spec_obj.name, target=reproducer_target(exporter, info))
    for name in scenarios:
        if progress:
            progress(f"scenario {name}")
        res = run_scenario(name, info, spec_obj)
        report.results.append(
            KitResult(f"scenario {name}", res.status, res.findings, reason=res.reason)
        )
    shown: dict[str, str] = {}  # rule -> the check whose reproducer shows it
    for name in names:
        prog = PROGRAMS[name]
        if progress:
            progress(f"program {name}")
        if why:
            report.results.append(
                KitResult(f"program {name}", "skipped", reason=why, rules=prog.rules)
            )
            continue
        result = _run_program(cls, prog.name, prog.program(), prog, shrink, shown)
        if result.status == "failed" and result.rule not in shown:
            shown[result.rule] = result.name
        report.results.append(result)
    if machine:
        if progress:
            progress(f"random programs ({max_examples} x up to {steps} steps)")
        if why:
            report.results.append(KitResult("state machine", "skipped", reason=why))
        elif report.failures and not explore_after_failure:
            report.results.append(
                KitResult(
                    "state machine",
                    "skipped",
                    reason="a directed program already failed: fix that first"
                    " (explore_after_failure=True explores anyway)",
                )
            )
        else:
            report.results.append(_explore(cls, max_examples, steps, shrink, database))
    report.seconds = time.perf_counter() - start
    return report


def _unavailable(info: ExporterInfo, spec: Spec) -> str:
    why = info.available(spec)
    if not why and spec.mmap_internal_reads_uninitialised_dmabuf:
        why = "every mmap of a dma-buf fd oopses under the RFC as posted (R61)"
    return why or ""


def _run_program(
    cls: type[DmaBufMachine],
    name: str,
    program: Program,
    prog: Any,
    do_shrink: bool,
    shown: dict[str, str],
) -> KitResult:
    start = time.perf_counter()
    title = f"program {name}"
    try:
        run = replay(cls, program, lenient=True)
    except UsageError:
        raise
    except KitError as exc:
        return KitResult(title, "error", reason=str(exc), rules=prog.rules)
    steps = len(run.executed)
    if run.failure is None:
        return KitResult(
            title,
            "passed",
            examples=1,
            steps_run=steps,
            rules=prog.rules,
            summary=prog.summary,
            seconds=time.perf_counter() - start,
        )
    rule = run.failure.rule
    if rule in shown:  # one reproducer per broken rule is enough (and much faster)
        result = KitResult(
            title,
            "failed",
            tuple(run.failure.findings),
            reason=f"the same rule as {shown[rule]}, whose reproducer is printed",
        )
    else:
        result = _report_failure(cls, title, run.failure, do_shrink)
    return KitResult(
        result.name,
        result.status,
        result.findings,
        result.steps,
        result.reason,
        examples=1,
        steps_run=steps,
        rules=prog.rules,
        summary=prog.summary,
        seconds=time.perf_counter() - start,
    )


def _report_failure(
    cls: type[DmaBufMachine], title: str, failure: Failure, do_shrink: bool
) -> KitResult:
    """Shrink, print, and check that the printed reproducer raises the same rule."""
    try:
        best = simplify(cls, shrink(cls, failure)) if do_shrink else failure
        text = reproducer(cls, best)
        problem = check_replays(text, cls, best.rule)
    except KitError as exc:
        return KitResult(title, "error", tuple(failure.findings), reason=str(exc))
    if problem:
        # keep the unshrunk program if the shrunk one does not replay (never seen; says so)
        text = reproducer(cls, failure)
        again = check_replays(text, cls, failure.rule)
        best = failure
        problem = f"the reproducer below does not replay exactly: {again or problem}"
    return KitResult(title, "failed", tuple(best.findings), text, reason=problem)


def _explore(
    cls: type[DmaBufMachine],
    max_examples: int,
    steps: int,
    do_shrink: bool,
    database: str | os.PathLike[str] | None,
) -> KitResult:
    start = time.perf_counter()
    stats = {"examples": 0, "steps": 0}

    def run(seed: int) -> None:
        stats["examples"] += 1
        state = cls()
        recorder = Recorder(state)
        try:
            generate(recorder, random.Random(seed), steps)
            recorder.call("teardown")
        except RuleViolation as exc:
            exc.kit_program = recorder.program  # type: ignore[attr-defined]
            raise
        finally:
            stats["steps"] += len(recorder.program)

    run._hypothesis_internal_add_digest = f"{cls.target or cls.__name__}/{cls.spec}".encode()  # type: ignore[attr-defined]
    # hypothesis's own shrinker replays thousands of programs; the kit's (program.shrink,
    # which drops whole steps) needs tens to get the same short reproducers
    phases = [Phase.explicit, Phase.generate]
    if database is not None:
        phases.insert(0, Phase.reuse)
    test = settings(
        max_examples=max_examples,
        deadline=None,
        database=DirectoryBasedExampleDatabase(str(database)) if database is not None else None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )(given(st.integers(0, 2**64 - 1))(run))
    test._hypothesis_internal_use_seed = _SEED  # type: ignore[attr-defined]

    def result(status: str, **kw: Any) -> KitResult:
        return KitResult(
            "state machine",
            status,
            examples=stats["examples"],
            steps_run=stats["steps"],
            summary="random programs built from what the protocol allows at each step",
            seconds=time.perf_counter() - start,
            **kw,
        )

    try:
        test()
    except RuleViolation as exc:
        program: Program = getattr(exc, "kit_program", [])
        failure = Failure(list(exc.findings), len(program) - 1, program)
        res = _report_failure(cls, "state machine", failure, do_shrink)
        return result(res.status, findings=res.findings, steps=res.steps, reason=res.reason)
    except KitError as exc:
        return result("error", reason=str(exc))
    except UsageError:
        raise
    except Exception as exc:  # hypothesis itself (a flaky run): say so, with what it said
        return result("error", reason=f"{type(exc).__name__}: {exc}")
    return result("passed")
