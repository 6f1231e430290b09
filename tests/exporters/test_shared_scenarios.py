"""Every exporter through the shared scenario suite, on every spec.

Reference exporters pass every scenario that applies to them; teaching
exporters (and the v6.1 CMA heap's historical off-by-one, R34) fail exactly the
scenarios their documentation names, on the specs it names, and the findings
name the documented rule.  A scenario that cannot apply is skipped with its
reason (no dma-heaps in 3.5, no mmap in 3.4, every mmap oopses under the RFC).
"""

from __future__ import annotations

import pytest

from dmabuf_sim.conformance.scenarios import SCENARIOS, run_scenario
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.spec import SPECS

CASES = [
    pytest.param(exp, spec, scenario, id=f"{exp}-{spec}-{scenario}")
    for exp in EXPORTERS
    for spec in SPECS
    for scenario in SCENARIOS
]


def _documented_failure(exp: str, spec: str, scenario: str) -> bool:
    info = EXPORTERS[exp]
    return scenario in info.fails and (not info.fails_on or spec in info.fails_on)


@pytest.mark.parametrize(("exp", "spec", "scenario"), CASES)
def test_scenario_outcome_matches_documentation(exp: str, spec: str, scenario: str) -> None:
    info = EXPORTERS[exp]
    result = run_scenario(scenario, info, spec)
    if result.status == "skipped":
        # only for a stated reason: the exporter or the scenario cannot exist there
        why = info.available(SPECS[spec])
        assert result.reason and (
            why == result.reason
            or "R61" in result.reason
            or "dma_resv" in result.reason
            or "vgem" in result.reason
            or "GEM shmem" in result.reason
        ), str(result)
        return
    if _documented_failure(exp, spec, scenario):
        assert result.status == "failed", str(result)
        cited = set(info.rules)
        named = {r for r in result.rules} | {
            rule for f in result.findings for rule in cited if rule in f.message
        }
        assert cited & named, f"{result} does not name any of {sorted(cited)}"
    else:
        assert result.status == "passed", str(result)


@pytest.mark.parametrize("exp", [e for e, i in EXPORTERS.items() if i.kind == "teaching"])
def test_every_teaching_exporter_is_caught_somewhere(exp: str) -> None:
    """Each defect shows on at least one spec (so no teaching exporter is vacuous)."""
    info = EXPORTERS[exp]
    specs = info.fails_on or tuple(SPECS)
    caught = [
        (spec, scenario)
        for spec in specs
        for scenario in info.fails
        if run_scenario(scenario, info, spec).status == "failed"
    ]
    assert caught, f"{exp} documents {info.fails} on {specs} but nothing failed"


def test_rfc_2012_scenarios_are_skipped_because_mmap_oopses() -> None:
    """R61: under the RFC as posted, the suite cannot map anything; it says why."""
    result = run_scenario("round-trip", EXPORTERS["simple"], "rfc-2012")
    assert result.status == "skipped"
    assert "R61" in result.reason


def test_unknown_scenario_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        run_scenario("no-such-scenario", EXPORTERS["simple"], "v6.12")
