"""docs/kit.md and the README's kit section run as printed, and stay complete."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from dmabuf_sim.cli import main
from dmabuf_sim.conformance.programs import PROGRAMS
from dmabuf_sim.exporters.registry import Capabilities

ROOT = Path(__file__).resolve().parents[2]
KIT_MD = (ROOT / "docs" / "kit.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, ``...`` standing for any number of lines (and trailing text)."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    if head.endswith(" ...") and actual and actual[0].startswith(head[:-4]):
        return _matches(rest, actual[1:])
    return bool(actual) and actual[0] == head and _matches(rest, actual[1:])


@pytest.mark.parametrize("code", _blocks(KIT_MD, "python"))
def test_kit_md_python_blocks_run_as_printed(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<docs/kit.md>", "exec"), {})
    if "print(report.summary()" in code:
        assert out.getvalue().strip() == "the exporter keeps every rule the kit checks"


def test_kit_md_lists_every_program_and_capability() -> None:
    for name in PROGRAMS:
        assert f"| `{name}` |" in KIT_MD, name
    for field in attrs.fields(Capabilities):
        assert f"| `{field.name}` |" in KIT_MD, field.name


def _console(text: str) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for block in _blocks(text, "console"):
        current: tuple[str, list[str]] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                current = (line[2:], [])
                found.append(current)
            elif current is not None:
                current[1].append(line)
    return found


KIT_COMMANDS = [
    (cmd, out) for cmd, out in _console(README) if cmd.startswith(("dmabuf-sim check", "pytest"))
]


def test_the_readme_shows_the_kit_from_the_cli_and_from_pytest() -> None:
    assert {cmd.split()[0] for cmd, _ in KIT_COMMANDS} == {"dmabuf-sim", "pytest"}


@pytest.mark.parametrize(("command", "expected"), KIT_COMMANDS, ids=[c for c, _ in KIT_COMMANDS])
def test_readme_kit_command_prints_what_the_readme_shows(
    command: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)
    if argv[0] == "dmabuf-sim":
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(argv[1:])
        lines = out.getvalue().rstrip("\n").splitlines()
        assert code == (1 if "broken" in expected[0] else 0)
    else:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(  # noqa: PLW1510 - the exit code is asserted
            [sys.executable, "-m", *argv, "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.rstrip("\n").splitlines()
    assert _matches(expected, [line.rstrip() for line in lines]), "\n".join(
        ["README:", *expected, "", "printed:", *lines]
    )
