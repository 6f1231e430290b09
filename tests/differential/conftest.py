"""Fixtures of the differential tests: a stand-in for qemu-system-x86_64."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dmabuf_sim.differential import vm

FAKE_QEMU = """#!/bin/sh
# records its arguments and answers like the interpreter would, on the second serial port
echo "$@" > "$(dirname "$0")/args"
n=0
for a in "$@"; do
  case "$a" in file:*) n=$((n+1)); [ $n -eq 2 ] && out="${a#file:}";; esac
done
{
  echo '@dmas {"header": {"release": "6.12.117+deb12-amd64", "devices": {}, "modules": []}}'
  echo '@dmas {"line": 1, "k": "errno", "v": 9}'
  [ -n "$FAKE_QEMU_END" ] && echo '@dmas {"end": 1}'
} > "$out"
exit 0
"""


@pytest.fixture
def fake_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    qemu = tmp_path / "bin" / "qemu-system-x86_64"
    qemu.parent.mkdir()
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{qemu.parent}{os.pathsep}{os.environ['PATH']}")
    dummy = tmp_path / "interp"
    dummy.write_bytes(b"\x7fELF")
    monkeypatch.setattr(vm, "build_interpreter", lambda cache: dummy)
    return qemu
