"""Execute a notebook's code cells in order, the way Jupyter would, without Jupyter.

    python scripts/run_notebook.py examples/walkthrough.ipynb           # rewrite its outputs
    python scripts/run_notebook.py --check examples/walkthrough.ipynb   # exit 1 if stale

Each code cell runs in one shared namespace; what it prints becomes a ``stream``
output, and the value of its last line, when that line is an expression, an
``execute_result`` holding ``text/plain`` (its repr) and every rich form the object
offers (``_repr_html_``, ``_repr_svg_``), as IPython's display formatter collects
them.  No dependency beyond the standard library: the test suite runs this too.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

RICH = (("_repr_html_", "text/html"), ("_repr_svg_", "image/svg+xml"))


def _lines(text: str) -> list[str]:
    """Notebook JSON keeps multi-line strings as lists of lines, each ending in newline."""
    return text.splitlines(keepends=True)


def _bundle(value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"text/plain": _lines(repr(value))}
    for method, mime in RICH:
        render = getattr(value, method, None)
        if callable(render):
            out = render()
            if out is not None:
                data[mime] = _lines(out)
    return data


def run_cell(source: str, namespace: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Execute one cell; its outputs as nbformat 4 output dicts."""
    tree = ast.parse(source, mode="exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    stdout = io.StringIO()
    value = None
    with contextlib.redirect_stdout(stdout):
        exec(compile(tree, f"<cell {count}>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, f"<cell {count}>", "eval"), namespace)
    outputs: list[dict[str, Any]] = []
    if stdout.getvalue():
        outputs.append(
            {"name": "stdout", "output_type": "stream", "text": _lines(stdout.getvalue())}
        )
    if value is not None:
        outputs.append(
            {
                "data": _bundle(value),
                "execution_count": count,
                "metadata": {},
                "output_type": "execute_result",
            }
        )
    return outputs


def execute(notebook: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``notebook`` with every code cell run and its outputs replaced."""
    result = json.loads(json.dumps(notebook))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    count = 0
    for cell in result["cells"]:
        if cell["cell_type"] != "code":
            continue
        count += 1
        cell["execution_count"] = count
        cell["outputs"] = run_cell("".join(cell["source"]), namespace, count)
    return result


def dumps(notebook: dict[str, Any]) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="exit 1 if the stored outputs differ")
    ap.add_argument("notebook", type=Path)
    args = ap.parse_args()
    stored = json.loads(args.notebook.read_text(encoding="utf-8"))
    fresh = dumps(execute(stored))
    if args.check:
        if dumps(stored) != fresh:
            print(f"{args.notebook}: outputs are stale: run python {sys.argv[0]} {args.notebook}")
            return 1
        return 0
    args.notebook.write_text(fresh, encoding="utf-8")
    print(f"wrote {args.notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
