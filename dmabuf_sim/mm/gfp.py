"""Allocation flags: ``gfp_t`` (include/linux/gfp_types.h, include/linux/gfp.h).

The values are the kernel's, so a mask prints as the kernel prints it in an
allocation-failure report (``mode:0xcc0(GFP_KERNEL)``).  The simulated
allocator acts on three of them:

* ``__GFP_ZERO`` — the pages come back zeroed; without it they keep whatever
  their previous owner left in DRAM (and any line it left in the CPU cache),
  exactly as the kernel hands them out.  ``init_on_alloc=1`` zeroes anyway
  (:attr:`~dmabuf_sim.mm.page_alloc.PhysicalMemory.init_on_alloc`).
* ``__GFP_NOWARN`` — no ``warn_alloc`` report when the allocation fails.
* ``__GFP_COMP`` — accepted and recorded nowhere: every page of a simulated
  block carries its own reference count (see :mod:`.page_alloc`).

Reclaim, watermarks, zones and cpusets have no counterpart: an allocation
that finds no free block fails at once, as ``__GFP_NORETRY`` would make it.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_GFP",
    "GFP_ATOMIC",
    "GFP_DMA",
    "GFP_DMA32",
    "GFP_HIGHUSER",
    "GFP_HIGHUSER_MOVABLE",
    "GFP_KERNEL",
    "GFP_KERNEL_ACCOUNT",
    "GFP_NOFS",
    "GFP_NOIO",
    "GFP_NOWAIT",
    "GFP_USER",
    "__GFP_ACCOUNT",
    "__GFP_BITS_MASK",
    "__GFP_COMP",
    "__GFP_DIRECT_RECLAIM",
    "__GFP_DMA",
    "__GFP_DMA32",
    "__GFP_FS",
    "__GFP_HARDWALL",
    "__GFP_HIGH",
    "__GFP_HIGHMEM",
    "__GFP_IO",
    "__GFP_KSWAPD_RECLAIM",
    "__GFP_MOVABLE",
    "__GFP_NOFAIL",
    "__GFP_NORETRY",
    "__GFP_NOWARN",
    "__GFP_RECLAIM",
    "__GFP_RETRY_MAYFAIL",
    "__GFP_ZERO",
    "check_gfp",
    "gfp_name",
]

__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_MEMALLOC = 0x20000
__GFP_COMP = 0x40000
__GFP_NOMEMALLOC = 0x80000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000
__GFP_BITS_MASK = (1 << 26) - 1
__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM

GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM | __GFP_NOWARN
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_DMA = __GFP_DMA
GFP_DMA32 = __GFP_DMA32
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE

DEFAULT_GFP = GFP_KERNEL | __GFP_ZERO
"""What ``alloc_pages(order)`` means when the caller passes no flags.

Zeroed, because every exporter written before the ``gfp`` argument existed
(the reference ones and users' own) relied on zeroed pages; a caller that
wants the kernel's raw behaviour passes flags without ``__GFP_ZERO``."""

# Named combinations first (the longest that fits), then single flags: the
# order show_gfp_flags (include/trace/events/mmflags.h) prints them in.
_COMBINATIONS = (
    ("GFP_HIGHUSER_MOVABLE", GFP_HIGHUSER_MOVABLE),
    ("GFP_HIGHUSER", GFP_HIGHUSER),
    ("GFP_USER", GFP_USER),
    ("GFP_KERNEL_ACCOUNT", GFP_KERNEL_ACCOUNT),
    ("GFP_KERNEL", GFP_KERNEL),
    ("GFP_NOFS", GFP_NOFS),
    ("GFP_ATOMIC", GFP_ATOMIC),
    ("GFP_NOIO", GFP_NOIO),
    ("GFP_NOWAIT", GFP_NOWAIT),
)
_FLAGS = (
    ("__GFP_DMA", __GFP_DMA),
    ("__GFP_HIGHMEM", __GFP_HIGHMEM),
    ("__GFP_DMA32", __GFP_DMA32),
    ("__GFP_MOVABLE", __GFP_MOVABLE),
    ("__GFP_RECLAIMABLE", __GFP_RECLAIMABLE),
    ("__GFP_HIGH", __GFP_HIGH),
    ("__GFP_IO", __GFP_IO),
    ("__GFP_FS", __GFP_FS),
    ("__GFP_ZERO", __GFP_ZERO),
    ("__GFP_DIRECT_RECLAIM", __GFP_DIRECT_RECLAIM),
    ("__GFP_KSWAPD_RECLAIM", __GFP_KSWAPD_RECLAIM),
    ("__GFP_WRITE", __GFP_WRITE),
    ("__GFP_NOWARN", __GFP_NOWARN),
    ("__GFP_RETRY_MAYFAIL", __GFP_RETRY_MAYFAIL),
    ("__GFP_NOFAIL", __GFP_NOFAIL),
    ("__GFP_NORETRY", __GFP_NORETRY),
    ("__GFP_MEMALLOC", __GFP_MEMALLOC),
    ("__GFP_COMP", __GFP_COMP),
    ("__GFP_NOMEMALLOC", __GFP_NOMEMALLOC),
    ("__GFP_HARDWALL", __GFP_HARDWALL),
    ("__GFP_THISNODE", __GFP_THISNODE),
    ("__GFP_ACCOUNT", __GFP_ACCOUNT),
)


def check_gfp(gfp: object) -> int:
    """Validate a ``gfp_t`` passed through the Python API (an unsigned int of 26 bits)."""
    if isinstance(gfp, bool) or not isinstance(gfp, int):
        raise TypeError(
            f"gfp must be an int of GFP_* / __GFP_* flags from dmabuf_sim.mm.gfp,"
            f" not {type(gfp).__name__}"
        )
    if gfp & ~__GFP_BITS_MASK or gfp < 0:
        raise ValueError(
            f"gfp={gfp:#x} has bits outside __GFP_BITS_MASK ({__GFP_BITS_MASK:#x});"
            " build it from the constants in dmabuf_sim.mm.gfp"
        )
    return gfp


def gfp_name(gfp: int) -> str:
    """``%pGg``: ``0xdc0`` → ``GFP_KERNEL|__GFP_ZERO``."""
    names = []
    rest = gfp
    for name, mask in _COMBINATIONS:
        if rest & mask == mask:
            names.append(name)
            rest &= ~mask
            break
    for name, bit in _FLAGS:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) if names else "0"
