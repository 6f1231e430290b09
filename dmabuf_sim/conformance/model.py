"""What the kit expects: the objects a program makes, and the bytes each buffer must hold.

The state machine (:mod:`.machine`) hands out *references* — a buffer, a
mapping, an attachment, a child process, a kernel mapping — that later steps
take as arguments; a reproducer names them ``b1``, ``m1``, ``a1``, ``c1``,
``v1`` in the order they were made.

Each buffer carries a model of its contents: the last value written to each
byte and whether that value is *known* (a fresh buffer is known to be zero
when the exporter promises zero-filled buffers).  Reads are compared with it
only when the protocol makes the result definite; :class:`Bracket` records the
CPU access in progress (``DMA_BUF_IOCTL_SYNC`` START .. END, or
``dma_buf_begin/end_cpu_access``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field

from ..mm.cache import LINE_SIZE
from ..mm.page_alloc import PAGE_SIZE

if TYPE_CHECKING:
    from ..device import Device, DmaDataDirection, SgTable
    from ..dma_buf.core import DmaBufAttachment, IosysMap
    from ..mm.vmalloc import KernelMapping
    from ..process import Process
    from .sanitizers import TrackedBuffer

__all__ = ["AttRef", "Bracket", "BufRef", "ChildRef", "MapRef", "VmapRef"]

#: SYNC directions as the kit writes them, and what each lets the CPU do.
DIRECTIONS = ("read", "write", "rw")


@define(eq=False, slots=True)
class Bracket:
    """A CPU access in progress on one buffer."""

    direction: str
    """``read``, ``write`` or ``rw``."""
    via: str
    """``ioctl`` (DMA_BUF_IOCTL_SYNC) or ``kernel`` (dma_buf_begin_cpu_access)."""

    @property
    def reads(self) -> bool:
        """Reads are judged: the begin invalidated for the CPU (not for WRITE alone)."""
        return self.direction != "write"

    @property
    def writes(self) -> bool:
        return self.direction != "read"


@define(eq=False, slots=True)
class BufRef:
    """A buffer: its control fd, its pages (``tracked``) and the model of its bytes."""

    name: str
    tracked: TrackedBuffer = field(repr=False)
    fd: int | None = field(repr=False)
    size: int = field(repr=False)
    model: bytearray = field(repr=False)
    known: bytearray = field(repr=False)
    """1 where the last value written is known (the model byte is what a read must see)."""
    writer: list[str] = field(repr=False)
    """Per page: who wrote it last (for messages)."""
    bracket: Bracket | None = field(default=None, repr=False)
    atts: list[AttRef] = field(factory=list, repr=False)
    vmaps: list[VmapRef] = field(factory=list, repr=False)
    handle: int | None = field(default=None, repr=False)
    """The GEM handle of its import into vgem, once imported."""

    def __repr__(self) -> str:
        return self.name

    @property
    def mappable(self) -> int:
        """Pages an mmap may cover: the core floors the size (R2)."""
        return self.size // PAGE_SIZE

    @property
    def backing(self) -> int:
        """Pages of memory behind the buffer (the size rounded up)."""
        return self.tracked.backing

    def device_mapped(self) -> bool:
        """Is some attachment mapped for a device (the buffer is in the device domain)?"""
        return any(a.sgt is not None for a in self.atts)

    def store(self, offset: int, data: bytes, who: str, *, whole_lines: bool) -> None:
        """Record a write of ``data`` at ``offset``.

        ``whole_lines=False`` (a CPU write under a WRITE-only bracket, whose begin
        need not invalidate): the rest of each cache line touched is no longer
        known, since a stale line may be written back over it.
        """
        end = offset + len(data)
        if not whole_lines:
            lo = offset - offset % LINE_SIZE
            hi = min(self.size, -(-end // LINE_SIZE) * LINE_SIZE)
            self.known[lo:hi] = bytes(hi - lo)
        self.model[offset:end] = data
        self.known[offset:end] = b"\x01" * len(data)
        for page in range(offset // PAGE_SIZE, (end - 1) // PAGE_SIZE + 1):
            self.writer[page] = who

    def first_mismatch(self, offset: int, got: bytes) -> int | None:
        """Index into ``got`` of the first known byte that differs from the model."""
        model, known = self.model, self.known
        for i, byte in enumerate(got):
            if known[offset + i] and model[offset + i] != byte:
                return i
        return None


@define(eq=False, slots=True)
class MapRef:
    """A range the kit mapped: ``pages`` pages at ``addr``, showing buffer page ``first_page``.

    ``holders`` are the processes that have it: its owner, and children that
    inherited the vma (a child keeps its copy when the owner unmaps or remaps).
    """

    name: str
    buf: BufRef = field(repr=False)
    owner: Process = field(repr=False)
    addr: int = field(repr=False)
    pages: int = field(repr=False)
    first_page: int = field(repr=False)
    writable: bool = field(default=True, repr=False)
    private: bool = field(default=False, repr=False)
    imported: bool = field(default=False, repr=False)
    """Mapped through an importer (vgem) that forwarded with dma_buf_mmap."""
    judge: bool = field(default=True, repr=False)
    """False where the exporter's page indexing makes the expected page unknowable."""
    holders: list[Process] = field(factory=list, repr=False)
    cow: dict[int, tuple[bytearray, bytearray]] = field(factory=dict, repr=False)
    """Private mappings: page -> (contents, known mask) of the process's own copy."""

    def __repr__(self) -> str:
        return self.name

    @property
    def usable(self) -> int:
        """Bytes at the start of the mapping that lie inside the buffer's mappable pages."""
        return max(0, min(self.pages, self.buf.mappable - self.first_page)) * PAGE_SIZE


@define(eq=False, slots=True)
class AttRef:
    """A device attached to a buffer (holding a dma_buf_get reference), mapped or not."""

    name: str
    buf: BufRef = field(repr=False)
    dev: Device = field(repr=False)
    attach: DmaBufAttachment = field(repr=False)
    sgt: SgTable | None = field(default=None, repr=False)
    direction: DmaDataDirection | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return self.name


@define(eq=False, slots=True)
class ChildRef:
    """A forked child process."""

    name: str
    proc: Process = field(repr=False)

    def __repr__(self) -> str:
        return self.name


@define(eq=False, slots=True)
class VmapRef:
    """A kernel mapping of a buffer (dma_buf_vmap), holding a dma_buf_get reference."""

    name: str
    buf: BufRef = field(repr=False)
    map: IosysMap = field(repr=False)
    vaddr: KernelMapping = field(repr=False)

    def __repr__(self) -> str:
        return self.name
