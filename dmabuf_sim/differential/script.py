"""Syscall scripts: a small strace-like language both sides of a differential run read.

One statement per line, in the order they run::

    # a 2-page buffer from the system heap, mapped and written
    dmabuf(system_heap, 2*PAGE_SIZE, O_RDWR|O_CLOEXEC) = $buf
    mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, $buf, 0) = $a
    store($a, "hello")
    load($a, 5) = "hello"
    mmap(NULL, 3*4096, PROT_READ, MAP_SHARED, $buf, 0) = -1 EINVAL
    fork() = $child
    [$child] load($a+4096, 4) = fill(0x00, 4)

A statement is ``[ [$proc] ] call(args) [= result]``.  ``= $name`` binds the
result (an fd, an address, a process, a number) so later lines can use it;
``= {field=$name}`` after a result binds output fields of an ioctl struct.
Anything else after ``=`` is an expectation, checked against what the line
did.  ``docs/differential.md`` is the full reference; the C interpreter
(``c/interp.c``) parses exactly this grammar.

This module parses and checks scripts; :mod:`.outcome` says what a line did
and renders it; :mod:`.simside` and :mod:`.vm` run scripts.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from attrs import frozen

from .abi import CONSTANTS, IOCTL_STRUCTS, ioc

__all__ = [
    "EXPORTERS",
    "OPS",
    "BinOp",
    "BytesConcat",
    "Call",
    "Fill",
    "Ident",
    "Name",
    "Node",
    "Num",
    "Ramp",
    "Script",
    "ScriptError",
    "Statement",
    "Str",
    "StructLit",
    "Unary",
    "digest",
    "dump_parse",
    "eval_bytes",
    "eval_int",
    "eval_str",
    "load_script",
    "normalise_expectation",
    "parse_script",
]

U64 = 1 << 64
EXPORTERS = ("system_heap", "cma_heap", "udmabuf", "vgem")
"""Exporters ``dmabuf(EXPORTER, len, flags)`` knows how to make buffers with."""


class ScriptError(ValueError):
    """A script that does not parse or check; the message names the line and what to do."""


# -- the syntax tree ------------------------------------------------------------------
@frozen
class Num:
    value: int


@frozen
class Name:
    """``$name``: a value bound by an earlier line."""

    name: str


@frozen
class Ident:
    """A bare identifier: a constant (``PROT_READ``) or an exporter name."""

    name: str


@frozen
class Unary:
    op: str
    operand: Node


@frozen
class BinOp:
    op: str
    left: Node
    right: Node


@frozen
class Call:
    """``_IO('b', 0x77)``, ``_IOW(...)``, ``fill(byte, count)`` inside an argument."""

    func: str
    args: tuple[Node, ...]


@frozen
class Str:
    """A string literal; ``parts`` mixes text and ``$name`` interpolations."""

    parts: tuple[bytes | Name, ...]


@frozen
class Fill:
    byte: Node
    count: Node


@frozen
class Ramp:
    """``ramp(start, step, count)``: bytes ``(start + i*step) & 0xff`` for i < count."""

    start: Node
    step: Node
    count: Node


@frozen
class BytesConcat:
    parts: tuple[Node, ...]


@frozen
class StructLit:
    fields: tuple[tuple[str, Node], ...]


Node = Num | Name | Ident | Unary | BinOp | Call | Str | Fill | Ramp | BytesConcat | StructLit


@frozen
class Statement:
    """One line of a script."""

    line: int
    text: str
    """The statement as written (without its comment)."""
    proc: str
    """The process that runs it (``$main`` unless the line starts with ``[$name]``)."""
    op: str
    args: tuple[Node, ...]
    bind: str | None = None
    outs: tuple[tuple[str, str], ...] = ()
    """``(struct field, $name)`` pairs bound from the ioctl's output struct."""
    expect: str | None = None
    """The expectation, normalised (see :func:`normalise_expectation`); None if absent."""
    expect_text: str | None = None
    """The expectation as written."""

    @property
    def call_text(self) -> str:
        """The call part of the line, without the process prefix and the result."""
        text = self.text
        if text.startswith("["):
            text = text[text.index("]") + 1 :].lstrip()
        depth = 0
        in_str = False
        for i, ch in enumerate(text):
            if in_str:
                if ch == "\\":
                    continue
                if ch == '"' and text[i - 1] != "\\":
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    return text[: i + 1]
        return text


@frozen
class Script:
    """A parsed script: its statements in order, and the text they came from."""

    name: str
    text: str
    statements: tuple[Statement, ...]

    def uses_devices(self) -> frozenset[str]:
        """Device nodes the script opens (by path or through ``dmabuf(...)``)."""
        out: set[str] = set()
        for st in self.statements:
            if st.op == "dmabuf" and isinstance(st.args[0], Ident):
                out.add(DEVICE_OF[st.args[0].name])
            elif st.op == "open" and isinstance(st.args[0], Str):
                path = b"".join(p for p in st.args[0].parts if isinstance(p, bytes))
                if path.startswith(b"/dev/"):
                    out.add(path.decode(errors="replace"))
        return frozenset(out)


DEVICE_OF: Mapping[str, str] = {
    "system_heap": "/dev/dma_heap/system",
    "cma_heap": "/dev/dma_heap/reserved",
    "udmabuf": "/dev/udmabuf",
    "vgem": "/dev/dri/card0",
}

# -- operations: name -> (argument types, result kind) ---------------------------------
# argument types: int, str, bytes, ioarg (int | str | struct), exporter; a trailing "?"
# marks an optional argument.  Result kinds: fd, addr, int, bytes, poll, proc, text, none.
OPS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "dmabuf": (("exporter", "int", "int"), "fd"),
    "open": (("str", "int", "int?"), "fd"),
    "close": (("int",), "int"),
    "dup": (("int",), "fd"),
    "lseek": (("int", "int", "int"), "int"),
    "read": (("int", "int"), "bytes"),
    "write": (("int", "bytes"), "int"),
    "poll": (("int", "int"), "poll"),
    "fcntl": (("int", "int", "int?"), "int"),
    "memfd_create": (("str", "int"), "fd"),
    "ftruncate": (("int", "int"), "int"),
    "ioctl": (("int", "int", "ioarg"), "int"),
    "mmap": (("int", "int", "int", "int", "int", "int"), "addr"),
    "munmap": (("int", "int"), "int"),
    "mprotect": (("int", "int", "int"), "int"),
    "mremap": (("int", "int", "int", "int", "int?"), "addr"),
    "load": (("int", "int"), "bytes"),
    "store": (("int", "bytes"), "int"),
    "fork": ((), "proc"),
    "exit": ((), "int"),
    "maps": (("int",), "text"),
    "fdinfo": (("int",), "text"),
}

MAX_LOAD = 1 << 20
"""The largest load/read one line may ask for (1 MiB): outcomes are digests, but the
bytes still cross the VM's serial line as the interpreter reads them."""


# -- lexer ------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t]+)
  | (?P<comment>\#.*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<name>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)(?![A-Za-z0-9_])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><<|>>|[()\[\]{},=+\-*|&~?])
    """,
    re.VERBOSE,
)


@frozen
class Token:
    kind: str
    text: str
    col: int


def _tokenise(line: str, lineno: int) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None:
            raise ScriptError(
                f"line {lineno}: cannot read {line[pos : pos + 12]!r} (column {pos + 1})"
            )
        kind = m.lastgroup or ""
        if kind == "comment":
            break
        if kind != "ws":
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    return out


_ESCAPES = {"n": 10, "t": 9, "r": 13, "0": 0, "\\": 92, '"': 34, "'": 39, "$": 36}


def _unescape(body: str, lineno: int, *, interpolate: bool) -> tuple[bytes | Name, ...]:
    """A string literal's body → text and ``$name`` parts (C escapes, ``\\xHH``)."""
    parts: list[bytes | Name] = []
    buf = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1 : i + 2]
            if nxt == "x":
                hexdigits = body[i + 2 : i + 4]
                if not re.fullmatch(r"[0-9a-fA-F]{2}", hexdigits):
                    raise ScriptError(f"line {lineno}: \\x needs two hex digits, as in \\x0a")
                buf.append(int(hexdigits, 16))
                i += 4
                continue
            if nxt not in _ESCAPES:
                known = r"\n \t \r \0 \\ \" \$ \xHH"
                raise ScriptError(f"line {lineno}: unknown escape \\{nxt} (use {known})")
            buf.append(_ESCAPES[nxt])
            i += 2
            continue
        if ch == "$" and interpolate:
            m = re.match(r"\$[A-Za-z_][A-Za-z0-9_]*", body[i:])
            if m:
                if buf:
                    parts.append(bytes(buf))
                    buf.clear()
                parts.append(Name(m.group()))
                i += m.end()
                continue
        buf.extend(ch.encode())
        i += 1
    if buf or not parts:
        parts.append(bytes(buf))
    return tuple(parts)


# -- expression parser (C precedence: unary, *, + -, << >>, &, |) -----------------------
class _Parser:
    def __init__(self, tokens: list[Token], lineno: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.lineno = lineno

    def error(self, msg: str) -> ScriptError:
        return ScriptError(f"line {self.lineno}: {msg}")

    def peek(self, offset: int = 0) -> Token | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        tok = self.peek()
        if tok is None:
            want = f"{text!r}" if text else (kind or "more")
            raise self.error(f"the line ends where {want} belongs")
        if (text is not None and tok.text != text) or (kind is not None and tok.kind != kind):
            want = f"{text!r}" if text else str(kind)
            raise self.error(f"expected {want}, found {tok.text!r} (column {tok.col + 1})")
        self.pos += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.text == text

    def expr(self) -> Node:
        return self._binary(0)

    _LEVELS: tuple[tuple[str, ...], ...] = (("|",), ("&",), ("<<", ">>"), ("+", "-"), ("*",))

    def _binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while (
            (tok := self.peek()) is not None
            and tok.kind == "op"
            and tok.text in self._LEVELS[level]
        ):
            self.pos += 1
            right = self._binary(level + 1)
            left = BinOp(tok.text, left, right)
        return left

    def _unary(self) -> Node:
        if self.at("-") or self.at("~"):
            op = self.take().text
            return Unary(op, self._unary())
        return self._primary()

    def _primary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise self.error("an argument is missing at the end of the line")
        if tok.kind == "num":
            self.pos += 1
            text = tok.text
            if text.lower().startswith("0x"):
                value = int(text, 16)
            else:
                value = int(text, 8) if len(text) > 1 and text.startswith("0") else int(text)
            if value >= U64:
                raise self.error(f"number {text} does not fit in 64 bits")
            return Num(value)
        if tok.kind == "char":
            self.pos += 1
            parts = _unescape(tok.text[1:-1], self.lineno, interpolate=False)
            data = parts[0]
            assert isinstance(data, bytes)
            return Num(data[0])
        if tok.kind == "name":
            self.pos += 1
            return Name(tok.text)
        if tok.kind == "string":
            self.pos += 1
            return Str(_unescape(tok.text[1:-1], self.lineno, interpolate=True))
        if tok.kind == "ident":
            self.pos += 1
            if self.at("("):
                self.take("(")
                args: list[Node] = []
                if not self.at(")"):
                    args.append(self.expr())
                    while self.at(","):
                        self.take(",")
                        args.append(self.expr())
                self.take(")")
                return self._builtin(tok.text, tuple(args))
            return Ident(tok.text)
        if tok.kind == "op" and tok.text == "(":
            self.pos += 1
            inner = self.expr()
            self.take(")")
            return inner
        if tok.kind == "op" and tok.text == "{":
            return self.struct()
        raise self.error(f"unexpected {tok.text!r} (column {tok.col + 1})")

    def _builtin(self, func: str, args: tuple[Node, ...]) -> Node:
        if func == "fill":
            if len(args) != 2:
                raise self.error("fill takes two arguments: fill(BYTE, COUNT)")
            return Fill(args[0], args[1])
        if func == "ramp":
            if len(args) != 3:
                raise self.error("ramp takes three arguments: ramp(START, STEP, COUNT)")
            return Ramp(args[0], args[1], args[2])
        if func in ("_IO", "_IOR", "_IOW", "_IOWR"):
            want = 2 if func == "_IO" else 3
            if len(args) != want:
                raise self.error(f"{func} takes {want} arguments")
            return Call(func, args)
        raise self.error(
            f"unknown function {func}() inside an argument"
            " (known: fill, ramp, _IO, _IOR, _IOW, _IOWR)"
        )

    def struct(self) -> StructLit:
        self.take("{")
        fields: list[tuple[str, Node]] = []
        if not self.at("}"):
            while True:
                name = self.take(kind="ident").text
                self.take("=")
                fields.append((name, self.expr()))
                if not self.at(","):
                    break
                self.take(",")
        self.take("}")
        return StructLit(tuple(fields))


# -- bytes: what a load returns, digested the same way on both sides ------------------
def digest(data: bytes) -> str:
    """A short, exact summary of bytes that both sides compute identically.

    Up to 64 bytes: ``hex:<bytes>``; longer data made of at most 16 runs of one
    byte value: ``runs:aa*4096,00*4096``; a ramp (each byte the previous plus one
    step, modulo 256): ``ramp:<start>:<step>:<len>``; anything else:
    ``crc32:<crc>:<len>`` (zlib's CRC-32).  The C interpreter implements the same
    four rules.
    """
    if len(data) <= 64:
        return "hex:" + data.hex()
    runs: list[tuple[int, int]] = []
    for b in data:
        if runs and runs[-1][0] == b:
            runs[-1] = (b, runs[-1][1] + 1)
        else:
            runs.append((b, 1))
            if len(runs) > 16:
                break
    else:
        return "runs:" + ",".join(f"{b:02x}*{n}" for b, n in runs)
    step = (data[1] - data[0]) & 0xFF
    if data == _ramp(data[0], step, len(data)):
        return f"ramp:{data[0]:02x}:{step:02x}:{len(data)}"
    return f"crc32:{zlib.crc32(data):08x}:{len(data)}"


def _ramp(start: int, step: int, count: int) -> bytes:
    return bytes((start + i * step) & 0xFF for i in range(count))


# -- evaluation ----------------------------------------------------------------------------
class Unbound(LookupError):
    """A ``$name`` whose binding line did not succeed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def eval_int(node: Node, env: Mapping[str, int]) -> int:
    """Evaluate an integer expression (64-bit two's complement, as in C)."""
    if isinstance(node, Num):
        return node.value % U64
    if isinstance(node, Name):
        if node.name not in env:
            raise Unbound(node.name)
        return env[node.name] % U64
    if isinstance(node, Ident):
        return CONSTANTS[node.name] % U64
    if isinstance(node, Unary):
        v = eval_int(node.operand, env)
        return (-v if node.op == "-" else ~v) % U64
    if isinstance(node, BinOp):
        a, b = eval_int(node.left, env), eval_int(node.right, env)
        ops: dict[str, Callable[[int, int], int]] = {
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "|": lambda x, y: x | y,
            "&": lambda x, y: x & y,
            "<<": lambda x, y: x << (y & 63),
            ">>": lambda x, y: x >> (y & 63),
        }
        return ops[node.op](a, b) % U64
    if isinstance(node, Call):
        vals = [eval_int(a, env) for a in node.args]
        return ioc(
            node.func, vals[0] & 0xFF, vals[1] & 0xFF, vals[2] & 0x3FFF if len(vals) > 2 else 0
        )
    raise TypeError(f"not an integer expression: {node!r}")


def eval_str(node: Str, env: Mapping[str, int]) -> bytes:
    """A string argument with ``$name`` replaced by the bound value in decimal."""
    out = bytearray()
    for part in node.parts:
        if isinstance(part, Name):
            out += str(eval_int(part, env)).encode()
        else:
            out += part
    return bytes(out)


def eval_bytes(node: Node, env: Mapping[str, int]) -> bytes:
    if isinstance(node, Str):
        return eval_str(node, env)
    if isinstance(node, Fill):
        # larger than any line may move: the runner refuses it (as interp.c does)
        count = min(eval_int(node.count, env), MAX_LOAD + 1)
        return bytes([eval_int(node.byte, env) & 0xFF]) * count
    if isinstance(node, Ramp):
        count = min(eval_int(node.count, env), MAX_LOAD + 1)
        return _ramp(eval_int(node.start, env) & 0xFF, eval_int(node.step, env) & 0xFF, count)
    if isinstance(node, BytesConcat):
        return b"".join(eval_bytes(p, env) for p in node.parts)
    raise TypeError(f"not a bytes expression: {node!r}")


# -- checking -------------------------------------------------------------------------------
def _is_int_node(node: Node) -> bool:
    if isinstance(node, (Num, Name, Call)):
        return True
    if isinstance(node, Ident):
        return node.name in CONSTANTS
    if isinstance(node, Unary):
        return _is_int_node(node.operand)
    if isinstance(node, BinOp):
        return _is_int_node(node.left) and _is_int_node(node.right)
    return False


def _as_bytes_node(node: Node) -> Node | None:
    """A bytes expression (strings, fill(...), joined with +), or None."""
    if isinstance(node, (Str, Fill, Ramp)):
        return node
    if isinstance(node, BinOp) and node.op == "+":
        left, right = _as_bytes_node(node.left), _as_bytes_node(node.right)
        if left is None or right is None:
            return None
        parts: list[Node] = []
        for p in (left, right):
            parts.extend(p.parts if isinstance(p, BytesConcat) else (p,))
        return BytesConcat(tuple(parts))
    return None


def _names_in(node: Node) -> list[str]:
    if isinstance(node, Name):
        return [node.name]
    if isinstance(node, Unary):
        return _names_in(node.operand)
    if isinstance(node, BinOp):
        return _names_in(node.left) + _names_in(node.right)
    if isinstance(node, Call):
        return [n for a in node.args for n in _names_in(a)]
    if isinstance(node, Str):
        return [p.name for p in node.parts if isinstance(p, Name)]
    if isinstance(node, Fill):
        return _names_in(node.byte) + _names_in(node.count)
    if isinstance(node, Ramp):
        return _names_in(node.start) + _names_in(node.step) + _names_in(node.count)
    if isinstance(node, BytesConcat):
        return [n for p in node.parts for n in _names_in(p)]
    if isinstance(node, StructLit):
        return [n for _, v in node.fields for n in _names_in(v)]
    return []


def _unknown_idents(node: Node) -> list[str]:
    if isinstance(node, Ident):
        return [] if node.name in CONSTANTS else [node.name]
    if isinstance(node, Unary):
        return _unknown_idents(node.operand)
    if isinstance(node, BinOp):
        return _unknown_idents(node.left) + _unknown_idents(node.right)
    if isinstance(node, (Call, BytesConcat)):
        items = node.args if isinstance(node, Call) else node.parts
        return [n for a in items for n in _unknown_idents(a)]
    if isinstance(node, Fill):
        return _unknown_idents(node.byte) + _unknown_idents(node.count)
    if isinstance(node, Ramp):
        parts = (node.start, node.step, node.count)
        return [n for p in parts for n in _unknown_idents(p)]
    if isinstance(node, StructLit):
        return [n for _, v in node.fields for n in _unknown_idents(v)]
    return []


def _check_args(op: str, args: list[Node], lineno: int) -> tuple[Node, ...]:
    types, _ = OPS[op]
    required = sum(1 for t in types if not t.endswith("?"))
    if not required <= len(args) <= len(types):
        count = str(required) if required == len(types) else f"{required} to {len(types)}"
        raise ScriptError(f"line {lineno}: {op} takes {count} arguments, not {len(args)}")
    out: list[Node] = []
    for i, (arg, declared) in enumerate(zip(args, types, strict=False)):
        node, typ = arg, declared.rstrip("?")
        where = f"line {lineno}: argument {i + 1} of {op}"
        unknown = _unknown_idents(node)
        if typ == "exporter":
            if not (isinstance(node, Ident) and node.name in EXPORTERS):
                raise ScriptError(f"{where} names the exporter: one of {', '.join(EXPORTERS)}")
            out.append(node)
            continue
        if unknown:
            raise ScriptError(
                f"{where}: unknown constant {unknown[0]} (see docs/differential.md for the names)"
            )
        if typ == "int":
            if not _is_int_node(node):
                raise ScriptError(f"{where} must be a number, a constant or a $name expression")
        elif typ == "str":
            if not isinstance(node, Str):
                raise ScriptError(
                    f'{where} must be a string in double quotes, as in "/dev/udmabuf"'
                )
        elif typ == "bytes":
            as_bytes = _as_bytes_node(node)
            if as_bytes is None:
                raise ScriptError(
                    f'{where} must be bytes: "text", fill(BYTE, COUNT), ramp(START, STEP, COUNT),'
                    " or several joined with +"
                )
            node = as_bytes
        elif typ == "ioarg" and not (isinstance(node, (Str, StructLit)) or _is_int_node(node)):
            raise ScriptError(f"{where} must be a number (a pointer), a string or a {{struct}}")
        out.append(node)
    return tuple(out)


def _check_struct(st_op_args: tuple[Node, ...], lineno: int) -> None:
    """A struct literal needs a request whose layout is known, and known field names."""
    req, arg = st_op_args[1], st_op_args[2]
    if not isinstance(arg, StructLit):
        return
    if not (isinstance(req, Ident) and req.name in IOCTL_STRUCTS):
        raise ScriptError(
            f"line {lineno}: a {{struct}} argument needs a request whose layout is known"
            f" ({', '.join(IOCTL_STRUCTS)}); pass a number otherwise"
        )
    layout = IOCTL_STRUCTS[req.name]
    for name, _ in arg.fields:
        if layout.field(name) is None:
            names = ", ".join(f.name for f in layout.fields)
            raise ScriptError(
                f"line {lineno}: struct {layout.struct} has no field {name} ({names})"
            )


def normalise_expectation(text: str, lineno: int = 0) -> str:
    """The comparable form of an outcome as written (or as rendered).

    Bytes (``"..."``, ``fill(..)``, joined with ``+``) become their :func:`digest`;
    anything else is its tokens with the spaces between them removed, so
    ``-1 EINVAL`` and ``-1  EINVAL`` are the same expectation.
    """
    tokens = _tokenise(text, lineno)
    if (
        tokens
        and tokens[0].kind in ("string", "ident")
        and (tokens[0].kind == "string" or tokens[0].text in ("fill", "ramp"))
    ):
        parser = _Parser(tokens, lineno)
        try:
            node = parser.expr()
        except ScriptError:
            node = None
        if node is not None and parser.pos == len(tokens):
            as_bytes = _as_bytes_node(node)
            if as_bytes is not None and not _names_in(as_bytes):
                return "bytes " + digest(eval_bytes(as_bytes, {}))
    return "".join(t.text for t in tokens)


def _parse_line(raw: str, lineno: int, bound: dict[str, int]) -> Statement | None:
    tokens = _tokenise(raw, lineno)
    if not tokens:
        return None
    # the statement text runs up to its comment
    end = tokens[-1].col + len(tokens[-1].text)
    text = raw[tokens[0].col : end]
    p = _Parser(tokens, lineno)
    proc = "$main"
    if p.at("["):
        p.take("[")
        proc = p.take(kind="name").text
        p.take("]")
        if proc not in bound:
            raise ScriptError(f"line {lineno}: process {proc} is not bound by an earlier fork()")
    op_tok = p.take(kind="ident")
    op = op_tok.text
    if op not in OPS:
        raise ScriptError(f"line {lineno}: unknown call {op}() (known: {', '.join(OPS)})")
    p.take("(")
    args: list[Node] = []
    if not p.at(")"):
        args.append(p.expr())
        while p.at(","):
            p.take(",")
            args.append(p.expr())
    p.take(")")
    checked = _check_args(op, args, lineno)
    if op == "ioctl":
        _check_struct(checked, lineno)
    for node in checked:
        for name in _names_in(node):
            if name not in bound:
                raise ScriptError(
                    f"line {lineno}: {name} is used before any line binds it (bind with '= {name}')"
                )
    bind: str | None = None
    outs: list[tuple[str, str]] = []
    expect: str | None = None
    expect_text: str | None = None
    if p.at("="):
        p.take("=")
        rest = p.tokens[p.pos :]
        brace = next((i for i, t in enumerate(rest) if t.kind == "op" and t.text == "{"), None)
        head, tail = (rest, []) if brace is None else (rest[:brace], rest[brace:])
        if not head and not tail:
            raise ScriptError(f"line {lineno}: nothing after '='")
        if len(head) == 1 and head[0].kind == "name":
            bind = head[0].text
        elif head:
            start = head[0].col
            stop = head[-1].col + len(head[-1].text)
            expect_text = raw[start:stop]
            expect = normalise_expectation(expect_text, lineno)
        if tail:
            outs = _parse_outs(tail, checked, op, lineno)
    if bind is not None:
        if bind == "$main":
            raise ScriptError(f"line {lineno}: $main names the first process; bind another name")
        bound[bind] = lineno
    for _, name in outs:
        bound[name] = lineno
    if op == "fork" and bind is None:
        raise ScriptError(f"line {lineno}: name the child: fork() = $child")
    return Statement(lineno, text, proc, op, checked, bind, tuple(outs), expect, expect_text)


def _parse_outs(
    tail: list[Token], args: tuple[Node, ...], op: str, lineno: int
) -> list[tuple[str, str]]:
    req = args[1] if op == "ioctl" else None
    if not (isinstance(req, Ident) and req.name in IOCTL_STRUCTS):
        raise ScriptError(
            f"line {lineno}: '{{field=$name}}' binds output fields of an ioctl struct;"
            " this line has none"
        )
    layout = IOCTL_STRUCTS[req.name]
    p = _Parser(tail, lineno)
    p.take("{")
    outs: list[tuple[str, str]] = []
    while True:
        fname = p.take(kind="ident").text
        f = layout.field(fname)
        if f is None or not f.out:
            outs_ok = ", ".join(x.name for x in layout.fields if x.out) or "none"
            raise ScriptError(
                f"line {lineno}: {fname} is not an output field of {layout.struct} ({outs_ok})"
            )
        p.take("=")
        outs.append((fname, p.take(kind="name").text))
        if not p.at(","):
            break
        p.take(",")
    p.take("}")
    if p.pos != len(tail):
        raise ScriptError(f"line {lineno}: unexpected text after the output bindings")
    return outs


def parse_script(text: str, name: str = "<script>") -> Script:
    """Parse and check a script; :class:`ScriptError` names the first bad line."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    bound: dict[str, int] = {"$main": 0}
    statements: list[Statement] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        st = _parse_line(raw, lineno, bound)
        if st is not None:
            statements.append(st)
    return Script(name, text, tuple(statements))


BUNDLED = Path(__file__).parent / "scripts"
"""The project's own scripts (``dmabuf-sim differential NAME`` finds them by name)."""


def load_script(path_or_name: str | Path) -> Script:
    """Read a script file, or one of the bundled scripts by name (``mmap-bounds``)."""
    path = Path(path_or_name)
    if not path.exists():
        bundled = BUNDLED / f"{path_or_name}.syscalls"
        if not bundled.exists():
            names = ", ".join(sorted(p.stem for p in BUNDLED.glob("*.syscalls")))
            raise ScriptError(
                f"no script file {str(path)!r} and no bundled script of that name ({names})"
            )
        path = bundled
    return parse_script(path.read_text(), path.name)


def dump_node(node: Node) -> str:
    """A node as ``interp --parse`` prints it (constants by value, strings as hex parts)."""
    if isinstance(node, Num):
        return str(node.value)
    if isinstance(node, Ident):
        return str(CONSTANTS[node.name]) if node.name in CONSTANTS else node.name
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Unary):
        return f"({node.op}{dump_node(node.operand)})"
    if isinstance(node, BinOp):
        return f"({dump_node(node.left)} {node.op} {dump_node(node.right)})"
    if isinstance(node, Call):
        return f"{node.func}(" + ", ".join(dump_node(a) for a in node.args) + ")"
    if isinstance(node, Str):
        parts = [p.name if isinstance(p, Name) else f"x'{p.hex()}'" for p in node.parts]
        return "str[" + ", ".join(parts) + "]"
    if isinstance(node, Fill):
        return f"fill({dump_node(node.byte)}, {dump_node(node.count)})"
    if isinstance(node, Ramp):
        args = (node.start, node.step, node.count)
        return "ramp(" + ", ".join(dump_node(a) for a in args) + ")"
    if isinstance(node, BytesConcat):
        return "cat[" + ", ".join(dump_node(p) for p in node.parts) + "]"
    return "{" + ", ".join(f"{k}={dump_node(v)}" for k, v in node.fields) + "}"


def dump_parse(script: Script) -> str:
    """Every statement as ``interp --parse`` prints it: the two parsers must agree."""
    out = []
    for st in script.statements:
        text = f"{st.line} {st.proc} {st.op}(" + ", ".join(dump_node(a) for a in st.args) + ")"
        if st.bind:
            text += f" = {st.bind}"
        text += "".join(f" {f}={n}" for f, n in st.outs)
        out.append(text)
    return "".join(line + "\n" for line in out)
