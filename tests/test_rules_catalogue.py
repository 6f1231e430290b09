"""The rules catalogue (dmabuf_sim.conformance.rules), its generated page and the ids
that tests cite.

Checks against kernel-spec §10 read shared/reference/kernel-spec.md next to the checkout
and are skipped when it is not there.
"""

from __future__ import annotations

import ast
import errno
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

from dmabuf_sim.conformance.rules import KINDS, RULES, Rule, rule, rules_for
from dmabuf_sim.spec import SPECS

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
KERNEL_SPEC = ROOT.parent / "shared" / "reference" / "kernel-spec.md"

ALL = tuple(SPECS)
MMAP = tuple(n for n in SPECS if n != "v3.4")
OLD = ("rfc-2012", "v3.5")
MODERN = ("v5.10", "v6.1", "v6.12", "v6.19", "latest")
# §10 was written before the v5.10 spec existed; its "v6.1, latest" rules hold on 5.10 too,
# except these (SET_NAME while attached, the sync_file ioctls, vmap's errno, the heaps).
SIX = ("v6.1", "v6.12", "v6.19", "latest")
NOT_510 = {"R48", "R51", "R54", "R57"}
V35_ON = ("v3.5", *MODERN)
KERNEL_IDS = [f"R{n}" for n in range(1, 63)]

CITE_RE = re.compile(r"\b(R\d{1,2}|SEED-[A-Z-]+|SAN-[A-Z-]+)\b")
NAME_CITE_RE = re.compile(r"(?:^|_)r(\d{1,2})(?=_|$)")


# -- the catalogue itself ----------------------------------------------------------------


def test_kernel_rules_are_r1_to_r62_once_and_in_order() -> None:
    ids = list(RULES)
    assert ids[:62] == KERNEL_IDS
    assert [r.id for r in RULES.values() if r.kind == "kernel"] == KERNEL_IDS
    assert len(ids) == len(set(ids))
    assert all(key == r.id for key, r in RULES.items())


def test_kinds_come_in_catalogue_order() -> None:
    kinds = [r.kind for r in RULES.values()]
    assert kinds == sorted(kinds, key=KINDS.index)
    assert set(kinds) == set(KINDS)


def test_seed_and_sanitizer_ids() -> None:
    seed = [r.id for r in RULES.values() if r.kind == "seed"]
    san = [r.id for r in RULES.values() if r.kind == "sanitizer"]
    assert seed == [
        "SEED-BOUNDS",
        "SEED-COHERENT",
        "SEED-OWN-FILE",
        "SEED-NO-FAULT-SYNC",
        "SEED-IMPORTER-MMAP",
    ]
    assert san == [
        "SAN-REFCOUNT",
        "SAN-RELEASE-ONCE",
        "SAN-FREED-PTE",
        "SAN-PTE-IN-BUFFER",
        "SAN-STALE-READ",
        "SAN-FAULT-WAIT",
        "SAN-VMA-FILE",
        "SAN-OTHER-BUFFER",
        "SAN-LEAK",
        "SAN-MODULE",
        "SAN-SGT",
        "SAN-ACCESS",
        "SAN-OOPS",
        "SAN-BAD-PAGE",
        "SAN-KERNEL-WARN",
    ]


def test_every_rule_names_valid_specs_oldest_first() -> None:
    order = list(SPECS)
    for r in RULES.values():
        assert r.specs, r.id
        assert set(r.specs) <= set(SPECS), r.id
        assert list(r.specs) == sorted(r.specs, key=order.index), r.id


def test_statements_and_sources_are_single_lines() -> None:
    for r in RULES.values():
        assert r.statement and "\n" not in r.statement, r.id
        assert r.source and "\n" not in r.source, r.id
        if r.kind == "kernel":
            assert r.source.startswith("kernel-spec §10"), r.id
        if r.kind == "seed":
            assert r.source.startswith("SEED (RFC Documentation hunk)"), r.id


def test_seed_rule_specs() -> None:
    """SEED-COHERENT and SEED-OWN-FILE stop at v3.5 (the 4.11 doc rework); the others
    hold wherever dma-buf mmap exists."""
    assert rule("SEED-COHERENT").specs == OLD
    assert rule("SEED-OWN-FILE").specs == OLD
    for rid in ("SEED-BOUNDS", "SEED-NO-FAULT-SYNC", "SEED-IMPORTER-MMAP"):
        assert rule(rid).specs == MMAP
    for r in RULES.values():
        if r.kind == "sanitizer" and r.id != "SAN-MODULE":
            assert r.specs == ALL, r.id
    # exp_info.owner and the module reference of dma_buf_export came with 4.1
    assert rule("SAN-MODULE").specs == ("v5.10", "v6.1", "v6.12", "v6.19", "latest")


def test_rules_for_v34_has_only_what_34_can_do() -> None:
    ids = {r.id for r in rules_for("v3.4")}
    assert {"R10", "R62"} <= ids
    mmap_only = {"R1", "R2", "R11", "R17", "R20", "R21", "R22", "R60", "R61", "SEED-BOUNDS"}
    assert not ids & mmap_only
    assert "R10" not in {r.id for r in rules_for("v3.5")}


@pytest.mark.parametrize("spec", list(SPECS))
def test_rules_for_keeps_catalogue_order(spec: str) -> None:
    got = rules_for(spec)
    assert got == tuple(r for r in RULES.values() if r.applies_to(spec))
    assert got


def test_rules_for_unknown_spec() -> None:
    with pytest.raises(ValueError, match="unknown spec"):
        rules_for("v2.6")


def test_rule_lookup_and_unknown_id() -> None:
    assert rule("R12") is RULES["R12"]
    with pytest.raises(KeyError) as ei:
        rule("R99")
    message = str(ei.value)
    assert "R99" in message
    assert "close ids" in message
    assert "R9" in message
    with pytest.raises(KeyError, match="SAN-REFCOUNT"):
        rule("SAN-REFCOUNTS")
    with pytest.raises(KeyError, match="R12"):
        rule("r12")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"id": "X1"}, "must look like"),
        ({"id": "R0"}, "must look like"),
        ({"id": "seed-bounds"}, "must look like"),
        ({"specs": ("v3.6",)}, "unknown spec"),
        ({"specs": ()}, "at least one spec"),
        ({"specs": ("v3.5", "v3.5")}, "repeated"),
        ({"kind": "seed"}, "its id says"),
        ({"kind": "other"}, "must be one of"),
        ({"statement": "two\nlines"}, "one line"),
        ({"source": ""}, "non-empty"),
    ],
)
def test_rule_validators(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        attrs.evolve(RULES["R1"], **changes)


def test_specs_are_normalised_to_a_tuple_in_spec_order() -> None:
    r = Rule("R1", "s", "t", ["latest", "v3.5"], "kernel")
    assert r.specs == ("v3.5", "latest")
    with pytest.raises(TypeError):
        Rule("R1", "s", "t", "v3.5", "kernel")


# -- agreement with kernel-spec §10 -------------------------------------------------------


def _section_10() -> dict[str, str]:
    if not KERNEL_SPEC.is_file():
        pytest.skip(f"{KERNEL_SPEC} not present")
    text = KERNEL_SPEC.read_text(encoding="utf-8").split("## 10. Testable rules", 1)[1]
    entries = re.findall(r"^R(\d+)\. (.*?)(?=^R\d+\. |\Z)", text, flags=re.M | re.S)
    return {f"R{n}": " ".join(body.split()) for n, body in entries}


def test_catalogue_matches_section_10_count() -> None:
    section = _section_10()
    assert list(section) == KERNEL_IDS
    assert len(section) == sum(r.kind == "kernel" for r in RULES.values())


# Tags of §10 mapped to spec names; v6.12 sits between v6.1 and latest.
_TAGS = {
    "all": ALL,
    "v3.5, v6.1, latest": V35_ON,
    "rfc-2012, v3.5": OLD,
    "v6.1, latest": MODERN,
    "v3.5": ("v3.5",),
    "v3.4": ("v3.4",),
    "rfc-2012": ("rfc-2012",),
}
# "all" rules about dma-buf mappings, which v3.4 cannot have.
_ALL_BUT_V34 = {"R7", "R17", "R18", "R19", "R21", "R60"}
# Rules whose tags are not one of the plain forms above, read by hand.
_SPECIAL = {
    "R6": V35_ON,  # [v6.1, latest] for EOVERFLOW, [v3.5] for EINVAL
    "R34": V35_ON,  # [v3.5, v6.1; fixed exporters in latest]
    "R35": V35_ON,  # [v3.5, v6.1, latest — derived from mm sources]
    "R50": V35_ON,  # [v6.1, latest; v3.5 for the last clause]
    "R52": ALL,  # [all; signature per version]
    "R55": OLD,  # [rfc-2012 doc, v3.5 doc; omapdrm/ION behaviour]
}


def test_specs_follow_section_10_tags() -> None:
    section = _section_10()
    special = set()
    for rid, body in section.items():
        tags = [t.strip() for t in re.findall(r"\[([^\]]*)\]", body)]
        tag = tags[-1]
        if len(tags) != 1 or tag not in _TAGS:
            special.add(rid)
            continue
        want = _TAGS[tag]
        if tag == "all" and rid in _ALL_BUT_V34:
            want = MMAP
        if want == MODERN and rid in NOT_510:
            want = SIX
        assert rule(rid).specs == want, (rid, tag)
    assert special == set(_SPECIAL)
    for rid, want in _SPECIAL.items():
        assert rule(rid).specs == want, rid


_ERRNO_NAMES = set(errno.errorcode.values()) | {"ERESTARTSYS"}


def _errnos(text: str) -> set[str]:
    return {
        sign + name
        for sign, name in re.findall(r"(?<![\w-])(-?)(E[A-Z0-9]+)\b", text)
        if name in _ERRNO_NAMES
    }


def test_statements_keep_every_errno_of_section_10() -> None:
    section = _section_10()
    for rid, body in section.items():
        assert _errnos(body) <= _errnos(rule(rid).statement), rid


# -- docs/rules.md -----------------------------------------------------------------------


def _generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_rules_doc.py"
    spec = importlib.util.spec_from_file_location("gen_rules_doc", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_rules_md_is_up_to_date() -> None:
    gen = _generator()
    assert gen.check(), "docs/rules.md is stale: run python scripts/gen_rules_doc.py"


def test_generator_check_and_write(tmp_path: Path) -> None:
    gen = _generator()
    target = tmp_path / "rules.md"
    assert not gen.check(target)
    gen.write(target)
    assert gen.check(target)
    text = target.read_text(encoding="utf-8")
    for r in RULES.values():
        assert f"| {r.id} |" in text
    target.write_text(text + "\n", encoding="utf-8")
    assert not gen.check(target)


# -- every id a test cites exists ----------------------------------------------------------


def _citations(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            line = getattr(node, "lineno", 1)
            if doc:
                for rid in CITE_RE.findall(doc):
                    yield line, rid
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.startswith("test"):
                for n in NAME_CITE_RE.findall(node.name):
                    yield node.lineno, f"R{n}"
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("mark.rule"):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield node.lineno, arg.value


def test_every_cited_rule_id_exists() -> None:
    files = sorted(TESTS.rglob("*.py"))
    cited = [(f, line, rid) for f in files for line, rid in _citations(f)]
    assert len(cited) > 100  # the scan does see the suite's citations
    unknown = [f"{f.relative_to(ROOT)}:{line}: {rid}" for f, line, rid in cited if rid not in RULES]
    assert not unknown, "tests cite rule ids the catalogue does not have:\n" + "\n".join(unknown)


def test_coverage_page_is_up_to_date() -> None:
    """docs/coverage.md is generated from the @kernel_function registry."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(  # noqa: PLW1510 - the exit code is asserted
        [sys.executable, "scripts/gen_coverage.py", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
