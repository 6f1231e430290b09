"""The kernel's uapi: ioctl numbers, flags and structs, with the kernel's names.

Structs are attrs classes laid out like their C counterparts (field names,
order, widths); ``pack()``/``unpack()`` give the exact bytes, so an ioctl
argument may be passed three ways, as with a real ``ioctl(2)``:

* the struct object itself (a valid pointer) — output fields are written
  back into it, like the kernel's ``copy_to_user``;
* ``bytes`` of the packed struct (read-only, outputs discarded);
* an ``int`` user address in the calling process (``0`` is NULL); unmapped
  memory gives ``EFAULT``, exactly as ``copy_from_user`` does.

**Field values.**  Each field has its C type (``__u32``, ``__s32``, ``__u64``):
a value that fits that width as a signed or an unsigned number is stored the
way a C assignment stores it, reinterpreted in the field's type — ``-1`` in a
``__u64`` is ``0xffffffffffffffff`` and ``2**31`` in a ``__s32`` is
``-2**31`` — because those are the bytes ``copy_from_user`` gives the
kernel.  A value wider than the field, or not an ``int``, is a mistake in
the Python program (C would not compile it, or would silently drop bits):
``ValueError``/``TypeError`` naming the field, raised when the struct is built
or the field assigned, before any syscall.  Reserved fields (``pad``) are
passed through as given; the ioctls that reject a non-zero ``pad`` do so
themselves, as in the kernel.

Sources: include/uapi/linux/dma-buf.h, dma-heap.h, udmabuf.h,
include/uapi/drm/drm.h, drm_mode.h, vgem_drm.h, include/uapi/asm-generic/ioctl.h,
include/uapi/linux/fcntl.h.
"""

from __future__ import annotations

import struct as _struct
from typing import Any, ClassVar, Self

import attrs
from attrs import Attribute, Converter, define, field

__all__ = [
    "DMA_BUF_IOCTL_EXPORT_SYNC_FILE",
    "DMA_BUF_IOCTL_IMPORT_SYNC_FILE",
    "DMA_BUF_IOCTL_SYNC",
    "DMA_BUF_NAME_LEN",
    "DMA_BUF_SET_NAME",
    "DMA_BUF_SET_NAME_A",
    "DMA_BUF_SET_NAME_B",
    "DMA_BUF_SYNC_END",
    "DMA_BUF_SYNC_READ",
    "DMA_BUF_SYNC_RW",
    "DMA_BUF_SYNC_START",
    "DMA_BUF_SYNC_VALID_FLAGS_MASK",
    "DMA_BUF_SYNC_WRITE",
    "DMA_HEAP_IOCTL_ALLOC",
    "DRM_IOCTL_GEM_CLOSE",
    "DRM_IOCTL_MODE_CREATE_DUMB",
    "DRM_IOCTL_MODE_MAP_DUMB",
    "DRM_IOCTL_PRIME_FD_TO_HANDLE",
    "DRM_IOCTL_PRIME_HANDLE_TO_FD",
    "FD_CLOEXEC",
    "F_ADD_SEALS",
    "F_DUPFD",
    "F_DUPFD_CLOEXEC",
    "F_GETFD",
    "F_GETFL",
    "F_GET_SEALS",
    "F_SETFD",
    "F_SETFL",
    "UDMABUF_CREATE",
    "UDMABUF_CREATE_LIST",
    "_IO",
    "_IOC_NR",
    "_IOC_SIZE",
    "_IOC_TYPE",
    "_IOR",
    "_IOW",
    "_IOWR",
    "DmaBufExportSyncFile",
    "DmaBufImportSyncFile",
    "DmaBufSync",
    "DmaHeapAllocationData",
    "DrmGemClose",
    "DrmModeCreateDumb",
    "DrmModeMapDumb",
    "DrmPrimeHandle",
    "UapiStruct",
    "UdmabufCreate",
]

# -- include/uapi/asm-generic/ioctl.h ----------------------------------------------
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS, _IOC_DIRBITS = 8, 8, 14, 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, typ: int | str, nr: int, size: int) -> int:
    t = ord(typ) if isinstance(typ, str) else typ
    return (
        (direction << _IOC_DIRSHIFT)
        | (t << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(typ: int | str, nr: int) -> int:
    return _IOC(_IOC_NONE, typ, nr, 0)


def _IOR(typ: int | str, nr: int, size: int) -> int:
    return _IOC(_IOC_READ, typ, nr, size)


def _IOW(typ: int | str, nr: int, size: int) -> int:
    return _IOC(_IOC_WRITE, typ, nr, size)


def _IOWR(typ: int | str, nr: int, size: int) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, size)


def _IOC_TYPE(cmd: int) -> int:
    return (cmd >> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1)


def _IOC_NR(cmd: int) -> int:
    return (cmd >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1)


def _IOC_SIZE(cmd: int) -> int:
    return (cmd >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)


class UapiStruct:
    """Mixin for uapi structs: ``_fmt`` is the little-endian ``struct`` layout."""

    __slots__ = ()
    _fmt: ClassVar[str]

    @classmethod
    def sizeof(cls) -> int:
        return _struct.calcsize(cls._fmt)

    def pack(self) -> bytes:
        return _struct.pack(self._fmt, *attrs.astuple(self))  # type: ignore[arg-type]

    @classmethod
    def unpack(cls, data: bytes) -> Self:
        return cls(*_struct.unpack(cls._fmt, data))

    def update_from(self, other: Any) -> None:
        """Write the kernel's copy back into the caller's object (``copy_to_user``)."""
        for f in attrs.fields(type(self)):  # type: ignore[arg-type]
            setattr(self, f.name, getattr(other, f.name))


def _c_value(value: object, bits: int, signed: bool, name: str) -> int:
    """What a C assignment of ``value`` to a ``bits``-wide field stores."""
    ctype = f"__{'s' if signed else 'u'}{bits}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"field {name} ({ctype}) must be an int, not {type(value).__name__}")
    if not -(1 << (bits - 1)) <= value < 1 << bits:
        raise ValueError(
            f"field {name}={value} does not fit in {ctype}"
            f" (allowed: -2**{bits - 1} .. 2**{bits}-1, stored as the C type)"
        )
    value &= (1 << bits) - 1
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _cfield(bits: int, signed: bool) -> Any:
    def convert(value: object, fld: Attribute[int]) -> int:
        return _c_value(value, bits, signed, fld.name)

    ctype = f"__{'s' if signed else 'u'}{bits}"
    return field(
        default=0, converter=Converter(convert, takes_field=True), metadata={"ctype": ctype}
    )


def _u(bits: int) -> Any:
    return _cfield(bits, signed=False)


def _s32() -> Any:
    return _cfield(32, signed=True)


# -- include/uapi/linux/dma-buf.h -------------------------------------------------
@define(slots=True)
class DmaBufSync(UapiStruct):
    """``struct dma_buf_sync { __u64 flags; }``"""

    _fmt: ClassVar[str] = "<Q"
    flags: int = _u(64)


@define(slots=True)
class DmaBufExportSyncFile(UapiStruct):
    """``struct dma_buf_export_sync_file { __u32 flags; __s32 fd; }``"""

    _fmt: ClassVar[str] = "<Ii"
    flags: int = _u(32)
    fd: int = _s32()


@define(slots=True)
class DmaBufImportSyncFile(UapiStruct):
    """``struct dma_buf_import_sync_file { __u32 flags; __s32 fd; }``"""

    _fmt: ClassVar[str] = "<Ii"
    flags: int = _u(32)
    fd: int = _s32()


DMA_BUF_SYNC_READ = 1 << 0
DMA_BUF_SYNC_WRITE = 2 << 0
DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
DMA_BUF_SYNC_START = 0 << 2
DMA_BUF_SYNC_END = 1 << 2
DMA_BUF_SYNC_VALID_FLAGS_MASK = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END
DMA_BUF_NAME_LEN = 32
DMA_BUF_BASE = "b"
DMA_BUF_IOCTL_SYNC = _IOW(DMA_BUF_BASE, 0, DmaBufSync.sizeof())
DMA_BUF_SET_NAME_A = _IOW(DMA_BUF_BASE, 1, 4)  # __u32
DMA_BUF_SET_NAME_B = _IOW(DMA_BUF_BASE, 1, 8)  # __u64
DMA_BUF_SET_NAME = DMA_BUF_SET_NAME_B  # _IOW('b', 1, const char *) on 64-bit
DMA_BUF_IOCTL_EXPORT_SYNC_FILE = _IOWR(DMA_BUF_BASE, 2, DmaBufExportSyncFile.sizeof())
DMA_BUF_IOCTL_IMPORT_SYNC_FILE = _IOW(DMA_BUF_BASE, 3, DmaBufImportSyncFile.sizeof())


# -- include/uapi/linux/dma-heap.h ------------------------------------------------
@define(slots=True)
class DmaHeapAllocationData(UapiStruct):
    """``struct dma_heap_allocation_data``: ``__u64 len; __u32 fd, fd_flags; __u64 heap_flags``"""

    _fmt: ClassVar[str] = "<QIIQ"
    len: int = _u(64)
    fd: int = _u(32)
    fd_flags: int = _u(32)
    heap_flags: int = _u(64)


DMA_HEAP_IOC_MAGIC = "H"
DMA_HEAP_IOCTL_ALLOC = _IOWR(DMA_HEAP_IOC_MAGIC, 0x0, DmaHeapAllocationData.sizeof())
DMA_HEAP_VALID_HEAP_FLAGS = 0


# -- include/uapi/linux/udmabuf.h -------------------------------------------------
UDMABUF_FLAGS_CLOEXEC = 0x01


@define(slots=True)
class UdmabufCreate(UapiStruct):
    """``struct udmabuf_create { __u32 memfd; __u32 flags; __u64 offset; __u64 size; }``"""

    _fmt: ClassVar[str] = "<IIQQ"
    memfd: int = _u(32)
    flags: int = _u(32)
    offset: int = _u(64)
    size: int = _u(64)


UDMABUF_CREATE = _IOW("u", 0x42, UdmabufCreate.sizeof())
UDMABUF_CREATE_LIST = _IOW("u", 0x43, 8)  # struct udmabuf_create_list header

# -- include/uapi/drm ---------------------------------------------------------------
DRM_IOCTL_BASE = "d"
DRM_CLOEXEC = 0o2000000  # O_CLOEXEC
DRM_RDWR = 0o2  # O_RDWR


@define(slots=True)
class DrmGemClose(UapiStruct):
    """``struct drm_gem_close { __u32 handle; __u32 pad; }``"""

    _fmt: ClassVar[str] = "<II"
    handle: int = _u(32)
    pad: int = _u(32)


@define(slots=True)
class DrmPrimeHandle(UapiStruct):
    """``struct drm_prime_handle { __u32 handle; __u32 flags; __s32 fd; }``"""

    _fmt: ClassVar[str] = "<IIi"
    handle: int = _u(32)
    flags: int = _u(32)
    fd: int = _s32()


@define(slots=True)
class DrmModeCreateDumb(UapiStruct):
    """``struct drm_mode_create_dumb``: six ``__u32`` (height .. pitch), ``__u64 size``"""

    _fmt: ClassVar[str] = "<IIIIIIQ"
    height: int = _u(32)
    width: int = _u(32)
    bpp: int = _u(32)
    flags: int = _u(32)
    handle: int = _u(32)
    pitch: int = _u(32)
    size: int = _u(64)


@define(slots=True)
class DrmModeMapDumb(UapiStruct):
    """``struct drm_mode_map_dumb { __u32 handle; __u32 pad; __u64 offset; }``"""

    _fmt: ClassVar[str] = "<IIQ"
    handle: int = _u(32)
    pad: int = _u(32)
    offset: int = _u(64)


DRM_IOCTL_GEM_CLOSE = _IOW(DRM_IOCTL_BASE, 0x09, DrmGemClose.sizeof())
DRM_IOCTL_PRIME_HANDLE_TO_FD = _IOWR(DRM_IOCTL_BASE, 0x2D, DrmPrimeHandle.sizeof())
DRM_IOCTL_PRIME_FD_TO_HANDLE = _IOWR(DRM_IOCTL_BASE, 0x2E, DrmPrimeHandle.sizeof())
DRM_IOCTL_MODE_CREATE_DUMB = _IOWR(DRM_IOCTL_BASE, 0xB2, DrmModeCreateDumb.sizeof())
DRM_IOCTL_MODE_MAP_DUMB = _IOWR(DRM_IOCTL_BASE, 0xB3, DrmModeMapDumb.sizeof())

# -- include/uapi/linux/fcntl.h, poll.h, fs.h -------------------------------------
F_DUPFD = 0  # include/uapi/asm-generic/fcntl.h
F_GETFD = 1
F_SETFD = 2
F_GETFL = 3
F_SETFL = 4
FD_CLOEXEC = 1
F_LINUX_SPECIFIC_BASE = 1024
F_DUPFD_CLOEXEC = F_LINUX_SPECIFIC_BASE + 6
F_ADD_SEALS = F_LINUX_SPECIFIC_BASE + 9
F_GET_SEALS = F_LINUX_SPECIFIC_BASE + 10
POLLIN = 0x0001
POLLPRI = 0x0002
POLLOUT = 0x0004
POLLERR = 0x0008
POLLHUP = 0x0010
POLLNVAL = 0x0020
POLLRDNORM = 0x0040
POLLWRNORM = 0x0100
DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM
FIOCLEX = 0x5451
FIONCLEX = 0x5450
FIONBIO = 0x5421

# -- include/uapi/drm/drm.h (driver range), include/uapi/drm/vgem_drm.h -------------
DRM_COMMAND_BASE = 0x40
DRM_COMMAND_END = 0xA0
VGEM_FENCE_WRITE = 0x1
DRM_VGEM_FENCE_ATTACH = 0x1
DRM_VGEM_FENCE_SIGNAL = 0x2


@define(slots=True)
class DrmVgemFenceAttach(UapiStruct):
    """``struct drm_vgem_fence_attach``: ``__u32 handle, flags, out_fence, pad``"""

    _fmt: ClassVar[str] = "<IIII"
    handle: int = _u(32)
    flags: int = _u(32)
    out_fence: int = _u(32)
    pad: int = _u(32)


@define(slots=True)
class DrmVgemFenceSignal(UapiStruct):
    """``struct drm_vgem_fence_signal { __u32 fence; __u32 flags; }``"""

    _fmt: ClassVar[str] = "<II"
    fence: int = _u(32)
    flags: int = _u(32)


DRM_IOCTL_VGEM_FENCE_ATTACH = _IOWR(
    DRM_IOCTL_BASE, DRM_COMMAND_BASE + DRM_VGEM_FENCE_ATTACH, DrmVgemFenceAttach.sizeof()
)
DRM_IOCTL_VGEM_FENCE_SIGNAL = _IOW(
    DRM_IOCTL_BASE, DRM_COMMAND_BASE + DRM_VGEM_FENCE_SIGNAL, DrmVgemFenceSignal.sizeof()
)

__all__ += [
    "DRM_COMMAND_BASE",
    "DRM_COMMAND_END",
    "DRM_IOCTL_VGEM_FENCE_ATTACH",
    "DRM_IOCTL_VGEM_FENCE_SIGNAL",
    "DRM_VGEM_FENCE_ATTACH",
    "DRM_VGEM_FENCE_SIGNAL",
    "VGEM_FENCE_WRITE",
    "DrmVgemFenceAttach",
    "DrmVgemFenceSignal",
]


# -- include/uapi/linux/sync_file.h ---------------------------------------------------
def _chars(value: object, size: int, name: str) -> bytes:
    """What ``char name[size]`` holds: bytes (a str is UTF-8 encoded), at most ``size``,
    without the NULs that pad the array."""
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"field {name} (char[{size}]) must be bytes or str, not {type(value).__name__}"
        )
    data = bytes(value)
    if len(data) > size:
        raise ValueError(f"field {name}={data!r} does not fit in char[{size}]")
    return data.rstrip(b"\0")  # the NUL padding of the C array is not part of the name


def _name32() -> Any:
    def convert(value: object, fld: Attribute[bytes]) -> bytes:
        return _chars(value, 32, fld.name)

    return field(
        default=b"", converter=Converter(convert, takes_field=True), metadata={"ctype": "char[32]"}
    )


@define(slots=True)
class SyncFenceInfo(UapiStruct):
    """``struct sync_fence_info``: ``char obj_name[32], driver_name[32]; __s32 status;
    __u32 flags; __u64 timestamp_ns``"""

    _fmt: ClassVar[str] = "<32s32siIQ"
    obj_name: bytes = _name32()
    driver_name: bytes = _name32()
    status: int = _s32()
    flags: int = _u(32)
    timestamp_ns: int = _u(64)


@define(slots=True)
class SyncFileInfo(UapiStruct):
    """``struct sync_file_info``: ``char name[32]; __s32 status; __u32 flags, num_fences,
    pad; __u64 sync_fence_info`` (a user pointer to ``num_fences`` SyncFenceInfo)"""

    _fmt: ClassVar[str] = "<32siIIIQ"
    name: bytes = _name32()
    status: int = _s32()
    flags: int = _u(32)
    num_fences: int = _u(32)
    pad: int = _u(32)
    sync_fence_info: int = _u(64)


@define(slots=True)
class SyncMergeData(UapiStruct):
    """``struct sync_merge_data``: ``char name[32]; __s32 fd2, fence; __u32 flags, pad``"""

    _fmt: ClassVar[str] = "<32siiII"
    name: bytes = _name32()
    fd2: int = _s32()
    fence: int = _s32()
    flags: int = _u(32)
    pad: int = _u(32)


SYNC_IOC_MAGIC = ">"
SYNC_IOC_MERGE = _IOWR(SYNC_IOC_MAGIC, 3, SyncMergeData.sizeof())
SYNC_IOC_FILE_INFO = _IOWR(SYNC_IOC_MAGIC, 4, SyncFileInfo.sizeof())


# -- drivers/dma-buf/sw_sync.c (no uapi header: IGT and the selftests copy these) -------
@define(slots=True)
class SwSyncCreateFenceData(UapiStruct):
    """``struct sw_sync_create_fence_data``: ``__u32 value; char name[32]; __s32 fence``"""

    _fmt: ClassVar[str] = "<I32si"
    value: int = _u(32)
    name: bytes = _name32()
    fence: int = _s32()


SW_SYNC_IOC_MAGIC = "W"
SW_SYNC_IOC_CREATE_FENCE = _IOWR(SW_SYNC_IOC_MAGIC, 0, SwSyncCreateFenceData.sizeof())
SW_SYNC_IOC_INC = _IOW(SW_SYNC_IOC_MAGIC, 1, 4)  # __u32 through a pointer
SW_SYNC_PATH = "/sys/kernel/debug/sync/sw_sync"
"""``<debugfs>/sync/sw_sync``: each open makes a timeline."""

__all__ += [
    "SW_SYNC_IOC_CREATE_FENCE",
    "SW_SYNC_IOC_INC",
    "SW_SYNC_PATH",
    "SYNC_IOC_FILE_INFO",
    "SYNC_IOC_MERGE",
    "SwSyncCreateFenceData",
    "SyncFenceInfo",
    "SyncFileInfo",
    "SyncMergeData",
]
