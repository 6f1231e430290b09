"""The numbers a syscall script may name: Linux x86-64 constants and ioctl layouts.

Both sides read this one table.  The simulator side uses it directly; the C
interpreter that runs scripts on a real kernel gets it as a generated header
(:func:`c_header`), so a constant or a struct field can never mean one thing
in the simulator and another in the VM.

Values are the x86-64 ABI's, written out rather than taken from Python's
:mod:`os`/:mmap` modules, so a script means the same on any host.  The
dma-buf, dma-heap, udmabuf and DRM numbers come from :mod:`dmabuf_sim.uapi`.
"""

from __future__ import annotations

import errno as _errno
import struct as _struct
from collections.abc import Mapping
from types import MappingProxyType

import attrs
from attrs import frozen

from .. import uapi

__all__ = [
    "CONSTANTS",
    "ERRNO_NAMES",
    "IOCTL_STRUCTS",
    "SIGNALS",
    "SI_CODES",
    "FieldKind",
    "IoctlStruct",
    "StructField",
    "c_header",
    "ioc",
]


def ioc(kind: str, typ: int, nr: int, size: int = 0) -> int:
    """``_IO``/``_IOR``/``_IOW``/``_IOWR`` (include/uapi/asm-generic/ioctl.h)."""
    maker = {"_IO": None, "_IOR": uapi._IOR, "_IOW": uapi._IOW, "_IOWR": uapi._IOWR}[kind]
    return uapi._IO(typ, nr) if maker is None else maker(typ, nr, size)


_FLAGS: dict[str, int] = {
    # include/uapi/asm-generic/fcntl.h (x86-64)
    "O_RDONLY": 0,
    "O_WRONLY": 0o1,
    "O_RDWR": 0o2,
    "O_ACCMODE": 0o3,
    "O_CREAT": 0o100,
    "O_EXCL": 0o200,
    "O_NOCTTY": 0o400,
    "O_TRUNC": 0o1000,
    "O_APPEND": 0o2000,
    "O_NONBLOCK": 0o4000,
    "O_DSYNC": 0o10000,
    "O_DIRECT": 0o40000,
    "O_LARGEFILE": 0o100000,
    "O_DIRECTORY": 0o200000,
    "O_NOFOLLOW": 0o400000,
    "O_NOATIME": 0o1000000,
    "O_CLOEXEC": 0o2000000,
    "O_PATH": 0o10000000,
    # include/uapi/asm-generic/mman-common.h, mman.h
    "PROT_NONE": 0,
    "PROT_READ": 0x1,
    "PROT_WRITE": 0x2,
    "PROT_EXEC": 0x4,
    "PROT_SEM": 0x8,
    "PROT_GROWSDOWN": 0x01000000,
    "PROT_GROWSUP": 0x02000000,
    "MAP_SHARED": 0x01,
    "MAP_PRIVATE": 0x02,
    "MAP_SHARED_VALIDATE": 0x03,
    "MAP_FIXED": 0x10,
    "MAP_ANONYMOUS": 0x20,
    "MAP_GROWSDOWN": 0x0100,
    "MAP_DENYWRITE": 0x0800,
    "MAP_EXECUTABLE": 0x1000,
    "MAP_LOCKED": 0x2000,
    "MAP_NORESERVE": 0x4000,
    "MAP_POPULATE": 0x8000,
    "MAP_NONBLOCK": 0x10000,
    "MAP_STACK": 0x20000,
    "MAP_HUGETLB": 0x40000,
    "MAP_SYNC": 0x80000,
    "MAP_FIXED_NOREPLACE": 0x100000,
    "MREMAP_MAYMOVE": 1,
    "MREMAP_FIXED": 2,
    "MREMAP_DONTUNMAP": 4,
    # include/uapi/linux/fs.h, fcntl.h, memfd.h
    "SEEK_SET": 0,
    "SEEK_CUR": 1,
    "SEEK_END": 2,
    "SEEK_DATA": 3,
    "SEEK_HOLE": 4,
    "F_DUPFD": 0,
    "F_GETFD": 1,
    "F_SETFD": 2,
    "F_GETFL": 3,
    "F_SETFL": 4,
    "F_DUPFD_CLOEXEC": 1030,
    "F_ADD_SEALS": uapi.F_ADD_SEALS,
    "F_GET_SEALS": uapi.F_GET_SEALS,
    "FD_CLOEXEC": 1,
    "F_SEAL_SEAL": 0x1,
    "F_SEAL_SHRINK": 0x2,
    "F_SEAL_GROW": 0x4,
    "F_SEAL_WRITE": 0x8,
    "F_SEAL_FUTURE_WRITE": 0x10,
    "MFD_CLOEXEC": 0x1,
    "MFD_ALLOW_SEALING": 0x2,
    # include/uapi/asm-generic/poll.h
    "POLLIN": uapi.POLLIN,
    "POLLPRI": uapi.POLLPRI,
    "POLLOUT": uapi.POLLOUT,
    "POLLERR": uapi.POLLERR,
    "POLLHUP": uapi.POLLHUP,
    "POLLNVAL": uapi.POLLNVAL,
    "POLLRDNORM": uapi.POLLRDNORM,
    "POLLWRNORM": uapi.POLLWRNORM,
    # include/uapi/asm-generic/ioctls.h
    "FIOCLEX": uapi.FIOCLEX,
    "FIONCLEX": uapi.FIONCLEX,
    "FIONBIO": uapi.FIONBIO,
    # dma-buf, dma-heap, udmabuf, DRM
    "DMA_BUF_SYNC_READ": uapi.DMA_BUF_SYNC_READ,
    "DMA_BUF_SYNC_WRITE": uapi.DMA_BUF_SYNC_WRITE,
    "DMA_BUF_SYNC_RW": uapi.DMA_BUF_SYNC_RW,
    "DMA_BUF_SYNC_START": uapi.DMA_BUF_SYNC_START,
    "DMA_BUF_SYNC_END": uapi.DMA_BUF_SYNC_END,
    "DMA_BUF_SYNC_VALID_FLAGS_MASK": uapi.DMA_BUF_SYNC_VALID_FLAGS_MASK,
    "DMA_BUF_IOCTL_SYNC": uapi.DMA_BUF_IOCTL_SYNC,
    "DMA_BUF_SET_NAME": uapi.DMA_BUF_SET_NAME,
    "DMA_BUF_SET_NAME_A": uapi.DMA_BUF_SET_NAME_A,
    "DMA_BUF_SET_NAME_B": uapi.DMA_BUF_SET_NAME_B,
    "DMA_BUF_IOCTL_EXPORT_SYNC_FILE": uapi.DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    "DMA_BUF_IOCTL_IMPORT_SYNC_FILE": uapi.DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
    "DMA_HEAP_IOCTL_ALLOC": uapi.DMA_HEAP_IOCTL_ALLOC,
    "UDMABUF_CREATE": uapi.UDMABUF_CREATE,
    "UDMABUF_FLAGS_CLOEXEC": uapi.UDMABUF_FLAGS_CLOEXEC,
    "DRM_CLOEXEC": uapi.DRM_CLOEXEC,
    "DRM_RDWR": uapi.DRM_RDWR,
    "DRM_IOCTL_GEM_CLOSE": uapi.DRM_IOCTL_GEM_CLOSE,
    "DRM_IOCTL_PRIME_HANDLE_TO_FD": uapi.DRM_IOCTL_PRIME_HANDLE_TO_FD,
    "DRM_IOCTL_PRIME_FD_TO_HANDLE": uapi.DRM_IOCTL_PRIME_FD_TO_HANDLE,
    "DRM_IOCTL_MODE_CREATE_DUMB": uapi.DRM_IOCTL_MODE_CREATE_DUMB,
    "DRM_IOCTL_MODE_MAP_DUMB": uapi.DRM_IOCTL_MODE_MAP_DUMB,
    "DRM_IOCTL_VGEM_FENCE_ATTACH": uapi.DRM_IOCTL_VGEM_FENCE_ATTACH,
    "DRM_IOCTL_VGEM_FENCE_SIGNAL": uapi.DRM_IOCTL_VGEM_FENCE_SIGNAL,
    "VGEM_FENCE_WRITE": uapi.VGEM_FENCE_WRITE,
    # handy
    "NULL": 0,
    "PAGE_SIZE": 4096,
}

CONSTANTS: Mapping[str, int] = MappingProxyType(_FLAGS)
"""Every identifier a script may use as a number."""

SIGNALS: Mapping[int, str] = MappingProxyType({7: "SIGBUS", 11: "SIGSEGV"})
SI_CODES: Mapping[tuple[int, int], str] = MappingProxyType(
    {
        (11, 1): "SEGV_MAPERR",
        (11, 2): "SEGV_ACCERR",
        (11, 4): "SEGV_PKUERR",
        (7, 1): "BUS_ADRALN",
        (7, 2): "BUS_ADRERR",
        (7, 3): "BUS_OBJERR",
        (7, 4): "BUS_MCEERR_AR",
        (7, 5): "BUS_MCEERR_AO",
    }
)
ERRNO_NAMES: Mapping[int, str] = MappingProxyType(dict(_errno.errorcode))
"""errno number → name (Linux numbering)."""

FieldKind = str
"""``value`` (compared as a number), ``fd`` and ``handle`` (named, never compared as
numbers: each side allocates its own), ``opaque`` (a kernel cookie such as an mmap
offset or a fence id: named, not compared)."""


@frozen
class StructField:
    name: str
    offset: int
    size: int
    signed: bool
    kind: FieldKind
    out: bool
    """Written by the kernel (the script may bind it with ``{name=$x}``)."""


@frozen
class IoctlStruct:
    """The argument struct of one ioctl request, laid out as in C."""

    request: str
    struct: str
    size: int
    fields: tuple[StructField, ...]
    returns_fd: bool = False

    def field(self, name: str) -> StructField | None:
        return next((f for f in self.fields if f.name == name), None)


def _layout(
    request: str,
    cls: type[uapi.UapiStruct],
    kinds: dict[str, str],
    outs: set[str],
    *,
    returns_fd: bool = False,
) -> IoctlStruct:
    fmt = cls._fmt
    fields: list[StructField] = []
    offset = 0
    codes = fmt.lstrip("<")
    for code, a in zip(codes, attrs.fields(cls), strict=True):  # type: ignore[arg-type]
        size = _struct.calcsize("<" + code)
        fields.append(
            StructField(
                a.name, offset, size, code.islower(), kinds.get(a.name, "value"), a.name in outs
            )
        )
        offset += size
    return IoctlStruct(request, cls.__name__, offset, tuple(fields), returns_fd)


IOCTL_STRUCTS: Mapping[str, IoctlStruct] = MappingProxyType(
    {
        s.request: s
        for s in (
            _layout("DMA_BUF_IOCTL_SYNC", uapi.DmaBufSync, {}, set()),
            _layout(
                "DMA_BUF_IOCTL_EXPORT_SYNC_FILE", uapi.DmaBufExportSyncFile, {"fd": "fd"}, {"fd"}
            ),
            _layout(
                "DMA_BUF_IOCTL_IMPORT_SYNC_FILE", uapi.DmaBufImportSyncFile, {"fd": "fd"}, set()
            ),
            _layout("DMA_HEAP_IOCTL_ALLOC", uapi.DmaHeapAllocationData, {"fd": "fd"}, {"fd"}),
            _layout("UDMABUF_CREATE", uapi.UdmabufCreate, {"memfd": "fd"}, set(), returns_fd=True),
            _layout("DRM_IOCTL_GEM_CLOSE", uapi.DrmGemClose, {"handle": "handle"}, set()),
            _layout(
                "DRM_IOCTL_PRIME_HANDLE_TO_FD",
                uapi.DrmPrimeHandle,
                {"handle": "handle", "fd": "fd"},
                {"fd"},
            ),
            _layout(
                "DRM_IOCTL_PRIME_FD_TO_HANDLE",
                uapi.DrmPrimeHandle,
                {"handle": "handle", "fd": "fd"},
                {"handle"},
            ),
            _layout(
                "DRM_IOCTL_MODE_CREATE_DUMB",
                uapi.DrmModeCreateDumb,
                {"handle": "handle"},
                {"handle", "pitch", "size"},
            ),
            _layout(
                "DRM_IOCTL_MODE_MAP_DUMB",
                uapi.DrmModeMapDumb,
                {"handle": "handle", "offset": "opaque"},
                {"offset"},
            ),
            _layout(
                "DRM_IOCTL_VGEM_FENCE_ATTACH",
                uapi.DrmVgemFenceAttach,
                {"handle": "handle", "out_fence": "opaque"},
                {"out_fence"},
            ),
            _layout(
                "DRM_IOCTL_VGEM_FENCE_SIGNAL", uapi.DrmVgemFenceSignal, {"fence": "opaque"}, set()
            ),
        )
    }
)
"""Requests whose argument may be written as a struct literal ``{field=value, ...}``."""


def struct_class(request: str) -> type[uapi.UapiStruct]:
    """The :mod:`dmabuf_sim.uapi` class of a request's argument struct."""
    return getattr(uapi, IOCTL_STRUCTS[request].struct)  # type: ignore[no-any-return]


def c_header() -> str:
    """The constants and struct layouts as C, for the VM-side interpreter."""
    out = ["/* Generated by dmabuf_sim.differential.abi: do not edit. */", ""]
    out.append("static const struct script_const script_consts[] = {")
    for name, value in _FLAGS.items():
        out.append(f'\t{{"{name}", {value}ULL}},')
    out.append("\t{0, 0}\n};\n")
    for s in IOCTL_STRUCTS.values():
        out.append(f"static const struct script_field fields_{s.request}[] = {{")
        for f in s.fields:
            row = f'"{f.name}", {f.offset}, {f.size}, {int(f.signed)}, "{f.kind}", {int(f.out)}'
            out.append(f"\t{{{row}}},")
        out.append("\t{0, 0, 0, 0, 0, 0}\n};")
    out.append("\nstatic const struct script_struct script_structs[] = {")
    for s in IOCTL_STRUCTS.values():
        value = _FLAGS[s.request]
        out.append(
            f'\t{{"{s.request}", {value}ULL, {s.size}, {int(s.returns_fd)}, fields_{s.request}}},'
        )
    out.append("\t{0, 0, 0, 0, 0}\n};")
    return "\n".join(out) + "\n"
