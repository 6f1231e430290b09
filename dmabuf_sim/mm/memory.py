"""Page faults and the PTE helpers drivers call (mm/memory.c, arch/x86/mm/fault.c).

The fault path (kernel-spec §5.3):

* no vma → ``SIGSEGV``/``SEGV_MAPERR``; access the vma forbids →
  ``SIGSEGV``/``SEGV_ACCERR`` (R32);
* PTE none: ``vma_is_anonymous`` (``vm_ops`` NULL) → ``do_anonymous_page``,
  which on modern specs refuses ``VM_SHARED`` with ``VM_FAULT_SIGBUS`` (R30)
  and on the 2012-era specs hands out anonymous memory (R31); otherwise
  ``do_fault``: no ``->fault`` → ``VM_FAULT_SIGBUS``; read → ``do_read_fault``;
  private write → ``do_cow_fault``; shared write → ``do_shared_fault``;
* ``VM_FAULT_SIGBUS`` → ``SIGBUS``/``BUS_ADRERR`` at the address (R32);
* write to a present read-only PTE → ``do_wp_page`` (COW for private vmas).

Helpers with the kernel's flag side effects and errors (§5.4, §5.5):
``remap_pfn_range`` (R36, R37), ``vm_insert_page`` (R39), ``vmf_insert_pfn``
(R38), ``vmf_insert_mixed``, ``zap_vma_ptes`` (R29), ``unmap_mapping_range``
(R25-R28), ``copy_page_range`` for fork (R40).

Simplified: no page_mkwrite write-notify dance for shared mappings (shared
writable vmas get writable PTEs at fault time), no fault-around, no THP.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import (
    BUS_ADRERR,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SIGBUS,
    SIGSEGV,
    KernelOops,
    OutOfMemory,
    Signal,
)
from ..trace import kernel_function
from .gfp import __GFP_ZERO, GFP_HIGHUSER_MOVABLE
from .oom_kill import pagefault_out_of_memory
from .page_alloc import PAGE_ALIGN, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, ULONG_MAX, Page
from .pgtable import (
    _CACHE_MASK,
    _PAGE_DIRTY,
    _PAGE_RW,
    _PAGE_USER,
    CACHE_WB,
    mk_pte,
    pte_mkwrite,
    pte_pfn,
    pte_special,
    pte_wrprotect,
)
from .vma import (
    FAULT_FLAG_WRITE,
    VM_EXEC,
    VM_FAULT_ERROR,
    VM_FAULT_NOPAGE,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VmAreaStruct,
    VmFault,
    is_cow_mapping,
)

if TYPE_CHECKING:
    from ..fs import AddressSpace
    from ..kernel import Kernel
    from .mmap import MmStruct

__all__ = [
    "copy_page_range",
    "get_page",
    "handle_mm_fault",
    "put_page",
    "remap_pfn_range",
    "unmap_mapping_range",
    "user_access",
    "vm_insert_page",
    "vmf_insert_mixed",
    "vmf_insert_pfn",
    "zap_vma_ptes",
]

_MAX_FAULT_RETRIES = 4
_PAGE_OFFSET = PAGE_SIZE - 1
"""``~PAGE_MASK``, as a constant (the load, store and remap paths take an offset per page)."""


# -- page references -------------------------------------------------------------
def get_page(page: Page) -> None:
    """``get_page``: take a reference."""
    page.refcount += 1


def put_page(kernel: Kernel, page: Page) -> None:
    """``put_page``: drop a reference; the last one frees a page nobody else owns.

    A put on a freed page (its ``struct page`` already gone, refcount 0) is
    the kernel's ``VM_BUG_ON_PAGE(page_ref_count(page) == 0)``: reported as a
    bad page, nothing else changes."""
    mem = kernel.mem
    if page.refcount <= 0 or not mem.pfn_allocated(page.pfn):
        kernel.report_bad_page(page.pfn, "put_page on a page that was already freed")
        return
    page.refcount -= 1
    if page.refcount == 0:
        mem.last_reference_dropped(page)


# -- the CPU's view: loads and stores through the MMU -------------------------------
def user_access(
    mm: MmStruct,
    addr: int,
    n: int,
    *,
    write: bool,
    data: bytes | None = None,
    user: bool = True,
) -> bytes:
    """A load (``write=False``) or store of ``n`` bytes at user address ``addr``.

    Walks the page table; a missing or insufficient PTE goes through the fault
    path, which may raise :class:`~dmabuf_sim.errors.Signal`.  Bytes move
    through the CPU cache for write-back PTEs and straight to DRAM otherwise.
    ``user=False`` is the kernel touching user memory (``copy_from_user``):
    a fault it cannot resolve raises a signal for the exception-table fixup
    to turn into ``-EFAULT``, and running out of memory does not OOM-kill.
    """
    kernel = mm.kernel
    entries = mm.pgtable.entries
    cache = kernel.cache
    mem = kernel.mem
    observers = kernel.observers
    need = _PAGE_USER | _PAGE_RW if write else _PAGE_USER  # pte_user_access_ok, inlined
    pieces: list[bytes] = []
    pos = 0
    while pos < n:
        va = addr + pos
        off = va & _PAGE_OFFSET
        chunk = n - pos if n - pos <= PAGE_SIZE - off else PAGE_SIZE - off
        vpn = va >> PAGE_SHIFT
        pte = entries.get(vpn)
        if pte is None or pte & need != need:
            pte = _fault_until_mapped(mm, va, write, user)
        pa = (pte >> PAGE_SHIFT << PAGE_SHIFT) | off  # pte_pfn(pte) << PAGE_SHIFT | offset
        wb = pte & _CACHE_MASK == CACHE_WB
        if write:
            assert data is not None
            piece = data if chunk == n else data[pos : pos + chunk]
            if wb:
                cache.store(pa, piece)
            else:
                mem.write(pa, piece)
            if not pte & _PAGE_DIRTY:
                entries[vpn] = pte | _PAGE_DIRTY
            if observers.cpu_access:
                observers.emit("cpu_access", pa, piece, True, _origin(mm, va))
        else:
            piece = cache.load(pa, chunk) if wb else mem.read(pa, chunk)
            if observers.cpu_access:
                observers.emit("cpu_access", pa, piece, False, _origin(mm, va))
            pieces.append(piece)
        pos += chunk
    if len(pieces) == 1:
        return pieces[0]
    return b"".join(pieces)


def _origin(mm: MmStruct, va: int) -> str:
    pid = mm.owner.pid if mm.owner is not None else 0
    return f"CPU (pid {pid}, va {va:#x})"


def _fault_until_mapped(mm: MmStruct, addr: int, write: bool, user: bool = True) -> int:
    need = _PAGE_USER | _PAGE_RW if write else _PAGE_USER  # pte_user_access_ok, inlined
    entries = mm.pgtable.entries
    for _ in range(_MAX_FAULT_RETRIES):
        do_user_addr_fault(mm, addr, write, user)
        pte = entries.get(addr >> PAGE_SHIFT)
        if pte is not None and pte & need == need:
            return pte
    raise KernelOops(
        "handle_mm_fault",
        f"fault at {addr:#x} keeps returning without a usable PTE (the task would livelock)",
    )


@kernel_function("do_user_addr_fault", file="arch/x86/mm/fault.c")
def do_user_addr_fault(mm: MmStruct, addr: int, write: bool, user: bool = True) -> None:
    """The arch fault handler: find the vma, check access, call handle_mm_fault.

    ``VM_FAULT_OOM`` (``mm_fault_error``): from user mode the OOM killer runs
    (``pagefault_out_of_memory``) and the task is killed; from kernel mode the
    access fails through the exception-table fixup (``-EFAULT``)."""
    vma = mm.vma_lookup(addr)
    if vma is None:
        _deliver(mm, SIGSEGV(SEGV_MAPERR, addr, _pid(mm)))
    assert vma is not None
    if write:
        if not vma.vm_flags & VM_WRITE:
            _deliver(mm, SIGSEGV(SEGV_ACCERR, addr, _pid(mm)))
    elif not vma.vm_flags & (VM_READ | VM_WRITE | VM_EXEC):
        _deliver(mm, SIGSEGV(SEGV_ACCERR, addr, _pid(mm)))
    fault = handle_mm_fault(vma, addr, FAULT_FLAG_WRITE if write else 0)
    kernel = mm.kernel
    if kernel.observers.fault and not fault & VM_FAULT_ERROR:
        kernel.observers.emit("fault", vma, addr)  # checkers see a PTE the moment it is installed
    if fault & VM_FAULT_ERROR:
        if fault & VM_FAULT_OOM:
            if not user:
                raise SIGSEGV(SEGV_MAPERR, addr, _pid(mm))  # kernelmode_fixup_or_oops
            raise pagefault_out_of_memory(mm, addr)
        if fault & VM_FAULT_SIGBUS:
            _deliver(mm, SIGBUS(BUS_ADRERR, addr, _pid(mm)))
        _deliver(mm, SIGSEGV(SEGV_ACCERR, addr, _pid(mm)))


def _pid(mm: MmStruct) -> int:
    """The faulting task's pid (only needed once a signal is due)."""
    return mm.owner.pid if mm.owner is not None else 0


def _deliver(mm: MmStruct, sig: Signal) -> None:
    tracer = mm.kernel.tracer
    if tracer.enabled:
        tracer.event("force_sig_fault", str(sig))
    raise sig


@kernel_function("handle_mm_fault", file="mm/memory.c")
def handle_mm_fault(vma: VmAreaStruct, address: int, flags: int) -> int:
    """``handle_mm_fault`` → ``handle_pte_fault``: returns a ``vm_fault_t``.

    While it runs, ``kernel.in_fault`` is raised, so anything that waits for
    device work from a fault handler can be caught (R55).
    """
    mm = vma.vm_mm
    kernel = mm.kernel
    kernel.in_fault += 1
    try:
        # handle_pte_fault
        pte = mm.pgtable.entries.get(address >> PAGE_SHIFT)
        if pte is None:
            # linear_page_index(vma, address), inlined (this is the per-fault path)
            pgoff = ((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff
            vmf = VmFault(vma, address & PAGE_MASK, pgoff, flags, address)
            ops = vma.vm_ops
            if ops is None:
                return do_anonymous_page(vmf)
            if ops.fault is None and kernel.spec.fault_without_handler == "anonymous":
                # 2012-era handle_pte_fault: no ->fault means anonymous memory (R31)
                return do_anonymous_page(vmf)
            return do_fault(vmf)
        if flags & FAULT_FLAG_WRITE and not pte & _PAGE_RW:
            return do_wp_page(vma, address, pte)
        return 0  # spurious (another thread fixed it up)
    finally:
        kernel.in_fault -= 1


@kernel_function("do_anonymous_page", file="mm/memory.c")
def do_anonymous_page(vmf: VmFault) -> int:
    vma = vmf.vma
    kernel = vma.kernel
    if vma.vm_flags & VM_SHARED and kernel.spec.fault_without_handler == "sigbus":
        return VM_FAULT_SIGBUS  # "File mapping without ->vm_ops ?" (R30)
    mm = vma.vm_mm
    vpn = vmf.address >> PAGE_SHIFT
    if not vmf.flags & FAULT_FLAG_WRITE:
        # the shared zero page, read-only and special
        mm.pgtable.set(vpn, mk_pte(kernel.zero_pfn, _prot_ro(vma.vm_page_prot), special=True))
        return 0
    page = _alloc_anon_page(kernel)
    if page is None:
        return VM_FAULT_OOM
    vma.anon_vma = True
    _install_page(vma, vpn, page, writable=bool(vma.vm_flags & VM_WRITE))
    return 0


def _alloc_anon_page(kernel: Kernel) -> Page | None:
    """``vma_alloc_zeroed_movable_folio``: a zeroed page, or None (NULL) when memory is out."""
    try:
        pfn = kernel.mem.alloc_pages(0, GFP_HIGHUSER_MOVABLE | __GFP_ZERO)
    except OutOfMemory:
        return None
    page = kernel.mem.pfn_to_page(pfn)
    page.anon = True
    return page


def _prot_ro(prot: int) -> int:
    return prot & ~_PAGE_RW


def _install_page(vma: VmAreaStruct, vpn: int, page: Page, *, writable: bool) -> None:
    """``set_pte_at`` of a refcounted page (the caller's reference becomes the PTE's)."""
    prot = vma.vm_page_prot if writable else _prot_ro(vma.vm_page_prot)
    pte = mk_pte(page.pfn, prot)
    if writable:
        pte = pte_mkwrite(pte)
    page.mapcount += 1
    mm = vma.vm_mm
    mm.pgtable.set(vpn, pte)
    tracer = mm.kernel.tracer
    if tracer.enabled:
        tracer.event("set_pte_at", f"{vpn << PAGE_SHIFT:#x} -> pfn {page.pfn:#x}")


@kernel_function("do_fault", file="mm/memory.c")
def do_fault(vmf: VmFault) -> int:
    vma = vmf.vma
    ops = vma.vm_ops
    if ops is None or ops.fault is None:
        # "The VMA was not fully populated on mmap() or missing VM_DONTEXPAND"
        pte = vma.vm_mm.pgtable.get(vmf.address >> PAGE_SHIFT)
        return VM_FAULT_SIGBUS if pte is None else VM_FAULT_NOPAGE
    if not vmf.flags & FAULT_FLAG_WRITE:
        return do_read_fault(vmf)
    if not vma.vm_flags & VM_SHARED:
        return do_cow_fault(vmf)
    return do_shared_fault(vmf)


@kernel_function("__do_fault", file="mm/memory.c")
def __do_fault(vmf: VmFault) -> int:
    ops = vmf.vma.vm_ops
    assert ops is not None and ops.fault is not None
    ret = ops.fault(vmf)
    if type(ret) is not int and (not isinstance(ret, int) or isinstance(ret, bool)):
        raise TypeError(
            f"vm_ops.fault must return a vm_fault_t int (0, VM_FAULT_NOPAGE, VM_FAULT_SIGBUS..),"
            f" not {type(ret).__name__}"
        )
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
        return ret
    if vmf.page is None:
        raise KernelOops("__do_fault", "->fault returned 0 without setting vmf->page")
    return ret


@kernel_function("do_read_fault", file="mm/memory.c")
def do_read_fault(vmf: VmFault) -> int:
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
        return ret
    vma = vmf.vma
    assert vmf.page is not None
    writable = bool(vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE)
    _finish_fault(vmf, vmf.page, writable=writable)
    return ret


@kernel_function("do_shared_fault", file="mm/memory.c")
def do_shared_fault(vmf: VmFault) -> int:
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
        return ret
    assert vmf.page is not None
    ops = vmf.vma.vm_ops
    if ops is not None and ops.page_mkwrite is not None:
        tmp = ops.page_mkwrite(vmf)
        if tmp & VM_FAULT_ERROR:
            put_page(vmf.kernel, vmf.page)
            return tmp
    _finish_fault(vmf, vmf.page, writable=True)
    return ret


@kernel_function("do_cow_fault", file="mm/memory.c")
def do_cow_fault(vmf: VmFault) -> int:
    """Private write fault: copy the driver's page into a new anonymous page."""
    vma = vmf.vma
    kernel = vma.kernel
    new = _alloc_anon_page(kernel)
    if new is None:
        return VM_FAULT_OOM
    ret = __do_fault(vmf)
    if ret & VM_FAULT_ERROR:
        put_page(kernel, new)
        return ret
    if ret & VM_FAULT_NOPAGE:
        # The driver inserted a PTE itself; the write retries and COWs in do_wp_page.
        put_page(kernel, new)
        return ret
    assert vmf.page is not None
    _copy_user_page(kernel, new.pfn, vmf.page.pfn)
    put_page(kernel, vmf.page)
    vma.anon_vma = True
    _install_page(vma, vmf.address >> PAGE_SHIFT, new, writable=True)
    return ret


def _finish_fault(vmf: VmFault, page: Page, *, writable: bool) -> None:
    vpn = vmf.address >> PAGE_SHIFT
    if vmf.vma.vm_mm.pgtable.get(vpn) is not None:
        put_page(vmf.kernel, page)  # raced: someone installed it already
        return
    _install_page(vmf.vma, vpn, page, writable=writable)


def _copy_user_page(kernel: Kernel, dst_pfn: int, src_pfn: int) -> None:
    """``copy_user_highpage`` through the kernel's write-back linear map (the cache).

    The copy is written back and dropped from the cache afterwards, as
    architectures whose user mapping of the new page may not go through the
    cache do after the copy (the new page inherits ``vm_page_prot``, which a
    dma-buf vma may have made write-combined): memory holds the copied bytes,
    and no cached line is left to go stale when the user writes past the cache.
    """
    data = kernel.cache.load(src_pfn << PAGE_SHIFT, PAGE_SIZE)
    kernel.cache.store(dst_pfn << PAGE_SHIFT, data)
    kernel.cache.flush_range(dst_pfn << PAGE_SHIFT, PAGE_SIZE)
    observers = kernel.observers
    if observers.cpu_access:
        observers.emit("cpu_access", src_pfn << PAGE_SHIFT, data, False, "kernel (COW copy)")
        observers.emit("cpu_access", dst_pfn << PAGE_SHIFT, data, True, "kernel (COW copy)")


@kernel_function("do_wp_page", file="mm/memory.c")
def do_wp_page(vma: VmAreaStruct, address: int, pte: int) -> int:
    """Write to a present read-only PTE: make writable (shared) or copy (private COW)."""
    kernel = vma.kernel
    vpn = address >> PAGE_SHIFT
    mm = vma.vm_mm
    if vma.vm_flags & VM_SHARED:
        mm.pgtable.set(vpn, pte_mkwrite(pte))
        return 0
    pfn = pte_pfn(pte)
    old = None if pte_special(pte) else kernel.mem.page_if_exists(pfn)
    if old is not None and old.anon and old.refcount == 1 and old.mapcount == 1:
        mm.pgtable.set(vpn, pte_mkwrite(pte))  # wp_page_reuse: we are the only user
        return 0
    new = _alloc_anon_page(kernel)
    if new is None:
        return VM_FAULT_OOM
    if pfn == kernel.zero_pfn:
        pass  # a zeroed page is what the zero page holds
    else:
        _copy_user_page(kernel, new.pfn, pfn)
    if old is not None:
        old.mapcount -= 1
        put_page(kernel, old)
    mm.pgtable.clear(vpn)
    vma.anon_vma = True
    _install_page(vma, vpn, new, writable=True)
    return 0


# -- zapping --------------------------------------------------------------------
def zap_pte_range(mm: MmStruct, vma: VmAreaStruct, start: int, end: int, *, even_cows: bool) -> int:
    """Clear present PTEs in ``[start, end)`` of ``vma``; drop rmap'ed page refs."""
    kernel = mm.kernel
    table = mm.pgtable
    zapped = 0
    for vpn, pte in list(table.iter_range(start >> PAGE_SHIFT, end >> PAGE_SHIFT)):
        pfn = pte_pfn(pte)
        page = None
        if not pte_special(pte):
            page = kernel.mem.page_if_exists(pfn)
            if page is not None and page.anon and not even_cows:
                continue  # keep private COW copies (should_zap_page)
        table.clear(vpn)
        zapped += 1
        if page is not None:
            page.mapcount -= 1
            put_page(kernel, page)
    return zapped


@kernel_function("zap_vma_ptes", file="mm/memory.c")
def zap_vma_ptes(vma: VmAreaStruct, address: int, size: int) -> int:
    """Zap PTEs of a ``VM_PFNMAP`` vma; outside the vma or not PFNMAP: nothing (R29).

    Returns -1 in that case on the 3.x specs (where the function returned int),
    0 otherwise; modern kernels return void (we return 0).
    """
    if (
        address < vma.vm_start
        or address + size > vma.vm_end
        or address + size < address
        or not vma.vm_flags & VM_PFNMAP
    ):
        return 0 if vma.kernel.spec.vmf_insert_api else -1
    zap_pte_range(vma.vm_mm, vma, address, address + size, even_cows=True)
    return 0


@kernel_function("unmap_mapping_range", file="mm/memory.c")
def unmap_mapping_range(mapping: AddressSpace, holebegin: int, holelen: int, even_cows: int) -> int:
    """Zap every PTE of every vma in ``mapping.i_mmap`` that maps the hole (R25-R28).

    ``holelen == 0`` means "to the end of the file".  Cost: ``O(log n + vmas
    hit + PTEs present in them)``, never the buffer size.  Returns the number
    of PTEs zapped (the kernel returns void; this is for tests and traces).
    """
    hba = holebegin >> PAGE_SHIFT
    hlen = (holelen + PAGE_SIZE - 1) >> PAGE_SHIFT
    first = hba
    last = hba + hlen - 1
    if holelen == 0 or last > ULONG_MAX or last < first:
        last = ULONG_MAX
    zapped = 0
    tracer = mapping.kernel.tracer
    for vma in list(mapping.i_mmap.iter_overlap(first, last)):
        vba = vma.vm_pgoff
        vea = vba + vma.pages() - 1
        zba = max(first, vba)
        zea = min(last, vea)
        start = ((zba - vba) << PAGE_SHIFT) + vma.vm_start
        end = ((zea - vba + 1) << PAGE_SHIFT) + vma.vm_start
        n = zap_pte_range(vma.vm_mm, vma, start, end, even_cows=bool(even_cows))
        kernel = mapping.kernel
        if kernel.observers.zap:
            kernel.observers.emit("zap", mapping, vma, start, end, n)
        if tracer.enabled:
            pid = vma.vm_mm.owner.pid if vma.vm_mm.owner is not None else 0
            tracer.event(
                "zap_page_range_single",
                f"pid {pid} {vma.trace_name()} [{start:#x}-{end:#x}) {n} PTEs",
            )
        zapped += n
    return zapped


# -- putting pages into a mapping ------------------------------------------------
@kernel_function("remap_pfn_range", file="mm/memory.c")
def remap_pfn_range(vma: VmAreaStruct, addr: int, pfn: int, size: int, prot: int) -> int:
    """Eagerly map ``size`` bytes of raw pfns at ``addr`` (special PTEs, no refcounts).

    Sets the spec's ``remap_pfn_range_flags`` (R36).  A COW (MAP_PRIVATE)
    mapping must be remapped whole in one call (R37), and then ``vm_pgoff``
    becomes ``pfn``.
    """
    mm = vma.vm_mm
    spec = mm.kernel.spec
    end = addr + PAGE_ALIGN(size)
    if addr & _PAGE_OFFSET:
        return -errno.EINVAL
    whole = addr == vma.vm_start and end == vma.vm_end
    cow = is_cow_mapping(vma.vm_flags)
    if spec.remap_pfn_range_sets_pgoff_whole_vma:
        # 3.4-3.6: any whole-vma remap records the pfn in vm_pgoff
        if whole:
            vma.vm_pgoff = pfn
        elif cow:
            return -errno.EINVAL
    elif cow:
        if not whole:
            return -errno.EINVAL
        vma.vm_pgoff = pfn
    if addr >= end or addr < vma.vm_start or end > vma.vm_end:
        raise KernelOops("remap_pfn_range", f"range {addr:#x}-{end:#x} outside {vma.trace_name()}")
    vma.vm_flags |= spec.remap_pfn_range_flags
    table = mm.pgtable
    vpn0 = addr >> PAGE_SHIFT
    npages = (end - addr) >> PAGE_SHIFT
    pte0 = mk_pte(pfn, prot, special=True)
    if npages == 1:  # one page: the system heap remaps page by page up to 6.18
        if vpn0 in table.entries:
            raise KernelOops("remap_pte_range", "BUG_ON(!pte_none(*pte))")
        table.set(vpn0, pte0)
        return 0
    # remap_pte_range fills PTEs in order until it meets a present one: fill the
    # run before the first present PTE in bulk.  mk_pte(pfn + i, ...) is
    # mk_pte(pfn, ...) + (i << PAGE_SHIFT): the flag bits sit below the pfn.
    busy = table.first_present(vpn0, vpn0 + npages)
    run = npages if busy is None else busy - vpn0
    table.set_range(vpn0, range(pte0, pte0 + (run << PAGE_SHIFT), PAGE_SIZE))
    if busy is not None:
        # remap_pte_range: BUG_ON(!pte_none(*pte)) on every version (-EACCES there
        # only comes from pfn_modify_allowed, which has no counterpart here).
        raise KernelOops("remap_pte_range", "BUG_ON(!pte_none(*pte))")
    return 0


@kernel_function("vm_insert_page", file="mm/memory.c")
def vm_insert_page(vma: VmAreaStruct, addr: int, page: Page) -> int:
    """Insert one refcounted page (rmap'ed); sets ``VM_MIXEDMAP`` (R39)."""
    if addr < vma.vm_start or addr >= vma.vm_end:
        return -errno.EFAULT
    if page.refcount == 0:
        return -errno.EINVAL
    if not vma.vm_flags & VM_MIXEDMAP:
        if vma.vm_flags & VM_PFNMAP:
            raise KernelOops("vm_insert_page", "BUG_ON(vma->vm_flags & VM_PFNMAP)")
        vma.vm_flags |= VM_MIXEDMAP
    if page.anon:
        return -errno.EINVAL
    vpn = addr >> PAGE_SHIFT
    if vma.vm_mm.pgtable.get(vpn) is not None:
        return -errno.EBUSY
    get_page(page)
    page.mapcount += 1
    vma.vm_mm.pgtable.set(vpn, mk_pte(page.pfn, vma.vm_page_prot))
    return 0


@kernel_function("vmf_insert_pfn", file="mm/memory.c")
def vmf_insert_pfn(vma: VmAreaStruct, addr: int, pfn: int) -> int:
    """Insert a raw pfn from a fault handler; returns a ``vm_fault_t`` (R38)."""
    flags = vma.vm_flags
    if flags & (VM_PFNMAP | VM_MIXEDMAP) != VM_PFNMAP or is_cow_mapping(flags):
        return _insert_pfn(vma, addr, pfn, mixed=False)  # a BUG_ON, or a VM_MIXEDMAP vma
    # A shared VM_PFNMAP vma, what every pfn-mapping fault handler has: the same steps
    # as _insert_pfn takes for it, without the checks it has just passed.
    if addr < vma.vm_start or addr >= vma.vm_end:
        return VM_FAULT_SIGBUS
    vpn = addr >> PAGE_SHIFT
    table = vma.vm_mm.pgtable
    if vpn not in table.entries:  # insert_pfn: a present PTE is left alone (R38)
        table.set(vpn, mk_pte(pfn, vma.vm_page_prot, special=True))
    return VM_FAULT_NOPAGE


@kernel_function("vmf_insert_mixed", file="mm/memory.c")
def vmf_insert_mixed(vma: VmAreaStruct, addr: int, pfn: int) -> int:
    """Insert a pfn into a ``VM_MIXEDMAP`` vma (refcounted if it has a struct page)."""
    return _insert_pfn(vma, addr, pfn, mixed=True)


def _insert_pfn(vma: VmAreaStruct, addr: int, pfn: int, *, mixed: bool) -> int:
    flags = vma.vm_flags
    kinds = flags & (VM_PFNMAP | VM_MIXEDMAP)
    if kinds not in (VM_PFNMAP, VM_MIXEDMAP):  # neither, or both
        name = "vmf_insert_mixed" if mixed else "vmf_insert_pfn"
        if not kinds:
            raise KernelOops(name, "BUG_ON(!(vma->vm_flags & (VM_PFNMAP|VM_MIXEDMAP)))")
        raise KernelOops(name, "BUG_ON(both VM_PFNMAP and VM_MIXEDMAP)")
    if kinds == VM_PFNMAP and is_cow_mapping(flags):
        name = "vmf_insert_mixed" if mixed else "vmf_insert_pfn"
        raise KernelOops(name, "BUG_ON(VM_PFNMAP && is_cow_mapping)")
    if addr < vma.vm_start or addr >= vma.vm_end:
        return VM_FAULT_SIGBUS
    vpn = addr >> PAGE_SHIFT
    table = vma.vm_mm.pgtable
    if vpn in table.entries:
        return VM_FAULT_NOPAGE  # already present: nothing to do (R38)
    if mixed and kinds == VM_MIXEDMAP:
        mem = vma.vm_mm.kernel.mem
        if mem.pfn_allocated(pfn):
            page = mem.pfn_to_page(pfn)
            get_page(page)
            page.mapcount += 1
            table.set(vpn, mk_pte(pfn, vma.vm_page_prot))
            return VM_FAULT_NOPAGE
    table.set(vpn, mk_pte(pfn, vma.vm_page_prot, special=True))
    return VM_FAULT_NOPAGE


# -- fork -----------------------------------------------------------------------
@kernel_function("copy_page_range", file="mm/memory.c")
def copy_page_range(dst: VmAreaStruct, src: VmAreaStruct) -> int:
    """Copy PTEs to the child only where needed (``vma_needs_copy``, R40).

    PFNMAP/MIXEDMAP vmas cannot be refaulted, so their PTEs are copied; vmas
    with anonymous pages copy them write-protected (COW in both processes).
    Plain shared file vmas are skipped: the child faults.
    """
    if not (src.vm_flags & (VM_PFNMAP | VM_MIXEDMAP) or src.anon_vma):
        return 0
    kernel = src.kernel
    src_table = src.vm_mm.pgtable
    dst_table = dst.vm_mm.pgtable
    cow = is_cow_mapping(src.vm_flags)
    for vpn, pte in list(
        src_table.iter_range(src.vm_start >> PAGE_SHIFT, src.vm_end >> PAGE_SHIFT)
    ):
        if not pte_special(pte):
            page = kernel.mem.page_if_exists(pte_pfn(pte))
            if page is None:
                page = kernel.mem.pfn_to_page(pte_pfn(pte))
            get_page(page)
            page.mapcount += 1
        child_pte = pte
        if cow and pte & _PAGE_RW:
            child_pte = pte_wrprotect(pte)
            src_table.set(vpn, child_pte)
        dst_table.set(vpn, child_pte)
    return 0


__all__ += ["VM_FAULT_SIGSEGV"]
