"""What each byte *should* hold, and every read that saw something else.

:class:`CoherencyChecker` observes memory accesses (:mod:`dmabuf_sim.observe`):
it records the last value any agent (a CPU load/store path or a device's DMA)
wrote to each byte, in program order, and compares every read with it.  A read that returns
anything else is a :class:`StaleRead` — the simulator's way of saying
"stale read at A: the CPU saw X, but device gpu wrote Y".

It does not judge *why*: a CPU that reads a buffer without
``DMA_BUF_IOCTL_SYNC`` may legitimately see old data on a non-coherent
system; the conformance kit decides which stale reads break a rule (those
made under the sync protocol, or through a mapping that promises coherency).

Simplified: the last writer is remembered per page, the value per byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from .mm.page_alloc import PAGE_SHIFT, PAGE_SIZE, page_pieces

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["CoherencyChecker", "StaleRead"]


@frozen
class StaleRead:
    """A read that did not return the last value written."""

    reader: str
    pa: int
    saw: bytes
    expected: bytes
    last_writer: str

    def __str__(self) -> str:
        first = next(
            i for i, (a, b) in enumerate(zip(self.saw, self.expected, strict=True)) if a != b
        )
        return (
            f"stale read at pa {self.pa + first:#x} by {self.reader}: saw"
            f" {self.saw[first : first + 8].hex()}, but {self.last_writer} wrote"
            f" {self.expected[first : first + 8].hex()}"
        )


@define(eq=False, slots=True)
class CoherencyChecker:
    """The truth record; install with :meth:`attach`."""

    kernel: Kernel = field(repr=False)
    truth: dict[int, bytearray] = field(factory=dict, repr=False)
    writer: dict[int, str] = field(factory=dict, repr=False)
    stale: list[StaleRead] = field(factory=list)
    checked_reads: int = 0
    _detach: Any = field(default=None, repr=False)

    @classmethod
    def attach(cls, kernel: Kernel) -> CoherencyChecker:
        checker = cls(kernel)
        checker._detach = kernel.observe(checker)
        return checker

    def detach(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None

    # -- observer hooks ---------------------------------------------------------------
    def on_cpu_access(self, pa: int, data: bytes, write: bool, origin: str) -> None:
        if write:
            self._record(pa, data, origin)
        else:
            self._check(pa, data, origin)

    def on_device_access(self, dev: Any, pa: int, data: bytes, write: bool) -> None:
        who = f"device {getattr(dev, 'name', dev)}"
        if write:
            self._record(pa, data, who)
        else:
            self._check(pa, data, who)

    def on_memory_reset(self, pfn: int, npages: int) -> None:
        truth = self.truth
        if not truth:
            return
        if npages <= len(truth):
            for p in range(pfn, pfn + npages):
                truth.pop(p, None)
                self.writer.pop(p, None)
        else:
            for p in [p for p in truth if pfn <= p < pfn + npages]:
                del truth[p]
                self.writer.pop(p, None)

    # -- the record -----------------------------------------------------------------
    def _record(self, pa: int, data: bytes, who: str) -> None:
        for pfn, off, pos, chunk in page_pieces(pa, len(data)):
            page = self.truth.get(pfn)
            if page is None:
                page = self.truth[pfn] = bytearray(PAGE_SIZE)
            page[off : off + chunk] = data[pos : pos + chunk]
            self.writer[pfn] = who

    def expected(self, pa: int, n: int) -> bytes:
        out = bytearray()
        for pfn, off, _pos, chunk in page_pieces(pa, n):
            page = self.truth.get(pfn)
            out += page[off : off + chunk] if page is not None else bytes(chunk)
        return bytes(out)

    def _check(self, pa: int, data: bytes, who: str) -> None:
        self.checked_reads += 1
        want = self.expected(pa, len(data))
        if want != data:
            writer = self.writer.get(pa >> PAGE_SHIFT, "the page allocator (zeroed)")
            stale = StaleRead(who, pa, bytes(data), want, writer)
            self.stale.append(stale)
            self.kernel.tracer.event("stale_read", str(stale))

    def clear(self) -> None:
        self.stale.clear()
