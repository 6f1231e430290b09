"""The C interpreter (the VM side) against the Python side, without a VM.

Its parser must read every script exactly as script.py does (compared through
``interp --parse``), and run on the machine's own kernel it must answer memfd
scripts as the simulator does.  Needs gcc and the static C library; skipped
with that reason elsewhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dmabuf_sim.differential.interp import ToolMissing, build_interpreter, parse_with_c, run_on_host
from dmabuf_sim.differential.outcome import render_all
from dmabuf_sim.differential.script import BUNDLED, dump_parse, load_script, parse_script
from dmabuf_sim.differential.simside import run_on_simulator

DOCS = Path(__file__).parents[2] / "docs" / "differential.md"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("needs gcc and the static C library (Debian: apt-get install gcc libc6-dev)")
    path = tmp_path_factory.mktemp("interp-cache")
    try:
        build_interpreter(path)
    except ToolMissing as exc:
        pytest.skip(str(exc))
    return path


ALL_SCRIPTS = sorted(BUNDLED.glob("*.syscalls"))

TRICKY = """\
# every kind of argument the grammar has
dmabuf(vgem, 2*PAGE_SIZE + 1, O_RDWR|O_CLOEXEC) = $b
store(0x1000, "a\\x00b\\"\\\\\\$" + fill(0xff, 3) + "$b" + ramp(1, -1, 0x10))
ioctl($b, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, {flags=~0 & 7, fd=-(1)})   = 0 {fd=$x}
ioctl($b, _IOWR('b', 2, 8), 0x10)
[$main] mmap(NULL, 1 << 12 >> 1 << 1, 0 | 1, MAP_SHARED, $b, 010 * 0x10 - 128) = $a
open("/proc/self/fd/$b/$a", O_RDONLY)
ioctl($b, DMA_BUF_SET_NAME, "name")
"""


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.stem)
def test_c_parser_reads_bundled_scripts_as_python_does(cache: Path, path: Path) -> None:
    assert parse_with_c(path, cache) == dump_parse(load_script(path))


def test_c_parser_reads_every_argument_form_as_python_does(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "tricky.syscalls"
    path.write_text(TRICKY)
    assert parse_with_c(path, cache) == dump_parse(parse_script(TRICKY))


HOST = """\
memfd_create("x", MFD_ALLOW_SEALING|MFD_CLOEXEC) = $m
ftruncate($m, 2*PAGE_SIZE)
fcntl($m, F_ADD_SEALS, F_SEAL_SHRINK)
fcntl($m, F_GET_SEALS)
ftruncate($m, PAGE_SIZE)
mmap(NULL, 2*PAGE_SIZE, PROT_READ|PROT_WRITE, MAP_SHARED, $m, 0) = $a
store($a, "hello" + fill(0xa5, 100))
load($a, 5) = "hello"
load($a, 2*PAGE_SIZE)
store($a+200, ramp(7, 37, 3000))
load($a+200, 3000) = ramp(7, 37, 3000)
load($a+100, 3100)
fork() = $c
[$c] store($a+1, "a")
[$c] exit()
[$c] load($a, 1)
load($a, 5) = "hallo"
munmap($a+PAGE_SIZE, PAGE_SIZE)
load($a+PAGE_SIZE, 1)
maps($a)
lseek($m, 0, SEEK_END)
poll($m, POLLIN|POLLOUT)
fcntl($m, F_GETFL)
fcntl($m, F_DUPFD_CLOEXEC, 0) = $d
open("/proc/self/fd/$m", O_RDONLY) = $ro
read($ro, 3)
write($ro, "x")
write($m, "xyz")
mprotect($a, PAGE_SIZE, PROT_READ)
store($a, "z")
load($a, 3)
ioctl($m, _IO('b', 0x77), 0)
close($d)
close($d)
fdinfo($d)
mmap(NULL, PAGE_SIZE, PROT_READ, MAP_SHARED, $m, 100)
load($a, 2*1048576)
"""


def test_on_the_host_kernel_memfd_answers_match_the_simulator(cache: Path) -> None:
    """No VM: the interpreter on this machine's kernel, memfd only (no dma-buf needed)."""
    script = parse_script(HOST, "host.syscalls")
    answers = run_on_host(script, cache)
    assert answers.ended and not answers.error
    real = render_all(script, answers.outcomes(script))
    sim = render_all(script, run_on_simulator(script, "v6.12"))
    rows = [(s.statement.line, s.text, r.text) for s, r in zip(sim, real, strict=True)]
    assert [r for r in rows if r[1] != r[2]] == []
    assert all(line.expectation_met is not False for line in real)
