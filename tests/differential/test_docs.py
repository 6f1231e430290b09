"""docs/differential.md runs as printed: its scripts, its commands and their output."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dmabuf_sim.cli import build_parser, main
from dmabuf_sim.differential.script import parse_script

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "differential.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)


def _blocks(kind: str) -> list[tuple[str, str]]:
    return [(m[2].strip(), m[3]) for m in BLOCK.finditer(DOC.read_text()) if m[1] == kind]


def _workdir(tmp_path: Path) -> Path:
    for info, body in _blocks("syscalls"):
        name = info.removeprefix("file=")
        (tmp_path / name).write_text(body)
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    return tmp_path


CONSOLE = _blocks("console")


@pytest.mark.parametrize(("info", "body"), CONSOLE, ids=[b.split("\n", 1)[0] for _, b in CONSOLE])
def test_console_examples_print_what_the_page_shows(
    info: str,
    body: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command, _, expected = body.partition("\n")
    assert command.startswith("$ dmabuf-sim ")
    monkeypatch.chdir(_workdir(tmp_path))
    monkeypatch.setenv("COLUMNS", "100")
    code = main(shlex.split(command)[2:])
    assert capsys.readouterr().out == expected
    assert code in (0, 1)


def test_every_command_on_the_page_parses() -> None:
    parser = build_parser()
    commands = [
        line
        for _, body in _blocks("sh")
        for line in body.splitlines()
        if line.startswith("dmabuf-sim ")
    ]
    assert len(commands) >= 7
    for line in commands:
        parser.parse_args(shlex.split(line)[1:])


def test_the_scripts_on_the_page_parse() -> None:
    scripts = _blocks("syscalls")
    assert scripts
    for info, body in scripts:
        assert parse_script(body, info).statements
