"""The guided tour, the stories behind diff-specs, and the command line.

Every step's key outcome is asserted, not just that it ran.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dmabuf_sim import __version__
from dmabuf_sim.cli import main
from dmabuf_sim.spec import DEFAULT_SPEC, SPECS
from dmabuf_sim.stories import STORIES, diff_story, run_story, verdict
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
    assert "SAN-OTHER-BUFFER violated" in out and "(R26, R56)" in out
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
    # the release table, then full values with "since" and the meaning
    assert "6.12.0 – 6.18.y  v6.12" in table and "7.1.4 – 7.3.y" in table
    row = next(line for line in table.splitlines() if line.startswith("dma_buf_mmap_swap "))
    assert "restore_on_error" in row and "vma_set_file" in row and "fput_then_get" in row
    assert "3.5 fput_then_get; 3.9 restore_on_error; 5.11 vma_set_file" in row
    noexec = next(line for line in table.splitlines() if line.startswith("pseudo_fs_noexec "))
    assert noexec.split()[1:9] == ["no"] * 7 + ["yes"] and "SB_I_NOEXEC" in noexec
    assert not any(line.startswith("config_dma_shared_buffer ") for line in table.splitlines())
    assert main(["specs", "--all"]) == 0
    assert "\nconfig_dma_shared_buffer " in capsys.readouterr().out  # the same in every spec
    assert main(["functions"]) == 0
    funcs = capsys.readouterr().out
    assert "dma_buf_mmap_internal" in funcs and "drivers/dma-buf/dma-buf.c" in funcs


# -- one default spec, named in every header -----------------------------------------
@pytest.mark.parametrize("spec", list(SPECS))
def test_tour_runs_every_step_under_the_chosen_spec_or_says_why_not(spec: str) -> None:
    out = io.StringIO()
    tour = run_tour(spec=spec, out=out, trace=False)
    text = out.getvalue()
    assert text.splitlines()[0].startswith(f"dmabuf_sim guided tour — spec {spec}")
    steps = text.split("== Step ")[1:]
    assert len(steps) == len(tour_steps())
    for i, step in enumerate(steps, 1):
        said = [line.strip() for line in step.splitlines() if line.startswith("   [")]
        assert said, f"step {i} says nothing under {spec}"
        assert said[0].startswith(f"[{spec}]"), f"step {i} does not run under {spec}: {said[0]}"
        cannot = f"[{spec}] this step cannot run: "
        if any(line.startswith(cannot) for line in said):
            assert f"Step {i}: " in " ".join(tour.cannot)
    ran = len(steps) - len(tour.cannot)
    assert ran == {"rfc-2012": 1, "v3.4": 1, "v3.5": 7}.get(spec, 8)


def test_tour_on_an_old_kernel_shows_its_own_behaviour() -> None:
    out = io.StringIO()
    run_tour(spec="v3.5", out=out, trace=False)
    text = out.getvalue()
    assert (
        "[v3.5] spec v3.5 has no dma-heaps: this step uses the kernel-side 'simple' exporter"
        in text
    )
    assert (
        "[v3.5] DMA_BUF_IOCTL_SYNC fails: Inappropriate ioctl for device — it arrived in 4.6"
        in text
    )
    assert "[v3.5] buffers share one inode: True; B's PTEs 1 -> 0" in text  # R26
    assert "[v6.12, for contrast] buffers share one inode: False" in text
    assert "[v3.5] this step cannot run: v3.5 has no implicit fences on a dma-buf" in text
    assert "[v3.5] there is no SYNC ioctl to fix it" in text


def test_cli_version_names_the_default_spec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"dmabuf-sim {__version__} (default spec {DEFAULT_SPEC})\n"


def test_cli_headers_name_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "run", "mmap-bounds"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"== story mmap-bounds, spec {DEFAULT_SPEC} (the default)"
    assert out[1] == f"mmap-bounds [spec {DEFAULT_SPEC}]: ran"
    assert main(["scenarios", "run", "fork", "--spec", "latest", "--exporter", "udmabuf"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "== scenario fork, exporter udmabuf, spec latest",
        "fork [udmabuf, spec latest]: passed",
    ]
    assert main(["tour", "--step", "1", "--no-trace"]) == 0
    assert capsys.readouterr().out.startswith(
        f"dmabuf_sim guided tour — spec {DEFAULT_SPEC} (the default; choose another with --spec)"
    )


def test_cli_strace_trace_hides_the_harness(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "run", "close-while-mapped", "--trace", "strace"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == [
        '[app-1] open("/dev/dma_heap/system", O_RDONLY|O_CLOEXEC) = 0',
        "[app-1] ioctl(0, DMA_HEAP_IOCTL_ALLOC, {len=4096, fd=1, fd_flags=O_RDWR|O_CLOEXEC,"
        " heap_flags=0}) = 0",
        "[app-1] close(0) = 0",
    ]
    assert (
        "[app-1] close(1) = 0" in out
        and out[-1] == "close-while-mapped [system_heap, spec v6.12]: passed"
    )
    assert main(["scenarios", "run", "round-trip", "--trace", "text"]) == 0
    assert "kit-probe" not in capsys.readouterr().out
    assert main(["scenarios", "run", "round-trip", "--trace", "text", "--full-trace"]) == 0
    full = capsys.readouterr().out
    assert "fget()" in full and "get_file()" in full  # plumbing, asked for: shown


def test_cli_skipped_scenarios_suggest_what_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "run", "round-trip", "--spec", "v3.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "round-trip [system_heap, spec v3.5]: skipped (spec v3.5 has no dma-heaps)",
        "  try --exporter simple, which exists on v3.5",
    ]
    assert main(["scenarios", "run", "round-trip", "--spec", "v3.5", "--exporter", "simple"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "round-trip [simple, spec v3.5]: passed"
    # the RFC as posted: the oops is the finding, never a traceback (R61)
    assert (
        main(["scenarios", "run", "round-trip", "--spec", "rfc-2012", "--exporter", "simple"]) == 1
    )
    out = capsys.readouterr().out
    assert "finding 1: R61 violated: oops in dma_buf_mmap_internal" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["tour", "--step", "9"],
            "dmabuf-sim tour: there is no step 9: the tour has steps 1 to 8;",
        ),
        (
            ["scenarios", "run", "round-trip", "--picture", "f.png"],
            "dmabuf-sim scenarios run: --picture f.png: cannot draw f.png: this tool writes .svg",
        ),
        (
            ["scenarios", "run", "round-trip", "--picture", "NOPE/x.svg"],
            "dmabuf-sim scenarios run: --picture NOPE/x.svg: cannot write NOPE/x.svg: directory"
            " NOPE does not exist; create it first or choose another path",
        ),
        (
            ["scenarios", "run", "round-trip", "--html", "NOPE/v.html"],
            "dmabuf-sim scenarios run: --html NOPE/v.html: cannot write NOPE/v.html",
        ),
        (
            ["scenarios", "run", "fork", "--picture-kind", "sequence", "--picture", "s.dot"],
            "sequence pictures have no DOT form: use .svg, .mmd or .md",
        ),
        (["tour", "--html", "NOPE/t.html"], "dmabuf-sim tour: cannot write NOPE/t.html"),
    ],
)
def test_cli_errors_are_one_line_saying_what_to_do(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert message in line and "Traceback" not in line
    assert not any(tmp_path.iterdir())  # nothing was half written


def test_cli_picture_of_a_directory_and_png_advice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["scenarios", "run", "fork", "--picture", str(tmp_path)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"{tmp_path} is a directory; give a file name, e.g. {tmp_path / 'out.svg'}")
    )
    assert main(["scenarios", "run", "fork", "--picture", "pic.png"]) == 2
    assert "'dot -Tpng pic.dot -o pic.png'" in capsys.readouterr().err


def test_cli_writes_the_step_through_view(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "fork.html"
    assert main(["scenarios", "run", "fork", "--exporter", "simple", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"step-through view written to {page}: open it in a browser (v6.12 first" in out
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '"default":"v6.12"' in html
    assert all(f'"{spec}":{{"status"' in html for spec in SPECS)
    tour_page = tmp_path / "tour.html"
    assert main(["tour", "--spec", "v3.5", "--html", str(tour_page)]) == 0
    assert '"default":"v3.5"' in tour_page.read_text(encoding="utf-8")


def test_cli_compact_sequence_picture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A scenario's sequence picture leaves out plumbing and the harness (the tour's filter)."""
    sizes = {}
    for extra in ([], ["--full-trace"]):
        path = tmp_path / f"seq{len(extra)}.svg"
        argv = [
            "scenarios",
            "run",
            "round-trip",
            "--picture-kind",
            "sequence",
            "--picture",
            str(path),
        ]
        assert main(argv + extra) == 0
        root = ET.fromstring(path.read_text())
        calls = int(re.search(r"(\d+) calls", "".join(root.itertext())).group(1))  # type: ignore[union-attr]
        sizes[bool(extra)] = (calls, float(root.get("height", "0")))
    assert sizes[False][0] < sizes[True][0] * 0.8  # 59 calls instead of 79
    assert sizes[False][1] < sizes[True][1] * 0.7  # and leaf calls take one row
    capsys.readouterr()


def test_cli_scenarios_list_has_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "list"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and "`" not in out
    assert "Shoots down through dmabuf->file->f_mapping and never swaps vm_file." in out
    assert f"(default {DEFAULT_SPEC})" in out


def test_cli_diff_specs_says_which_side_is_the_bug(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff-specs", "importer-mmap-failure", "v3.5"]) == 0  # against the default
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["v3.5", DEFAULT_SPEC]
    assert out[4] == "verdict: v3.5 has the bug (2 of 2 differences)"
    assert out[5].startswith("  importer file refs (before -> after): v3.5 is the bug: R23:")
    assert main(["diff-specs", "file-ops", "v3.5", "v6.1"]) == 0
    out = capsys.readouterr().out
    assert "verdict: neither side is buggy: the kernels differ in features, not in bugs" in out
    assert "lseek(0, SEEK_END): neither is a bug: dma-buf lseek arrived in 3.12 (R41)" in out
    assert main(["diff-specs", "rfc-uninitialised-read", "rfc-2012", "v3.5"]) == 0
    out = capsys.readouterr().out
    assert "mmap 1 page: rfc-2012 is the bug: it oopses (R61), undefined behaviour" in out


@pytest.mark.parametrize("name", list(STORIES))
def test_every_difference_between_any_two_specs_gets_a_verdict(name: str) -> None:
    runs = {spec: run_story(name, spec) for spec in SPECS}
    for a in SPECS:
        for b in SPECS:
            keys = list(dict.fromkeys([*runs[a], *runs[b]]))
            rows = [
                (k, runs[a].get(k, "-"), runs[b].get(k, "-"))
                for k in keys
                if runs[a].get(k) != runs[b].get(k)
            ]
            _summary, lines = verdict(name, a, b, rows)
            assert len(lines) == len(rows)
            assert not any("no judgement recorded" in line for line in lines), lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tour", "--spec", "v9"], "dmabuf-sim tour: argument --spec: invalid choice: 'v9'"),
        (
            ["scenarios", "run", "fork", "--trace", "xml"],
            "dmabuf-sim scenarios: argument --trace: invalid choice",
        ),
        (["frob"], "dmabuf-sim: argument command: invalid choice: 'frob'"),
    ],
)
def test_cli_argument_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(message) and line.endswith("--help'")
