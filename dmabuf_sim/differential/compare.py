"""One script, two sides: the comparison, and the recorded answers of a real kernel.

:func:`compare` renders both sides' outcomes and pairs them line by line.
:func:`write_record` saves a real kernel's raw answers as JSON lines (a
header with the script's text and the kernel's identity, then one object per
statement); :func:`load_record` reads them back so :func:`replay_record` can
compare the simulator against them without a VM.  The recorded text of each
line is written for people to read; replay always re-renders the raw answers.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field, frozen

from .. import __version__
from .outcome import Outcome, RenderedLine, render_all
from .releases import spec_for_release
from .script import Script, parse_script
from .simside import run_on_simulator

__all__ = [
    "Comparison",
    "Record",
    "absent_devices",
    "compare",
    "load_record",
    "replay_record",
    "write_record",
]

RECORD_FORMAT = 1


@frozen
class Row:
    """One statement on both sides."""

    sim: RenderedLine
    kernel: RenderedLine

    @property
    def differs(self) -> bool:
        return self.sim.text != self.kernel.text

    @property
    def line(self) -> int:
        return self.sim.statement.line


@define
class Comparison:
    script: Script
    spec: str
    kernel_label: str
    rows: list[Row]
    notes: list[str] = field(factory=list)
    problem: str = ""

    @property
    def differing(self) -> list[Row]:
        return [r for r in self.rows if r.differs]

    @property
    def unmet(self) -> list[tuple[str, Row]]:
        """(side, row) for every expectation a side did not meet."""
        out = []
        for r in self.rows:
            if r.sim.expectation_met is False:
                out.append(("simulator", r))
            if r.kernel.expectation_met is False:
                out.append(("kernel", r))
        return out

    @property
    def agree(self) -> bool:
        return not self.differing and not self.unmet and not self.problem


def absent_devices(header: Mapping[str, Any]) -> frozenset[str]:
    """Exporter device nodes the real kernel did not have (its configuration)."""
    devices = header.get("devices") or {}
    return frozenset(path for path, present in devices.items() if not present)


def compare(
    script: Script,
    spec: str,
    kernel_outcomes: Sequence[Outcome],
    kernel_label: str,
    *,
    absent: Collection[str] = (),
) -> Comparison:
    """Run ``script`` on the simulator (without the devices in ``absent``) and pair it
    with a real kernel's outcomes."""
    sim = render_all(script, run_on_simulator(script, spec, absent_devices=absent))
    real = render_all(script, kernel_outcomes)
    rows = [Row(a, b) for a, b in zip(sim, real, strict=True)]
    return Comparison(script, spec, kernel_label, rows)


# -- records ------------------------------------------------------------------------------------
@define
class Record:
    """A real kernel's answers to one script, as recorded."""

    script: Script
    header: dict[str, Any]
    outcomes: list[Outcome]
    path: Path | None = None

    @property
    def release(self) -> str:
        return str(self.header.get("release") or self.header.get("kernel", {}).get("release", ""))

    @property
    def label(self) -> str:
        return f"kernel {self.release}"


def write_record(
    path: Path,
    script: Script,
    kernel_header: Mapping[str, Any],
    outcomes: Sequence[Outcome],
    *,
    release: str,
    packages: Sequence[str] = (),
    accel: str = "",
) -> None:
    """Save a real kernel's raw answers (never the simulator's) as JSON lines."""
    rendered = render_all(script, outcomes)
    head = {
        "kind": "header",
        "format": RECORD_FORMAT,
        "release": release,
        "kernel": dict(kernel_header),
        "packages": list(packages),
        "accel": accel,
        "recorded": datetime.date.today().isoformat(),
        "tool": f"dmabuf-sim {__version__}",
        "script_name": script.name,
        "script": script.text,
    }
    with path.open("w") as fh:
        fh.write(json.dumps(head, sort_keys=True) + "\n")
        for line in rendered:
            row = {
                "line": line.statement.line,
                "statement": line.statement.text,
                "outcome": line.outcome.to_json(),
                "text": line.text,
            }
            fh.write(json.dumps(row, sort_keys=True) + "\n")


def load_record(path: Path) -> Record:
    """Read a record written by :func:`write_record` (``dmabuf-sim differential --record``)."""
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not lines or lines[0].get("kind") != "header":
        raise ValueError(f"{path}: not a differential record (the first line is no header)")
    head = lines[0]
    if head.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: record format {head.get('format')}, expected {RECORD_FORMAT}")
    script = parse_script(head["script"], head.get("script_name", path.name))
    by_line = {int(x["line"]): Outcome.from_json(x["outcome"]) for x in lines[1:]}
    outcomes = [by_line.get(st.line, Outcome("not run")) for st in script.statements]
    return Record(script, head, outcomes, path)


def replay_record(record: Record, spec: str | None = None) -> Comparison:
    """Compare the simulator with a recorded real kernel (the spec for its release unless
    ``spec`` is given)."""
    notes = []
    if spec is None:
        choice = spec_for_release(record.release)
        spec = choice.spec
        if choice.note:
            notes.append(choice.note)
    kernel_header = record.header.get("kernel", {})
    absent = absent_devices(kernel_header)
    comparison = compare(record.script, spec, record.outcomes, record.label, absent=absent)
    comparison.notes = notes + _config_notes(absent, record.script)
    return comparison


def _config_notes(absent: Collection[str], script: Script) -> list[str]:
    used = script.uses_devices()
    return [
        f"the kernel has no {path} (not in its configuration); the simulator runs without it too"
        for path in sorted(absent)
        if path in used
    ]
