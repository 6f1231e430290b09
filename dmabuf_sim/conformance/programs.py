"""Directed programs: short, fixed step sequences, each aimed at one way exporters go wrong.

The kit runs all of them before it explores at random: they are cheap, they
do not depend on luck, and each names the rules it exercises (``check -v``
lists them).  A program is written against a :class:`Builder`, which records
the calls and hands back references to what they will make; it is replayed
leniently, so a step the exporter or the spec does not support (a refused
MAP_PRIVATE, no vmap, no SYNC ioctl on 3.x, the coherent-only steps on a
non-coherent exporter) is skipped together with the steps that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

from ..mm.page_alloc import PAGE_SIZE
from .program import Call, Program, Ref

__all__ = ["PROGRAMS", "Builder", "DirectedProgram"]

P = PAGE_SIZE
LINE = 64
_TUPLES = {"munmap_page": 2}


class Builder:
    """Write a program as if calling the machine; every call returns reference(s) to its result."""

    def __init__(self) -> None:
        self.program: Program = []
        self._seq = 0

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            index = len(self.program)
            self.program.append(Call(method, args, tuple(kwargs.items())))
            n = _TUPLES.get(method)
            if n:
                return tuple(Ref(index, j) for j in range(n))
            return Ref(index)

        return call

    def data(self, n: int) -> bytes:
        """Distinctive non-zero bytes, different at every call."""
        self._seq += 1
        seed = self._seq
        return bytes(((seed * 89 + i * 31) % 251) + 1 for i in range(n))


@frozen
class DirectedProgram:
    name: str
    summary: str
    rules: tuple[str, ...]
    build: Callable[[Builder], None]

    def program(self) -> Program:
        b = Builder()
        self.build(b)
        b.teardown()
        return b.program


def _fresh_zero(b: Builder) -> None:
    buf = b.new_buffer(size=3 * P)
    m = b.mmap(buf, offset=0, pages=3)
    b.sync_start(buf, "read")
    for at in (0, P + 8, 2 * P + P - 96):
        b.cpu_read(m, offset=at, n=96)
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=0, n=LINE)
    b.dma_job(buf, "read", offset=2 * P, n=LINE)


def _round_trip(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    one, two = b.data(100), b.data(70)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=0, data=one)
    b.cpu_write(m, offset=P + 60, data=two)
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=0, n=100)
    b.dma_job(buf, "read", offset=P + 60, n=70)
    b.dma_job(buf, "write", offset=8, data=b.data(40))
    b.dma_job(buf, "write", offset=P + 64, data=b.data(64))
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=0, n=100)
    b.cpu_read(m, offset=P + 60, n=70)
    b.sync_end(buf)


def _page_offsets(b: Builder) -> None:
    buf = b.new_buffer(size=4 * P)
    for page in range(4):
        b.dma_job(buf, "write", offset=page * P + 16, data=b.data(32))
    m = b.mmap(buf, offset=1, pages=2)
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=16, n=32)
    b.cpu_read(m, offset=P + 16, n=32)
    b.sync_end(buf)
    last = b.mmap(buf, offset=3, pages=1)
    b.sync_start(buf, "rw")
    b.cpu_read(last, offset=16, n=32)
    b.cpu_write(last, offset=0, data=b.data(8))
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=3 * P, n=8)


def _kept_mapped_device_writes(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    a = b.attach(buf, dev="gpu")
    b.map_attachment(a, "bidirectional")
    b.sync_start(buf, "rw")
    b.cpu_read(m, offset=0, n=2 * LINE)
    b.cpu_read(m, offset=P, n=2 * LINE)
    b.sync_end(buf)
    b.dma_write(a, offset=8, data=b.data(48))
    b.dma_write(a, offset=P + LINE, data=b.data(32))
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=8, n=48)
    b.cpu_read(m, offset=P + LINE, n=32)
    b.sync_end(buf)


def _kept_mapped_cpu_writes(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    a = b.attach(buf, dev="gpu")
    b.map_attachment(a, "bidirectional")
    b.sync_start(buf, "write")
    b.cpu_write(m, offset=0, data=b.data(LINE))
    b.cpu_write(m, offset=P + 2 * LINE, data=b.data(LINE))
    b.sync_end(buf)
    b.dma_read(a, offset=0, n=LINE)
    b.dma_read(a, offset=P + 2 * LINE, n=LINE)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=8, data=b.data(20))
    b.sync_end(buf)
    b.dma_read(a, offset=8, n=20)


def _kept_mapped_directions(b: Builder) -> None:
    buf = b.new_buffer(size=P)
    m = b.mmap(buf, offset=0, pages=1)
    a = b.attach(buf, dev="gpu")
    b.map_attachment(a, "from_device")
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=0, n=LINE)
    b.sync_end(buf)
    b.dma_write(a, offset=0, data=b.data(LINE))
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=0, n=LINE)
    b.sync_end(buf)
    b.unmap_attachment(a)
    b.map_attachment(a, "to_device")
    b.sync_start(buf, "write")
    b.cpu_write(m, offset=LINE, data=b.data(LINE))
    b.sync_end(buf)
    b.dma_read(a, offset=LINE, n=LINE)
    b.unmap_attachment(a)
    b.detach(a)
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=0, n=2 * LINE)
    b.sync_end(buf)


def _two_attachments(b: Builder) -> None:
    buf = b.new_buffer(size=P)
    m = b.mmap(buf, offset=0, pages=1)
    coherent = b.attach(buf, dev="dsp")
    gpu = b.attach(buf, dev="gpu")
    b.map_attachment(coherent, "bidirectional")
    b.map_attachment(gpu, "bidirectional")
    b.sync_start(buf, "rw")
    b.cpu_read(m, offset=0, n=2 * LINE)
    b.sync_end(buf)
    b.dma_write(gpu, offset=0, data=b.data(LINE))
    b.sync_start(buf, "rw")
    b.cpu_read(m, offset=0, n=LINE)
    b.cpu_write(m, offset=LINE, data=b.data(LINE))
    b.sync_end(buf)
    b.dma_read(gpu, offset=LINE, n=LINE)


def _shootdown_rounds(b: Builder) -> None:
    buf = b.new_buffer(size=3 * P)
    m = b.mmap(buf, offset=0, pages=3)
    a = b.attach(buf, dev="gpu")
    b.map_attachment(a, "bidirectional")
    for _round in range(2):
        b.sync_start(buf, "rw")
        for page in range(3):
            b.cpu_write(m, offset=page * P + 8, data=b.data(24))
        b.sync_end(buf)
    for page in range(3):
        b.dma_read(a, offset=page * P + 8, n=24)
        b.dma_write(a, offset=page * P + 200, data=b.data(24))
    b.sync_start(buf, "rw")
    for page in range(3):
        b.cpu_read(m, offset=page * P + 200, n=24)
        b.cpu_write(m, offset=page * P + 400, data=b.data(8))
    b.sync_end(buf)
    for page in range(3):
        b.dma_read(a, offset=page * P + 400, n=8)


def _coherent_without_sync(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    b.cpu_write(m, offset=0, data=b.data(32))
    b.dma_job(buf, "read", offset=0, n=32)
    b.cpu_write(m, offset=0, data=b.data(32))
    b.cpu_write(m, offset=P, data=b.data(32))
    b.dma_job(buf, "read", offset=0, n=32)
    b.dma_job(buf, "read", offset=P, n=32)
    b.dma_job(buf, "write", offset=LINE, data=b.data(32))
    b.dma_job(buf, "write", offset=P + LINE, data=b.data(32), dev="dsp")
    b.cpu_read(m, offset=LINE, n=32)
    b.cpu_read(m, offset=P + LINE, n=32)


def _fork(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=0, data=b.data(40))
    b.sync_end(buf)
    child = b.fork()
    b.sync_start(buf, "rw")
    b.cpu_read(m, offset=0, n=40, proc=child)
    b.cpu_write(m, offset=P, data=b.data(40), proc=child)
    b.sync_end(buf)
    b.dma_job(buf, "write", offset=P + LINE, data=b.data(16))
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=P, n=40)
    b.cpu_read(m, offset=P + LINE, n=16, proc=child)
    b.sync_end(buf)
    b.exit(child)
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=P, n=40)
    b.sync_end(buf)


def _fork_then_remap(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    b.dma_job(buf, "write", offset=0, data=b.data(16))
    b.dma_job(buf, "write", offset=P, data=b.data(16))
    old = b.mmap(buf, offset=0, pages=1)
    child = b.fork()
    b.munmap(old)
    new = b.mmap(buf, offset=1, pages=1)
    b.sync_start(buf, "read")
    b.cpu_read(old, offset=0, n=16, proc=child)
    b.cpu_read(new, offset=0, n=16)
    b.sync_end(buf)
    b.exit(child)


def _split(b: Builder) -> None:
    buf = b.new_buffer(size=3 * P)
    m = b.mmap(buf, offset=0, pages=3)
    b.sync_start(buf, "rw")
    for page in range(3):
        b.cpu_write(m, offset=page * P, data=b.data(24))
    b.sync_end(buf)
    child = b.fork()
    low, high = b.munmap_page(m, page=1)
    b.sync_start(buf, "read")
    b.cpu_read(low, offset=0, n=24)
    b.cpu_read(high, offset=0, n=24)
    b.cpu_read(m, offset=P, n=24, proc=child)
    b.sync_end(buf)
    b.dma_job(buf, "write", offset=2 * P + 32, data=b.data(16))
    b.sync_start(buf, "read")
    b.cpu_read(high, offset=32, n=16)
    b.cpu_read(m, offset=2 * P + 32, n=16, proc=child)
    b.sync_end(buf)
    b.exit(child)
    b.munmap(low)


def _close_while_mapped(b: Builder) -> None:
    buf = b.new_buffer(size=P)
    m = b.mmap(buf, offset=0, pages=1)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=0, data=b.data(16))
    b.sync_end(buf)
    child = b.fork()
    b.close(buf)
    b.exit(child)
    b.cpu_read(m, offset=0, n=16)
    b.munmap(m)


def _grow_past_end(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    grown = b.mremap_grow(m)
    b.touch_past_end(grown)
    b.sync_start(buf, "read")
    b.cpu_read(grown, offset=P, n=16)
    b.sync_end(buf)
    other = b.mmap(buf, offset=1, pages=1)
    b.touch_past_end(b.mremap_grow(other))


def _merge_past_end(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    after = b.mmap_after(m, pages=1)
    b.touch_past_end(after)
    inside = b.new_buffer(size=3 * P)
    first = b.mmap(inside, offset=0, pages=1)
    second = b.mmap_after(first, pages=1)
    b.sync_start(inside, "rw")
    b.cpu_write(second, offset=0, data=b.data(16))
    b.sync_end(inside)
    b.dma_job(inside, "read", offset=P, n=16)


def _private(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    b.dma_job(buf, "write", offset=0, data=b.data(32))
    one = b.mmap(buf, offset=0, pages=1, private=True)
    b.sync_start(buf, "read")
    b.cpu_read(one, offset=0, n=32)
    b.cpu_write(one, offset=0, data=b.data(8))
    b.cpu_read(one, offset=0, n=32)
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=0, n=32)
    two = b.mmap(buf, offset=0, pages=2, private=True)
    b.sync_start(buf, "read")
    b.cpu_write(two, offset=P + 8, data=b.data(8))
    b.cpu_read(two, offset=0, n=32)
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=P + 8, n=8)
    # a shared write between two copies: the second copy must start from it (a copy
    # through the kernel's cached alias after a write past the cache reads stale lines)
    shared = b.mmap(buf, offset=1, pages=1)
    b.sync_start(buf, "rw")
    b.cpu_write(shared, offset=40, data=b.data(24))
    b.sync_end(buf)
    three = b.mmap(buf, offset=1, pages=1, private=True)
    b.sync_start(buf, "read")
    b.cpu_write(three, offset=200, data=b.data(4))
    b.cpu_read(three, offset=40, n=24)
    b.sync_end(buf)


def _read_only(b: Builder) -> None:
    buf = b.new_buffer(size=P)
    b.dma_job(buf, "write", offset=0, data=b.data(16))
    m = b.mmap(buf, offset=0, pages=1, writable=False)
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=0, n=16)
    b.sync_end(buf)
    b.mprotect(m, writable=True)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=32, data=b.data(8))
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=32, n=8)


def _vmap(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    v1 = b.vmap(buf)
    v2 = b.vmap(buf)
    b.sync_start(buf, "rw", via="kernel")
    b.kernel_write(v1, offset=16, data=b.data(32))
    b.cpu_read(m, offset=16, n=32)
    b.cpu_write(m, offset=P + 100, data=b.data(32))
    b.kernel_read(v2, offset=P + 100, n=32)
    b.sync_end(buf)
    b.vunmap(v1)
    b.dma_job(buf, "write", offset=P + 200, data=b.data(16))
    b.sync_start(buf, "read", via="kernel")
    b.kernel_read(v2, offset=P + 200, n=16)
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=16, n=32)
    b.vunmap(v2)


def _kmap(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    b.sync_start(buf, "rw", via="kernel")
    b.kmap_write(buf, offset=P - 8, data=b.data(24))
    b.cpu_read(m, offset=P - 8, n=24)
    b.cpu_write(m, offset=40, data=b.data(16))
    b.kmap_read(buf, offset=40, n=16)
    b.sync_end(buf)
    b.dma_job(buf, "write", offset=P + 300, data=b.data(16))
    b.sync_start(buf, "read", via="kernel")
    b.kmap_read(buf, offset=P + 300, n=16)
    b.sync_end(buf)


def _fence_pending(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    b.add_fence(buf)
    m = b.mmap(buf, offset=0, pages=2)
    b.cpu_read(m, offset=0, n=1)
    b.cpu_read(m, offset=P, n=1)
    b.finish_device_work()


def _two_buffers(b: Builder) -> None:
    one = b.new_buffer(size=2 * P)
    two = b.new_buffer(size=2 * P)
    m1 = b.mmap(one, offset=0, pages=2)
    m2 = b.mmap(two, offset=0, pages=2)
    b.sync_start(two, "rw")
    b.cpu_write(m2, offset=0, data=b.data(32))
    b.cpu_write(m2, offset=P, data=b.data(32))
    b.sync_start(one, "rw")
    b.cpu_write(m1, offset=0, data=b.data(32))
    b.sync_end(one)
    b.dma_job(one, "read", offset=0, n=32)
    b.cpu_read(m2, offset=0, n=32)
    b.cpu_read(m2, offset=P, n=32)
    b.sync_end(two)
    b.dma_job(two, "read", offset=P, n=32)


def _import(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=0, data=b.data(40))
    b.sync_end(buf)
    im = b.import_mmap(buf, pages=2)
    b.sync_start(buf, "rw")
    b.cpu_read(im, offset=0, n=40)
    b.cpu_write(im, offset=P + 8, data=b.data(24))
    b.sync_end(buf)
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=P + 8, n=24)
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=P + 8, n=24)
    b.munmap(im)


def _odd_sizes(b: Builder) -> None:
    buf = b.new_buffer(size=P + 100)
    m = b.mmap(buf, offset=0, pages=1)
    b.mmap(buf, offset=0, pages=2)
    b.dma_job(buf, "write", offset=P + 20, data=b.data(80))
    b.dma_job(buf, "read", offset=P + 20, n=80)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=P - 16, data=b.data(16))
    b.sync_end(buf)
    b.dma_job(buf, "read", offset=P - 16, n=16)
    half = b.new_buffer(size=2 * P + P // 2)
    h = b.mmap(half, offset=1, pages=1)
    b.dma_job(half, "write", offset=2 * P + 8, data=b.data(16))
    b.sync_start(half, "read")
    b.cpu_read(h, offset=0, n=64)
    b.sync_end(half)
    b.dma_job(half, "read", offset=2 * P + 8, n=16)


def _release_and_reuse(b: Builder) -> None:
    for _round in range(2):
        buf = b.new_buffer(size=2 * P)
        m = b.mmap(buf, offset=0, pages=2)
        b.sync_start(buf, "read")
        b.cpu_read(m, offset=0, n=2 * LINE)
        b.cpu_read(m, offset=P + 512, n=2 * LINE)
        b.sync_end(buf)
        b.dma_job(buf, "read", offset=P - LINE, n=2 * LINE)
        b.sync_start(buf, "rw")
        for at in (0, LINE, P - LINE, P + 512, P + 576):
            b.cpu_write(m, offset=at, data=b.data(LINE))
        b.sync_end(buf)
        b.dma_job(buf, "write", offset=P - LINE, data=b.data(2 * LINE))
        b.munmap(m)
        b.close(buf)


def _first_sync_after_device(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    b.cpu_read(m, offset=8, n=LINE)  # outside SYNC: judged by nothing, but cached
    b.cpu_read(m, offset=P + 8, n=LINE)
    att = b.attach(buf, "gpu")
    b.map_attachment(att, "bidirectional")
    b.dma_write(att, offset=8, data=b.data(LINE))
    b.dma_write(att, offset=P + 8, data=b.data(LINE))
    b.sync_start(buf, "read")  # the buffer's first SYNC
    b.cpu_read(m, offset=8, n=LINE)
    b.cpu_read(m, offset=P + 8, n=LINE)
    b.sync_end(buf)
    b.unmap_attachment(att)
    b.detach(att)


def _attached_not_mapped(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    m = b.mmap(buf, offset=0, pages=2)
    b.sync_start(buf, "rw")
    b.cpu_write(m, offset=8, data=b.data(LINE))
    b.cpu_write(m, offset=P + 8, data=b.data(LINE))
    b.sync_end(buf)
    att = b.attach(buf, "gpu")  # attached, never mapped: no DMA can have happened
    b.sync_start(buf, "read", via="kernel")
    b.cpu_read(m, offset=8, n=LINE)
    b.sync_end(buf)
    b.sync_start(buf, "read")
    b.cpu_read(m, offset=P + 8, n=LINE)
    b.sync_end(buf)
    b.detach(att)
    b.dma_job(buf, "read", offset=8, n=LINE)


def _module_lifetime(b: Builder) -> None:
    buf = b.new_buffer(size=2 * P)
    b.rmmod()  # its fd holds the module
    m = b.mmap(buf, offset=0, pages=2)
    att = b.attach(buf, "gpu")
    b.close(buf)
    b.rmmod()  # the mapping and the attachment do
    b.munmap(m)
    b.rmmod()  # the attachment does
    b.detach(att)
    b.rmmod()  # nothing does: unloaded, then loaded again
    again = b.new_buffer(size=P)
    b.close(again)
    b.rmmod()


PROGRAMS: dict[str, DirectedProgram] = {
    p.name: p
    for p in (
        DirectedProgram(
            "fresh-zero",
            "a new buffer reads zero through the mapping and for a device",
            ("SAN-STALE-READ", "R1", "R60"),
            _fresh_zero,
        ),
        DirectedProgram(
            "round-trip",
            "CPU writes under SYNC reach a device job; device writes reach the CPU",
            ("SAN-STALE-READ", "R44"),
            _round_trip,
        ),
        DirectedProgram(
            "page-offsets",
            "a mapping at page offset o shows page o of the buffer",
            ("R60", "R1", "SAN-STALE-READ"),
            _page_offsets,
        ),
        DirectedProgram(
            "kept-mapped-device-writes",
            "a device keeps the buffer mapped and writes: SYNC START makes the CPU see it",
            ("SAN-STALE-READ", "R44", "R55"),
            _kept_mapped_device_writes,
        ),
        DirectedProgram(
            "kept-mapped-cpu-writes",
            "the CPU writes under SYNC: SYNC END makes a device that kept its mapping see it",
            ("SAN-STALE-READ", "R44"),
            _kept_mapped_cpu_writes,
        ),
        DirectedProgram(
            "kept-mapped-directions",
            "attachments mapped for one direction, SYNC in each direction",
            ("SAN-STALE-READ", "R44"),
            _kept_mapped_directions,
        ),
        DirectedProgram(
            "two-attachments",
            "a coherent and a non-coherent device both keep the buffer mapped",
            ("SAN-STALE-READ", "R44"),
            _two_attachments,
        ),
        DirectedProgram(
            "shootdown-rounds",
            "repeated CPU rounds on every page while a device keeps the buffer mapped",
            ("SAN-STALE-READ", "R28", "R55", "SEED-COHERENT"),
            _shootdown_rounds,
        ),
        DirectedProgram(
            "coherent-without-sync",
            "a coherent exporter needs no SYNC around device jobs (the RFC's promise)",
            ("SEED-COHERENT", "SAN-STALE-READ", "R28"),
            _coherent_without_sync,
        ),
        DirectedProgram(
            "fork",
            "a child shares the mapping both ways, also after a device job",
            ("R18", "R28", "R40", "SAN-STALE-READ"),
            _fork,
        ),
        DirectedProgram(
            "fork-then-remap",
            "a child keeps the vma it inherited after the parent unmaps and maps again",
            ("R18", "R60"),
            _fork_then_remap,
        ),
        DirectedProgram(
            "split",
            "unmapping a middle page splits the vma; every piece and the child keep their pages",
            ("R19", "SAN-FREED-PTE", "SAN-REFCOUNT"),
            _split,
        ),
        DirectedProgram(
            "close-while-mapped",
            "closing the fd keeps a mapped buffer; the last munmap releases it",
            ("R16", "R17", "SAN-REFCOUNT", "SAN-RELEASE-ONCE"),
            _close_while_mapped,
        ),
        DirectedProgram(
            "grow-past-end",
            "mremap growth is refused, or faults past the buffer give SIGBUS",
            ("R33", "R34"),
            _grow_past_end,
        ),
        DirectedProgram(
            "merge-past-end",
            "an mmap merged into its neighbour skips ->mmap: faults past the end give SIGBUS",
            ("R35", "R34", "R1"),
            _merge_past_end,
        ),
        DirectedProgram(
            "private",
            "MAP_PRIVATE is refused with EINVAL or works privately, never oopses",
            ("R37", "R57", "SAN-STALE-READ"),
            _private,
        ),
        DirectedProgram(
            "read-only",
            "a read-only mapping reads the buffer; mprotect back to writable",
            ("R7", "SAN-STALE-READ"),
            _read_only,
        ),
        DirectedProgram(
            "vmap",
            "kernel access through vmap sees and is seen by user mappings and devices",
            ("R54", "SAN-STALE-READ", "SAN-LEAK"),
            _vmap,
        ),
        DirectedProgram(
            "kmap",
            "kernel access through kmap (3.x) sees and is seen by user mappings and devices",
            ("R52", "SAN-STALE-READ"),
            _kmap,
        ),
        DirectedProgram(
            "fence-pending",
            "a fault never waits for the device work pending on the buffer",
            ("R55", "SEED-NO-FAULT-SYNC", "SAN-FAULT-WAIT"),
            _fence_pending,
        ),
        DirectedProgram(
            "two-buffers",
            "leaving the CPU domain on one buffer leaves the other buffer's mappings alone",
            ("R26", "R27", "R56", "SAN-OTHER-BUFFER"),
            _two_buffers,
        ),
        DirectedProgram(
            "import-forwarding",
            "imported into vgem and mapped through the DRM fd: one memory (dma_buf_mmap)",
            ("R22", "SEED-IMPORTER-MMAP", "SAN-STALE-READ"),
            _import,
        ),
        DirectedProgram(
            "odd-sizes",
            "sizes that are not page multiples: floored mmap, whole memory for devices",
            ("R2", "SAN-SGT", "SAN-STALE-READ"),
            _odd_sizes,
        ),
        DirectedProgram(
            "first-sync-after-device",
            "the first SYNC START drops what the CPU cached before a device wrote",
            ("SAN-STALE-READ", "R44"),
            _first_sync_after_device,
        ),
        DirectedProgram(
            "attached-not-mapped",
            "a device merely attached is no reason to invalidate what the CPU wrote",
            ("SAN-STALE-READ", "R44"),
            _attached_not_mapped,
        ),
        DirectedProgram(
            "module-lifetime",
            "a module exporter stays loaded while a buffer, mapping or attachment lives",
            ("SAN-MODULE",),
            _module_lifetime,
        ),
        DirectedProgram(
            "release-and-reuse",
            "released buffers give every page back, and new buffers read zero",
            ("SAN-LEAK", "SAN-REFCOUNT", "SAN-STALE-READ"),
            _release_and_reuse,
        ),
    )
}
"""Every directed program by name, in the order the kit runs them."""
