"""The rules catalogue: every rule a test, a sanitizer or the conformance kit can cite.

Rules are data.  Each :class:`Rule` has an id, a one-line statement, where it
comes from, the specs (see :data:`dmabuf_sim.spec.SPECS`) it applies to, and
its kind:

``kernel``     R1–R62, the testable rules of kernel-spec §10, paraphrased;
``seed``       ``SEED-*``, the rules the RFC's own Documentation hunk sets for
               exporters and importers;
``sanitizer``  ``SAN-*``, invariants checked after every step of a run.

Tests cite the ids in their names (``test_r12_...``) and docstrings, and
``docs/rules.md`` is generated from this module by ``scripts/gen_rules_doc.py``::

    >>> from dmabuf_sim.conformance.rules import rule, rules_for
    >>> rule("R10").specs
    ('v3.4',)
    >>> "R1" in {r.id for r in rules_for("v3.4")}
    False
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from attrs import Attribute, field, frozen

from ..spec import SPECS

__all__ = ["KINDS", "RULES", "Rule", "rule", "rules_for"]

KINDS: Final = ("kernel", "seed", "sanitizer")
"""The kinds of rule, in catalogue order."""

_ID_RE: Final = re.compile(r"R[1-9][0-9]*|SEED-[A-Z]+(?:-[A-Z]+)*|SAN-[A-Z]+(?:-[A-Z]+)*")
_PREFIX_KIND: Final = (("SEED-", "seed"), ("SAN-", "sanitizer"), ("R", "kernel"))


def _kind_of(rule_id: str) -> str:
    return next(kind for prefix, kind in _PREFIX_KIND if rule_id.startswith(prefix))


def _to_specs(value: Iterable[str]) -> tuple[str, ...]:
    """Accept any iterable of spec names; known names are put in SPECS order."""
    if isinstance(value, str):
        raise TypeError(f"specs must be a tuple of spec names, not the string {value!r}")
    names = tuple(value)
    order = {name: i for i, name in enumerate(SPECS)}
    return tuple(sorted(names, key=lambda n: order.get(n, len(order))))


def _check_id(_inst: Rule, _attr: Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValueError(
            f"rule id {value!r} must look like 'R12', 'SEED-OWN-FILE' or 'SAN-REFCOUNT'"
        )


def _check_line(_inst: Rule, attr: Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"rule {attr.name} must be a non-empty string")
    if "\n" in value or value != value.strip():
        raise ValueError(f"rule {attr.name} must be one line without outer blanks: {value!r}")


def _check_specs(_inst: Rule, _attr: Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("a rule must apply to at least one spec")
    unknown = [name for name in value if name not in SPECS]
    if unknown:
        raise ValueError(f"unknown spec name(s) {unknown}; choose from {', '.join(SPECS)}")
    if len(set(value)) != len(value):
        raise ValueError(f"spec names repeated in {value}")


def _check_kind(inst: Rule, _attr: Attribute[str], value: str) -> None:
    if value not in KINDS:
        raise ValueError(f"rule kind {value!r} must be one of {', '.join(KINDS)}")
    if _ID_RE.fullmatch(inst.id) and _kind_of(inst.id) != value:
        raise ValueError(f"rule {inst.id} has kind {value!r}; its id says {_kind_of(inst.id)!r}")


@frozen
class Rule:
    """One rule: ``id`` (``R12``, ``SEED-…``, ``SAN-…``), a one-line ``statement``,
    its ``source`` (kernel-spec sections and source tags, the seed, recorded kernels),
    the ``specs`` it applies to (oldest first) and its ``kind``."""

    id: str = field(validator=_check_id)
    statement: str = field(validator=_check_line)
    source: str = field(validator=_check_line)
    specs: tuple[str, ...] = field(converter=_to_specs, validator=_check_specs)
    kind: str = field(validator=_check_kind)

    def applies_to(self, spec_name: str) -> bool:
        """Whether the rule holds under the spec called ``spec_name``."""
        return spec_name in self.specs

    def __str__(self) -> str:
        return f"{self.id}: {self.statement}"


# -- spec sets ---------------------------------------------------------------------------

_ALL: Final = tuple(SPECS)
_MMAP: Final = tuple(name for name, spec in SPECS.items() if spec.has_mmap_fop)  # not v3.4
_OLD: Final = ("rfc-2012", "v3.5")
_MODERN: Final = ("v5.10", "v6.1", "v6.12", "v6.19", "latest")
_SIX: Final = ("v6.1", "v6.12", "v6.19", "latest")
"""Modern specs but 5.10: SET_NAME while attached (EBUSY until ~5.16), the sync_file
ioctls (6.0), vmap returning an errno (5.11), the heaps and udmabuf (off in Debian's 5.10)."""
_V35_ON: Final = ("v3.5", *_MODERN)

_REC: Final = "recorded Linux 6.12"
_SEED_SRC: Final = "SEED (RFC Documentation hunk)"
_SAN_SRC: Final = "conformance kit design: sanitizer invariant"


def _kernel(n: int, statement: str, source: str, specs: tuple[str, ...]) -> Rule:
    return Rule(f"R{n}", statement, f"kernel-spec §10{source}", specs, "kernel")


_KERNEL_RULES: Final = (
    _kernel(
        1,
        "mmap(2) of a dma-buf fd with vm_pgoff + len/PAGE > size >> PAGE_SHIFT fails EINVAL,"
        " and no VMA, no PTE and no file-reference change survives the call.",
        " (§2.5, §4.2); K36, K61, K619; " + _REC,
        _V35_ON,
    ),
    _kernel(
        2,
        "The bound counts whole pages, rounded down: a 6000-byte dma-buf can be mapped for"
        " 1 page but a 2-page mapping fails EINVAL, and a 100-byte dma-buf cannot be mapped"
        " at all (EINVAL).",
        " (§2.5, §4.2); K36, K61, K619",
        _V35_ON,
    ),
    _kernel(
        3,
        "mmap(2) with an offset that is not a multiple of PAGE fails EINVAL, and this is"
        " checked before the fd lookup (a bad fd with an unaligned offset gives EINVAL).",
        " (§5.1); K342, K619; " + _REC,
        _ALL,
    ),
    _kernel(
        4,
        "mmap(2) with len == 0 fails EINVAL on a valid dma-buf fd but EBADF on an invalid fd,"
        " because the fd lookup comes before the length check.",
        " (§5.1); K342, K619; " + _REC,
        _ALL,
    ),
    _kernel(
        5,
        "mmap(2) whose pgoff + pages wraps the unsigned long fails EOVERFLOW before the"
        " dma-buf is consulted (reachable only where the offset is passed in pages, e.g."
        " 32-bit mmap2; an x86-64 byte offset keeps pgoff < 2^52, so the sum cannot wrap).",
        " (§5.1); K342, K619",
        _ALL,
    ),
    _kernel(
        6,
        "On x86-64 an offset with pgoff > (ULONG_MAX - len) >> PAGE_SHIFT (e.g. offset"
        " 0xFFFFFFFFFFFFF000, len 4096) fails EOVERFLOW in file_mmap_ok, the dma-buf inode"
        " not being a regular file (v6.1, v6.12, latest); v3.5 has no file_mmap_ok, so the"
        " same call reaches dma_buf_mmap_internal and fails EINVAL.",
        " (§5.1); K342, K619; " + _REC,
        _V35_ON,
    ),
    _kernel(
        7,
        "On a dma-buf file without FMODE_WRITE (exported O_RDONLY) MAP_SHARED with PROT_WRITE"
        " fails EACCES; MAP_SHARED with PROT_READ succeeds but the VMA has neither VM_SHARED"
        " nor VM_MAYWRITE, and a later mprotect(PROT_WRITE) fails EACCES.",
        " (§5.1); K342, K619; " + _REC,
        _MMAP,
    ),
    _kernel(
        8,
        "Every mmap(2) of a dma-buf exported O_WRONLY (no FMODE_READ) fails EACCES.",
        " (§5.1); K342, K619",
        _ALL,
    ),
    _kernel(
        9,
        "mmap(2) with a map type other than MAP_SHARED, MAP_PRIVATE or MAP_SHARED_VALIDATE"
        " fails EINVAL; MAP_SHARED_VALIDATE with an unknown flag fails EOPNOTSUPP.",
        " (§5.1); K619",
        _MODERN,
    ),
    _kernel(
        10,
        "In Linux 3.4 itself mmap(2) of a dma-buf fd fails ENODEV, the file having no f_op->mmap.",
        " (§0.1, §5.1); K342",
        ("v3.4",),
    ),
    _kernel(
        11,
        "dma_buf_export with ops->mmap == NULL fails with -EINVAL (and a WARN) and creates"
        " no file.",
        " (§1, §2.2); SEED, K36",
        _OLD,
    ),
    _kernel(
        12,
        "dma_buf_export with ops->mmap == NULL succeeds; mmap(2) of that buffer then fails"
        " EINVAL and dma_buf_mmap() on it returns -EINVAL.",
        " (§3, §4.1-§4.3); K61, K619",
        _MODERN,
    ),
    _kernel(
        13,
        "dma_buf_export fails with -EINVAL when priv, ops, map_dma_buf, unmap_dma_buf or"
        " release is missing, and in v3.5 also when kmap or kmap_atomic is missing.",
        " (§2.2, §4.1); K342, K36, K61",
        _V35_ON,
    ),
    _kernel(
        14,
        "dma_buf_export fails with -EINVAL when exactly one of pin and unpin is provided.",
        " (§4.1); K61, K619",
        _MODERN,
    ),
    _kernel(
        15,
        "dma_buf_get of a closed or invalid fd returns ERR_PTR(-EBADF); of an fd that is not"
        " a dma-buf it returns ERR_PTR(-EINVAL) and leaves that file's reference count"
        " unchanged.",
        " (§2.4, §4.1); K36, K61, K619",
        _ALL,
    ),
    _kernel(
        16,
        "dma_buf_fd installs the export reference without taking a new one: after export and"
        " dma_buf_fd the file count is 1, and close(fd) with no mappings releases the buffer"
        " (ops->release called once).",
        " (§2.3, §2.4, §4.1); K36, K61, K619",
        _ALL,
    ),
    _kernel(
        17,
        "Every VMA holds one file reference: close(fd) after mmap does not release the"
        " buffer; the final munmap does.",
        " (§2.4, §5.2); K342, K61, K619; " + _REC,
        _MMAP,
    ),
    _kernel(
        18,
        "fork duplicates every dma-buf VMA with one more file reference and a vm_ops->open"
        " call; VMAs with VM_DONTCOPY are not duplicated.",
        " (§5.6); K61; " + _REC,
        _MMAP,
    ),
    _kernel(
        19,
        "Splitting a dma-buf VMA (munmap or mprotect of a middle part) gives the new piece its"
        " own file reference and a vm_ops->open call; each removed piece gets vm_ops->close"
        " and an fput.",
        " (§5.6); K619; " + _REC,
        _MMAP,
    ),
    _kernel(
        20,
        "dma_buf_mmap returns -EOVERFLOW when pgoff + npages wraps and -EINVAL when"
        " pgoff + npages goes beyond the buffer; both leave vm_file and vm_pgoff untouched.",
        " (§2.6, §4.3); K36, K61, K619",
        _V35_ON,
    ),
    _kernel(
        21,
        "dma_buf_mmap with a NULL dmabuf or a NULL vma returns -EINVAL (and WARNs).",
        " (§2.6, §4.3); K36, K61, K619",
        _MMAP,
    ),
    _kernel(
        22,
        "After a successful dma_buf_mmap, vma->vm_file is the dma-buf file (unless the"
        " exporter swapped it again), vma->vm_pgoff equals the pgoff argument, the importer's"
        " file has lost one reference and the dma-buf file has gained one.",
        " (§2.6, §4.3); K36, K61, K619, VSF",
        _V35_ON,
    ),
    _kernel(
        23,
        "If the exporter's mmap fails inside dma_buf_mmap, then compared with just before"
        " mmap(2) the importer's file has one reference fewer (the VMA's reference is put"
        " twice) and the dma-buf file one more (leaked): the historical bug fixed in 3.9.",
        " (§2.6, §5.2); K36, K342, SHEU",
        ("v3.5",),
    ),
    _kernel(
        24,
        "If the exporter's mmap fails inside dma_buf_mmap, all references balance once"
        " mmap(2) returns, because the error path fputs vma->vm_file.",
        " (§2.6, §4.3, §5.2); VSF, K61",
        _MODERN,
    ),
    _kernel(
        25,
        "A VMA is linked into the address_space of the file left in vm_file when ->mmap"
        " returns: unmap_mapping_range on that address_space zaps it, on any other it does"
        " not.",
        " (§5.2); K342, K61, K619",
        _ALL,
    ),
    _kernel(
        26,
        "With the shared anon inode, unmap_mapping_range on one dma-buf's f_mapping zaps the"
        " PTEs of every dma-buf VMA (any buffer, any process) whose file pgoff is in range,"
        " unless the exporter replaced vm_file.",
        " (§2.1, §5.5); K342, SEED",
        _OLD,
    ),
    _kernel(
        27,
        "With per-buffer inodes, unmap_mapping_range on dma-buf A's f_mapping never zaps a"
        " mapping of dma-buf B.",
        " (§4.1, §5.5); INODE, K61, K619",
        _MODERN,
    ),
    _kernel(
        28,
        "unmap_mapping_range zaps the matching PTEs in all processes, fork children included;"
        " the next access faults into the exporter's fault handler.",
        " (§5.5); K61",
        _ALL,
    ),
    _kernel(
        29,
        "zap_vma_ptes changes nothing on a VMA without VM_PFNMAP or for a range not inside"
        " the VMA.",
        " (§5.5); K342, K61",
        _ALL,
    ),
    _kernel(
        30,
        "A PTE-less access to a shared dma-buf VMA whose exporter installed no fault handler"
        " raises SIGBUS.",
        " (§5.3); K61",
        _MODERN,
    ),
    _kernel(
        31,
        "A PTE-less access to a shared dma-buf VMA whose exporter installed no fault handler"
        " silently gets anonymous memory: reads see zero and writes never reach the buffer.",
        " (§5.3); K342",
        _OLD,
    ),
    _kernel(
        32,
        "A fault handler returning VM_FAULT_SIGBUS delivers SIGBUS (BUS_ADRERR) at the"
        " faulting address; an access outside every VMA gives SIGSEGV (SEGV_MAPERR); a write"
        " to a VMA without VM_WRITE gives SIGSEGV (SEGV_ACCERR).",
        " (§5.3); K61, K619; " + _REC,
        _ALL,
    ),
    _kernel(
        33,
        "mremap growth of a VMA with VM_DONTEXPAND or VM_PFNMAP fails EFAULT.",
        " (§5.6); K342, K619; " + _REC,
        _ALL,
    ),
    _kernel(
        34,
        "mremap growth of a dma-buf VMA without VM_DONTEXPAND or VM_PFNMAP succeeds without"
        " calling dma_buf_mmap_internal, so faults past the buffer must be refused by the"
        " exporter's fault handler (SIGBUS); the v6.1 CMA heap instead maps pages[pagecount]"
        " for the first page past the end (off by one), fixed in later exporters.",
        " (§5.6, §6.2); K342, K61, K619, CMAFIX",
        _V35_ON,
    ),
    _kernel(
        35,
        "A new mmap adjacent to an existing dma-buf VMA with the same file, identical flags"
        " and contiguous pgoff, the VMA having none of VM_SPECIAL, is merged into it without"
        " calling ->mmap, so the bounds check is skipped (derived from the mm sources).",
        " (§5.2); K342, K61, K619",
        _V35_ON,
    ),
    _kernel(
        36,
        "remap_pfn_range inside ->mmap sets VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP"
        " (3.x specs: VM_IO|VM_RESERVED|VM_PFNMAP) and fills every requested PTE before"
        " mmap(2) returns.",
        " (§5.4); K342, K61",
        _ALL,
    ),
    _kernel(
        37,
        "remap_pfn_range on a MAP_PRIVATE VMA for a range other than the whole VMA returns"
        " -EINVAL (so the system heap, remapping page by page, fails a multi-page"
        " MAP_PRIVATE mmap with EINVAL).",
        " (§5.4, §6.1); K61, K619; " + _REC,
        _ALL,
    ),
    _kernel(
        38,
        "vmf_insert_pfn returns VM_FAULT_SIGBUS for an address outside the VMA; on a PTE"
        " that is already present it does nothing and returns VM_FAULT_NOPAGE.",
        " (§5.4); K61",
        _MODERN,
    ),
    _kernel(
        39,
        "vm_insert_page returns -EFAULT outside the VMA and -EBUSY if a PTE exists, and sets"
        " VM_MIXEDMAP.",
        " (§5.4); K342, K61",
        _ALL,
    ),
    _kernel(
        40,
        "At fork the PTEs of VM_PFNMAP/VM_MIXEDMAP VMAs are copied to the child; those of"
        " plain shared file VMAs are not, so the child faults.",
        " (§5.4, §5.6); K342, K61",
        _ALL,
    ),
    _kernel(
        41,
        "lseek(fd, 0, SEEK_END) returns the buffer size and lseek(fd, 0, SEEK_SET) returns 0;"
        " SEEK_CUR with any offset, any nonzero offset and any other whence fail EINVAL; the"
        " file position does not change.",
        " (§4.4); K61, K619; " + _REC,
        _MODERN,
    ),
    _kernel(
        42,
        "lseek on a dma-buf fd fails ESPIPE.",
        " (§2.10); K619",
        _OLD,
    ),
    _kernel(
        43,
        "DMA_BUF_IOCTL_SYNC fails EFAULT for an unreadable argument pointer (checked first),"
        " EINVAL for flags with any bit outside 0x7, and EINVAL for flags with neither READ"
        " nor WRITE (e.g. 0 or END alone).",
        " (§4.5); K61, K619; " + _REC,
        _MODERN,
    ),
    _kernel(
        44,
        "DMA_BUF_IOCTL_SYNC maps READ to DMA_FROM_DEVICE, WRITE to DMA_TO_DEVICE and RW to"
        " DMA_BIDIRECTIONAL, calls end_cpu_access if END is set and begin_cpu_access"
        " otherwise, and returns the exporter's result unchanged.",
        " (§4.5, §4.8); K61, K619, SYNC16, ERR16",
        _MODERN,
    ),
    _kernel(
        45,
        "The core keeps no SYNC state: END without START, a double START and mismatched"
        " directions all pass the core (exporters may fail them; udmabuf fails END before"
        " the first START with EINVAL).",
        " (§4.5, §6.3); K61, K619; " + _REC,
        _MODERN,
    ),
    _kernel(
        46,
        "SYNC_START first calls the exporter's begin_cpu_access and, only if that returned 0,"
        " waits interruptibly and without timeout for implicit fences (KERNEL and WRITE"
        " fences for READ; KERNEL, WRITE and READ fences for WRITE or RW; never BOOKKEEP),"
        " returning the error of an interrupted wait (EINTR/ERESTARTSYS); SYNC_END never"
        " waits.",
        " (§4.8); K61, K619, ERR16",
        _MODERN,
    ),
    _kernel(
        47,
        "Any unknown ioctl on a dma-buf fd fails ENOTTY; in the v3.5 era every dma-buf ioctl"
        " fails ENOTTY (apart from those the VFS handles generically, such as"
        " FIOCLEX/FIONBIO).",
        " (§2.10, §4.5); K61, K619; " + _REC,
        _ALL,
    ),
    _kernel(
        48,
        "DMA_BUF_SET_NAME fails EINVAL for a string of 32 or more bytes without a NUL and"
        " EFAULT for a bad pointer; a name of at most 31 characters succeeds even while"
        " attached and shows in fdinfo as name: and in /proc/pid/maps as /dmabuf:<name>.",
        " (§4.1, §4.5); K61, K619; " + _REC,
        _SIX,
    ),
    _kernel(
        49,
        "fdinfo of a dma-buf prints size, count (the file reference count minus 1), exp_name"
        " and, once one is set, name.",
        " (§4.6); K61, K619; " + _REC,
        _MODERN,
    ),
    _kernel(
        50,
        "poll(EPOLLIN) is ready iff no KERNEL or WRITE fence is unsignalled and"
        " poll(EPOLLOUT) iff no KERNEL, WRITE or READ fence is; BOOKKEEP fences are ignored"
        " and requesting neither returns 0; in the v3.5 era (no .poll) the fd always polls"
        " readable and writable.",
        " (§2.10, §4.7); K61, K619; " + _REC,
        _V35_ON,
    ),
    _kernel(
        51,
        "EXPORT_SYNC_FILE and IMPORT_SYNC_FILE fail EINVAL for flags 0 or flags with bits"
        " other than READ|WRITE; IMPORT_SYNC_FILE with an fd that is not a sync_file fails"
        " EINVAL; EXPORT_SYNC_FILE on a buffer without fences returns an already signalled"
        " sync_file.",
        " (§4.5); K61, K619",
        _SIX,
    ),
    _kernel(
        52,
        "dma_buf_begin_cpu_access(NULL, ...) returns -EINVAL; in v3.5 begin/end_cpu_access"
        " take (start, len), which the core passes through unchecked.",
        " (§2.7, §4.8); K342, K36, K61, K619",
        _ALL,
    ),
    _kernel(
        53,
        "With CONFIG_DMA_SHARED_BUFFER off, dma_buf_export, dma_buf_get, dma_buf_attach and"
        " dma_buf_map_attachment return ERR_PTR(-ENODEV), dma_buf_fd, begin_cpu_access and"
        " dma_buf_mmap return -ENODEV, the kmap variants and vmap return NULL, and put,"
        " detach, end_cpu_access and the kunmap variants do nothing.",
        " (§2.9); K342, K36",
        _OLD,
    ),
    _kernel(
        54,
        "dma_buf_vmap on an exporter without vmap returns -EINVAL (NULL in the v3.5 era);"
        " repeated vmaps return the same address and only the last vunmap calls the"
        " exporter.",
        " (§2.7, §4.9); K342, K61, K619",
        _SIX,
    ),
    _kernel(
        55,
        "A shoot-down exporter that put its own file in vm_file and calls"
        " unmap_mapping_range on leaving the CPU domain (map_attachment) makes the next CPU"
        " access fault; its fault handler does the CPU-side cache maintenance and must not"
        " wait for device fences.",
        " (§2.8, §6.7, §6.8); SEED, ARND, K61, ION",
        _OLD,
    ),
    _kernel(
        56,
        "Under the shared anon inode, an exporter that shoots down with unmap_mapping_range"
        " on its dma-buf file without swapping vm_file zaps other buffers' mappings too"
        " (teaching scenario).",
        " (§2.1, §5.5); SEED, K342",
        _OLD,
    ),
    _kernel(
        57,
        "An exporter mmap that rejects non-shared VMAs (CMA heap, udmabuf) makes a"
        " MAP_PRIVATE mmap(2) fail EINVAL.",
        " (§6.2, §6.3); K61, K619; " + _REC,
        _SIX,
    ),
    _kernel(
        58,
        "Holding the dma_resv lock while touching user memory (a page fault or mmap_lock) is"
        " a lock-order violation (mmap_lock → dma_resv → fs_reclaim → i_mmap_rwsem).",
        " (§4.11); K61, K619",
        _MODERN,
    ),
    _kernel(
        59,
        "mmap(2) never takes the dma_resv lock in the core: ops->mmap is called with"
        " mmap_lock held for write and the reservation unlocked (6.2-6.3 held it; not"
        " modelled).",
        " (§4.2, §4.11); LOCK23, K619",
        _MODERN,
    ),
    _kernel(
        60,
        "After a successful mmap(2) through dma_buf_mmap_internal vm_pgoff is unchanged (the"
        " user's page offset); exporters index pages by vm_pgoff + (address - vm_start)/PAGE,"
        " except drm_gem_shmem, which ignores vm_pgoff.",
        " (§2.5, §6.5); K36, K61, K619",
        _MMAP,
    ),
    _kernel(
        61,
        "Under the RFC as posted, mmap(2) of a dma-buf fd evaluates the size check through an"
        " uninitialised dmabuf pointer: the outcome is undefined and is modelled as an oops/UB"
        " event, never as a clean errno.",
        " (§1); SEED",
        ("rfc-2012",),
    ),
    _kernel(
        62,
        "In Linux 3.4 proper, lseek on a dma-buf fd fails ESPIPE, every dma-buf ioctl fails"
        " ENOTTY and mmap(2) fails ENODEV.",
        " (§0.1, §2.10); K342",
        ("v3.4",),
    ),
)

_SEED_RULES: Final = (
    Rule(
        "SEED-BOUNDS",
        "The dma-buf core rejects a vma that reaches past the buffer (buffers never change"
        " size), so exporters need not repeat the check.",
        _SEED_SRC,
        _MMAP,
        "seed",
    ),
    Rule(
        "SEED-COHERENT",
        "The exporter sets up a coherent user mapping, or fakes coherency by shooting down"
        " PTEs when the buffer leaves the CPU domain and flushing caches at fault time.",
        _SEED_SRC + "; dropped by the 4.11 doc rework (kernel-spec §7, DOC16)",
        _OLD,
        "seed",
    ),
    Rule(
        "SEED-OWN-FILE",
        "An exporter that shoots down PTEs must put its own file in vma->vm_file: all dma-buf"
        " files share one anon inode, and unmap_mapping_range finds vmas through the inode's"
        " address_space.",
        _SEED_SRC + "; kernel-spec §2.1, §5.5",
        _OLD,
        "seed",
    ),
    Rule(
        "SEED-NO-FAULT-SYNC",
        "An exporter that shoots down mappings (for any reason) shall not synchronise with"
        " outstanding device operations at fault time.",
        _SEED_SRC,
        _MMAP,
        "seed",
    ),
    Rule(
        "SEED-IMPORTER-MMAP",
        "An importer that provides its own mmap can redirect it to the dma-buf with"
        " dma_buf_mmap, which puts the dma-buf file in vm_file in place of the importer's.",
        _SEED_SRC,
        _MMAP,
        "seed",
    ),
)

_SANITIZER_RULES: Final = (
    Rule(
        "SAN-REFCOUNT",
        "While a buffer lives its dma-buf file holds at least one reference per holder (fd,"
        " vma, kernel reference); once the last holder is gone no reference is left and the"
        " buffer is released.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-RELEASE-ONCE",
        "ops->release runs exactly once per buffer, and only after every fd, vma and importer"
        " reference is gone.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-FREED-PTE",
        "No PTE points at a freed page.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-PTE-IN-BUFFER",
        "Every PTE of a dma-buf mapping points into that buffer's pages.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-STALE-READ",
        "No read under the sync protocol, or through a mapping the exporter declares"
        " coherent, returns anything but the last value written.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-FAULT-WAIT",
        "Nothing waits on device work inside a fault handler.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-VMA-FILE",
        "A vma is linked in the i_mmap of exactly the file in its vm_file.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-OTHER-BUFFER",
        "Leaving the CPU domain on one buffer never zaps the PTEs of another buffer's mapping.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-LEAK",
        "Once a buffer is released every page it used goes back to the page allocator and"
        " every kernel mapping made of it with vmap is gone; nothing is left when every"
        " process has exited.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-MODULE",
        "A buffer keeps its exporter's module loaded (exp_info.owner = THIS_MODULE): rmmod"
        " fails EWOULDBLOCK while any buffer lives and works once the last one is released.",
        "kernel-spec §4.1 dma_buf_export step 4 (try_module_get(owner)); dma_buf_release"
        " (module_put)",
        _MODERN,
        "sanitizer",
    ),
    Rule(
        "SAN-SGT",
        "map_dma_buf hands a device an sg table that covers the whole buffer, page for page"
        " the memory the CPU maps.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-ACCESS",
        "An access inside a live mapping of the buffer that its protection allows never"
        " raises a signal.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-OOPS",
        "No step makes the kernel oops: no BUG_ON, NULL dereference or use after free in the"
        " exporter or in what it calls.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-BAD-PAGE",
        "The page allocator never reports a bad page state (a page freed twice, freed while"
        " mapped, or whose reference count an exporter dropped below its holders).",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
    Rule(
        "SAN-KERNEL-WARN",
        "No WARN_ON fires while an exporter is used the way the protocol allows.",
        _SAN_SRC,
        _ALL,
        "sanitizer",
    ),
)


def _build(rules: Iterable[Rule]) -> Mapping[str, Rule]:
    table: dict[str, Rule] = {}
    for r in rules:
        if r.id in table:
            raise ValueError(f"rule id {r.id} defined twice")
        table[r.id] = r
    return MappingProxyType(table)


RULES: Final[Mapping[str, Rule]] = _build((*_KERNEL_RULES, *_SEED_RULES, *_SANITIZER_RULES))
"""Every rule by id: R1..R62 in order, then the SEED-* and the SAN-* rules."""


def rule(rule_id: str) -> Rule:
    """The rule called ``rule_id``; :class:`KeyError` naming close ids if there is none."""
    try:
        return RULES[rule_id]
    except (KeyError, TypeError):
        pass
    query = str(rule_id).strip().upper()
    close = difflib.get_close_matches(query, RULES, n=4, cutoff=0.5)
    if query in RULES and query not in close:
        close.insert(0, query)
    hint = f"; close ids: {', '.join(close)}" if close else ""
    raise KeyError(
        f"unknown rule id {rule_id!r}{hint} (kernel rules are R1..R{len(_KERNEL_RULES)};"
        " see dmabuf_sim.conformance.rules.RULES)"
    )


def rules_for(spec_name: str) -> tuple[Rule, ...]:
    """The rules that apply under the spec called ``spec_name``, in catalogue order."""
    if spec_name not in SPECS:
        raise ValueError(f"unknown spec {spec_name!r}; choose one of {', '.join(SPECS)}")
    return tuple(r for r in RULES.values() if spec_name in r.specs)
