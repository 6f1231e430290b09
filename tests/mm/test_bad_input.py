"""Misuse of the Python API: TypeError/ValueError naming the argument, nothing changes.

A value that fits the C type is a syscall argument (negative ints are their
64-bit two's complement); anything else is a Python error raised before the
kernel is entered.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import Kernel

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS


def world() -> tuple[Kernel, Any, int, int]:
    k = Kernel("v6.12")
    p = k.spawn("victim")
    fd = p.open("/dev/simmem", os.O_RDWR)
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
    p.write_memory(addr, b"state")
    p.mmap(0, 2 * PAGE, R | W, PR | ANON)
    return k, p, fd, addr


# (method, args, name of the bad argument); {fd} and {addr} are filled in
TYPE_CASES: list[tuple[str, tuple[Any, ...], str]] = [
    ("mmap", ("0", PAGE, R, SH, "{fd}", 0), "addr"),
    ("mmap", (0, 4096.0, R, SH, "{fd}", 0), "length"),
    ("mmap", (0, PAGE, None, SH, "{fd}", 0), "prot"),
    ("mmap", (0, PAGE, R, True, "{fd}", 0), "flags"),
    ("mmap", (0, PAGE, R, SH, "3", 0), "fd"),
    ("mmap", (0, PAGE, R, SH, "{fd}", b"\0"), "offset"),
    ("munmap", ("{addr}", "4096"), "length"),
    ("munmap", (1.5, PAGE), "addr"),
    ("mprotect", ("{addr}", PAGE, [1]), "prot"),
    ("mremap", ("{addr}", PAGE, 2 * PAGE, 0, None), "new_address"),
    ("mremap", ("{addr}", PAGE, "2", 0, 0), "new_size"),
    ("close", ("{fd}.0",), "fd"),
    ("dup", (False,), "fd"),
    ("lseek", ("{fd}", "0", 0), "pos"),
    ("lseek", ("{fd}", 0, 0.0), "how"),
    ("ioctl", ("{fd}", "0x5451"), "request"),
    ("fcntl", ("{fd}", 1.0), "cmd"),
    ("fcntl", ("{fd}", 1, "x"), "arg"),
    ("ftruncate", ("{fd}", 1.0), "length"),
    ("memfd_create", (7,), "name"),
    ("memfd_create", ("m", "0"), "flags"),
    ("open", (b"/dev/simmem",), "path"),
    ("open", ("/dev/simmem", "r"), "flags"),
    ("write", ("{fd}", "text"), "data"),
    ("write_memory", ("{addr}", "text"), "data"),
    ("read_memory", ("x", 1), "addr"),
    ("read_memory", ("{addr}", 1.0), "n"),
    ("read", ("{fd}", "1"), "n"),
    ("open", ("/dev/simmem", 0, "0644"), "mode"),
    ("file", ("{fd}.0",), "fd"),
    ("fdinfo", (None,), "fd"),
]

RANGE_CASES: list[tuple[str, tuple[Any, ...], str]] = [
    ("mmap", (2**64, PAGE, R, SH, "{fd}", 0), "addr"),
    ("mmap", (0, -(2**63) - 1, R, SH, "{fd}", 0), "length"),
    ("mmap", (0, PAGE, R, SH, "{fd}", 2**64), "offset"),
    ("mmap", (0, PAGE, R, SH, 2**32, 0), "fd"),
    ("munmap", ("{addr}", 2**70), "length"),
    ("mprotect", ("{addr}", PAGE, 2**64), "prot"),
    ("mremap", ("{addr}", PAGE, PAGE, 2**64, 0), "flags"),
    ("close", (2**31 * 2,), "fd"),
    ("lseek", ("{fd}", 2**64, 0), "pos"),
    ("fcntl", ("{fd}", 2**33), "cmd"),
    ("ftruncate", ("{fd}", 2**64), "length"),
    ("read", ("{fd}", -1), "n"),
    ("read_memory", ("{addr}", -1), "n"),
    ("read", ("{fd}", 2**64), "n"),
    ("open", ("/dev/simmem", 0, 2**40), "mode"),
    ("ioctl", ("{fd}", 0x5451, 2**64), "arg"),
    ("ioctl", ("{fd}", 0x5451, -(2**63) - 1), "arg"),
]


def fill(args: tuple[Any, ...], fd: int, addr: int) -> list[Any]:
    out: list[Any] = []
    for a in args:
        if a == "{fd}":
            out.append(fd)
        elif a == "{addr}":
            out.append(addr)
        elif a == "{fd}.0":
            out.append(float(fd))
        else:
            out.append(a)
    return out


@pytest.mark.parametrize(("method", "args", "name"), TYPE_CASES)
def test_wrong_type_is_typeerror_naming_the_argument(
    snap: Callable[[Kernel], Any], method: str, args: tuple[Any, ...], name: str
) -> None:
    k, p, fd, addr = world()
    before = snap(k)
    with pytest.raises(TypeError) as ei:
        getattr(p, method)(*fill(args, fd, addr))
    assert name in str(ei.value)
    assert snap(k) == before


@pytest.mark.parametrize(("method", "args", "name"), RANGE_CASES)
def test_out_of_range_is_valueerror_naming_the_argument(
    snap: Callable[[Kernel], Any], method: str, args: tuple[Any, ...], name: str
) -> None:
    k, p, fd, addr = world()
    before = snap(k)
    with pytest.raises(ValueError) as ei:
        getattr(p, method)(*fill(args, fd, addr))
    assert name in str(ei.value)
    assert snap(k) == before


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("close", (9,)),
        ("dup", (9,)),
        ("lseek", (9, 0, 0)),
        ("ioctl", (9, 0x5451)),
        ("fcntl", (9, 1)),
        ("read", (9, 1)),
        ("write", (9, b"x")),
        ("ftruncate", (9, 0)),
        ("mmap", (0, PAGE, R, SH, 9, 0)),
        ("mmap", (0, PAGE, R, SH, -7, 0)),
        ("close", (-1,)),
    ],
)
def test_unknown_fd_is_ebadf_and_changes_nothing(
    snap: Callable[[Kernel], Any], method: str, args: tuple[Any, ...]
) -> None:
    k, p, _, _ = world()
    before = snap(k)
    with pytest.raises(OSError) as ei:
        getattr(p, method)(*args)
    assert ei.value.errno == errno.EBADF
    assert snap(k) == before


def test_negative_ints_are_twos_complement_not_errors() -> None:
    """-4096 as an offset is 0xFFFFFFFFFFFFF000 (EOVERFLOW), not a Python error."""
    _k, p, fd, _ = world()
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, R, SH, fd, -4096)
    assert ei.value.errno == errno.EOVERFLOW
    with pytest.raises(OSError) as ei:
        p.mmap(0, -1, R, SH, fd, 0)
    assert ei.value.errno == errno.ENOMEM  # PAGE_ALIGN(2**64-1) wraps to 0


def test_kernel_constructor_and_spawn_validation() -> None:
    with pytest.raises(TypeError):
        Kernel(612)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ram_pages"):
        Kernel("v6.12", ram_pages=10)
    with pytest.raises(ValueError, match="cache_lines"):
        Kernel("v6.12", cache_lines=0)
    k = Kernel("v6.12")
    with pytest.raises(TypeError, match="comm"):
        k.spawn(5)  # type: ignore[arg-type]
    assert k.processes == {}


def test_exited_process_refuses_syscalls() -> None:
    k, p, _fd, _ = world()
    p.exit()
    with pytest.raises(ValueError, match="exited"):
        p.open("/dev/simmem")
    assert k.processes == {}
