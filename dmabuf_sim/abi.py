"""Syscall arguments as the C ABI passes them: from a Python value to a register.

Every :class:`~dmabuf_sim.process.Process` method checks its arguments with
these helpers before the kernel is entered, so each kind of argument is
treated the same way everywhere:

* an integer of C type ``unsigned long``/``size_t``/``off_t`` accepts any
  value that fits in 64 bits as signed or unsigned and passes its 64-bit two's
  complement (``-4096`` is ``0xfffffffffffff000``), as a C caller's register
  would hold it;
* an ``int`` accepts ``-2**31 .. 2**32-1`` (an ``int`` or ``unsigned int``);
* a byte count the Python API returns data for (``read``, ``read_memory``)
  must be a non-negative int;
* anything else is a mistake in the Python program, not a syscall: a
  ``TypeError`` (wrong type) or ``ValueError`` (does not fit), naming the
  argument and saying what is allowed.
"""

from __future__ import annotations

__all__ = ["bytes_like", "c_int", "count", "ioctl_arg", "text", "ulong"]

_U64 = 1 << 64


def ulong(name: str, value: object) -> int:
    """A syscall argument of C type ``unsigned long`` (or ``off_t`` reinterpreted)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not -(1 << 63) <= value < _U64:
        raise ValueError(f"{name}={value} does not fit in 64 bits (allowed: -2**63 .. 2**64-1)")
    return value % _U64


def c_int(name: str, value: object) -> int:
    """A syscall argument of C type ``int`` (or ``unsigned int``); returned unchanged."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not -(1 << 31) <= value < 1 << 32:
        raise ValueError(f"{name}={value} does not fit in a C int (allowed: -2**31 .. 2**32-1)")
    return value


def count(name: str, value: object) -> int:
    """A byte count whose bytes come back as a Python ``bytes`` object."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must be a non-negative int below 2**64, not {value}")
    return value


def bytes_like(name: str, value: object) -> bytes:
    """A buffer the caller hands to the kernel (``bytes``, ``bytearray``, ``memoryview``)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}")
    return bytes(value)


def text(name: str, value: object) -> str:
    """A path or name (``const char *`` from a Python ``str``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def ioctl_arg(value: object) -> object:
    """The ``unsigned long arg`` of ``ioctl(2)``.

    An ``int`` is a user address (checked like any ``unsigned long``); a uapi
    struct, ``bytes`` or ``str`` stand for a pointer to memory holding them
    (see :mod:`dmabuf_sim.uaccess`).  Any other object is passed on as an
    unreadable pointer, so the ioctl fails with ``EFAULT`` as it would for a
    bad address."""
    if isinstance(value, int) and not isinstance(value, bool):
        return ulong("arg", value)
    return value
