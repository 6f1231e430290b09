"""The C interpreter: building it, and reading what it answers.

``c/interp.c`` is compiled once per source version with ``gcc -static`` into
the cache (``<cache>/interp/<hash>/interp``) together with the generated
``abi_gen.h`` (the constants and struct layouts of :mod:`.abi`).  It prints
one ``@dmas {json}`` line per event: a ``header`` (the kernel's release,
which exporter device nodes exist, which modules loaded), one answer per
statement, and ``end``.  :func:`parse_answers` turns that stream back into
:class:`~.outcome.Outcome` objects, whatever else the console printed
between them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from attrs import define, field

from .abi import c_header
from .outcome import Outcome
from .script import Script

__all__ = [
    "Answers",
    "ToolMissing",
    "build_interpreter",
    "cache_dir",
    "parse_answers",
    "run_on_host",
]

SOURCE = Path(__file__).parent / "c" / "interp.c"
PREFIX = "@dmas "


class ToolMissing(RuntimeError):
    """A program or file a run needs is missing; the message says how to get it."""


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$DMABUF_SIM_CACHE``, else ``$XDG_CACHE_HOME/dmabuf-sim``
    (``~/.cache/dmabuf-sim``)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("DMABUF_SIM_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dmabuf-sim"


def build_interpreter(cache: Path, *, gcc: str | None = None) -> Path:
    """Compile ``interp.c`` statically (once per source and header version)."""
    header = c_header()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + header.encode()).hexdigest()[:16]
    target = cache / "interp" / key / "interp"
    if target.exists():
        return target
    compiler = gcc or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise ToolMissing(
            "the VM side needs a C compiler to build its interpreter: install gcc and the"
            " static C library (Debian: apt-get install gcc libc6-dev)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        (Path(tmp) / "abi_gen.h").write_text(header)
        out = Path(tmp) / "interp"
        proc = subprocess.run(
            [compiler, "-static", "-O2", "-Wall", "-I", tmp, "-o", str(out), str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ToolMissing(
                f"{compiler} could not build the interpreter statically; is the static C"
                f" library installed (Debian: apt-get install libc6-dev)?\n{proc.stderr.strip()}"
            )
        out.replace(target)
    return target


@define
class Answers:
    """What the interpreter printed: the header, one outcome per line, and the end."""

    header: dict[str, Any] = field(factory=dict)
    by_line: dict[int, Outcome] = field(factory=dict)
    ended: bool = False
    error: str = ""

    def outcomes(self, script: Script, *, missing: str = "not run") -> list[Outcome]:
        """One outcome per statement; statements it never answered are ``missing``."""
        return [self.by_line.get(st.line, Outcome(missing)) for st in script.statements]


def parse_answers(text: str) -> Answers:
    """Collect the ``@dmas`` lines of a console or pipe (other lines are ignored)."""
    answers = Answers()
    for raw in text.splitlines():
        pos = raw.find(PREFIX)
        if pos < 0:
            continue
        try:
            obj = json.loads(raw[pos + len(PREFIX) :])
        except json.JSONDecodeError:
            continue  # a line the kernel's own printk interrupted
        if "header" in obj:
            answers.header = obj["header"]
        elif "line" in obj:
            answers.by_line[int(obj["line"])] = Outcome.from_json(obj)
        elif "end" in obj:
            answers.ended = True
        elif "error" in obj:
            answers.error = str(obj["error"])
    return answers


def run_on_host(script: Script, cache: Path, *, timeout: float = 60) -> Answers:
    """Run the interpreter on the machine's own kernel (tests use it without a VM)."""
    interp = build_interpreter(cache)
    with tempfile.NamedTemporaryFile("w", suffix=".syscalls", delete=False) as fh:
        fh.write(script.text)
    try:
        proc = subprocess.run(
            [str(interp), fh.name], capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        os.unlink(fh.name)
    return parse_answers(proc.stdout)


def parse_with_c(path: Path, cache: Path) -> str:
    """The C parser's view of a script (``interp --parse``), for tests."""
    interp = build_interpreter(cache)
    proc = subprocess.run(
        [str(interp), "--parse", str(path)], capture_output=True, text=True, check=False
    )
    return proc.stdout
