"""What surrounds the VM, without booting one: kernels and modules, the initramfs, QEMU's
command line and the answers it leaves, the spec for a release."""

from __future__ import annotations

import lzma
import stat
from pathlib import Path

import pytest

from dmabuf_sim.differential import kernels, vm
from dmabuf_sim.differential.interp import ToolMissing, parse_answers
from dmabuf_sim.differential.kernels import PreparedKernel, module_closure
from dmabuf_sim.differential.releases import spec_for_release
from dmabuf_sim.differential.script import parse_script


def _ko(path: Path, depends: str, *, xz: bool = False) -> None:
    image = b"\x7fELF...\x00license=GPL\x00depends=" + depends.encode() + b"\x00name=x\x00"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(image) if xz else image)


def test_module_closure_orders_dependencies_first(tmp_path: Path) -> None:
    tree = tmp_path / "lib" / "modules" / "6.12.0" / "kernel" / "drivers" / "gpu" / "drm"
    _ko(tree / "vgem" / "vgem.ko.xz", "drm_shmem_helper,drm", xz=True)
    _ko(tree / "drm_shmem_helper.ko.xz", "drm", xz=True)
    _ko(tree / "drm.ko.xz", "", xz=True)
    _ko(tree / "drm_kms_helper.ko.xz", "drm", xz=True)  # not needed by this vgem
    _ko(tree / "unrelated.ko", "")
    order = module_closure(tmp_path)
    assert [name for name, _ in order] == ["drm", "drm_shmem_helper", "vgem"]
    assert order[0][1].startswith(b"\x7fELF")  # decompressed for init_module


def test_module_names_treat_dashes_as_underscores(tmp_path: Path) -> None:
    _ko(tmp_path / "udma-buf.ko", "")
    _ko(tmp_path / "vgem.ko", "udma_buf")
    assert [n for n, _ in module_closure(tmp_path, ["vgem"])] == ["udma_buf", "vgem"]


def test_an_unavailable_debian_release_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(kernels, "_apt_version", lambda package: None)
    monkeypatch.setattr(kernels, "apt_releases", lambda: ["6.1.0-57", "6.12.117+deb12"])
    with pytest.raises(ToolMissing) as info:
        kernels.fetch_debian_kernel("7.3.4+deb13", tmp_path)
    msg = str(info.value)
    assert "not in the configured apt sources (they offer: 6.1.0-57, 6.12.117+deb12)" in msg
    assert "trixie" in msg and "--kernel-image" in msg


def test_a_cached_kernel_is_used_without_apt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "kernels" / "6.12.117+deb12"
    (home / "modules").mkdir(parents=True)
    (home / "vmlinuz").write_bytes(b"bz")
    (home / "kernel.json").write_text(
        '{"release": "6.12.117+deb12", "packages": ["p=1"], "modules": ["drm", "vgem"]}'
    )
    monkeypatch.setattr(kernels, "_apt_version", lambda package: pytest.fail("apt asked"))
    k = kernels.fetch_debian_kernel("6.12.117+deb12", tmp_path)
    assert k.image == home / "vmlinuz"
    assert [m.name for m in k.modules] == ["drm.ko", "vgem.ko"]


def _read_newc(blob: bytes) -> dict[str, tuple[int, bytes]]:
    out = {}
    pos = 0
    while True:
        assert blob[pos : pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = blob[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        data = blob[data_start : data_start + size]
        pos = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data)


def test_the_initramfs_is_a_newc_archive() -> None:
    blob = vm.newc_archive(
        {"init": b"\x7fELF", "script.syscalls": b"close(3)\n"}, dirs=("dev",), execs=("init",)
    )
    entries = _read_newc(blob)
    assert entries["init"] == (0o100755, b"\x7fELF")
    assert entries["script.syscalls"] == (0o100644, b"close(3)\n")
    assert stat.S_ISDIR(entries["dev"][0])
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert len(blob) % 512 == 0


def test_answers_survive_console_noise() -> None:
    text = (
        "[    1.0] random printk\n"
        '@dmas {"header": {"release": "6.12.117+deb12-amd64",'
        ' "devices": {"/dev/udmabuf": false}}}\n'
        '@dmas {"line": 3, "k": "errno", "v": 22}\n'
        '@dmas {"line": 4, "k": "o[  2.0] interrupted\n'
        '@dmas {"end": 2}\n'
    )
    answers = parse_answers(text)
    script = parse_script("\n\nclose(1)\nclose(2)\n")
    assert answers.ended and answers.header["release"] == "6.12.117+deb12-amd64"
    assert [o.kind for o in answers.outcomes(script)] == ["errno", "not run"]


def _kernel(tmp_path: Path) -> PreparedKernel:
    image = tmp_path / "bzImage"
    image.write_bytes(b"bz")
    return PreparedKernel(release="mine", image=image)


def test_a_run_boots_qemu_with_two_serial_ports(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_END", "1")
    script = parse_script("close(99)\n")
    run = vm.run_in_vm(script, _kernel(tmp_path), tmp_path / "cache", accel="tcg")
    args = (fake_qemu.parent / "args").read_text()
    assert "-accel tcg" in args and "-no-reboot" in args and "rdinit=/init" in args
    assert args.count("-serial file:") == 2
    assert run.accel == "tcg" and not run.problem
    assert run.answers.by_line[1].kind == "errno"
    assert run.console_log.exists()


def test_a_run_that_stops_early_says_so(fake_qemu: Path, tmp_path: Path) -> None:
    script = parse_script("close(99)\nclose(98)\n")
    run = vm.run_in_vm(script, _kernel(tmp_path), tmp_path / "cache", accel="tcg")
    assert run.problem.startswith("the VM stopped after 1 of 2 statements")
    assert str(run.console_log) in run.problem


def test_missing_qemu_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissing, match="apt-get install qemu-system-x86"):
        vm.run_in_vm(parse_script("close(1)\n"), _kernel(tmp_path), tmp_path)


@pytest.mark.parametrize(
    ("release", "spec", "exact"),
    [
        ("6.12.117+deb12", "v6.12", True),
        ("6.12.117+deb12-amd64", "v6.12", True),
        ("6.1.0-57", "v6.1", True),
        ("6.1.0-57-amd64", "v6.1", True),
        ("6.19.14+deb13", "v6.19", True),
        ("7.3.4+deb13", "latest", True),
        ("5.10.0-32", "v5.10", True),
        ("8.0.1", "latest", False),
        ("4.19.0", "v5.10", False),
    ],
)
def test_spec_for_release(release: str, spec: str, exact: bool) -> None:
    choice = spec_for_release(release)
    assert (choice.spec, choice.exact) == (spec, exact)
    assert bool(choice.note) is not exact


def test_spec_for_release_needs_a_version() -> None:
    with pytest.raises(ValueError, match="pass --spec"):
        spec_for_release("bzImage")
