"""``struct vm_area_struct``, ``vm_operations_struct`` and ``struct vm_fault``.

Flag values are those of include/linux/mm.h (x86-64), so a trace or a
``vm_flags`` dump reads like the kernel's.

A driver installs ``vm_ops`` by assigning a :class:`VmOperationsStruct` whose
unused callbacks stay ``None`` — the NULL function pointers of C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import define, field

from .page_alloc import PAGE_SHIFT

if TYPE_CHECKING:
    from ..fs import File
    from ..kernel import Kernel
    from .mmap import MmStruct
    from .page_alloc import Page

__all__ = [
    "FAULT_FLAG_WRITE",
    "VM_ACCOUNT",
    "VM_DONTCOPY",
    "VM_DONTDUMP",
    "VM_DONTEXPAND",
    "VM_EXEC",
    "VM_FAULT_ERROR",
    "VM_FAULT_NOPAGE",
    "VM_FAULT_OOM",
    "VM_FAULT_SIGBUS",
    "VM_FAULT_SIGSEGV",
    "VM_GROWSDOWN",
    "VM_IO",
    "VM_LOCKED",
    "VM_MAYEXEC",
    "VM_MAYREAD",
    "VM_MAYSHARE",
    "VM_MAYWRITE",
    "VM_MIXEDMAP",
    "VM_NORESERVE",
    "VM_PFNMAP",
    "VM_READ",
    "VM_RESERVED",
    "VM_SHARED",
    "VM_SPECIAL",
    "VM_WIPEONFORK",
    "VM_WRITE",
    "VmAreaStruct",
    "VmFault",
    "VmOperationsStruct",
    "is_cow_mapping",
    "vm_area_dup",
    "vm_flags_str",
    "vma_pages",
    "vma_perms",
]

VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_GROWSDOWN = 0x00000100
VM_PFNMAP = 0x00000400
VM_LOCKED = 0x00002000
VM_IO = 0x00004000
VM_DONTCOPY = 0x00020000
VM_DONTEXPAND = 0x00040000
VM_RESERVED = 0x00080000  # Linux <= 3.6 only (spec remap_pfn_range_flags)
VM_ACCOUNT = 0x00100000
VM_NORESERVE = 0x00200000
VM_HUGETLB = 0x00400000
VM_WIPEONFORK = 0x02000000
VM_DONTDUMP = 0x04000000
VM_MIXEDMAP = 0x10000000

# Mappings that can never be merged or expanded (include/linux/mm.h VM_SPECIAL).
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP

# vm_fault_t bits (include/linux/mm_types.h)
VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_MAJOR = 0x000004
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_NOPAGE = 0x000100
VM_FAULT_LOCKED = 0x000200
VM_FAULT_RETRY = 0x000400
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV

FAULT_FLAG_WRITE = 0x01

_FLAG_NAMES = [
    (VM_READ, "rd"),
    (VM_WRITE, "wr"),
    (VM_EXEC, "ex"),
    (VM_SHARED, "sh"),
    (VM_MAYREAD, "mr"),
    (VM_MAYWRITE, "mw"),
    (VM_MAYEXEC, "me"),
    (VM_MAYSHARE, "ms"),
    (VM_GROWSDOWN, "gd"),
    (VM_PFNMAP, "pf"),
    (VM_LOCKED, "lo"),
    (VM_IO, "io"),
    (VM_DONTCOPY, "dc"),
    (VM_DONTEXPAND, "de"),
    (VM_RESERVED, "rv"),
    (VM_ACCOUNT, "ac"),
    (VM_NORESERVE, "nr"),
    (VM_WIPEONFORK, "wf"),
    (VM_DONTDUMP, "dd"),
    (VM_MIXEDMAP, "mm"),
]


def vma_perms(flags: int) -> str:
    """The ``rwxp``/``rwxs`` column of /proc/PID/maps (``show_map_vma``)."""
    return (
        ("r" if flags & VM_READ else "-")
        + ("w" if flags & VM_WRITE else "-")
        + ("x" if flags & VM_EXEC else "-")
        + ("s" if flags & VM_MAYSHARE else "p")
    )


def vm_flags_str(flags: int) -> str:
    """Two-letter mnemonics as in /proc/PID/smaps ``VmFlags:``."""
    return " ".join(name for bit, name in _FLAG_NAMES if flags & bit)


@define(eq=False, slots=True)
class VmOperationsStruct:
    """``struct vm_operations_struct``: ``None`` is a NULL callback.

    Signatures: ``open(vma)``, ``close(vma)``, ``fault(vmf) -> vm_fault_t``,
    ``may_split(vma, addr) -> int``, ``mremap(vma) -> int``,
    ``page_mkwrite(vmf) -> vm_fault_t``, ``name(vma) -> str``.
    """

    open: Callable[[VmAreaStruct], None] | None = None
    close: Callable[[VmAreaStruct], None] | None = None
    fault: Callable[[VmFault], int] | None = None
    may_split: Callable[[VmAreaStruct, int], int] | None = None
    mremap: Callable[[VmAreaStruct], int] | None = None
    page_mkwrite: Callable[[VmFault], int] | None = None
    name: Callable[[VmAreaStruct], str] | None = None
    owner: str = ""
    """Who installed these ops (for traces and /proc maps), e.g. ``shmem``."""


@define(eq=False, slots=True)
class VmAreaStruct:
    """``struct vm_area_struct``.

    Simplified: no anon_vma chains (private COW pages are tracked directly in
    the page table); ``vm_page_prot`` is the PTE protection int of
    :mod:`.pgtable`.
    """

    vm_mm: MmStruct = field(repr=False)
    vm_start: int
    vm_end: int
    vm_flags: int
    vm_page_prot: int
    vm_pgoff: int = 0
    vm_file: File | None = field(default=None, repr=False)
    vm_ops: VmOperationsStruct | None = field(default=None, repr=False)
    vm_private_data: Any = field(default=None, repr=False)
    anon_vma: bool = field(default=False, repr=False)
    """Has private anonymous (COW) pages — the kernel's ``vma->anon_vma != NULL``."""
    linked: bool = field(default=False, repr=False)
    """Is the vma in its mm (and its file's i_mmap)?  Internal bookkeeping."""
    i_mmap_of: Any = field(default=None, repr=False)
    """The address_space this vma was linked into (the file left in vm_file)."""

    @property
    def kernel(self) -> Kernel:
        return self.vm_mm.kernel

    def trace_name(self) -> str:
        return f"vma[{self.vm_start:#x}-{self.vm_end:#x}]"

    def pages(self) -> int:
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def linear_page_index(self, address: int) -> int:
        """``linear_page_index``: the file page index an address maps."""
        return ((address - self.vm_start) >> PAGE_SHIFT) + self.vm_pgoff

    def is_anonymous(self) -> bool:
        """``vma_is_anonymous``: no vm_ops at all."""
        return self.vm_ops is None


def vm_area_dup(orig: VmAreaStruct, mm: MmStruct | None = None) -> VmAreaStruct:
    """``vm_area_dup``: a copy of ``orig`` for a split, a fork (into ``mm``) or an mremap move.

    Like the kernel's, the copy is not linked anywhere and takes no file
    reference or ``->open`` call: the caller does that.  Instruments see every
    copy (``on_vma_dup(orig, new)``), so a checker can follow a mapping
    through splits, forks and moves.
    """
    new = VmAreaStruct(
        orig.vm_mm if mm is None else mm,
        orig.vm_start,
        orig.vm_end,
        orig.vm_flags,
        orig.vm_page_prot,
        orig.vm_pgoff,
        vm_file=orig.vm_file,
        vm_ops=orig.vm_ops,
        vm_private_data=orig.vm_private_data,
    )
    new.anon_vma = orig.anon_vma
    kernel = new.vm_mm.kernel
    if kernel.observers.vma_dup:
        kernel.observers.emit("vma_dup", orig, new)
    return new


def is_cow_mapping(vm_flags: int) -> bool:
    """``is_cow_mapping`` (include/linux/mm.h): private and may be written."""
    return (vm_flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def vma_pages(vma: VmAreaStruct) -> int:
    """``vma_pages(vma)``: ``(vm_end - vm_start) >> PAGE_SHIFT``."""
    return (vma.vm_end - vma.vm_start) >> PAGE_SHIFT


@define(eq=False, slots=True)
class VmFault:
    """``struct vm_fault`` handed to ``vm_ops->fault``.

    ``address`` is page aligned; ``real_address`` is the faulting byte.  A
    handler either sets ``page`` (a referenced :class:`Page`) and returns 0, or
    inserts a PTE itself and returns ``VM_FAULT_NOPAGE``, or returns an error
    bit such as ``VM_FAULT_SIGBUS``.
    """

    vma: VmAreaStruct
    address: int
    pgoff: int
    flags: int
    real_address: int
    page: Page | None = None

    @property
    def kernel(self) -> Kernel:
        return self.vma.vm_mm.kernel

    def trace_name(self) -> str:
        return f"vmf(addr={self.address:#x}, pgoff={self.pgoff:#x})"
