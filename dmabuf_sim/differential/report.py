"""Side-by-side text of a differential run, differing lines marked, and a verdict.

A row whose two answers fit the terminal is one line; a longer row (fdinfo
text, a long digest) is printed as a block with one answer per line.  The
first column marks ``!`` for a line where the two sides differ and ``?`` for a
line whose stated expectation a side did not meet.  With colour on, those rows
are red and yellow.
"""

from __future__ import annotations

from collections.abc import Sequence

from .compare import Comparison
from .outcome import RenderedLine

__all__ = ["format_comparison", "format_single", "verdict"]

RED, YELLOW, RESET = "\x1b[31m", "\x1b[33m", "\x1b[0m"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def _table(
    heads: Sequence[str],
    rows: Sequence[tuple[str, int, str, Sequence[str]]],
    width: int,
    color: bool,
) -> list[str]:
    """rows: (marker, line number, statement, answers)."""
    stmt_w = min(max([len(heads[0]), *(len(r[2]) for r in rows)]), max(24, width // 2))
    n = len(heads) - 1
    room = max(width - 9 - stmt_w - 2 * n, 12 * n)
    ans_w = [
        min(max([len(heads[i + 1]), *(len(r[3][i]) for r in rows)]), room // n) for i in range(n)
    ]
    out = [
        f"   line  {heads[0]:<{stmt_w}}  "
        + "  ".join(f"{h:<{w}}" for h, w in zip(heads[1:], ans_w, strict=True)).rstrip()
    ]
    for mark, line, stmt, answers in rows:
        fits = all(len(a) <= w for a, w in zip(answers, ans_w, strict=True))
        cells = "  ".join(f"{a:<{w}}" for a, w in zip(answers, ans_w, strict=True)).rstrip()
        if fits and len(stmt) <= stmt_w:
            lines = [f" {mark} {line:>4}  {stmt:<{stmt_w}}  {cells}"]
        elif fits:  # a long statement: the answers go under it, in their columns
            lines = [f" {mark} {line:>4}  {stmt}", f"{'':{9 + stmt_w}}  {cells}"]
        else:
            label_w = max(len(h) for h in heads[1:])
            lines = [f" {mark} {line:>4}  {stmt}"]
            lines += [
                f"         {h + ':':<{label_w + 1}} {a}"
                for h, a in zip(heads[1:], answers, strict=True)
            ]
        if color and mark.strip():
            hue = RED if mark == "!" else YELLOW
            lines = [hue + x + RESET for x in lines]
        out.extend(lines)
    return out


def _statement(line: RenderedLine) -> str:
    st = line.statement
    prefix = "" if st.proc == "$main" else f"[{st.proc}] "
    return prefix + st.call_text


def format_comparison(
    c: Comparison, *, width: int = 120, color: bool = False, only_differences: bool = False
) -> str:
    """The two sides next to each other (or only the lines that differ), then the verdict."""
    rows = []
    for r in c.rows:
        mark = "!" if r.differs else ("?" if r in (x for _, x in c.unmet) else " ")
        if only_differences and mark == " ":
            continue
        rows.append((mark, r.line, _statement(r.sim), (r.sim.text, r.kernel.text)))
    heads = ("statement", f"simulator ({c.spec})", c.kernel_label)
    body = _table(heads, rows, width, color) if rows or not only_differences else []
    return "\n".join([*(f"note: {n}" for n in c.notes), *body, verdict(c)]) + "\n"


def verdict(c: Comparison) -> str:
    total = len(c.rows)
    parts = []
    if c.differing:
        lines = ", ".join(str(r.line) for r in c.differing)
        parts.append(f"{len(c.differing)} of {total} lines differ (line {lines})")
    for side, r in c.unmet:
        expect = r.sim.statement.expect_text
        got = r.sim.text if side == "simulator" else r.kernel.text
        parts.append(f"line {r.line}: the {side} answered {got}, the script expects {expect}")
    if c.problem:
        parts.append(c.problem)
    if not parts:
        return f"verdict: the simulator ({c.spec}) and {c.kernel_label} agree on all {total} lines"
    return "verdict: " + "; ".join(parts)


def format_single(
    lines: Sequence[RenderedLine], label: str, *, width: int = 120, color: bool = False
) -> str:
    """One side only (``--sim-only``): each statement and its answer."""
    rows = [
        ("?" if ln.expectation_met is False else " ", ln.statement.line, _statement(ln), (ln.text,))
        for ln in lines
    ]
    body = _table(("statement", label), rows, width, color)
    unmet = [ln for ln in lines if ln.expectation_met is False]
    if unmet:
        end = "verdict: " + "; ".join(
            f"line {ln.statement.line} answered {ln.text}, the script expects"
            f" {ln.statement.expect_text}"
            for ln in unmet
        )
    else:
        checked = sum(1 for ln in lines if ln.expectation_met)
        end = f"verdict: {len(lines)} lines ran; {checked} stated expectations, all met"
    return "\n".join([*body, end]) + "\n"
