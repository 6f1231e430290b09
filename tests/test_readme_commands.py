"""The ``$ dmabuf-sim ...`` examples in the README print what the README shows.

Every fenced block line ``$ dmabuf-sim ARGS`` is run (in process, through
``dmabuf_sim.cli.main``) and its output compared line by line with the lines
that follow it in the README, up to the next ``$`` line or the end of the block.
A line ``...`` stands for any number of lines the README leaves out; every other
line must match exactly.  Subcommands other helpers own (``check``, ``specs``)
are tested where they are implemented.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dmabuf_sim.cli import main

ROOT = Path(__file__).resolve().parents[1]
TESTED_HERE = ("tour", "scenarios", "diff-specs", "--version")


def _examples(text: str) -> list[tuple[str, list[str]]]:
    """``(command line, expected output lines)`` for every ``$ dmabuf-sim`` in a fence."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        current: tuple[str, list[str]] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                current = (line[2:], []) if line.startswith("$ dmabuf-sim ") else None
                if current is not None:
                    found.append(current)
            elif current is not None:
                current[1].append(line)
    return found


def _matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` equals ``actual`` where each ``...`` line may stand for any lines."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and actual[0] == head and _matches(rest, actual[1:])


EXAMPLES = [
    (cmd, out)
    for cmd, out in _examples((ROOT / "README.md").read_text(encoding="utf-8"))
    if shlex.split(cmd)[1] in TESTED_HERE
]


def test_the_readme_has_examples_of_these_commands() -> None:
    assert {shlex.split(cmd)[1] for cmd, _ in EXAMPLES} >= {"tour", "scenarios", "diff-specs"}


@pytest.mark.parametrize(("command", "expected"), EXAMPLES, ids=[cmd for cmd, _ in EXAMPLES])
def test_readme_command_prints_what_the_readme_shows(
    command: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(shlex.split(command)[1:])
    out = capsys.readouterr().out.rstrip("\n").splitlines()  # trailing blank lines aside
    assert code == 0
    assert _matches(expected, out), "\n".join(["README:", *expected, "", "printed:", *out])


def test_elision_matching() -> None:
    assert _matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert _matches(["...", "b", "..."], ["a", "b", "c"])
    assert not _matches(["a", "d"], ["a", "b", "d"])
    assert not _matches(["a", "...", "e"], ["a", "b", "c", "d"])
