"""The conformance kit: verdicts on reference, teaching and user exporters.

The kit must pass every reference exporter under every spec it supports, and
catch every teaching exporter with the rule its documentation names.  Runs
here use ``derandomize`` (deterministic) and, where only detection matters,
``shrink=False`` to stay fast; one test checks a shrunk reproducer runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dmabuf_sim.conformance.kit import UsageError, check_exporter, resolve_exporter
from dmabuf_sim.conformance.machine import make_machine
from dmabuf_sim.conformance.sanitizers import RuleViolation
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.spec import SPECS

EXAMPLES = Path(__file__).parent.parent.parent / "examples"
REFERENCE = [n for n, e in EXPORTERS.items() if e.kind == "reference"]
TEACHING = [n for n, e in EXPORTERS.items() if e.kind == "teaching"]


def _supported(name: str) -> list[str]:
    info = EXPORTERS[name]
    return [
        s
        for s, spec in SPECS.items()
        if info.available(spec) is None and not spec.mmap_internal_reads_uninitialised_dmabuf
    ]


@pytest.mark.parametrize(
    ("name", "spec"),
    [(n, s) for n in REFERENCE for s in _supported(n)],
)
def test_kit_passes_reference_exporters(name: str, spec: str) -> None:
    """Reference exporters keep every rule (documented historical bugs excepted)."""
    report = check_exporter(name, spec=spec, max_examples=25, steps=20)
    info = EXPORTERS[name]
    if info.fails and (not info.fails_on or spec in info.fails_on):
        assert not report.ok
        assert set(info.rules) & set(report.broken_rules), report.summary()
    else:
        assert report.ok, report.summary()


@pytest.mark.parametrize(
    ("name", "spec"),
    [(n, (EXPORTERS[n].fails_on or ("v6.12",))[-1]) for n in TEACHING],
)
def test_kit_catches_teaching_exporters_with_their_rule(name: str, spec: str) -> None:
    """Each teaching exporter fails, and the report names the rule it documents."""
    report = check_exporter(name, spec=spec, max_examples=200, steps=30, shrink=False)
    assert not report.ok
    info = EXPORTERS[name]
    machine = report.results[-1]
    assert machine.name == "state machine"
    assert machine.status == "failed", f"the state machine missed {name}: {report.summary()}"
    # A defect may show first through another symptom (a freed page reused shows as a
    # stale read); the report as a whole must name the documented rule.
    text = report.summary()
    assert any(rule in report.broken_rules or rule in text for rule in info.rules), text


def test_shrunk_reproducer_is_short_and_runs() -> None:
    """The reproducer names the machine class after the exporter and replays the failure."""
    report = check_exporter("leaks_file_ref", spec="v6.12", scenarios=[])
    (result,) = report.results
    assert result.status == "failed"
    lines = result.steps.splitlines()
    assert lines[0] == "state = DmaBufMachine_LeaksFileRef_v6_12()"
    assert len(lines) <= 5
    cls = make_machine(EXPORTERS["leaks_file_ref"], "v6.12")
    with pytest.raises(RuleViolation) as exc:
        exec(result.steps, {cls.__name__: cls})
    assert exc.value.rule in {"SAN-RELEASE-ONCE", "SAN-REFCOUNT"}


def test_readme_example_passes_and_its_broken_twin_names_r60() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        good = check_exporter(f"{EXAMPLES}/my_exporter.py:MyExporter", spec="v6.12")
        bad = check_exporter(f"{EXAMPLES}/my_broken_exporter.py:MyBrokenExporter", spec="v6.12")
    finally:
        sys.path.remove(str(EXAMPLES))
    assert good.ok, good.summary()
    assert bad.broken_rules == ["R60"]
    with pytest.raises(RuleViolation) as exc:
        bad.raise_for_failures()
    assert "R60 violated" in str(exc.value)
    assert "state.mmap(" in "\n".join(exc.value.__notes__)


# -- bad input -----------------------------------------------------------------------------
def test_unimportable_factory_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"cannot import 'no_such_pkg\.mod'"):
        resolve_exporter("no_such_pkg.mod:make")


def test_missing_attribute_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="has no attribute 'nothing'"):
        resolve_exporter("os:nothing")


def test_unknown_name_lists_registered_exporters() -> None:
    with pytest.raises(UsageError, match="system_heap"):
        resolve_exporter("no-such-exporter")


def test_factory_returning_the_wrong_type_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="expected the DmaBuf"):
        check_exporter(
            lambda kernel, size, flags: 42, spec="v6.12", machine=False, scenarios=["round-trip"]
        )


def test_factory_with_the_wrong_signature_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"make\(kernel, size, flags\)"):
        check_exporter(lambda kernel: None, spec="v6.12", machine=False, scenarios=["round-trip"])


def test_non_callable_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="neither a factory"):
        resolve_exporter(42)


def test_bad_max_examples_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="max_examples"):
        check_exporter("simple", spec="v6.12", max_examples=0)


def test_factory_that_raises_is_reported_as_a_failure_not_a_crash() -> None:
    def boom(kernel: object, size: int, flags: int) -> object:
        raise RuntimeError("allocator exploded")

    report = check_exporter(boom, spec="v6.12", scenarios=[], max_examples=5)
    assert not report.ok
    assert "allocator exploded" in report.summary()


# -- the pytest plugin and the CLI, from outside the checkout ----------------------------------
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES))
    return subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_pytest_plugin_runs_the_kit(tmp_path: Path) -> None:
    """`pytest --dmabuf-exporter=MODULE:ATTR` needs no test file of the user's."""
    proc = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--dmabuf-exporter=my_broken_exporter:MyBrokenExporter",
            "--dmabuf-spec=v6.12",
            "--dmabuf-max-examples=30",
        ],
        tmp_path,
    )
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "R60 violated" in out
    assert "8 passed" in out and "1 failed" in out


def test_pytest_plugin_reports_a_bad_factory_as_usage_error(tmp_path: Path) -> None:
    proc = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--dmabuf-exporter=nope_mod:make",
        ],
        tmp_path,
    )
    assert proc.returncode == 4  # pytest's usage-error exit code
    assert "cannot import 'nope_mod'" in proc.stderr


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    good = _run(
        [
            sys.executable,
            "-m",
            "dmabuf_sim",
            "check",
            "--quiet",
            "--spec",
            "v6.12",
            "my_exporter:MyExporter",
        ],
        tmp_path,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "9 passed, 0 failed" in good.stdout
    bad = _run(
        [
            sys.executable,
            "-m",
            "dmabuf_sim",
            "check",
            "--quiet",
            "--spec",
            "v6.12",
            "my_broken_exporter:MyBrokenExporter",
        ],
        tmp_path,
    )
    assert bad.returncode == 1
    assert "R60 violated" in bad.stdout
    usage = _run([sys.executable, "-m", "dmabuf_sim", "check", "nope_mod:make"], tmp_path)
    assert usage.returncode == 2
    assert textwrap.shorten(usage.stderr, 200).startswith("dmabuf-sim check: cannot import")
