"""Differential runs: one syscall script on the simulator and on a real kernel in a VM.

* :mod:`.script`   the script language: parser, checks, evaluation, byte digests;
* :mod:`.abi`      the constants and ioctl layouts both sides share (C header generator);
* :mod:`.outcome`  what a line did on one side, and the text sides are compared by;
* :mod:`.simside`  the simulator side, through :class:`~dmabuf_sim.process.Process`;
* :mod:`.interp`   building the C interpreter (``c/interp.c``) and reading its answers;
* :mod:`.kernels`  Debian kernels fetched with apt and cached, or your own;
* :mod:`.vm`       the initramfs and QEMU;
* :mod:`.releases` which spec models a kernel release;
* :mod:`.compare`  pairing both sides; records of a real kernel's answers, and replay;
* :mod:`.report`   the side-by-side text; :mod:`.command` the ``differential`` command;
* :mod:`.export`   scenarios and stories as scripts.

``docs/differential.md`` is the user's guide.
"""

from __future__ import annotations

from .compare import Comparison, compare, load_record, replay_record, write_record
from .outcome import Outcome, render_all
from .releases import SpecChoice, spec_for_release
from .script import Script, ScriptError, load_script, parse_script
from .simside import run_on_simulator

__all__ = [
    "Comparison",
    "Outcome",
    "Script",
    "ScriptError",
    "SpecChoice",
    "compare",
    "load_record",
    "load_script",
    "parse_script",
    "render_all",
    "replay_record",
    "run_on_simulator",
    "spec_for_release",
    "write_record",
]
