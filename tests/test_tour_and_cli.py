"""The guided tour, the stories behind diff-specs, and the command line.

Every step's key outcome is asserted, not just that it ran.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dmabuf_sim.cli import main
from dmabuf_sim.stories import STORIES, diff_story, run_story
from dmabuf_sim.tour import run_tour, tour_steps


@pytest.fixture(scope="module")
def tour_text() -> str:
    out = io.StringIO()
    run_tour(spec="v6.12", out=out)
    return out.getvalue()


def test_tour_walks_every_use_case_of_the_seed(tour_text: str) -> None:
    titles = [s.title for s in tour_steps()]
    for i, title in enumerate(titles, 1):
        assert f"== Step {i}: {title}" in tour_text
    for promised in (
        "Use case 1: CPU fallback processing in a pipeline",
        "Use case 2: an importer's existing mmap, forwarded with dma_buf_mmap",
        "Faking coherency",
        "own file in vm_file",
        "must not wait for the device",
        "DMA_BUF_IOCTL_SYNC",
    ):
        assert promised in tour_text


def test_tour_traces_name_the_kernel_functions_in_order(tour_text: str) -> None:
    step1 = tour_text.split("== Step 2", maxsplit=1)[0]
    trace = step1.split(" 0) ", 1)[1]  # after the explanation text
    order = [
        trace.index(f)
        for f in (
            "__x64_sys_mmap",
            "do_mmap",
            "mmap_region",
            "dma_buf_mmap_internal",
            "system_heap_mmap",
            "remap_pfn_range",
        )
    ]
    assert order == sorted(order)
    assert "dma_buf_mmap_internal(); /* = -22 EINVAL */" in step1  # R1


def test_tour_outcomes(tour_text: str) -> None:
    assert "4 PTEs present before any access" in tour_text
    assert "thumbnail row [48, 176, 48, 176, 48, 176, 48, 176]" in tour_text
    step3 = tour_text.split("== Step 3")[1].split("== Step 4", maxsplit=1)[0]
    assert "dma_buf_mmap" in step3 or "holds /dmabuf:" in step3
    assert "/dmabuf: (not the DRM file) with vm_pgoff 0" in step3
    step4 = tour_text.split("== Step 4")[1].split("== Step 5", maxsplit=1)[0]
    assert "unmap_mapping_range" in step4 and "shootdown_cpu_sync_page" in step4
    assert "the device read b'written by the CPU'" in step4
    assert "reads b'DSP was here'" in step4
    step5 = tour_text.split("== Step 5")[1].split("== Step 6", maxsplit=1)[0]
    assert "[v6.12] buffers share one inode: False; B's PTEs 1 -> 1" in step5
    assert "[v3.5, for contrast] buffers share one inode: True; B's PTEs 1 -> 0" in step5
    step6 = tour_text.split("== Step 6")[1].split("== Step 7", maxsplit=1)[0]
    assert "[simple] the touch took 0 ms of device time; waits inside the fault: 0" in step6
    assert (
        "[waits_in_fault] the touch took 16 ms of device time; waits inside the fault: 1" in step6
    )
    step7 = tour_text.split("== Step 7")[1].split("== Step 8", maxsplit=1)[0]
    assert "[v6.12] DMA_BUF_IOCTL_SYNC: ok" in step7
    assert "[v3.5, for contrast] DMA_BUF_IOCTL_SYNC: Inappropriate ioctl for device" in step7
    assert "stale read at pa" in step7 and "after SYNC_START it reads b'new frame'" in step7
    step8 = tour_text.split("== Step 8")[1]
    assert "SIGSEGV (si_code=1)" in step8 and "2 PTEs (PFNMAP PTEs are copied, R40)" in step8


def test_tour_step_option_and_bad_step() -> None:
    out = io.StringIO()
    run_tour(spec="v6.12", out=out, only=5, trace=False)
    assert "== Step 5" in out.getvalue() and "== Step 4" not in out.getvalue()
    with pytest.raises(ValueError, match="there is no step 99: the tour has steps 1 to 8"):
        run_tour(spec="v6.12", out=io.StringIO(), only=99)


@pytest.mark.parametrize(
    ("story", "a", "b", "key", "want_a", "want_b"),
    [
        (
            "importer-mmap-failure",
            "v3.5",
            "v6.12",
            "importer file refs (before -> after)",
            "1 -> 0",
            "1 -> 1",
        ),  # R23 vs R24
        (
            "importer-mmap-failure",
            "v3.5",
            "v6.12",
            "dma-buf file refs (before -> after)",
            "1 -> 2",
            "1 -> 1",
        ),
        ("no-fault-handler", "v3.5", "v6.1", "read first byte", "ok: 00", "SIGBUS (si_code=2)"),
        ("shared-inode", "v3.5", "latest", "B's PTEs after A's shootdown", "0", "1"),
        ("file-ops", "v3.4", "v6.12", "lseek(0, SEEK_END)", "ESPIPE", "ok: 8192"),
        ("mmap-bounds", "v3.5", "v6.12", "mmap 1 page at offset -4096", "EINVAL", "EOVERFLOW"),
        ("rfc-uninitialised-read", "rfc-2012", "v3.5", "mmap 1 page", "oops (R61)", "ok"),
    ],
)
def test_diff_specs_shows_the_historical_differences(
    story: str, a: str, b: str, key: str, want_a: str, want_b: str
) -> None:
    rows = {k: (x, y) for k, x, y in diff_story(story, a, b)}
    assert rows[key] == (want_a, want_b)


def test_identical_specs_have_no_differences() -> None:
    for name in STORIES:
        assert diff_story(name, "v6.12", "v6.12") == []


def test_unknown_story_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        run_story("nope", "v6.12")


def test_cli_scenarios_list_and_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["scenarios", "list"]) == 0
    listing = capsys.readouterr().out
    assert "round-trip" in listing and "importer-mmap-failure" in listing
    assert "shared_file_zap" in listing
    svg = tmp_path / "state.svg"
    code = main(
        [
            "scenarios",
            "run",
            "two-buffers",
            "--exporter",
            "shared_file_zap",
            "--spec",
            "v3.5",
            "--picture",
            str(svg),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "SAN-OTHER-BUFFER violated" in out and "(R26)" in out
    root = ET.fromstring(svg.read_text())
    text = "".join(root.itertext())
    assert "anon_inode:dmabuf" in text and "shared by 2 files" in text


def test_cli_scenario_trace_jsonl_is_pure_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["scenarios", "run", "round-trip", "--exporter", "system_heap", "--trace", "jsonl"])
        == 0
    )
    out = capsys.readouterr().out
    records = [json.loads(x) for x in out.splitlines()]  # every line parses: jq works
    *events, result = records
    funcs = [e["func"] for e in events]
    assert "dma_buf_mmap_internal" in funcs and "system_heap_map_dma_buf" in funcs
    calls = [e for e in events if e["kind"] == "syscall"]
    assert (
        calls[0]["func"] == "open"
        and calls[0]["args"] == '"/dev/dma_heap/system", O_RDONLY|O_CLOEXEC'
    )
    assert not any("kit-probe" in e.get("args", "") for e in events)  # the harness's own calls
    assert result == {
        "kind": "result",
        "name": "round-trip",
        "spec": "v6.12",
        "exporter": "system_heap",
        "status": "passed",
        "observations": {},
    }


def test_cli_story_run_and_diff(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff-specs", "no-fault-handler", "v3.5", "v6.12"]) == 0
    out = capsys.readouterr().out
    assert "read first byte" in out and "SIGBUS" in out
    assert main(["scenarios", "run", "file-ops", "--spec", "v3.5", "--trace", "text"]) == 0
    out = capsys.readouterr().out
    assert "vfs_llseek" in out and "lseek(0, SEEK_END): ESPIPE" in out


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "run", "nope"]) == 2
    assert main(["scenarios", "run", "round-trip", "--exporter", "nope"]) == 2
    assert main(["diff-specs", "nope", "v3.5", "v6.12"]) == 2
    assert main(["scenarios", "run"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario" in err and "unknown exporter" in err and "unknown story" in err


def test_cli_specs_table_and_functions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["specs"]) == 0
    table = capsys.readouterr().out
    assert "per_buffer_inode" in table and "dma_buf_mmap_swap" in table
    assert main(["functions"]) == 0
    funcs = capsys.readouterr().out
    assert "dma_buf_mmap_internal" in funcs and "drivers/dma-buf/dma-buf.c" in funcs
