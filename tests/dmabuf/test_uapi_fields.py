"""uapi struct fields hold what ``copy_from_user`` would copy: the C type's bits.

A value that fits the field's width (signed or unsigned) is stored as a C
assignment stores it; a wider value or a non-int is a Python error naming the
field, raised before any syscall (issue 15, item 2: a ``__s32`` holding
``2**31`` once raised ``struct.error`` out of ``Process.ioctl``).
"""

from __future__ import annotations

import errno
import inspect
import os

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel, uapi
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.uaccess import copy_from_user, copy_to_user
from dmabuf_sim.uapi import (
    DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
    DmaBufExportSyncFile,
    DmaBufImportSyncFile,
    DmaBufSync,
    DmaHeapAllocationData,
    UapiStruct,
)

STRUCTS = sorted(
    (
        cls
        for _name, cls in inspect.getmembers(uapi, inspect.isclass)
        if issubclass(cls, UapiStruct) and cls is not UapiStruct
    ),
    key=lambda c: c.__name__,
)
ALL_FIELDS = [(cls, f) for cls in STRUCTS for f in attrs.fields(cls)]  # type: ignore[arg-type]
FIELDS = [(cls, f) for cls, f in ALL_FIELDS if not f.metadata["ctype"].startswith("char[")]
CHARS = [(cls, f) for cls, f in ALL_FIELDS if f.metadata["ctype"].startswith("char[")]


def _width(f: attrs.Attribute[int]) -> tuple[int, bool]:
    ctype = f.metadata["ctype"]
    return int(ctype[3:]), ctype[2] == "s"


def test_every_struct_field_declares_its_c_type() -> None:
    assert len(STRUCTS) >= 10
    for cls, f in FIELDS:
        bits, _signed = _width(f)
        assert bits in (32, 64), (cls.__name__, f.name)
    assert {f.metadata["ctype"] for _c, f in CHARS} == {"char[32]"}


@pytest.mark.parametrize(("cls", "f"), CHARS, ids=[f"{c.__name__}.{f.name}" for c, f in CHARS])
def test_char_arrays_hold_at_most_their_size(
    cls: type[UapiStruct], f: attrs.Attribute[bytes]
) -> None:
    """A char[32] takes bytes or str (encoded) up to 32 bytes; longer or other types are
    Python errors naming the field; pack pads with NULs as the C array would be."""
    assert getattr(cls(**{f.name: "timeline"}), f.name) == b"timeline"  # type: ignore[call-arg]
    full = cls(**{f.name: b"x" * 32})  # type: ignore[call-arg]
    assert cls.unpack(full.pack()) == full
    with pytest.raises(ValueError, match=f"field {f.name}="):
        cls(**{f.name: b"x" * 33})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=f"field {f.name}"):
        cls(**{f.name: 7})  # type: ignore[call-arg]


@given(field=st.sampled_from(FIELDS), data=st.data())
def test_a_value_that_fits_is_stored_as_c_stores_it(
    field: tuple[type[UapiStruct], attrs.Attribute[int]], data: st.DataObject
) -> None:
    """Rule: for every field, any int in -2**(N-1) .. 2**N-1 is accepted and reads back as
    its N-bit pattern in the field's signedness; pack/unpack is the identity on it."""
    cls, f = field
    bits, signed = _width(f)
    value = data.draw(st.integers(-(1 << (bits - 1)), (1 << bits) - 1))
    obj = cls(**{f.name: value})  # type: ignore[call-arg]
    stored = getattr(obj, f.name)
    pattern = value & ((1 << bits) - 1)
    assert stored & ((1 << bits) - 1) == pattern
    assert (stored < 0) == (signed and pattern >= 1 << (bits - 1))
    assert cls.unpack(obj.pack()) == obj


@pytest.mark.parametrize(("cls", "f"), FIELDS, ids=[f"{c.__name__}.{f.name}" for c, f in FIELDS])
def test_a_value_that_does_not_fit_or_is_not_an_int_is_a_python_error(
    cls: type[UapiStruct], f: attrs.Attribute[int]
) -> None:
    bits, _signed = _width(f)
    for bad in (1 << bits, -(1 << (bits - 1)) - 1):
        with pytest.raises(ValueError, match=f"field {f.name}="):
            cls(**{f.name: bad})  # type: ignore[call-arg]
    for bad_type in ("1", 1.0, None, True):
        with pytest.raises(TypeError, match=f"field {f.name}"):
            cls(**{f.name: bad_type})  # type: ignore[call-arg]
    obj = cls()
    with pytest.raises(ValueError):
        setattr(obj, f.name, 1 << bits)  # assignment is checked too
    assert getattr(obj, f.name) == 0


def test_signed_fd_of_2_31_reaches_the_kernel_as_a_negative_fd() -> None:
    """The issue's reproducer: DMA_BUF_IOCTL_IMPORT_SYNC_FILE with fd=2**31 is the fd
    -2**31 to the kernel; sync_file_get_fence finds no sync_file there, and
    dma_buf_import_sync_file returns EINVAL, an OSError like any other."""
    k = Kernel("latest")
    p = k.spawn("app")
    fd = EXPORTERS["system_heap"].make_fd(p, 4096, os.O_RDWR)
    arg = DmaBufImportSyncFile(flags=1, fd=2**31)
    assert arg.fd == -(2**31)
    with pytest.raises(OSError) as ei:
        p.ioctl(fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, arg)
    assert ei.value.errno == errno.EINVAL


def test_a_struct_of_another_type_is_read_and_written_as_its_bytes() -> None:
    """In C any pointer is memory: a struct of the wrong type is read as its bytes, and
    the kernel's copy-out writes over them as far as the object reaches (EFAULT past it)."""
    k = Kernel("latest")
    other = DmaBufExportSyncFile(flags=5, fd=0)
    got = copy_from_user(k, other, DmaBufSync)
    assert got == DmaBufSync(flags=5)
    assert copy_to_user(k, other, DmaBufSync(flags=(7 << 32) | 3)) == 0
    assert (other.flags, other.fd) == (3, 7)
    assert copy_from_user(k, other, DmaHeapAllocationData) == -errno.EFAULT  # 8 < 24 bytes
    assert copy_to_user(k, other, DmaHeapAllocationData()) == -errno.EFAULT
