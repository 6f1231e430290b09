"""What one script line did, and the text both sides are compared by.

Each side (the simulator, the C interpreter in a VM) reports a raw
:class:`Outcome` per statement: a return value, an errno, a signal with its
``si_code`` and address, a digest of the bytes read, or the raw text of a
``/proc`` file.  Numbers that only mean something on one machine (fd numbers,
addresses, GEM handles) are never compared: :func:`render` turns every raw
outcome into the text a person reads — ``$buf``, ``-1 EINVAL``,
``SIGBUS BUS_ADRERR at +0x1000``, ``fill(0x00, 4096)`` — using the names the
script bound, and two sides agree on a line when those texts are equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen

from .abi import CONSTANTS, ERRNO_NAMES, IOCTL_STRUCTS, SI_CODES, SIGNALS
from .script import (
    OPS,
    Ident,
    Name,
    Script,
    Statement,
    Unbound,
    eval_int,
    normalise_expectation,
)

__all__ = ["Outcome", "RenderedLine", "cstring", "render", "render_all"]

KINDS = ("ok", "errno", "signal", "skipped", "oops", "unsupported", "not run")


@frozen
class Outcome:
    """The raw answer of one line on one side."""

    kind: str
    """``ok``, ``errno``, ``signal``, ``skipped`` (a name it needs is unbound, or its
    process is gone), ``oops`` (the kernel oopsed: the process died), ``unsupported``
    (the simulator does not model it), ``not run`` (the VM stopped first)."""
    value: int = 0
    """Return value (``ok``), errno number (``errno``), signal number (``signal``)."""
    code: int = 0
    """``si_code`` of a signal."""
    addr: int = 0
    """``si_addr`` of a signal."""
    data: str = ""
    """A bytes digest (load, read) or the raw text of a /proc file (maps, fdinfo)."""
    outs: tuple[tuple[str, int], ...] = ()
    """Output fields of an ioctl struct, in struct order."""
    note: str = ""
    """Which step failed (``dmabuf``), why a line was skipped, what an oops said."""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"k": self.kind}
        for key, val, default in (
            ("v", self.value, 0),
            ("code", self.code, 0),
            ("addr", self.addr, 0),
            ("data", self.data, ""),
            ("note", self.note, ""),
        ):
            if val != default:
                d[key] = val
        if self.outs:
            d["outs"] = dict(self.outs)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Outcome:
        kind = d.get("k")
        if kind not in KINDS:
            raise ValueError(f"unknown outcome kind {kind!r} (expected one of {', '.join(KINDS)})")
        outs = d.get("outs") or {}
        return cls(
            kind=str(kind),
            value=int(d.get("v", 0)),
            code=int(d.get("code", 0)),
            addr=int(d.get("addr", 0)),
            data=str(d.get("data", "")),
            outs=tuple((str(k), int(v)) for k, v in outs.items()),
            note=str(d.get("note", "")),
        )


@frozen
class RenderedLine:
    """One statement with its outcome rendered, and whether it met the expectation."""

    statement: Statement
    outcome: Outcome
    text: str
    expectation_met: bool | None
    """None when the line states no expectation."""


# -- rendering -------------------------------------------------------------------------------
def cstring(data: bytes) -> str:
    """``data`` as a script string literal (printable ASCII as is, the rest ``\\xHH``)."""
    out = []
    for b in data:
        ch = chr(b)
        if ch in {'"', "\\"}:
            out.append("\\" + ch)
        elif ch == "$":
            out.append("\\$")
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def render_digest(digest: str) -> str:
    """A bytes digest as a script expression (``"abc"``, ``fill(0x00, 4096)``)."""
    kind, _, body = digest.partition(":")
    if kind == "hex":
        return cstring(bytes.fromhex(body))
    if kind == "runs":
        parts = []
        for run in body.split(","):
            b, n = run.split("*")
            parts.append(f"fill(0x{b}, {n})")
        return " + ".join(parts)
    if kind == "ramp":
        start, step, length = body.split(":")
        return f"ramp(0x{start}, 0x{step}, {length})"
    if kind == "crc32":
        crc, length = body.split(":")
        return f"crc32(0x{crc}, {length})"
    return digest


_POLL_NAMES = ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL")


def _poll_text(revents: int) -> str:
    names = [n for n in _POLL_NAMES if revents & CONSTANTS[n]]
    rest = revents & ~sum(CONSTANTS[n] for n in names)
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"


_MAPS = re.compile(
    r"^(?P<start>[0-9a-f]+)-(?P<end>[0-9a-f]+)\s+(?P<perms>\S+)\s+(?P<off>[0-9a-f]+)"
    r"\s+\S+\s+\d+\s*(?P<name>.*)$"
)


def _maps_text(raw: str, addr: int) -> str:
    """The vma around ``addr`` relative to it: ``-0x0..+0x2000 rw-s 00000000 /dmabuf:``."""
    if not raw:
        return "none"
    m = _MAPS.match(raw.strip("\n"))
    if m is None:
        return f'"{raw.strip()}"'
    start, end = int(m["start"], 16), int(m["end"], 16)
    name = m["name"].strip()
    text = f"-{addr - start:#x}..+{end - addr:#x} {m['perms']} {m['off']} {name}".rstrip()
    return cstring(text.encode())


def _fdinfo_text(raw: str) -> str:
    """fdinfo without the lines that differ between machines (``ino``, ``mnt_id``)."""
    keep = [
        re.sub(r":\s+", ": ", line.strip())
        for line in raw.splitlines()
        if line.strip() and not line.startswith(("ino:", "mnt_id:"))
    ]
    return cstring("; ".join(keep).encode())


def _struct_outs(st: Statement, outcome: Outcome) -> str:
    req = st.args[1] if st.op == "ioctl" else None
    if not (isinstance(req, Ident) and req.name in IOCTL_STRUCTS) or not outcome.outs:
        return ""
    layout = IOCTL_STRUCTS[req.name]
    bound = dict(st.outs)
    parts = []
    for fname, value in outcome.outs:
        f = layout.field(fname)
        if f is None:
            continue
        if fname in bound:
            parts.append(f"{fname}={bound[fname]}")
        elif f.kind == "value":
            parts.append(f"{fname}={value}")
        else:
            parts.append(f"{fname}={f.kind}")
    return " {" + ", ".join(parts) + "}"


def _ok_text(st: Statement, outcome: Outcome, env: Mapping[str, int]) -> str:
    _, kind = OPS[st.op]
    value = outcome.value
    if st.op == "ioctl":
        layout = _layout_of(st)
        if layout is not None and layout.returns_fd:
            return (st.bind or "fd") + _struct_outs(st, outcome)
        return str(_signed(value)) + _struct_outs(st, outcome)
    if st.op == "fcntl":
        cmd = _eval_or_none(st.args[1], env)
        if cmd in (CONSTANTS["F_DUPFD"], CONSTANTS["F_DUPFD_CLOEXEC"]):
            kind = "fd"
        elif cmd == CONSTANTS["F_GETFL"]:
            return f"0{value:o}" if value else "0"  # octal, as C writes flags
    if kind in ("fd", "proc"):
        return st.bind or kind
    if kind == "addr":
        if st.op == "mremap" and _eval_or_none(st.args[0], env) == value:
            return _arg_text(st, 0)  # resized in place
        return st.bind or "addr"
    if kind == "bytes":
        return render_digest(outcome.data)
    if kind == "poll":
        return _poll_text(value)
    if kind == "text":
        if st.op == "maps":
            addr = _eval_or_none(st.args[0], env)
            return _maps_text(outcome.data, addr or 0)
        return _fdinfo_text(outcome.data)
    return str(_signed(value))  # a number is compared even when a name keeps it


def _signed(value: int) -> int:
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


def _layout_of(st: Statement) -> Any:
    req = st.args[1] if st.op == "ioctl" else None
    if isinstance(req, Ident) and req.name in IOCTL_STRUCTS:
        return IOCTL_STRUCTS[req.name]
    return None


def _eval_or_none(node: Any, env: Mapping[str, int]) -> int | None:
    try:
        return eval_int(node, env)
    except (Unbound, TypeError):
        return None


def _arg_text(st: Statement, index: int) -> str:
    node = st.args[index]
    return node.name if isinstance(node, Name) else "old address"


def render(st: Statement, outcome: Outcome, env: Mapping[str, int]) -> str:
    """The text of ``outcome`` for statement ``st`` (``env``: names bound before it)."""
    if outcome.kind == "ok":
        return _ok_text(st, outcome, env)
    if outcome.kind == "errno":
        name = ERRNO_NAMES.get(outcome.value, f"E{outcome.value}")
        where = f" ({outcome.note})" if outcome.note else ""
        return f"-1 {name}{where}"
    if outcome.kind == "signal":
        sig = SIGNALS.get(outcome.value, f"SIG{outcome.value}")
        code = SI_CODES.get((outcome.value, outcome.code), str(outcome.code))
        base = _eval_or_none(st.args[0], env) if st.args else None
        at = f" at +{outcome.addr - base:#x}" if base is not None else ""
        return f"{sig} {code}{at}"
    if outcome.kind in ("skipped", "unsupported"):
        return f"{outcome.kind} ({outcome.note})" if outcome.note else outcome.kind
    return outcome.kind  # oops, not run: the console log or the simulator says more


def bind(st: Statement, outcome: Outcome, env: dict[str, int]) -> None:
    """Record the names the line binds, as the side that ran it saw them."""
    if outcome.kind != "ok":
        return
    if st.bind is not None:
        env[st.bind] = outcome.value
    values = dict(outcome.outs)
    for fname, name in st.outs:
        if fname in values:
            env[name] = values[fname]


def render_all(script: Script, outcomes: Sequence[Outcome]) -> list[RenderedLine]:
    """Render every line in order, tracking the names that side bound."""
    if len(outcomes) != len(script.statements):
        raise ValueError(
            f"{len(outcomes)} outcomes for {len(script.statements)} statements of {script.name}"
        )
    env: dict[str, int] = {}
    out: list[RenderedLine] = []
    for st, outcome in zip(script.statements, outcomes, strict=True):
        text = render(st, outcome, env)
        head = text.split(" {", 1)[0] if outcome.outs else text
        met = None if st.expect is None else normalise_expectation(head) == st.expect
        out.append(RenderedLine(st, outcome, text, met))
        bind(st, outcome, env)
    return out


def outcomes_from_json(rows: Iterable[Mapping[str, Any]]) -> list[Outcome]:
    return [Outcome.from_json(r) for r in rows]
