"""examples/walkthrough.ipynb runs, cell by cell, and shows what it promises.

No Jupyter here: scripts/run_notebook.py executes the code cells in order as
IPython would (the value of a cell's last expression is displayed with every
rich form it offers), and the outputs must equal the ones stored in the
notebook, so what a reader sees on opening it is what it does.  Then the rich
outputs are checked for what they should show.
"""

from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dmabuf_sim import Kernel

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"
SVG_NS = "{http://www.w3.org/2000/svg}"


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "run_notebook", ROOT / "scripts" / "run_notebook.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def executed() -> tuple[dict[str, Any], dict[str, Any]]:
    stored = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return stored, _runner().execute(stored)


def _outputs(notebook: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [c["outputs"] for c in notebook["cells"] if c["cell_type"] == "code"]


def _svg_text(svg: str) -> str:
    root = ET.fromstring(svg)
    assert root.tag == SVG_NS + "svg"
    return "\n".join("".join(t.itertext()) for t in root.iter(SVG_NS + "text"))


def test_stored_outputs_are_what_the_cells_produce(
    executed: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    stored, fresh = executed
    runner = _runner()
    assert runner.dumps(stored) == runner.dumps(fresh), (
        "stale outputs: run python scripts/run_notebook.py examples/walkthrough.ipynb"
    )


def test_kernel_process_and_run_draw_themselves(
    executed: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    kernel_out, trace_out, run_out, view_out = _outputs(executed[1])
    (kernel,) = kernel_out
    assert kernel["data"]["text/plain"] == ["<Kernel spec='v6.12': 1 process, 1 dma-buf>"]
    text = _svg_text("".join(kernel["data"]["image/svg+xml"]))
    assert "demo-1" in text and "dirty lines: 1" in text and "page 1" in text
    stream, process = trace_out
    assert "".join(stream["text"]) == (
        "[demo-1] ioctl(1, DMA_BUF_IOCTL_SYNC, {flags=DMA_BUF_SYNC_END|DMA_BUF_SYNC_RW}) = 0\n"
        "[demo-1] munmap(0x7effffffe000, 4096) = 0\n"
    )
    text = _svg_text("".join(process["data"]["image/svg+xml"]))
    assert "1 vma, 1 fd" in text and "vma 0x7efffffff000-0x7f0000000000" in text
    (run,) = run_out
    page = "".join(run["data"]["text/html"])
    assert "<b>no-fault-handler [spec v6.12]: ran</b>" in page
    assert "<li>read first byte: SIGBUS (si_code=2)</li>" in page and "<svg" in page
    (view,) = view_out
    frame = "".join(view["data"]["text/html"])
    assert frame.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;')
    assert "walkthrough-data" in frame and "v3.5" in frame


def test_every_repr_is_the_picture_the_api_draws() -> None:
    k = Kernel("v6.12")
    p = k.spawn("x")
    assert k._repr_svg_().startswith("<?xml") and "x-1" in _svg_text(k._repr_svg_())
    assert _svg_text(p._repr_svg_()).count("x-1") == 1
    assert repr(k) == "<Kernel spec='v6.12': 1 process, 0 dma-bufs>"
