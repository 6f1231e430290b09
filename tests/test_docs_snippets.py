"""Every ```python block of the README and docs/ runs as printed (charter: output is
product).  ``>>>`` blocks run as doctests; the README's exporter is the example file."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for page in PAGES:
        for i, m in enumerate(_BLOCK.finditer(page.read_text(encoding="utf-8"))):
            out.append((page.relative_to(ROOT).as_posix(), i, m.group(1)))
    return out


BLOCKS = _blocks()


@pytest.mark.parametrize(("page", "index", "code"), BLOCKS, ids=[f"{p}#{i}" for p, i, _ in BLOCKS])
def test_python_block_runs_as_printed(
    page: str, index: int, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # snippets name files relative to the project, as printed
    monkeypatch.syspath_prepend(str(ROOT))
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, {}, page, page, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0, f"{page} block {index}"
    elif code.startswith("class MyExporter(DmaBufOps):"):
        # the README shows examples/my_exporter.py's class: it must be the same code
        assert code in (ROOT / "examples" / "my_exporter.py").read_text(encoding="utf-8")
    else:
        # a page reads top to bottom: a block may use what the blocks above it made
        namespace: dict[str, object] = {"__name__": "__snippet__"}
        for p, i, earlier in BLOCKS:
            if p == page and i < index and _runs(earlier):
                exec(compile(earlier, f"{page} block {i}", "exec"), namespace)
        exec(compile(code, f"{page} block {index}", "exec"), namespace)


def _runs(code: str) -> bool:
    return not code.lstrip().startswith(">>>") and not code.startswith("class MyExporter(")


def test_the_pages_hold_python_blocks() -> None:
    assert len(BLOCKS) >= 8
