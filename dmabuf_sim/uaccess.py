"""``copy_from_user`` / ``copy_to_user`` / ``strndup_user`` (include/linux/uaccess.h).

An ioctl ``arg`` is a user pointer.  The simulator accepts, in its place, the
uapi struct object (a valid pointer whose memory is the object; a struct of
another type is memory holding its packed bytes, as in C), ``bytes``
(read-only memory), a ``str`` for string arguments, or an ``int`` address in
the calling process (``kernel.current``), read through its page tables:
unmapped or unreadable memory makes the copy fail with ``-EFAULT`` instead
of a signal, exactly like the kernel's exception-table fixups.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import Signal
from .lockdep import might_fault
from .mm.memory import user_access
from .uapi import UapiStruct

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = [
    "copy_bytes_to_user",
    "copy_from_user",
    "copy_to_user",
    "get_user_int",
    "strndup_user",
]

S = TypeVar("S", bound="UapiStruct")


def _read_user(kernel: Kernel, addr: int, n: int) -> bytes | int:
    might_fault(kernel)
    proc = kernel.current
    if proc is None or addr == 0 or addr < 0 or addr + n > 1 << 64:
        return -errno.EFAULT
    try:
        return user_access(proc.mm, addr, n, write=False, user=False)
    except Signal:
        return -errno.EFAULT


def _write_user(kernel: Kernel, addr: int, data: bytes) -> int:
    might_fault(kernel)
    proc = kernel.current
    if proc is None or addr <= 0:
        return -errno.EFAULT
    try:
        user_access(proc.mm, addr, len(data), write=True, data=data, user=False)
    except Signal:
        return -errno.EFAULT
    return 0


def copy_from_user(kernel: Kernel, arg: Any, cls: type[S]) -> S | int:
    """Read a ``cls`` struct from user pointer ``arg``; ``-EFAULT`` if unreadable."""
    if isinstance(arg, cls):
        return cls.unpack(arg.pack())  # the kernel works on its own copy
    if isinstance(arg, UapiStruct):
        arg = arg.pack()  # another struct: a pointer to its bytes, read as they are
    if isinstance(arg, (bytes, bytearray)):
        if len(arg) < cls.sizeof():
            return -errno.EFAULT
        return cls.unpack(bytes(arg[: cls.sizeof()]))
    if isinstance(arg, int) and not isinstance(arg, bool):
        data = _read_user(kernel, arg, cls.sizeof())
        if isinstance(data, int):
            return data
        return cls.unpack(data)
    return -errno.EFAULT


def copy_to_user(kernel: Kernel, arg: Any, value: UapiStruct) -> int:
    """Write ``value`` back through user pointer ``arg``; ``-EFAULT`` if unwritable."""
    if isinstance(arg, type(value)):
        arg.update_from(value)
        return 0
    if isinstance(arg, UapiStruct):
        # another struct: the bytes land in its memory, as far as it reaches
        memory = bytearray(arg.pack())
        data = value.pack()
        if len(data) > len(memory):
            return -errno.EFAULT
        memory[: len(data)] = data
        arg.update_from(type(arg).unpack(bytes(memory)))
        return 0
    if isinstance(arg, int) and not isinstance(arg, bool):
        return _write_user(kernel, arg, value.pack())
    return -errno.EFAULT  # bytes are read-only memory


def copy_bytes_to_user(kernel: Kernel, addr: Any, data: bytes) -> int:
    """``copy_to_user`` of raw bytes (an array of structs) to user address ``addr``."""
    if isinstance(addr, bool) or not isinstance(addr, int):
        return -errno.EFAULT
    return _write_user(kernel, addr, data) if data else 0


def strndup_user(kernel: Kernel, arg: Any, n: int) -> bytes | int:
    """``strndup_user``: a NUL-terminated string of at most ``n`` bytes including the NUL.

    ``-EFAULT`` for an unreadable pointer, ``-EINVAL`` when no NUL is found
    within ``n`` bytes.
    """
    if isinstance(arg, str):
        arg = arg.encode() + b"\0"
    if isinstance(arg, (bytes, bytearray)):
        data = bytes(arg[:n])
        if b"\0" not in data and len(arg) < n:
            return -errno.EFAULT  # the string runs off the end of readable memory
    elif isinstance(arg, int) and not isinstance(arg, bool):
        got = b""
        for i in range(n):  # byte by byte: stop at the NUL, as strnlen_user does
            piece = _read_user(kernel, arg + i, 1)
            if isinstance(piece, int):
                return piece
            got += piece
            if piece == b"\0":
                break
        data = got
    else:
        return -errno.EFAULT
    nul = data.find(b"\0")
    if nul < 0:
        return -errno.EINVAL
    return data[:nul]


def get_user_int(kernel: Kernel, arg: Any) -> int | None:
    """``get_user`` of a C ``int`` through pointer ``arg``; None where the kernel gets -EFAULT."""
    if isinstance(arg, (bytes, bytearray)):
        return int.from_bytes(arg[:4], "little", signed=True) if len(arg) >= 4 else None
    if isinstance(arg, int) and not isinstance(arg, bool):
        data = _read_user(kernel, arg, 4)
        return None if isinstance(data, int) else int.from_bytes(data, "little", signed=True)
    return None
