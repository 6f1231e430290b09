"""``struct mm_struct`` and mapping: do_mmap, mmap_region, munmap (mm/mmap.c, mm/vma.c).

The order of checks is the kernel's, per spec (kernel-spec §5.1, §5.2):

* ``ksys_mmap_pgoff``/``sys_mmap``: an unaligned byte offset fails ``EINVAL``
  *before* the fd is looked up (R3); then ``fget`` (``EBADF``, R4);
* ``do_mmap``: zero length ``EINVAL``; ``PAGE_ALIGN`` wrap ``ENOMEM``; pgoff
  wrap ``EOVERFLOW`` (R5); map count ``ENOMEM``; ``get_unmapped_area``;
  ``MAP_FIXED_NOREPLACE`` ``EEXIST``; then for files ``file_mmap_ok``
  (``EOVERFLOW``, R6, modern specs), the map type and file mode checks
  (``EOPNOTSUPP``, ``EACCES``, ``ENODEV``, ``EINVAL``; R7-R9);
* ``mmap_region``: merge with a neighbour *before* ``f_op->mmap`` (R35); take
  ``vm_file = get_file(file)``; call ``->mmap``; on failure fput the file the
  spec says (R23/R24) and undo partial PTEs; else link the vma into the mm and
  into the ``i_mmap`` of whichever file the driver left in ``vm_file`` (R25).

``MAP_LOCKED`` sets ``VM_LOCKED`` (cleared again for ``VM_SPECIAL`` vmas after
``->mmap``) and populates the mapping like ``MAP_POPULATE``.

Simplified: no rlimits (processes are root), accounting, locked_vm, userfaultfd,
NUMA policy, THP or guard gaps; the address-space layout is a deterministic
top-down allocator.
"""

from __future__ import annotations

import bisect
import errno
import mmap as _mmap
from typing import TYPE_CHECKING

from attrs import define, field

from ..errors import KernelOops
from ..fs import FMODE_READ, FMODE_WRITE, File, fput, get_file, path_noexec
from ..trace import kernel_function
from .memory import zap_pte_range
from .page_alloc import PAGE_ALIGN, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, ULONG_MAX
from .pgtable import PageTable, vm_get_page_prot
from .shmem import shmem_zero_setup
from .vma import (
    VM_ACCOUNT,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NORESERVE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VmAreaStruct,
    VmOperationsStruct,
    is_cow_mapping,
    vm_area_dup,
)

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..process import Process

__all__ = [
    "MAP_FIXED",
    "MAP_FIXED_NOREPLACE",
    "MAP_SHARED_VALIDATE",
    "TASK_SIZE",
    "MmStruct",
]

# uapi mman constants: from Python's mmap module where it has them, else Linux's values.
PROT_READ = _mmap.PROT_READ
PROT_WRITE = _mmap.PROT_WRITE
PROT_EXEC = _mmap.PROT_EXEC
PROT_NONE = 0
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000
MAP_SHARED = _mmap.MAP_SHARED
MAP_PRIVATE = _mmap.MAP_PRIVATE
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = _mmap.MAP_ANONYMOUS
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_UNINITIALIZED = 0x4000000
LEGACY_MAP_MASK = (
    MAP_SHARED
    | MAP_PRIVATE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | MAP_UNINITIALIZED
    | MAP_GROWSDOWN
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB
)

TASK_SIZE = 0x7FFFFFFFF000
MMAP_MIN_ADDR = 0x10000
MMAP_BASE = 0x7F0000000000
SYSCTL_MAX_MAP_COUNT = 65530


def _err(e: int) -> int:
    return -e


def calc_vm_prot_bits(prot: int) -> int:
    return (
        (VM_READ if prot & PROT_READ else 0)
        | (VM_WRITE if prot & PROT_WRITE else 0)
        | (VM_EXEC if prot & PROT_EXEC else 0)
    )


def calc_vm_flag_bits(flags: int) -> int:
    return (VM_GROWSDOWN if flags & MAP_GROWSDOWN else 0) | (VM_LOCKED if flags & MAP_LOCKED else 0)


def is_err_value(addr: int) -> bool:
    return addr < 0


@define(eq=False, slots=True)
class MmStruct:
    """``struct mm_struct``: the vmas and the page table of one process.

    vmas are kept sorted by ``vm_start``; lookups bisect (``O(log vmas)``).

    Hint-less mmaps search top-down from a *free-area cache* (Linux 2.6's
    ``mm->free_area_cache`` and ``cached_hole_size``), so the common pattern
    of allocating downwards costs ``O(log vmas)`` amortised instead of a walk
    over every vma; see :meth:`get_unmapped_area`.
    """

    kernel: Kernel = field(repr=False)
    owner: Process | None = field(default=None, repr=False)
    pgtable: PageTable = field(factory=PageTable, repr=False)
    _starts: list[int] = field(factory=list, repr=False)
    _vmas: list[VmAreaStruct] = field(factory=list, repr=False)
    mmap_base: int = MMAP_BASE
    dead: bool = False
    _free_area_cache: int = field(init=False, default=0, repr=False)
    """Top-down searches may start here: every gap whose top is above it is at
    most ``_cached_hole_size`` bytes (the invariant; see get_unmapped_area)."""
    _cached_hole_size: int = field(init=False, default=0, repr=False)
    _free_area_base: int = field(init=False, default=-1, repr=False)
    """The ``mmap_base`` the cache was built for; a different base resets it."""
    visits: int = field(init=False, default=0, repr=False)
    """Diagnostics counter: vmas the top-down search of get_unmapped_area
    examined, summed over all calls.  Tests read it to check that a search's
    cost follows the work done; nothing else depends on it."""

    @property
    def map_count(self) -> int:
        return len(self._vmas)

    @property
    def vmas(self) -> tuple[VmAreaStruct, ...]:
        return tuple(self._vmas)

    def trace_name(self) -> str:
        pid = self.owner.pid if self.owner is not None else 0
        return f"mm(pid={pid})"

    # -- lookup ---------------------------------------------------------------
    def find_vma(self, addr: int) -> VmAreaStruct | None:
        """``find_vma``: the first vma with ``vm_end > addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        vmas = self._vmas
        if i >= 0 and vmas[i].vm_end > addr:
            return vmas[i]
        return vmas[i + 1] if i + 1 < len(vmas) else None

    def vma_lookup(self, addr: int) -> VmAreaStruct | None:
        """``vma_lookup``: the vma containing ``addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            vma = self._vmas[i]
            if vma.vm_end > addr:
                return vma
        return None

    def vmas_in(self, start: int, end: int) -> list[VmAreaStruct]:
        """vmas intersecting ``[start, end)``, ascending."""
        out = []
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        vmas = self._vmas
        while i < len(vmas) and vmas[i].vm_start < end:
            if vmas[i].vm_end > start:
                out.append(vmas[i])
            i += 1
        return out

    def prev_next(self, start: int, end: int) -> tuple[VmAreaStruct | None, VmAreaStruct | None]:
        """The vma ending at or before ``start`` and the one starting at or after ``end``."""
        i = bisect.bisect_right(self._starts, start - 1) - 1 if start else -1
        prev = self._vmas[i] if i >= 0 and self._vmas[i].vm_end <= start else None
        j = bisect.bisect_left(self._starts, end)
        nxt = self._vmas[j] if j < len(self._vmas) else None
        return prev, nxt

    # -- linking --------------------------------------------------------------
    def vma_link(self, vma: VmAreaStruct) -> None:
        """Insert into the mm and into ``vma.vm_file.f_mapping.i_mmap`` (``vma_link``)."""
        i = bisect.bisect_left(self._starts, vma.vm_start)
        self._starts.insert(i, vma.vm_start)
        self._vmas.insert(i, vma)
        vma.linked = True
        self._link_file(vma)

    def _link_file(self, vma: VmAreaStruct) -> None:
        if vma.vm_file is not None:
            mapping = vma.vm_file.f_mapping
            mapping.i_mmap.insert(vma.vm_pgoff, vma.vm_pgoff + vma.pages() - 1, vma)
            vma.i_mmap_of = mapping

    def _unlink_file(self, vma: VmAreaStruct) -> None:
        if vma.i_mmap_of is not None:
            vma.i_mmap_of.i_mmap.remove(vma)
            vma.i_mmap_of = None

    def vma_unlink(self, vma: VmAreaStruct) -> None:
        i = self._index(vma)
        del self._starts[i]
        del self._vmas[i]
        vma.linked = False
        self._unlink_file(vma)
        self._free_area_grew(vma.vm_start, vma.vm_end)

    def _index(self, vma: VmAreaStruct) -> int:
        i = bisect.bisect_left(self._starts, vma.vm_start)
        while self._vmas[i] is not vma:
            i += 1
        return i

    def vma_adjust(self, vma: VmAreaStruct, start: int, end: int, pgoff: int) -> None:
        """Change a linked vma's range (``vma_adjust``/``vma_expand``), keeping indexes right."""
        in_tree = vma.i_mmap_of is not None
        if in_tree:
            self._unlink_file(vma)
        old_start, old_end = vma.vm_start, vma.vm_end
        if start != vma.vm_start:
            i = self._index(vma)
            del self._starts[i]
            del self._vmas[i]
            vma.vm_start = start
            j = bisect.bisect_left(self._starts, start)
            self._starts.insert(j, start)
            self._vmas.insert(j, vma)
        vma.vm_end = end
        vma.vm_pgoff = pgoff
        if in_tree:
            self._link_file(vma)
        if start > old_start:
            self._free_area_grew(old_start, min(start, old_end))
        if end < old_end:
            self._free_area_grew(max(end, old_start), old_end)

    # -- address space layout -------------------------------------------------
    def get_unmapped_area(self, file: File | None, addr: int, length: int, flags: int) -> int:
        """``get_unmapped_area``: a free range, or ``-errno``.

        Without a usable hint the answer is the top ``length`` bytes of the
        *highest* gap below ``mmap_base`` (and above ``mmap_min_addr``) that
        fits — the gap under the vma ``i`` spans ``[max(vm_end of vma i-1,
        mmap_min_addr), min(vm_start of vma i, mmap_base))``.

        Finding it: ``arch_get_unmapped_area_topdown`` with Linux 2.6's
        free-area cache, kept exact.  Invariant: every gap whose top is above
        ``_free_area_cache`` is at most ``_cached_hole_size`` bytes.  So a
        request longer than that cannot fit above the cache and the search
        starts there (a bisect); a shorter one searches from ``mmap_base``, as
        Linux resets ``free_area_cache`` when ``len <= cached_hole_size``.  A
        search that found a gap moves the cache to the top of that gap and
        records the largest hole it stepped over; inserting vmas only shrinks
        gaps, and every vma removal or shrink (:meth:`vma_unlink`,
        :meth:`vma_adjust`) raises the cache to the top of the gap that grew.
        The address chosen is therefore exactly the full walk's; the cached
        search falls back to the full walk if it fails, so failures are the
        full walk's too.  Allocating top-down costs ``O(log vmas)`` amortised.
        """
        if length > TASK_SIZE:
            return -errno.ENOMEM
        if flags & MAP_FIXED:
            # __get_unmapped_area: the range check comes before the alignment check
            if addr > TASK_SIZE - length:
                return -errno.ENOMEM
            if addr & ~PAGE_MASK:
                return -errno.EINVAL
            return addr
        if addr:
            addr = PAGE_ALIGN(addr)
            if TASK_SIZE - length >= addr >= MMAP_MIN_ADDR and not self.vmas_in(
                addr, addr + length
            ):
                return addr
        base = self.mmap_base
        if self._free_area_base != base:
            self._free_area_base = self._free_area_cache = base
            self._cached_hole_size = 0
        if length <= self._cached_hole_size:
            # A hole above the cache might fit: search from the base (and forget
            # the holes above; the search measures them again).
            self._free_area_cache = base
            self._cached_hole_size = 0
        high = self._free_area_cache
        top, hole = self._search_topdown(high, length, self._cached_hole_size)
        if top < 0 and high != base:
            top, hole = self._search_topdown(base, length, 0)
        if top < 0:
            return -errno.ENOMEM
        # Gaps above `top` were all measured (<= hole) or were above the cache.
        self._free_area_cache = top
        self._cached_hole_size = hole if top < base else 0
        return top - length

    def _search_topdown(self, high: int, length: int, hole: int) -> tuple[int, int]:
        """Walk the gaps below ``high`` downwards (``unmapped_area_topdown``).

        Returns the top of the first gap of at least ``length`` bytes (or -1)
        and ``hole``, raised to the largest gap stepped over on the way.
        """
        starts = self._starts
        vmas = self._vmas
        i = bisect.bisect_left(starts, high) - 1  # the highest vma starting below `high`
        visited = 0
        while i >= 0 and high - MMAP_MIN_ADDR >= length:
            vma = vmas[i]
            visited += 1
            gap = high - max(vma.vm_end, MMAP_MIN_ADDR)
            if gap >= length:
                self.visits += visited
                return high, hole
            hole = max(hole, gap)
            high = vma.vm_start
            i -= 1
        self.visits += visited
        if high - MMAP_MIN_ADDR >= length:
            return high, hole
        return -1, hole

    def _free_area_grew(self, start: int, end: int) -> None:
        """``[start, end)`` became free: raise the free-area cache over the grown gap.

        The gap now holding the range tops out at the next vma's start (or at
        ``mmap_base``); if that is above the cache, the cache moves up to it so
        the next cached search sees the gap (``arch_unmap_area_topdown``).
        """
        base = self.mmap_base
        if start >= base or end <= start:
            return  # gaps above mmap_base are never searched
        j = bisect.bisect_left(self._starts, end)
        top = min(self._starts[j], base) if j < len(self._starts) else base
        if top > self._free_area_cache:
            self._free_area_cache = top
            if top >= base:
                self._cached_hole_size = 0  # no gap is above the base

    def check_free_area_cache(self) -> None:
        """Assert the free-area cache invariant against a full walk (for tests)."""
        if self._free_area_base != self.mmap_base:
            return  # the next search resets the cache
        high = self.mmap_base
        for vma in reversed(self._vmas):
            if vma.vm_start >= high:
                continue
            gap = high - max(vma.vm_end, MMAP_MIN_ADDR)
            if high > self._free_area_cache:
                assert gap <= self._cached_hole_size, (
                    f"gap {gap:#x} under {high:#x} is above the free-area cache"
                    f" {self._free_area_cache:#x} but exceeds the cached hole size"
                    f" {self._cached_hole_size:#x}"
                )
            high = vma.vm_start
        if high > self._free_area_cache:
            assert high - MMAP_MIN_ADDR <= self._cached_hole_size

    # -- the entry points as methods, for callers written before they moved out ------
    # The kernel's functions are the module-level ones below (traced there); these only
    # forward to them.
    def do_mmap(
        self, file: File | None, addr: int, length: int, prot: int, flags: int, pgoff: int
    ) -> int:
        return do_mmap(self, file, addr, length, prot, flags, pgoff)

    def mmap_region(
        self, file: File | None, addr: int, length: int, vm_flags: int, pgoff: int
    ) -> int:
        return mmap_region(self, file, addr, length, vm_flags, pgoff)

    def do_munmap(self, start: int, length: int) -> int:
        return do_munmap(self, start, length)

    def split_vma(self, vma: VmAreaStruct, addr: int, *, new_below: bool) -> int:
        return split_vma(self, vma, addr, new_below=new_below)

    def unmap_region(self, vma: VmAreaStruct, start: int, end: int) -> None:
        unmap_region(self, vma, start, end)

    def zap_vma_range(self, vma: VmAreaStruct, start: int, end: int, *, even_cows: bool) -> int:
        return zap_vma_range(self, vma, start, end, even_cows=even_cows)

    def exit_mmap(self) -> None:
        exit_mmap(self)


# -- do_mmap --------------------------------------------------------------
@kernel_function("do_mmap", file="mm/mmap.c", hide_first=True)
def do_mmap(
    mm: MmStruct, file: File | None, addr: int, length: int, prot: int, flags: int, pgoff: int
) -> int:
    """``do_mmap``: the address of the new mapping, or ``-errno``."""
    spec = mm.kernel.spec
    if not length:
        return -errno.EINVAL
    if spec.has_map_fixed_noreplace and flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    if not flags & MAP_FIXED:
        # round_hint_to_min: the hint is first rounded *down* to a page, so a
        # hint below one page means "no hint" at all.
        addr &= PAGE_MASK
        if addr and addr < MMAP_MIN_ADDR:
            addr = PAGE_ALIGN(MMAP_MIN_ADDR)
    length = PAGE_ALIGN(length)
    if not length:
        return -errno.ENOMEM
    if pgoff + (length >> PAGE_SHIFT) > ULONG_MAX:  # unsigned wrap (R5)
        return -errno.EOVERFLOW
    if mm.map_count > SYSCTL_MAX_MAP_COUNT:
        return -errno.ENOMEM
    addr = mm.get_unmapped_area(file, addr, length, flags)
    if is_err_value(addr):
        return addr
    noreplace = spec.has_map_fixed_noreplace and flags & MAP_FIXED_NOREPLACE
    if noreplace and mm.vmas_in(addr, addr + length):
        return -errno.EEXIST
    vm_flags = (
        calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    )
    # MAP_LOCKED: can_do_mlock() and mlock_future_ok() pass for the simulated
    # processes, which run as root (CAP_IPC_LOCK): RLIMIT_MEMLOCK is never in the way
    if file is not None:
        inode = file.f_inode
        if spec.vfs_file_mmap_ok and not _file_mmap_ok(file, pgoff, length):
            return -errno.EOVERFLOW
        map_type = flags & MAP_TYPE
        if map_type == MAP_SHARED and spec.has_map_shared_validate:
            flags &= LEGACY_MAP_MASK  # unknown flags are silently dropped
        if map_type in (MAP_SHARED, MAP_SHARED_VALIDATE) and (
            map_type == MAP_SHARED or spec.has_map_shared_validate
        ):
            # Only kernels with MAP_SHARED_VALIDATE (4.15+) validate flags; before
            # that, do_mmap_pgoff ignored unknown bits (3.4 has no EOPNOTSUPP).
            if spec.has_map_shared_validate and flags & ~LEGACY_MAP_MASK:
                return -errno.EOPNOTSUPP
            if prot & PROT_WRITE and not file.f_mode & FMODE_WRITE:
                return -errno.EACCES  # R7
            if inode.append_only and file.f_mode & FMODE_WRITE:
                return -errno.EACCES
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.f_mode & FMODE_WRITE:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
            map_type = MAP_PRIVATE  # fall through
        if map_type == MAP_PRIVATE:
            if not file.f_mode & FMODE_READ:
                return -errno.EACCES  # R8
            if path_noexec(file):
                # SB_I_NOEXEC (the dma-buf fs since 6de2aeffabaa, latest): no
                # executable mapping now, and none later (VM_MAYEXEC goes, so
                # mprotect(PROT_EXEC) fails EACCES)
                if vm_flags & VM_EXEC:
                    return -errno.EPERM
                vm_flags &= ~VM_MAYEXEC
            if file.f_op.mmap is None:
                return -errno.ENODEV  # R10
            if vm_flags & VM_GROWSDOWN:
                return -errno.EINVAL
        else:
            return -errno.EINVAL  # R9
    else:
        # The anonymous branch knows only MAP_SHARED and MAP_PRIVATE: there is
        # no MAP_SHARED_VALIDATE case, so map type 3 is EINVAL on every kernel.
        map_type = flags & MAP_TYPE
        if map_type == MAP_SHARED:
            if vm_flags & VM_GROWSDOWN:
                return -errno.EINVAL
            pgoff = 0
            vm_flags |= VM_SHARED | VM_MAYSHARE
        elif map_type == MAP_PRIVATE:
            pgoff = addr >> PAGE_SHIFT
        else:
            return -errno.EINVAL
    if flags & MAP_NORESERVE:
        vm_flags |= VM_NORESERVE
    return mmap_region(mm, file, addr, length, vm_flags, pgoff)


# -- mmap_region ----------------------------------------------------------
@kernel_function("mmap_region", file="mm/mmap.c", hide_first=True)
def mmap_region(
    mm: MmStruct, file: File | None, addr: int, length: int, vm_flags: int, pgoff: int
) -> int:
    """``mmap_region``: build (or merge) the vma, call ``f_op->mmap``, link it."""
    spec = mm.kernel.spec
    end = addr + length
    # Old mappings in the way are unmapped before ->mmap.  6.12 detaches them
    # first, but for a file mapping it zaps their PTEs and calls their ->close
    # before ->mmap (vms_clean_up_area), so a failure still leaves a hole:
    # the outcome is the same as the older unmap-first order modelled here.
    if mm.vmas_in(addr, end) and do_munmap(mm, addr, length) < 0:
        return -errno.ENOMEM
    if is_cow_mapping(vm_flags) and vm_flags & VM_WRITE:
        vm_flags |= VM_ACCOUNT  # accountable_mapping (no commit limit is modelled)

    merged = _try_merge_new(mm, file, addr, end, vm_flags, pgoff)
    if merged is not None:
        return addr

    vma = VmAreaStruct(
        mm,
        addr,
        end,
        vm_flags,
        vm_get_page_prot(vm_flags),
        pgoff,
        vm_ops=VmOperationsStruct(owner="dummy_vm_ops") if spec.vma_init_dummy_vm_ops else None,
    )
    if file is not None:
        vma.vm_file = get_file(file)
        error = call_mmap(file, vma)
        if error:
            # unmap_and_free_vma:
            if spec.mmap_region_error_fputs == "vm_file":
                if vma.vm_file is not None:
                    fput(vma.vm_file)
            else:
                fput(file)  # <= 5.10: the original file, whatever vm_file now holds (R23)
            vma.vm_file = None
            unmap_region(mm, vma, vma.vm_start, vma.vm_end)
            return error
        if vma.vm_start != addr:
            raise KernelOops("mmap_region", "driver changed vma->vm_start in ->mmap")
        addr = vma.vm_start
        if vma.vm_flags & VM_LOCKED and vma.vm_flags & spec.vm_special_flags:
            # __mmap_complete: special mappings (every PFN-mapped dma-buf) are never
            # mlocked; VM_LOCKED goes again (vm_flags_clear(vma, VM_LOCKED_MASK))
            vma.vm_flags &= ~VM_LOCKED
    elif vm_flags & VM_SHARED:
        error = shmem_zero_setup(vma)
        if error:
            return error
    else:
        vma.vm_ops = None  # vma_set_anonymous
    mm.vma_link(vma)
    return addr


@kernel_function("call_mmap", file="include/linux/fs.h")
def call_mmap(file: File, vma: VmAreaStruct) -> int:
    assert file.f_op.mmap is not None
    return file.f_op.mmap(file, vma)


def _try_merge_new(
    mm: MmStruct, file: File | None, addr: int, end: int, vm_flags: int, pgoff: int
) -> VmAreaStruct | None:
    """The "attempt to expand an old mapping" step, before any ``->mmap`` (R35)."""
    spec = mm.kernel.spec
    if vm_flags & spec.vm_special_flags:
        return None
    if file is None and vm_flags & VM_SHARED:
        return None  # a new shmem object each time: never mergeable
    prev, nxt = mm.prev_next(addr, end)
    npages = (end - addr) >> PAGE_SHIFT
    can_prev = (
        prev is not None
        and prev.vm_end == addr
        and _is_mergeable(prev, vm_flags, file)
        and prev.vm_pgoff + prev.pages() == pgoff
    )
    can_next = (
        nxt is not None
        and nxt.vm_start == end
        and _is_mergeable(nxt, vm_flags, file)
        and pgoff + npages == nxt.vm_pgoff
    )
    if can_prev and prev is not None:
        if can_next and nxt is not None:
            new_end = nxt.vm_end
            _remove_merged(mm, nxt)
        else:
            new_end = end
        mm.vma_adjust(prev, prev.vm_start, new_end, prev.vm_pgoff)
        if mm.kernel.tracer.enabled:
            mm.kernel.tracer.event("vma_merge", f"expanded {prev.trace_name()}")
        return prev
    if can_next and nxt is not None:
        mm.vma_adjust(nxt, addr, nxt.vm_end, pgoff)
        if mm.kernel.tracer.enabled:
            mm.kernel.tracer.event("vma_merge", f"expanded {nxt.trace_name()}")
        return nxt
    return None


def _remove_merged(mm: MmStruct, vma: VmAreaStruct) -> None:
    mm.vma_unlink(vma)
    if vma.vm_file is not None:
        fput(vma.vm_file)


# -- munmap ---------------------------------------------------------------
@kernel_function("do_munmap", file="mm/mmap.c", hide_first=True)
def do_munmap(mm: MmStruct, start: int, length: int) -> int:
    """``do_munmap``: split at the edges (``may_split`` may veto), then unmap (R19)."""
    if start & ~PAGE_MASK or start > TASK_SIZE or length > TASK_SIZE - start:
        return -errno.EINVAL
    length = PAGE_ALIGN(length)
    end = start + length
    if length == 0:
        return -errno.EINVAL
    if not mm.vmas_in(start, end):
        return 0
    err = _split_edges(mm, start, end)
    if err:
        return err
    doomed = mm.vmas_in(start, end)
    for vma in doomed:
        mm.vma_unlink(vma)
    for vma in doomed:
        unmap_region(mm, vma, vma.vm_start, vma.vm_end)
    for vma in doomed:
        remove_vma(vma)
    return 0


def _split_edges(mm: MmStruct, start: int, end: int) -> int:
    # As in do_vmi_align_munmap (and 3.x do_munmap): split the start edge, then
    # the end edge.  A ->may_split veto at the end edge returns with the start
    # edge already split; the kernel does not undo it.
    for at in (start, end):
        vma = mm.vma_lookup(at - 1 if at == end else at)
        if vma is None or not vma.vm_start < at < vma.vm_end:
            continue
        err = split_vma(mm, vma, at, new_below=at == start)
        if err:
            return err
    return 0


@kernel_function("__split_vma", file="mm/vma.c", hide_first=True)
def split_vma(mm: MmStruct, vma: VmAreaStruct, addr: int, *, new_below: bool) -> int:
    """Split ``vma`` at ``addr``: 0, or the ``-errno`` of ``->may_split``'s veto.

    The new vma gets a file reference and ``->open``.  With ``new_below`` it is
    the part below ``addr`` (and the old vma keeps the top); otherwise the top part.
    """
    if vma.vm_ops is not None and vma.vm_ops.may_split is not None:
        err = vma.vm_ops.may_split(vma, addr)
        if err:
            return err
    delta = (addr - vma.vm_start) >> PAGE_SHIFT
    new = vm_area_dup(vma)
    if new_below:
        new.vm_end = addr
        mm.vma_adjust(vma, addr, vma.vm_end, vma.vm_pgoff + delta)
    else:
        new.vm_start = addr
        new.vm_pgoff += delta
        mm.vma_adjust(vma, vma.vm_start, addr, vma.vm_pgoff)
    if new.vm_file is not None:
        get_file(new.vm_file)
    if new.vm_ops is not None and new.vm_ops.open is not None:
        new.vm_ops.open(new)
    mm.vma_link(new)
    return 0


@kernel_function("remove_vma", file="mm/vma.c")
def remove_vma(vma: VmAreaStruct) -> None:
    """``vm_ops->close`` then ``fput(vm_file)``."""
    if vma.vm_ops is not None and vma.vm_ops.close is not None:
        vma.vm_ops.close(vma)
    if vma.vm_file is not None:
        fput(vma.vm_file)


@kernel_function("unmap_region", file="mm/mmap.c", hide_first=True)
def unmap_region(mm: MmStruct, vma: VmAreaStruct, start: int, end: int) -> None:
    zap_vma_range(mm, vma, start, end, even_cows=True)


def zap_vma_range(mm: MmStruct, vma: VmAreaStruct, start: int, end: int, *, even_cows: bool) -> int:
    """Remove the present PTEs of ``[start, end)``; returns how many went."""
    return zap_pte_range(mm, vma, start, end, even_cows=even_cows)


# -- teardown -------------------------------------------------------------
@kernel_function("exit_mmap", file="mm/mmap.c", hide_first=True)
def exit_mmap(mm: MmStruct) -> None:
    """Tear down every vma (process exit)."""
    vmas = mm.vmas
    for vma in vmas:
        mm.vma_unlink(vma)
        unmap_region(mm, vma, vma.vm_start, vma.vm_end)
    for vma in vmas:
        remove_vma(vma)
    mm.dead = True


def _is_mergeable(vma: VmAreaStruct, vm_flags: int, file: File | None) -> bool:
    """``is_mergeable_vma``: same flags, same file, no ``->close``."""
    if vma.vm_flags != vm_flags:
        return False
    if vma.vm_file is not file:
        return False
    return not (vma.vm_ops is not None and vma.vm_ops.close is not None)


def _file_mmap_ok(file: File, pgoff: int, length: int) -> bool:
    """``file_mmap_ok``: non-regular files (dma-buf) may use offsets up to ULONG_MAX."""
    inode = file.f_inode
    maxsize = (1 << 63) - 1 if inode.is_reg() else ULONG_MAX  # MAX_LFS_FILESIZE / ULONG_MAX
    if length > maxsize:
        return False
    maxsize -= length
    return pgoff <= maxsize >> PAGE_SHIFT


__all__ += ["PAGE_SIZE", "is_cow_mapping"]
