"""The syscall-script language: parsing, checking, evaluation and digests (docs/differential.md)."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim.differential.abi import CONSTANTS
from dmabuf_sim.differential.outcome import render_digest
from dmabuf_sim.differential.script import (
    BUNDLED,
    Fill,
    Ident,
    Name,
    ScriptError,
    Str,
    StructLit,
    digest,
    eval_bytes,
    eval_int,
    eval_str,
    load_script,
    normalise_expectation,
    parse_script,
)

U64 = 1 << 64


def test_statement_parts() -> None:
    script = parse_script(
        "dmabuf(udmabuf, 2*PAGE_SIZE, O_RDWR|O_CLOEXEC) = $buf   # a buffer\n"
        "\n"
        "# a comment line\n"
        "mmap(NULL, 8192, PROT_READ, MAP_SHARED, $buf, 0) = $a\n"
        "fork() = $child\n"
        '[$child] load($a + 4096, 5) = "hello"\n'
        "ioctl($buf, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, {flags=DMA_BUF_SYNC_READ}) = 0 {fd=$sf}\n"
    )
    dm, mm, fork, load, ioctl = script.statements
    assert (dm.line, dm.op, dm.bind, dm.proc) == (1, "dmabuf", "$buf", "$main")
    assert dm.args[0] == Ident("udmabuf")
    assert dm.text == "dmabuf(udmabuf, 2*PAGE_SIZE, O_RDWR|O_CLOEXEC) = $buf"
    assert mm.line == 4 and mm.bind == "$a"
    assert fork.bind == "$child"
    assert load.proc == "$child" and load.expect == normalise_expectation('"hello"')
    assert load.expect_text == '"hello"'
    assert isinstance(ioctl.args[2], StructLit)
    assert ioctl.outs == (("fd", "$sf"),) and ioctl.expect == "0"
    assert (
        ioctl.call_text == "ioctl($buf, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, {flags=DMA_BUF_SYNC_READ})"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("frobnicate(1)", "line 1: unknown call frobnicate()"),
        ("close(FOO)", "unknown constant FOO"),
        ("close($x)", "$x is used before any line binds it"),
        ("mmap(NULL, 4096)", "mmap takes 6 arguments, not 2"),
        ("open(1, 2)", "must be a string"),
        ("store(0, 5)", "must be bytes"),
        ("dmabuf(ion, 4096, 0)", "names the exporter"),
        ("fork()", "name the child"),
        ("[$child] close(3)", "process $child is not bound"),
        ("ioctl(3, DMA_BUF_IOCTL_SYNC, {nope=1})", "struct DmaBufSync has no field nope"),
        ("ioctl(3, 5, {flags=1})", "needs a request whose layout is known"),
        ("close(3) = 0 {fd=$x}", "binds output fields of an ioctl struct"),
        ("ioctl(3, DMA_HEAP_IOCTL_ALLOC, {len=1}) = 0 {len=$x}", "len is not an output field"),
        ('open("a\\q", 0)', "unknown escape \\q"),
        ("close(18446744073709551616)", "does not fit in 64 bits"),
        ("close(3) =", "nothing after '='"),
        ("close(3) = $main", "$main names the first process"),
        ("close(@)", "cannot read"),
        ("close(fill(1, 2, 3))", "fill takes two arguments"),
    ],
)
def test_errors_name_the_line_and_what_to_do(text: str, message: str) -> None:
    with pytest.raises(ScriptError) as info:
        parse_script(text)
    assert message in str(info.value)
    assert str(info.value).startswith("line ")


def test_strings_escapes_and_interpolation() -> None:
    st_ = parse_script('dmabuf(vgem, 1, 0) = $b\nopen("/proc/self/fd/$b\\x41\\n\\$x", 0)\n')
    path = st_.statements[1].args[0]
    assert isinstance(path, Str)
    assert path.parts == (b"/proc/self/fd/", Name("$b"), b"A\n$x")

    assert eval_str(path, {"$b": 7}) == b"/proc/self/fd/7A\n$x"


def test_bytes_arguments_join_strings_and_fills() -> None:
    script = parse_script('store(0, "ab" + fill(0x5a, 3) + "\\x00" + ramp(0xff, 2, 3))\n')
    assert eval_bytes(script.statements[0].args[1], {}) == b"abZZZ\x00\xff\x01\x03"


def test_char_literals_and_ioctl_numbers() -> None:
    script = parse_script("ioctl(3, _IOW('b', 1, 8), 0)\nioctl(3, _IO('b', 0x77), 0)\n")
    assert eval_int(script.statements[0].args[1], {}) == CONSTANTS["DMA_BUF_SET_NAME"]
    assert eval_int(script.statements[1].args[1], {}) == 0x6277


_ops = st.sampled_from(["+", "-", "*", "|", "&", "<<", ">>"])


@st.composite
def _expr(draw: st.DrawFn, depth: int = 0) -> tuple[str, int]:
    """(text, value with C's 64-bit unsigned arithmetic)."""
    if depth > 3 or draw(st.booleans()):
        n = draw(st.integers(0, 2**64 - 1))
        form = draw(st.sampled_from(["dec", "hex", "oct"]))
        text = {"dec": str(n), "hex": hex(n), "oct": "0" + format(n, "o")}[form]
        return text, n
    if draw(st.booleans()):
        text, v = draw(_expr(depth + 1))
        op = draw(st.sampled_from(["-", "~"]))
        return f"{op}({text})", (-v if op == "-" else ~v) % U64
    a, va = draw(_expr(depth + 1))
    b, vb = draw(_expr(depth + 1))
    op = draw(_ops)
    funcs = {
        "+": va + vb,
        "-": va - vb,
        "*": va * vb,
        "|": va | vb,
        "&": va & vb,
        "<<": va << (vb & 63),
        ">>": va >> (vb & 63),
    }
    return f"({a} {op} {b})", funcs[op] % U64


@given(_expr())
def test_integer_expressions_follow_c_unsigned_arithmetic(case: tuple[str, int]) -> None:
    """Property: an argument evaluates as the C interpreter computes it (u64, wrap-around)."""
    text, value = case
    script = parse_script(f"close({text})\n")
    assert eval_int(script.statements[0].args[0], {}) == value


def test_precedence_is_cs() -> None:
    script = parse_script("close(1 | 2 & 3 << 1 + 2 * 3)\n")
    assert eval_int(script.statements[0].args[0], {}) == 1 | (2 & (3 << (1 + 2 * 3)))


def _ramp(start: int, step: int, n: int) -> bytes:
    return bytes((start + i * step) & 0xFF for i in range(n))


@given(
    st.binary(max_size=300)
    | st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(0, 9000))
    | st.builds(_ramp, st.integers(0, 255), st.integers(0, 255), st.integers(65, 9000))
)
def test_a_rendered_digest_reads_back_as_the_same_digest(data: bytes) -> None:
    """Property: what a load prints, written as an expectation, expects exactly those bytes."""
    d = digest(data)
    if d.startswith("crc32:"):  # too varied to spell out: shown as its checksum and length
        assert render_digest(d) == f"crc32(0x{zlib.crc32(data):08x}, {len(data)})"
        return
    assert normalise_expectation(render_digest(d)) == "bytes " + d


def test_digest_forms() -> None:
    assert digest(b"hi") == "hex:6869"
    assert digest(b"\x11" * 4096 + b"\x22" * 10) == "runs:11*4096,22*10"
    assert digest(_ramp(0xFE, 3, 100)) == "ramp:fe:03:100"
    assert digest(_ramp(0xFE, 3, 100) + b"x").startswith("crc32:")
    assert digest(bytes(range(200))) == "ramp:00:01:200"
    noise = bytes((i * i) & 0xFF for i in range(200))
    assert digest(noise) == f"crc32:{zlib.crc32(noise):08x}:200"


def test_expectations_normalise_spacing() -> None:
    assert normalise_expectation("-1  EINVAL") == normalise_expectation("-1 EINVAL") == "-1EINVAL"
    assert normalise_expectation('"ab" + fill(0, 2)') == "bytes hex:61620000"


def test_bundled_scripts_parse() -> None:
    names = {p.stem for p in BUNDLED.glob("*.syscalls")}
    assert {"mmap-bounds", "data", "mremap", "file-ops", "udmabuf-create", "vgem-prime"} <= names
    for name in names:
        assert load_script(name).statements


def test_unknown_script_names_the_bundled_ones() -> None:
    with pytest.raises(ScriptError, match=r"no bundled script of that name.*mmap-bounds"):
        load_script("no-such-script")


def test_uses_devices() -> None:
    script = parse_script('dmabuf(vgem, 1, 0) = $b\nopen("/dev/udmabuf", 2)\n')
    assert script.uses_devices() == {"/dev/dri/card0", "/dev/udmabuf"}


def test_fill_nodes() -> None:
    script = parse_script("store(0, fill(0xff, 2))\n")
    node = script.statements[0].args[1]
    assert isinstance(node, Fill)
    assert eval_bytes(node, {}) == b"\xff\xff"
