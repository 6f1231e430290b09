"""The simulator side of a differential run: every statement through Process, one outcome each."""

from __future__ import annotations

import pytest

from dmabuf_sim.differential.command import with_exporter
from dmabuf_sim.differential.outcome import Outcome, render_all
from dmabuf_sim.differential.script import BUNDLED, load_script, parse_script
from dmabuf_sim.differential.simside import run_on_simulator
from dmabuf_sim.spec import SPECS

GENERIC = ("mmap-bounds", "data", "mremap", "file-ops")


def _texts(text: str, spec: str = "v6.12", **kw: object) -> list[str]:
    script = parse_script(text)
    return [r.text for r in render_all(script, run_on_simulator(script, spec, **kw))]  # type: ignore[arg-type]


@pytest.mark.parametrize("exporter", ["system_heap", "udmabuf", "vgem"])
@pytest.mark.parametrize("name", GENERIC)
def test_bundled_scripts_run_whole_on_each_exporter(name: str, exporter: str) -> None:
    script = with_exporter(load_script(name), exporter)
    outcomes = run_on_simulator(script, "v6.12")
    assert len(outcomes) == len(script.statements)
    bad = [
        (st.line, o)
        for st, o in zip(script.statements, outcomes, strict=True)
        if o.kind not in ("ok", "errno", "signal", "skipped")
    ]
    assert not bad, bad  # every call is modelled (a refused mapping skips what needs it)
    assert outcomes[0].kind == "ok"  # the buffer


def test_exporter_specific_scripts_run_whole() -> None:
    for name in ("udmabuf-create", "vgem-prime"):
        outcomes = run_on_simulator(load_script(name), "v6.12")
        assert all(o.kind in ("ok", "errno", "signal", "skipped") for o in outcomes), name
    assert {p.stem for p in BUNDLED.glob("*.syscalls")} == {
        *GENERIC,
        "udmabuf-create",
        "vgem-prime",
    }


def test_outcome_vocabulary() -> None:
    texts = _texts(
        "dmabuf(system_heap, 8192, O_RDWR|O_CLOEXEC) = $buf\n"
        "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, $buf, 0) = $a\n"
        "mmap(NULL, 3*4096, PROT_READ, MAP_SHARED, $buf, 0)\n"
        'store($a+4096, "hi")\n'
        "load($a+4096, 4)\n"
        "load($a, 8192)\n"
        "munmap($a, 4096)\n"
        "load($a+10, 1)\n"
        "poll($buf, POLLIN|POLLOUT)\n"
        "fcntl($buf, F_GETFL)\n"
        "fcntl($buf, F_DUPFD, 0)\n"
        "lseek($buf, 0, SEEK_END)\n"
        "maps($a+4096)\n"
        "mremap($a+4096, 4096, 2048, 0)\n"
    )
    assert texts == [
        "$buf",
        "$a",
        "-1 EINVAL",
        "0",
        '"hi\\x00\\x00"',
        "fill(0x00, 4096) + fill(0x68, 1) + fill(0x69, 1) + fill(0x00, 4094)",
        "0",
        "SIGSEGV SEGV_MAPERR at +0x0",
        "POLLIN|POLLOUT",
        "02",
        "fd",
        "8192",
        '"-0x0..+0x1000 rw-s 00001000 /dmabuf:"',
        "old address",
    ]


def test_a_failed_binding_skips_the_lines_that_need_it() -> None:
    texts = _texts(
        "dmabuf(system_heap, 8192, O_RDWR) = $buf\n"
        "mmap(NULL, 3*4096, PROT_READ, MAP_SHARED, $buf, 0) = $a\n"
        "load($a, 1)\n"
    )
    assert texts[1:] == ["-1 EINVAL", "skipped ($a unbound)"]


def test_exited_processes_run_nothing() -> None:
    texts = _texts("fork() = $c\n[$c] exit()\n[$c] close(0)\nclose(99)\n")
    assert texts == ["$c", "0", "skipped ($c has exited)", "-1 EBADF"]


def test_devices_the_real_kernel_lacks_are_absent() -> None:
    text = "dmabuf(system_heap, 4096, O_RDWR) = $b\ndmabuf(vgem, 4096, O_RDWR) = $v\n"
    assert _texts(text, absent_devices={"/dev/dma_heap/system"}) == [
        "-1 ENOENT (open /dev/dma_heap/system)",
        "$v",
    ]


def test_each_dmabuf_step_is_named_when_it_fails() -> None:
    texts = _texts("dmabuf(udmabuf, 0, O_RDWR) = $u\ndmabuf(vgem, 0, O_RDWR) = $v\n")
    assert texts == ["-1 EINVAL (UDMABUF_CREATE)", "-1 EINVAL (DRM_IOCTL_MODE_CREATE_DUMB)"]


def test_an_oops_ends_the_process() -> None:
    """The RFC's uninitialised read (R61) as a what-if spec: the mmap oopses."""
    spec = SPECS["v6.12"].replace(mmap_internal_reads_uninitialised_dmabuf=True)
    script = parse_script(
        "dmabuf(system_heap, 4096, O_RDWR) = $b\n"
        "mmap(NULL, 4096, PROT_READ, MAP_SHARED, $b, 0) = $a\n"
        "close($b)\n"
    )
    outcomes = run_on_simulator(script, spec)
    assert [o.kind for o in outcomes] == ["ok", "oops", "skipped"]
    assert outcomes[2] == Outcome("skipped", note="$main died in an oops")


def test_more_than_a_mebibyte_in_one_line_is_refused() -> None:
    texts = _texts(
        "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = $a\n"
        "load($a, 2*1048576)\n"
        "store($a, fill(0, 2*1048576))\n"
    )
    assert texts[1:] == ["unsupported (more than 1048576 bytes in one line)"] * 2


def test_expectations_are_checked() -> None:
    script = parse_script(
        "dmabuf(system_heap, 4096, O_RDWR) = $b\n"
        "lseek($b, 0, SEEK_END) = 4096\n"
        "lseek($b, 0, SEEK_SET) = 7\n"
        "read($b, 1) = -1 EINVAL\n"
    )
    met = [r.expectation_met for r in render_all(script, run_on_simulator(script, "v6.12"))]
    assert met == [None, True, False, True]


def test_a_bound_number_is_still_compared() -> None:
    """Only fds, addresses, processes and handles print as names; numbers print as numbers."""
    texts = _texts(
        "dmabuf(vgem, 4096, O_RDWR) = $b\n"
        "lseek($b, 0, SEEK_END) = $end\n"
        "fcntl($b, F_GETFL) = $fl\n"
        "lseek($b, $end - 4096, SEEK_SET)\n"
    )
    assert texts == ["$b", "4096", "02", "0"]
