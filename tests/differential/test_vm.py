"""A real kernel in QEMU, end to end (opt-in: it takes 10-30 s per boot under TCG).

Runs where ``DMABUF_SIM_VM_TESTS=1`` is set, ``qemu-system-x86_64`` and gcc are
installed, and a Debian kernel is in the cache (``dmabuf-sim differential
SCRIPT --kernel 6.12.117+deb12`` fetches one); skipped with that reason
everywhere else, CI included.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dmabuf_sim.differential.command import with_exporter
from dmabuf_sim.differential.compare import absent_devices, compare
from dmabuf_sim.differential.interp import cache_dir
from dmabuf_sim.differential.kernels import fetch_debian_kernel
from dmabuf_sim.differential.releases import spec_for_release
from dmabuf_sim.differential.script import load_script
from dmabuf_sim.differential.vm import run_in_vm

ENABLE = "DMABUF_SIM_VM_TESTS"


def _cached_kernel() -> tuple[Path, str] | None:
    cache = cache_dir()
    releases = sorted(p.parent.name for p in (cache / "kernels").glob("*/kernel.json"))
    preferred = [r for r in releases if r.startswith("6.12.")] or releases
    return (cache, preferred[-1]) if preferred else None


def _why_skip() -> str | None:
    how = (
        f"set {ENABLE}=1 to boot a real kernel under QEMU (10-30 s; needs"
        " qemu-system-x86_64, gcc and a cached Debian kernel:"
        " 'dmabuf-sim differential mremap --kernel 6.12.117+deb12' fetches one)"
    )
    if os.environ.get(ENABLE) != "1":
        return how
    if shutil.which("qemu-system-x86_64") is None or shutil.which("gcc") is None:
        return "qemu-system-x86_64 or gcc is missing; " + how
    if _cached_kernel() is None:
        return f"no kernel in {cache_dir() / 'kernels'}; " + how
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or ""),
]


def test_a_real_kernel_agrees_with_the_simulator_on_mremap() -> None:
    found = _cached_kernel()
    assert found is not None
    cache, release = found
    kernel = fetch_debian_kernel(release, cache)
    script = with_exporter(load_script("mremap"), "vgem")
    run = run_in_vm(script, kernel, cache, timeout=300)
    assert not run.problem
    assert run.answers.header["release"].startswith(release)
    comparison = compare(
        script,
        spec_for_release(release).spec,
        run.answers.outcomes(script),
        f"kernel {release}",
        absent=absent_devices(run.answers.header),
    )
    assert comparison.agree, [(r.line, r.sim.text, r.kernel.text) for r in comparison.differing]
