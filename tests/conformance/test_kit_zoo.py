"""The kit against a zoo of exporters: every seeded defect caught with its rule, no false alarm.

``zoo.py`` holds base exporters in the style of real drivers, defects made of
them one realistic bug at a time (``INTENDED`` names the rule), and unusual
but correct exporters.  They are loaded by path, as a user's exporter is, so
every reproducer the kit prints must import them again and replay.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from dmabuf_sim.conformance import check_exporter
from dmabuf_sim.conformance.sanitizers import RuleViolation

ZOO_FILE = Path(__file__).with_name("zoo.py")


def _zoo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dmabuf_kit_zoo", ZOO_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ZOO = _zoo()


@pytest.mark.parametrize("cls", ZOO.DEFECTS, ids=lambda c: c.__name__)
def test_every_seeded_defect_is_caught_with_its_rule_and_replays(cls: type) -> None:
    """The intended rule is among the verdicts; each printed reproducer raises its rule."""
    report = check_exporter(f"{ZOO_FILE}:{cls.__name__}", spec=cls.SPEC)
    assert cls.INTENDED in report.broken_rules, report.summary()
    for failure in report.failures:
        if not failure.steps:
            assert "reproducer is printed" in failure.reason, failure.describe()
            continue
        assert "does not replay" not in failure.reason, failure.describe()
        namespace: dict[str, object] = {}
        with pytest.raises(RuleViolation) as exc:
            exec(compile(failure.steps, "<reproducer>", "exec"), namespace)
        assert exc.value.rule == failure.rule, failure.steps


@pytest.mark.parametrize("cls", ZOO.CORRECT, ids=lambda c: c.__name__)
def test_unusual_but_correct_exporters_pass(cls: type) -> None:
    """No false alarm: legal choices (a reference per vma, lazy pages, WC, pins ...) pass."""
    report = check_exporter(f"{ZOO_FILE}:{cls.__name__}", spec="v6.12")
    assert report.ok, report.summary()


def test_the_zoo_is_big_enough() -> None:
    assert len(ZOO.DEFECTS) >= 40 and len(ZOO.CORRECT) >= 10
    assert all(cls.INTENDED for cls in ZOO.DEFECTS)
