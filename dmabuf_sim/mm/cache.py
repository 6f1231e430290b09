"""The CPU data cache: write-back lines over physical memory.

The simulated CPU is *not* coherent with DMA (think ARM, not x86): devices
read and write DRAM, and the CPU sees DRAM only through its cache for
write-back (``WB``) mappings.  That is the whole reason dma-buf has
``begin/end_cpu_access`` and ``DMA_BUF_IOCTL_SYNC``:

* a CPU store to a ``WB`` mapping lands in a dirty cache line; a device reading
  DRAM does not see it until the line is **cleaned** (written back);
* a device write to DRAM is invisible to a CPU that still holds the old line
  until the line is **invalidated**.

Write-combined and uncached mappings bypass the cache entirely.

Operations mirror the arch cache-maintenance primitives used by the
streaming DMA API (``arch_sync_dma_for_device`` cleans, ``..._for_cpu``
invalidates): :meth:`clean_range`, :meth:`invalidate_range`,
:meth:`flush_range` (clean + invalidate).

Capacity is bounded; when full, a victim line is evicted (written back if
dirty).  The default policy is LRU; tests and hypothesis can steer it with
:attr:`CpuCache.choose_victim`.

Simplified: one cache level, physically indexed, fully associative, 64-byte
lines, no speculative prefetch (a line is only filled by an access).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from attrs import define, field

from .page_alloc import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from .page_alloc import PhysicalMemory

__all__ = ["LINE_SIZE", "CpuCache"]

LINE_SIZE = 64
_LINE_MASK = ~(LINE_SIZE - 1)
_PAGE_OFFSET = PAGE_SIZE - 1


@define(eq=False, slots=True)
class CpuCache:
    """A write-back, write-allocate data cache with bounded capacity."""

    mem: PhysicalMemory = field(repr=False)
    capacity: int = 4096
    """Lines held at most (default 256 KiB)."""
    lines: OrderedDict[int, bytearray] = field(factory=OrderedDict, repr=False)
    dirty: set[int] = field(factory=set, repr=False)
    choose_victim: Callable[[CpuCache], int] | None = field(default=None, repr=False)
    """Policy hook: return the line address to evict (default: least recently used)."""
    hits: int = 0
    misses: int = 0
    writebacks: int = 0
    evictions: int = 0
    _frames: dict[int, bytearray] = field(init=False, factory=dict, repr=False)
    """DRAM's page frames (``mem.frames``): a line fill slices one directly."""

    def __attrs_post_init__(self) -> None:
        self._frames = self.mem.frames

    # -- CPU accesses ----------------------------------------------------------
    def load(self, pa: int, n: int) -> bytes:
        """A CPU load through a write-back mapping."""
        base = pa & _LINE_MASK
        off = pa - base
        if off + n <= LINE_SIZE:  # within one line: the common case, a hit inlined
            line = self.lines.get(base)
            if line is None:
                line = self._fill(base)
            else:
                self.hits += 1
                self.lines.move_to_end(base)
            return bytes(line[off : off + n])
        out = bytearray()
        end = pa + n
        while pa < end:
            base = pa & _LINE_MASK
            off = pa - base
            chunk = min(end - pa, LINE_SIZE - off)
            out += self._line(base)[off : off + chunk]
            pa += chunk
        return bytes(out)

    def store(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """A CPU store through a write-back mapping: the line becomes dirty."""
        n = len(data)
        base = pa & _LINE_MASK
        off = pa - base
        if off + n <= LINE_SIZE:  # within one line: the common case, a hit inlined
            line = self.lines.get(base)
            if line is None:
                line = self._fill(base)
            else:
                self.hits += 1
                self.lines.move_to_end(base)
            line[off : off + n] = data
            self.dirty.add(base)
            return
        mv = memoryview(data)
        pos = 0
        while pos < n:
            base = (pa + pos) & _LINE_MASK
            off = pa + pos - base
            chunk = min(n - pos, LINE_SIZE - off)
            self._line(base)[off : off + chunk] = mv[pos : pos + chunk]
            self.dirty.add(base)
            pos += chunk

    def _line(self, base: int) -> bytearray:
        line = self.lines.get(base)
        if line is not None:
            self.hits += 1
            self.lines.move_to_end(base)
            return line
        return self._fill(base)

    def _fill(self, base: int) -> bytearray:
        """A miss: make room, then read the line from DRAM."""
        self.misses += 1
        if len(self.lines) >= self.capacity:
            self._evict()
        # the fill: a slice of the page frame (lines never cross a page), zeros if untouched
        frame = self._frames.get(base >> PAGE_SHIFT)
        off = base & _PAGE_OFFSET
        line = bytearray(LINE_SIZE) if frame is None else bytearray(frame[off : off + LINE_SIZE])
        self.lines[base] = line
        return line

    def _evict(self) -> None:
        victim = self.choose_victim(self) if self.choose_victim else next(iter(self.lines))
        if victim not in self.lines:
            raise ValueError(f"choose_victim returned {victim:#x}, which is not a cached line")
        self.evictions += 1
        self._writeback(victim)
        del self.lines[victim]

    def _writeback(self, base: int) -> None:
        if base in self.dirty:
            self.mem.write(base, self.lines[base])
            self.dirty.discard(base)
            self.writebacks += 1

    # -- maintenance -----------------------------------------------------------
    def _lines_in(self, pa: int, size: int) -> Iterator[int]:
        start = pa & _LINE_MASK
        end = pa + size
        nlines = (end - start + LINE_SIZE - 1) // LINE_SIZE
        if nlines <= len(self.lines):
            for base in range(start, end, LINE_SIZE):
                if base in self.lines:
                    yield base
        else:
            yield from sorted(b for b in self.lines if start <= b < end)

    def clean_range(self, pa: int, size: int) -> int:
        """Write dirty lines in range back to DRAM; keep them cached. Returns lines cleaned."""
        cleaned = 0
        for base in list(self._lines_in(pa, size)):
            if base in self.dirty:
                self._writeback(base)
                cleaned += 1
        return cleaned

    def invalidate_range(self, pa: int, size: int) -> int:
        """Drop lines in range *without* writing them back (dirty data is lost)."""
        dropped = 0
        for base in list(self._lines_in(pa, size)):
            del self.lines[base]
            self.dirty.discard(base)
            dropped += 1
        return dropped

    def flush_range(self, pa: int, size: int) -> int:
        """Clean then invalidate."""
        self.clean_range(pa, size)
        return self.invalidate_range(pa, size)

    def flush_all(self) -> None:
        for base in list(self.lines):
            self._writeback(base)
        self.lines.clear()

    # -- coherent agents --------------------------------------------------------
    def snoop_read(self, pa: int, n: int) -> bytes:
        """What a cache-coherent device reads: DRAM overlaid with dirty lines."""
        buf = bytearray(self.mem.read(pa, n))
        for base in self._lines_in(pa, n):
            if base in self.dirty:
                line = self.lines[base]
                lo, hi = max(base, pa), min(base + LINE_SIZE, pa + n)
                buf[lo - pa : hi - pa] = line[lo - base : hi - base]
        return bytes(buf)

    def snoop_write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """A cache-coherent device write: cached copies are written back then dropped."""
        self.flush_range(pa, len(data))
        self.mem.write(pa, data)

    # -- inspection -------------------------------------------------------------
    def dirty_lines_in(self, pa: int, size: int) -> list[int]:
        return [b for b in self._lines_in(pa, size) if b in self.dirty]

    def cached_lines_in(self, pa: int, size: int) -> list[int]:
        return list(self._lines_in(pa, size))
