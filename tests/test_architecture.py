"""The layering of docs/architecture.md, checked: a module imports, at module level, only
from its own layer or below.

A function-local import that reaches up (or breaks a real cycle) says why on its line
(``# cycle: ...``); ruff's PLC0415 refuses the others.  Imports under ``TYPE_CHECKING``
are annotations only and may name any layer.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dmabuf_sim"
DOC = ROOT / "docs" / "architecture.md"

# (module prefix, layer), the longest matching prefix wins; the names are docs/architecture.md's.
LAYERS: tuple[tuple[str, int], ...] = (
    # 1 base: uapi, errors, specs, tracing, per-kernel state, lib-like data structures
    ("dmabuf_sim.abi", 1),
    ("dmabuf_sim.errors", 1),
    ("dmabuf_sim.jiffies", 1),
    ("dmabuf_sim.kstate", 1),
    ("dmabuf_sim.lockdep", 1),
    ("dmabuf_sim.mm.interval_tree", 1),
    ("dmabuf_sim.module", 1),
    ("dmabuf_sim.observe", 1),
    ("dmabuf_sim.spec", 1),
    ("dmabuf_sim.trace", 1),
    ("dmabuf_sim.uapi", 1),
    ("dmabuf_sim.wait", 1),
    # 2 fs: inodes, files, fd tables, the VFS helpers
    ("dmabuf_sim.fs", 2),
    ("dmabuf_sim.fs_file", 2),
    ("dmabuf_sim.fs_open", 2),
    ("dmabuf_sim.fs_stat", 2),
    ("dmabuf_sim.fs_sync", 2),
    # 3 mm
    ("dmabuf_sim.mm", 3),
    # 4 the machine
    ("dmabuf_sim.coherency", 4),
    ("dmabuf_sim.device", 4),
    ("dmabuf_sim.kernel", 4),
    ("dmabuf_sim.uaccess", 4),
    # 5 syscalls and the userspace face
    ("dmabuf_sim.process", 5),
    ("dmabuf_sim.strace", 5),
    ("dmabuf_sim.syscalls", 5),
    # 6 dma-buf
    ("dmabuf_sim.dma_buf", 6),
    # 7 exporters and drivers
    ("dmabuf_sim.drivers", 7),
    ("dmabuf_sim.exporters", 7),
    # 8 kit, teaching, CLI
    ("dmabuf_sim", 8),
)


def layer_of(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool, known: set[str]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("dmabuf_sim")]
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join([*base, *([node.module] if node.module else [])])
    else:
        prefix = node.module or ""
    if not prefix.startswith("dmabuf_sim"):
        return []
    out = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        out.append(sub if sub in known else prefix)
    return out


def _top_level_imports(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) of every import that runs when ``module`` is imported."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    found: list[tuple[int, str]] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.extend((node.lineno, t) for t in _targets(node, module, is_pkg, known))
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return found


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        assert layer_of(module) in range(1, 9), module


def test_lower_layers_never_import_upper_ones_at_module_level() -> None:
    modules = _modules()
    known = set(modules)
    violations = [
        f"{path.relative_to(ROOT)}:{line}: {module} (layer {layer_of(module)}) imports"
        f" {target} (layer {layer_of(target)})"
        for module, path in modules.items()
        for line, target in _top_level_imports(path, module, known)
        if layer_of(target) > layer_of(module)
    ]
    assert len(known) > 100  # the scan sees the package
    assert not violations, "\n".join(violations)


def test_the_layering_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: an mm module importing the dma-buf core is caught."""
    bad = tmp_path / "dmabuf_sim" / "mm" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..dma_buf.core import DmaBuf\nfrom ..fs import File\n")
    found = _top_level_imports(bad, "dmabuf_sim.mm.bad", {"dmabuf_sim.dma_buf.core"})
    assert [(line, t, layer_of(t) > 3) for line, t in found] == [
        (1, "dmabuf_sim.dma_buf.core", True),
        (2, "dmabuf_sim.fs", False),
    ]


def _exempt_files() -> set[str]:
    """Files pyproject.toml exempts from PLC0415 as a whole (each with its reason there)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ignores = config["tool"]["ruff"]["lint"]["per-file-ignores"]
    return {file for file, codes in ignores.items() if "PLC0415" in codes}


def test_every_function_local_import_says_why() -> None:
    """The few imports left inside functions break a cycle, and say which."""
    exempt = _exempt_files()
    assert "dmabuf_sim/cli.py" in exempt  # the parse sees the table
    unexplained = []
    for module, path in _modules().items():
        if str(path.relative_to(ROOT)) in exempt:
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    text = " ".join(lines[sub.lineno - 1 : sub.end_lineno])
                    if not re.search(r"#.*\bcycle:", text):
                        unexplained.append(f"{module}:{sub.lineno}: {text.strip()}")
    assert not unexplained, "\n".join(unexplained)


def test_the_architecture_page_names_every_layer() -> None:
    text = DOC.read_text()
    for prefix, layer in LAYERS:
        if prefix != "dmabuf_sim":
            name = prefix.removeprefix("dmabuf_sim.")
            assert f"`{name}`" in text, (
                f"docs/architecture.md does not place {name} (layer {layer})"
            )


def test_the_architecture_page_snippet_runs_as_printed() -> None:
    """The snippet that finds a kernel function's twin prints what the page shows."""
    text = DOC.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    shown = re.search(r"```python\n.*?```\n\n```text\n(.*?)```", text, re.S)
    assert code is not None and shown is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), "<docs/architecture.md>", "exec"), {})
    assert out.getvalue() == shown.group(1)
