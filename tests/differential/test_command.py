"""``dmabuf-sim differential``: every path ends in a verdict or one line saying what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmabuf_sim.cli import main
from dmabuf_sim.differential import command, vm
from dmabuf_sim.differential.compare import load_record


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["differential", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sim_only_prints_each_line_and_a_verdict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = tmp_path / "a.syscalls"
    script.write_text("dmabuf(udmabuf, 4096, O_RDWR) = $b\nlseek($b, 0, SEEK_END) = 4096\n")
    code, out, _ = _run(capsys, str(script), "--sim-only")
    assert code == 0
    assert "lseek($b, 0, SEEK_END)" in out and "4096" in out
    assert out.endswith("verdict: 2 lines ran; 1 stated expectations, all met\n")


def test_an_unmet_expectation_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = tmp_path / "a.syscalls"
    script.write_text("dmabuf(udmabuf, 4096, O_RDWR) = $b\nlseek($b, 0, SEEK_END) = 5\n")
    code, out, _ = _run(capsys, str(script), "--sim-only", "--spec", "latest")
    assert code == 1
    assert "verdict: line 2 answered 4096, the script expects 5" in out
    assert " ?    2  lseek" in out


def test_exporter_option_rewrites_every_buffer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "mremap", "--sim-only", "--exporter", "vgem")
    assert code == 0
    assert "dmabuf(vgem, 2*PAGE_SIZE" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mremap"], "say which kernel: --kernel RELEASE"),
        (["no-such"], "no script file 'no-such' and no bundled script"),
        ([], "name a script"),
        (["mremap", "--sim-only", "--record", "x.jsonl"], "--record saves a real kernel's"),
        (["mremap", "--modules", "d"], "--modules goes with --kernel-image"),
        (["mremap", "--kernel-image", "/no/such/bzImage"], "no such file"),
        (["mremap", "--kernel", "6.12 x"], "expected a release such as"),
        (["mremap", "--replay", "/no/such.jsonl"], "cannot read the record"),
    ],
)
def test_usage_problems_say_what_to_do(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and not out
    assert err.startswith("dmabuf-sim differential: ") and message in err
    assert err.count("\n") == 1


def test_a_bad_script_names_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = tmp_path / "bad.syscalls"
    script.write_text("close(3)\nmmap(1)\n")
    code, _, err = _run(capsys, str(script), "--sim-only")
    assert code == 2 and "line 2: mmap takes 6 arguments, not 1" in err


def test_missing_qemu(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(b"bz")
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    code, _, err = _run(capsys, "mremap", "--kernel-image", str(image), "--cache", str(tmp_path))
    assert code == 2 and "apt-get install qemu-system-x86" in err


def test_list_kernels(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(command, "apt_releases", lambda: ["6.1.0-57", "6.12.118+deb12"])
    (tmp_path / "kernels" / "6.12.117+deb12").mkdir(parents=True)
    (tmp_path / "kernels" / "6.12.117+deb12" / "kernel.json").write_text("{}")
    code, out, _ = _run(capsys, "--list-kernels", "--cache", str(tmp_path))
    assert code == 0
    assert "6.12.117+deb12" in out.splitlines()[0]
    assert "in the configured apt sources: 6.1.0-57, 6.12.118+deb12" in out
    assert "6.12.117+deb12: simulator spec v6.12" in out


def test_a_vm_run_compares_and_records(
    capsys: pytest.CaptureFixture[str],
    fake_qemu: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The whole path with a stand-in QEMU (it answers EBADF for line 1, as Linux would)."""
    monkeypatch.setenv("FAKE_QEMU_END", "1")
    image = tmp_path / "bzImage"
    image.write_bytes(b"bz")
    script = tmp_path / "s.syscalls"
    script.write_text("close(99)\n")
    record = tmp_path / "rec.jsonl"
    argv = [str(script), "--kernel-image", str(image), "--cache", str(tmp_path / "c")]
    code, out, _ = _run(capsys, *argv, "--accel", "tcg", "--record", str(record))
    assert code == 0, out
    assert "kernel 6.12.117+deb12-amd64" in out
    assert out.rstrip().endswith("agree on all 1 lines")
    rec = load_record(record)
    assert rec.release == "6.12.117+deb12-amd64" and rec.outcomes[0].kind == "errno"
    code, out, _ = _run(capsys, "--replay", str(record))
    assert code == 0 and "recorded answers: " in out


def test_a_vm_run_that_stops_early_is_a_failure(
    capsys: pytest.CaptureFixture[str], fake_qemu: Path, tmp_path: Path
) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(b"bz")
    script = tmp_path / "s.syscalls"
    script.write_text("close(99)\nclose(98)\n")
    argv = [str(script), "--kernel-image", str(image), "--cache", str(tmp_path / "c")]
    code, out, _ = _run(capsys, *argv, "--accel", "tcg")
    assert code == 1
    assert "not run" in out and "the VM stopped after 1 of 2 statements" in out
