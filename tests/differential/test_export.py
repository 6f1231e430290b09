"""Scenarios and stories exported as syscall scripts (``scenarios run NAME --script``)."""

from __future__ import annotations

import pytest

from dmabuf_sim.cli import main
from dmabuf_sim.conformance.scenarios import SCENARIOS
from dmabuf_sim.differential.export import export_named, recording
from dmabuf_sim.differential.outcome import render_all
from dmabuf_sim.differential.script import parse_script
from dmabuf_sim.differential.simside import run_on_simulator
from dmabuf_sim.kernel import Kernel
from dmabuf_sim.process import Process
from dmabuf_sim.stories import STORIES

RUNNABLE = {"unsupported", "oops", "hung", "not run"}


def _runs(text: str, spec: str) -> list[str]:
    script = parse_script(text, "exported")
    outcomes = run_on_simulator(script, spec)
    assert not [o for o in outcomes if o.kind in RUNNABLE], outcomes
    return [r.text for r in render_all(script, outcomes)]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("exporter", ["system_heap", "udmabuf", "vgem"])
def test_every_scenario_exports_a_script_that_runs(name: str, exporter: str) -> None:
    try:
        text = export_named(name, "v6.12", exporter)
    except ValueError as exc:
        assert "skipped" in str(exc)
        return
    assert text.startswith(f"# scenario {name} [{exporter}], spec v6.12\n")
    _runs(text, "v6.12")


@pytest.mark.parametrize("name", sorted(STORIES))
def test_every_story_exports_a_script_that_runs(name: str) -> None:
    text = export_named(name, "v6.12")
    assert text.startswith(f"# story {name} (")
    _runs(text, "v6.12")


def test_the_exported_fork_scenario_replays_its_data_path() -> None:
    text = export_named("fork", "v6.12", "udmabuf")
    lines = text.splitlines()
    assert "fork() = $child1" in lines
    assert "[$child1] exit()" in lines
    assert any(line.startswith("store($map1, ramp(") for line in lines)
    texts = _runs(text, "v6.12")
    assert texts[-2] == '"child"'  # the parent reads what the child wrote


def test_kernel_side_buffers_get_a_stand_in_and_kernel_steps_are_comments() -> None:
    text = export_named("mmap-bounds", "v6.12", "vgem")
    assert "# buffer exported kernel-side by simple (no uapi): vgem stands in for it" in text
    assert "dmabuf(vgem, 8192, O_RDWR|O_CLOEXEC) = $fd1" in text
    round_trip = export_named("round-trip", "v6.12")
    assert "# kernel side (not in this script): dma_buf_attach" in round_trip
    assert "device_dma_write" in round_trip


def test_recording_is_scoped_to_one_kernel_and_restored() -> None:
    original = Process.mmap
    other = Kernel("v6.12").spawn("other")
    kernel = Kernel("v6.12")
    proc = kernel.spawn("main")
    with recording(kernel) as calls:
        proc.memfd_create("x", 0)
        other.memfd_create("y", 0)
    assert [c.name for c in calls] == ["memfd_create"]
    assert Process.mmap is original


def test_cli_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "run", "partial-munmap", "--script", "--exporter", "udmabuf"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# scenario partial-munmap [udmabuf], spec v6.12")
    assert "munmap($map1+0x1000, 4096)" in out


def test_cli_says_when_a_scenario_does_not_apply(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "run", "fork", "--script", "--spec", "v3.4"]) == 2
    assert "skipped" in capsys.readouterr().err
