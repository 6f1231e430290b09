"""Kernel virtual mappings: ``vmap``/``vunmap``/``vm_map_ram`` (mm/vmalloc.c).

A :class:`KernelMapping` is what ``dma_buf_vmap`` hands an importer: the
buffer's pages, contiguous in kernel virtual space.  Accesses go through the
CPU cache for the default (write-back) protection and straight to DRAM for
write-combined or uncached ones — exactly like a user mapping with that
cache mode.  ``invalidate()``/``flush()`` are ``invalidate_kernel_vmap_range``
and ``flush_kernel_vmap_range``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field

from ..errors import KernelOops
from ..trace import kernel_function
from .page_alloc import PAGE_SHIFT, PAGE_SIZE
from .pgtable import CACHE_WB

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["KernelMapping", "vmap", "vunmap"]


@define(eq=False, slots=True)
class KernelMapping:
    kernel: Kernel = field(repr=False)
    pfns: list[int] = field(repr=False)
    cache_mode: int = CACHE_WB
    mapped: bool = True

    def trace_name(self) -> str:
        return f"vmap({len(self.pfns)} pages)"

    @property
    def size(self) -> int:
        return len(self.pfns) << PAGE_SHIFT

    def _pieces(self, offset: int, n: int) -> list[tuple[int, int, int]]:
        if not self.mapped:
            raise KernelOops("vmap access", "through a vunmap()ed kernel mapping (use after free)")
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"access [{offset}, {offset + n}) outside a {self.size}-byte vmap")
        out = []
        pos = 0
        while pos < n:
            idx, off = divmod(offset + pos, PAGE_SIZE)
            chunk = min(n - pos, PAGE_SIZE - off)
            out.append(((self.pfns[idx] << PAGE_SHIFT) + off, pos, chunk))
            pos += chunk
        return out

    def read(self, offset: int, n: int) -> bytes:
        cache, mem = self.kernel.cache, self.kernel.mem
        wb = self.cache_mode == CACHE_WB
        observers = self.kernel.observers
        out = bytearray()
        for pa, _p, k in self._pieces(offset, n):
            piece = cache.load(pa, k) if wb else mem.read(pa, k)
            if observers.cpu_access:
                observers.emit("cpu_access", pa, piece, False, "kernel (vmap)")
            out += piece
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        cache, mem = self.kernel.cache, self.kernel.mem
        wb = self.cache_mode == CACHE_WB
        observers = self.kernel.observers
        for pa, pos, k in self._pieces(offset, len(data)):
            piece = bytes(data[pos : pos + k])
            if wb:
                cache.store(pa, piece)
            else:
                mem.write(pa, piece)
            if observers.cpu_access:
                observers.emit("cpu_access", pa, piece, True, "kernel (vmap)")

    def flush(self) -> None:
        """``flush_kernel_vmap_range``: write dirty lines back."""
        for pfn in self.pfns:
            self.kernel.cache.clean_range(pfn << PAGE_SHIFT, PAGE_SIZE)

    def invalidate(self) -> None:
        """``invalidate_kernel_vmap_range``: no cached line of the range survives.

        The kernel needs it only where the vmap alias has lines of its own (VIVT or
        aliasing VIPT caches: ARM32 implements it with ``__cpuc_flush_dcache_area``,
        write back then drop; x86 and arm64 with nothing).  The simulated cache is
        physically indexed, one line per physical address whichever mapping wrote it,
        so dropping dirty lines would lose what a user mapping wrote: they are written
        back first, as ARM32 does.
        """
        for pfn in self.pfns:
            self.kernel.cache.flush_range(pfn << PAGE_SHIFT, PAGE_SIZE)


@kernel_function("vmap", file="mm/vmalloc.c")
def vmap(kernel: Kernel, pfns: list[int], cache_mode: int = CACHE_WB) -> KernelMapping:
    """Map ``pfns`` contiguously in kernel virtual space (instruments see ``on_vmap``)."""
    mapping = KernelMapping(kernel, list(pfns), cache_mode)
    if kernel.observers.vmap:
        kernel.observers.emit("vmap", mapping)
    return mapping


@kernel_function("vunmap", file="mm/vmalloc.c")
def vunmap(mapping: KernelMapping) -> None:
    """Tear a kernel mapping down; any later access through it is a use after free."""
    mapping.mapped = False
    kernel = mapping.kernel
    if kernel.observers.vunmap:
        kernel.observers.emit("vunmap", mapping)
