"""The conformance kit: verdicts on reference, teaching and user exporters, and their reproducers.

Every reference exporter passes under every spec it exists on; every teaching
exporter fails with the rule its documentation names; every printed
reproducer replays as printed.  The zoo of seeded defects and unusual but
correct exporters is in ``test_kit_zoo.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dmabuf_sim import conformance, errors
from dmabuf_sim.conformance import check_exporter, make_machine
from dmabuf_sim.conformance.kit import UsageError, resolve_exporter
from dmabuf_sim.conformance.program import check_replays
from dmabuf_sim.conformance.programs import PROGRAMS
from dmabuf_sim.conformance.rules import RULES
from dmabuf_sim.conformance.sanitizers import RuleViolation
from dmabuf_sim.dma_buf import dma_buf_put
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.exporters.teaching import NoCoherency, SimpleExporter
from dmabuf_sim.module import find_module
from dmabuf_sim.spec import DEFAULT_SPEC, SPECS

ROOT = Path(__file__).parent.parent.parent
EXAMPLES = ROOT / "examples"
REFERENCE = [n for n, e in EXPORTERS.items() if e.kind == "reference"]
TEACHING = [n for n, e in EXPORTERS.items() if e.kind == "teaching"]


def _supported(name: str) -> list[str]:
    info = EXPORTERS[name]
    return [
        s
        for s, spec in SPECS.items()
        if info.available(spec) is None and not spec.mmap_internal_reads_uninitialised_dmabuf
    ]


def _replays(text: str, rule: str) -> None:
    """The reproducer raises ``rule`` when run in a fresh namespace, imports and all."""
    namespace: dict[str, object] = {}
    with pytest.raises(RuleViolation) as exc:
        exec(compile(text, "<reproducer>", "exec"), namespace)
    assert exc.value.rule == rule, text


@pytest.mark.parametrize(("name", "spec"), [(n, s) for n in REFERENCE for s in _supported(n)])
def test_kit_passes_reference_exporters(name: str, spec: str) -> None:
    """Reference exporters keep every rule (documented historical bugs excepted)."""
    report = check_exporter(name, spec=spec, max_examples=60)
    info = EXPORTERS[name]
    if (info.fails and (not info.fails_on or spec in info.fails_on)) or spec in info.kit_fails_on:
        assert not report.ok
        assert set(info.rules) & set(report.broken_rules), report.summary()
    else:
        assert report.ok, report.summary()


@pytest.mark.parametrize(
    ("name", "spec"),
    [(n, (EXPORTERS[n].fails_on or (DEFAULT_SPEC,))[-1]) for n in TEACHING],
)
def test_kit_catches_teaching_exporters_with_their_rule_and_replays(name: str, spec: str) -> None:
    """Each teaching exporter fails with a rule its class documents; the reproducer replays."""
    report = check_exporter(name, spec=spec)
    info = EXPORTERS[name]
    assert not report.ok
    text = report.summary()
    assert any(rule in report.broken_rules or rule in text for rule in info.rules), text
    first = report.failures[0]
    assert first.steps.startswith("from dmabuf_sim.conformance import make_machine")
    _replays(first.steps, first.rule)


def test_a_verdict_does_not_depend_on_the_exporter_s_name() -> None:
    """The same exporter under two names gets the same findings (the seed is fixed)."""

    class Renamed(NoCoherency):
        pass

    class AnotherName(NoCoherency):
        pass

    one = check_exporter(Renamed, spec="v6.12", programs=[], max_examples=30)
    two = check_exporter(AnotherName, spec="v6.12", programs=[], max_examples=30)
    assert [r.findings for r in one.results] == [r.findings for r in two.results]
    assert one.results[-1].examples == two.results[-1].examples


def test_every_directed_program_names_rules_from_the_catalogue() -> None:
    for prog in PROGRAMS.values():
        assert prog.rules and set(prog.rules) <= set(RULES), prog.name
        assert prog.program()[-1].method == "teardown"


def test_verbose_lists_every_check_with_its_rules_and_outcome() -> None:
    report = check_exporter("simple", spec="v6.12", max_examples=10)
    lines = report.verbose().splitlines()
    assert lines[0] == "dmabuf-sim kit: exporter simple, spec v6.12"
    assert len(lines) == 1 + len(PROGRAMS) + 1
    assert any(
        "program kept-mapped-device-writes" in line and "SAN-STALE-READ" in line for line in lines
    )
    assert all(line.lstrip().startswith("passed") for line in lines[1:])


def test_a_failing_directed_program_skips_random_exploration_unless_asked() -> None:
    report = check_exporter("no_coherency", spec="v6.12", max_examples=10)
    machine = report.results[-1]
    assert machine.name == "state machine" and machine.status == "skipped"
    assert "fix that first" in machine.reason
    again = check_exporter(
        "no_coherency", spec="v6.12", max_examples=30, explore_after_failure=True
    )
    assert again.results[-1].status == "failed"


def test_first_violation_is_the_verdict_even_when_teardown_would_fail_too() -> None:
    """An oops in a step ends the program: teardown (which would leak) does not run."""
    machine = make_machine("frees_while_mapped", "v6.12")
    state = machine()
    b1 = state.new_buffer(size=3 * 4096)
    m1 = state.mmap(b1, offset=0, pages=3)
    with pytest.raises(RuleViolation) as exc:
        state.munmap_page(m1, page=1)  # the close of the removed piece frees every page
    assert exc.value.rule == "SAN-FREED-PTE"
    assert "raised by: state.munmap_page(m1, page=1)" in exc.value.__notes__
    with pytest.raises(ValueError, match="already found a violation"):
        state.teardown()


def test_a_detector_inside_the_simulator_becomes_a_verdict() -> None:
    """fput of a released file (refcount underflow) is SAN-REFCOUNT, never a traceback."""

    class PutsTwiceInRelease(SimpleExporter):
        def release(self, dmabuf: object) -> None:
            dma_buf_put(dmabuf)  # type: ignore[arg-type]
            super().release(dmabuf)  # type: ignore[arg-type]

    report = check_exporter(PutsTwiceInRelease, spec="v6.12", machine=False)
    assert report.broken_rules == ["SAN-REFCOUNT"]
    assert "refcount underflow" in report.summary() or "use after free" in report.summary()


def test_messages_name_the_call_and_what_was_expected() -> None:
    """SAN-STALE-READ says who read what where, what was expected and which step wrote it."""
    report = check_exporter("no_coherency", spec="v6.12", programs=["round-trip"], machine=False)
    (failure,) = report.failures
    message = failure.findings[0].message
    # the reproducer's data was made short: one byte written, one read
    assert message.startswith("dma_job(b1, 'read', offset=0, n=1): the device gpu read")
    assert message.endswith("but the CPU (pid 1, cpu_write(m1, offset=0, data=b'Z')) put 5a there")


def test_reproducer_of_the_readme_example_replays_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """R60: the printed snippet, pasted into a file and run, raises the same finding."""
    report = check_exporter(f"{EXAMPLES}/my_broken_exporter.py:MyBrokenExporter", spec="v6.12")
    assert report.broken_rules == ["R60"]
    script = tmp_path / "repro.py"
    script.write_text(report.failures[0].steps + "\n")
    proc = subprocess.run(  # noqa: PLW1510 - the exit code is asserted
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "R60 violated" in proc.stderr


def test_readme_example_passes_on_modern_specs_and_its_portable_twin_on_every_spec() -> None:
    """my_exporter.py uses the exp_info form (4.1+); every_spec_exporter.py serves them all."""
    for spec in _supported("simple"):
        portable = check_exporter(
            f"{EXAMPLES}/every_spec_exporter.py:EverySpecExporter", spec=spec, max_examples=30
        )
        assert portable.ok, portable.summary()
        if SPECS[spec].export_info_form:
            report = check_exporter(
                f"{EXAMPLES}/my_exporter.py:MyExporter", spec=spec, max_examples=30
            )
            assert report.ok, report.summary()


def test_check_replays_reports_a_reproducer_that_raises_nothing() -> None:
    cls = make_machine("simple", "v6.12")
    text = "state = DmaBufMachine_Simple_v6_12()\nb1 = state.new_buffer(size=4096)"
    assert check_replays(text, cls, "R60") == "it raised nothing"


# -- the example database: a fast edit-test loop -------------------------------------------------
def test_database_replays_a_failing_random_program_first(tmp_path: Path) -> None:
    """With --db, a still-failing exporter is found again by the first program run."""
    first = check_exporter("no_coherency", spec="v6.12", programs=[], database=tmp_path)
    assert first.results[-1].status == "failed"
    again = check_exporter("no_coherency", spec="v6.12", programs=[], database=tmp_path)
    assert again.results[-1].status == "failed"
    assert again.results[-1].examples <= 3 < first.results[-1].examples
    assert again.results[-1].findings[0].rule == first.results[-1].findings[0].rule


# -- bad input -----------------------------------------------------------------------------
def test_unimportable_factory_is_a_usage_error_that_says_what_to_do() -> None:
    with pytest.raises(UsageError, match=r"cannot import 'no_such_pkg\.mod'.*python -m pytest"):
        resolve_exporter("no_such_pkg.mod:make")


def test_missing_attribute_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="has no attribute 'nothing'"):
        resolve_exporter("os:nothing")


def test_unknown_name_lists_registered_exporters() -> None:
    with pytest.raises(UsageError, match="system_heap"):
        resolve_exporter("no-such-exporter")


def test_factory_returning_the_wrong_type_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="expected the DmaBuf"):
        check_exporter(lambda kernel, size, flags: 42, spec="v6.12", machine=False)


def test_factory_with_the_wrong_signature_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"make\(kernel, size, flags\)"):
        check_exporter(lambda kernel: None, spec="v6.12", machine=False)


def test_non_callable_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="neither a factory"):
        resolve_exporter(42)


def test_bad_budget_and_unknown_program_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="max_examples"):
        check_exporter("simple", spec="v6.12", max_examples=0)
    with pytest.raises(UsageError, match="unknown program"):
        check_exporter("simple", spec="v6.12", programs=["nope"])


def test_factory_that_raises_is_reported_as_a_failure_not_a_crash() -> None:
    """SAN-OOPS: the exporter's own exception is its failure, with where it was raised."""

    def boom(kernel: object, size: int, flags: int) -> object:
        raise RuntimeError("allocator exploded")

    report = check_exporter(boom, spec="v6.12", programs=["fresh-zero"], machine=False)
    assert report.broken_rules == ["SAN-OOPS"]
    assert "allocator exploded" in report.summary()


def test_a_step_the_protocol_does_not_allow_is_a_value_error_not_a_finding() -> None:
    state = make_machine("simple", "v6.12")()
    b1 = state.new_buffer(size=4096)
    m1 = state.mmap(b1, offset=0, pages=1)
    with pytest.raises(ValueError, match="the protocol does not let the CPU write now"):
        state.cpu_write(m1, offset=0, data=b"x")  # outside SYNC, non-coherent exporter
    state.teardown()  # the refused step changed nothing


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
    assert "DmaBufMachine_MyBrokenExporter_v6_12 = make_machine(" in out


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
    assert "python -m pytest" in proc.stderr


def test_cli_check_exit_codes_and_verbose_listing(tmp_path: Path) -> None:
    good = _run(
        [sys.executable, "-m", "dmabuf_sim", "check", "-v", "--quiet", "my_exporter:MyExporter"],
        tmp_path,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"spec {DEFAULT_SPEC}" in good.stdout
    assert "keeps every rule the kit checks" in good.stdout
    assert "passed" in good.stdout and "program kept-mapped-cpu-writes" in good.stdout
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
    assert "Traceback" not in usage.stderr


def test_rmmod_of_vgem_waits_for_its_buffers_and_reloads() -> None:
    """SAN-MODULE on a module the kernel ships: vgem stays while a buffer lives; once
    none does, rmmod unloads it and the kit loads it again, so buffers can still be made."""
    state = make_machine("vgem", "v6.12")()
    b1 = state.new_buffer(size=4096)
    state.rmmod()  # EWOULDBLOCK: b1 holds it
    first = find_module(state.kernel, "vgem")
    state.close(b1)
    state.rmmod()  # unloaded, then loaded again
    again = find_module(state.kernel, "vgem")
    assert again is not None and again is not first
    assert [u.name for u in state.kernel.module_unloads] == ["vgem"]
    assert state.kernel.module_unloads[0].leftovers == ()
    b2 = state.new_buffer(size=4096)
    state.close(b2)
    state.teardown()
    assert state.world.pending == []


def test_rmmod_is_no_step_for_a_built_in_exporter() -> None:
    state = make_machine("system_heap", "v6.12")()
    with pytest.raises(ValueError, match="built in"):
        state.rmmod()


def test_a_module_attribute_must_name_the_module() -> None:
    class Numbered:
        module = 7

        def export(self, kernel: object, size: int, flags: int) -> None:
            raise AssertionError("not reached")

    with pytest.raises(UsageError, match=r"module must be a str: the name of the kernel module"):
        resolve_exporter(Numbered)


def test_the_kit_and_the_package_share_one_usage_error() -> None:
    """One class for misuse of the Python API, whoever raises it; BadUsage is its old name."""
    assert conformance.UsageError is UsageError is errors.UsageError is errors.BadUsage
    assert issubclass(UsageError, ValueError) and issubclass(UsageError, errors.DmaBufSimError)
