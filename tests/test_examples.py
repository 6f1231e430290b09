"""The scripts in examples/ run as documented and print the outcomes they promise.

Each example runs in a subprocess with this interpreter from the repository root, as
``python examples/NAME.py`` would; the test then checks the concrete values it prints
(thumbnail pixels, PTE counts, errnos, stale-read counts...), not just the exit code.
my_exporter.py, my_broken_exporter.py and every_spec_exporter.py are covered by
tests/conformance.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOT_HERE = {
    "my_exporter.py",
    "my_broken_exporter.py",
    "every_spec_exporter.py",
}  # tests/conformance runs them
TESTED = {
    "cpu_fallback_thumbnail.py",
    "importer_mmap.py",
    "faked_coherency.py",
    "own_file.py",
    "no_fault_sync.py",
    "sync_ioctl.py",
    "picture.py",
}


def run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr
    return proc.stdout


def in_order(text: str, *parts: str) -> None:
    """Every part occurs in text, each after the previous one."""
    pos = 0
    for part in parts:
        found = text.find(part, pos)
        assert found >= 0, f"{part!r} missing (after offset {pos}) in:\n{text}"
        pos = found + len(part)


def section(text: str, start: str, end: str | None = None) -> str:
    """The text from the line holding ``start`` up to the next holding ``end``."""
    begin = text.index(start)
    stop = text.index(end, begin) if end is not None else len(text)
    return text[begin:stop]


def test_every_example_is_checked_here() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts - NOT_HERE == TESTED
    listed = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in listed for name in scripts)


def test_cpu_fallback_thumbnail() -> None:
    out = run("cpu_fallback_thumbnail.py")
    # frame 1 is the ramp (x + y) * 2: the 8x8 block averages are 16 * (bx + by) + 14
    rows = [" ".join(f"{16 * (bx + by) + 14:3d}" for bx in range(8)) for by in range(8)]
    in_order(out, "frame 1 thumbnail", *rows, "stale reads so far: 0")
    assert rows[0] == " 14  30  46  62  78  94 110 126" and rows[7].endswith("222 238")
    # frame 2 (the negative) read without SYNC: the cached lines of frame 1 answer
    in_order(
        out,
        "frame 2 WITHOUT sync, thumbnail row 0:  14  30  46  62  78  94 110 126",
        "stale reads: 1\n",
        "stale read at pa",
        "saw 00020406080a0c0e, but device camera wrote fffdfbf9f7f5f3f1",
        "frame 2 with SYNC,    thumbnail row 0: 241 225 209 193 177 161 145 129",
        "stale reads: 1 (none added under SYNC)",
    )


def test_importer_mmap() -> None:
    out = run("importer_mmap.py")
    in_order(
        out,
        "drm_gem_mmap() {",
        "drm_gem_mmap_obj() {",
        "drm_gem_shmem_mmap() {",
        "dma_buf_mmap() {",
        "vma_set_file() {",
        "get_file(); /* = file(/dmabuf:texture) */",
        "system_heap_mmap() {",
        "remap_pfn_range(); /* = 0 */",
        "} /* dma_buf_mmap = 0 */",
        "} /* drm_gem_mmap = 0 */",
    )
    assert "vm_file: /dmabuf:texture (the dma-buf's file: True, not /dev/dri/card0)" in out
    assert "vm_pgoff: 0 (mmap asked for fake offset 0x100000000 = page 0x100000" in out
    maps = [line for line in out.splitlines() if re.match(r"[0-9a-f]+-[0-9a-f]+ rw-s ", line)]
    assert len(maps) == 1 and maps[0].endswith(" /dmabuf:texture")
    assert maps[0].split()[2] == "00000000"  # the offset column: vm_pgoff 0
    assert "read through vgem: b'heap -> vgem'" in out
    assert "buffer released: True" in out


def test_faked_coherency() -> None:
    out = run("faked_coherency.py")
    shoot = section(out, "[shootdown]", "[no_coherency]")
    in_order(
        shoot,
        "user PTEs after the CPU's writes: 2",
        "map_attachment zapped 2 PTEs; user PTEs left: 0",
        "device reads:   b'CPU wrote this..'",
        "CPU then reads: b'GPU wrote this!!'",
        "handle_mm_fault -> do_fault -> do_read_fault -> __do_fault -> shootdown_fault",
        "shootdown_fault() {",
        "shootdown_cpu_sync_page() {",
        "dma_unmap_sgtable();",
        "vmf_insert_mixed();",
        "stale reads: 0",
    )
    plain = section(out, "[no_coherency]")
    in_order(
        plain,
        "map_attachment zapped 0 PTEs; user PTEs left: 2",
        "device reads:   b'" + r"\x00" * 16 + "'",
        "CPU then reads: b'CPU wrote this..'",
        "stale reads: 2",
        "by device gpu: saw 0000000000000000",
        "by CPU (pid 1, va ",
        "but device gpu wrote 4750552077726f74",  # "GPU wrote"
    )
    assert "shootdown_fault" not in plain


def test_own_file() -> None:
    out = run("own_file.py")
    results = re.findall(
        r"^(\S+) +(\S+) *: A's PTEs -> (\d+); B's PTEs (\d+) -> (\d+)$", out, re.MULTILINE
    )
    assert results == [
        ("v3.5", "shared_file_zap", "0", "2", "0"),  # B zapped through the shared inode
        ("v3.5", "shootdown", "0", "2", "2"),  # own file: B untouched
        ("v6.12", "shared_file_zap", "0", "2", "2"),  # per-buffer inodes
    ]
    maps = re.findall(r"^ +([AB]) \S+ dev (\S+) inode +(\d+) (.+)$", out, re.MULTILINE)
    assert len(maps) == 6
    shared, own, modern = maps[0:2], maps[2:4], maps[4:6]
    assert {m[3] for m in shared} == {"anon_inode:dmabuf"} and {m[2] for m in shared} == {"1"}
    assert all(m[3] == "/shootdown-obj (deleted)" for m in own) and own[0][2] != own[1][2]
    assert all(m[3] == "/dmabuf:" for m in modern) and modern[0][2] != modern[1][2]


def test_no_fault_sync() -> None:
    out = run("no_fault_sync.py")
    lines = re.findall(
        r"^(\S.*?) +read (b'rendered frame'|zeros \(unfinished\)) +clock +(\d+) ns"
        r" +fence signaled=(\w+)\n +fault_waits: (.*)$",
        out,
        re.MULTILINE,
    )
    assert lines == [
        (
            "waits_in_fault",
            "b'rendered frame'",
            "5000000",
            "True",
            "['wait on fence(gpu#1) inside a page fault']",
        ),
        ("simple", "zeros (unfinished)", "0", "False", "[]"),
        ("simple + SYNC", "b'rendered frame'", "5000000", "True", "[]"),
    ]


def test_sync_ioctl() -> None:
    out = run("sync_ioctl.py")
    assert "v3.5  simple     : SYNC_START -> ENOTTY ([Errno 25]" in out
    in_order(
        out,
        "v6.12 system_heap: SYNC_START -> 0",
        "dma_buf_ioctl() {",
        "dma_buf_begin_cpu_access() {",
        "system_heap_dma_buf_begin_cpu_access() {",
        "dma_sync_sgtable_for_cpu();",
        "} /* dma_buf_ioctl = 0 */",
        "SYNC_END: dma_buf_ioctl -> dma_buf_end_cpu_access"
        " -> system_heap_dma_buf_end_cpu_access -> dma_sync_sgtable_for_device",
    )


def test_picture_to_a_given_directory(tmp_path: Path) -> None:
    out = run("picture.py", str(tmp_path / "pics"))
    assert "1 process, 2 vma, 2 file, 1 inode, 1 address_space, 2 page, 2 dma_buf" in out
    assert "the anon inode / shared by 2 files' marks=['shared']" in out
    svg, mmd = tmp_path / "pics" / "state.svg", tmp_path / "pics" / "state.mmd"
    assert f"wrote {svg} (" in out and f"wrote {mmd} (" in out
    assert svg.read_text().startswith("<?xml") and "<svg" in svg.read_text()
    assert mmd.read_text().startswith("flowchart") and "anon_inode:dmabuf" in mmd.read_text()


def test_picture_to_a_temporary_directory() -> None:
    out = run("picture.py")
    written = [Path(p) for p in re.findall(r"^wrote (\S+) \(\d+ bytes\)$", out, re.MULTILINE)]
    assert [p.name for p in written] == ["state.svg", "state.mmd"]
    try:
        assert all(p.is_file() and p.parent.name.startswith("dmabuf-pic-") for p in written)
    finally:
        shutil.rmtree(written[0].parent, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(TESTED))
def test_examples_are_short(name: str) -> None:
    """Examples stay readable at a glance."""
    assert len((EXAMPLES / name).read_text(encoding="utf-8").splitlines()) <= 100
