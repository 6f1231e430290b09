"""Kernel spec versions as bundles of named behaviours.

Code never compares version numbers: it asks ``kernel.spec.per_buffer_inode``
or ``kernel.spec.fault_without_handler``.  Each field's metadata records where
the behaviour comes from (the kernel version or commit that introduced it, the
rules of kernel-spec §10 it governs), so documentation tables and "what if"
experiments fall out of :func:`attrs.fields`::

    >>> from dmabuf_sim.spec import SPECS
    >>> what_if = SPECS["v6.1"].replace(per_buffer_inode=False)
    >>> what_if.per_buffer_inode
    False

The built-in specs (see :data:`SPECS`):

``rfc-2012``  the RFC as posted (the seed), bugs included;
``v3.4``      Linux 3.4, before dma-buf mmap existed;
``v3.5``      the patch as merged (3.5 – 3.8);
``v5.10``     Debian's 5.10.223 (vgem on its own GEM code; no heaps, no udmabuf);
``v6.1``      Debian's 6.1.192, stable backports included;
``v6.12``     the 6.12 LTS line (6.12.117), which 6.13 – 6.18 agree with;
``v6.19``     6.19.14 (and 7.0.y);
``latest``    Linux 7.3 (7.3.4): pseudo filesystems are noexec.

A spec models the stable point release distributions ship, not the ``.0``
release: a fix that reached the stable line is part of the spec, and its field
metadata names the upstream commit and the stable release that took it.
:meth:`SpecTable.for_release` maps a release string to its spec::

    >>> SPECS.for_release("6.17.13").name
    'v6.12'
    >>> SPECS.for_release("6.12.117+deb12-amd64").name
    'v6.12'
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs
from attrs import field, frozen

__all__ = [
    "DEFAULT_SPEC",
    "SPECS",
    "ReleaseRange",
    "Spec",
    "SpecTable",
    "get_spec",
    "parse_release",
    "spec_names",
]

# vm_flags bits used by remap_pfn_range_flags (values of include/linux/mm.h).
_VM_IO = 0x00004000
_VM_PFNMAP = 0x00000400
_VM_DONTEXPAND = 0x00040000
_VM_DONTDUMP = 0x04000000
_VM_RESERVED = 0x00080000  # 3.x only; gone in 3.7
_VM_MIXEDMAP = 0x10000000

SwapMode = Literal["fput_then_get", "restore_on_error", "vma_set_file"]
ErrorFput = Literal["original_file", "vm_file"]
NoHandler = Literal["anonymous", "sigbus"]


def _meta(since: str, rules: str, doc: str, commit: str = "", stable: str = "") -> dict[str, str]:
    return {"since": since, "rules": rules, "doc": doc, "commit": commit, "stable": stable}


def _b(since: str, rules: str = "", doc: str = "", *, commit: str = "", stable: str = "") -> Any:
    """A boolean behaviour field with provenance metadata.

    ``since`` says when the behaviour appeared (or went), ``doc`` what it means in
    one line; ``commit`` is the upstream commit where one is named and ``stable``
    the stable release(s) that took it as a backport.
    """
    return field(
        validator=attrs.validators.instance_of(bool),
        metadata=_meta(since, rules, doc, commit, stable),
    )


def _v(
    since: str,
    validator: Any,
    rules: str = "",
    doc: str = "",
    *,
    commit: str = "",
    stable: str = "",
) -> Any:
    return field(validator=validator, metadata=_meta(since, rules, doc, commit, stable))


@frozen
class Spec:
    """One kernel's behaviour, as the named knobs the simulator consults.

    Build a custom spec with :meth:`replace`; unknown field names raise
    :class:`TypeError` (attrs), bad values raise :class:`TypeError` /
    :class:`ValueError` naming the field.
    """

    name: str = field(validator=attrs.validators.instance_of(str))
    kernel_version: str = field(validator=attrs.validators.instance_of(str))

    # --- configuration -------------------------------------------------------------
    config_dma_shared_buffer: bool = _b(
        "3.3", "R53", "CONFIG_DMA_SHARED_BUFFER; off means the header stubs answer"
    )
    has_config_stubs: bool = _b(
        "3.3 (removed by 5.x: the symbol is select-ed)",
        "R53",
        "whether !CONFIG_DMA_SHARED_BUFFER stubs exist at all",
    )

    # --- dma_buf_export ------------------------------------------------------------
    export_info_form: bool = _b(
        "4.1", "R11-R14", "dma_buf_export(exp_info) instead of (priv, ops, size, flags)"
    )
    mmap_op_mandatory: bool = _b(
        "3.5 (made optional in 5.3)", "R11,R12", "export fails -EINVAL without ops->mmap"
    )
    kmap_ops_mandatory: bool = _b(
        "3.4 (optional 4.19)", "R13", "export fails -EINVAL without kmap/kmap_atomic"
    )
    has_kmap: bool = _b("3.4 (removed 5.6)", "", "dma_buf_kmap/kmap_atomic exist")
    has_vmap: bool = _b("3.5", "R54", "dma_buf_vmap/vunmap exist")
    vmap_returns_errno: bool = _b(
        "5.11 (iosys_map)", "R54", "dma_buf_vmap returns int (-EINVAL) rather than NULL"
    )
    vmap_requires_resv_held: bool = _b(
        "6.2", "", "dma_buf_vmap asserts the resv lock; _unlocked wrappers take it"
    )
    export_checks_pin_unpin_pair: bool = _b("5.7", "R14", "exactly one of pin/unpin → -EINVAL")
    export_checks_cache_sgt_with_pin: bool = _b(
        "5.7 (gone by 6.19)", "", "cache_sgt_mapping together with pin/unpin → -EINVAL"
    )
    export_file_before_alloc: bool = _b(
        "6.10", "", "dma_buf_getfile before kzalloc of the dma_buf (trace order only)"
    )

    # --- the dma-buf file ----------------------------------------------------------
    has_mmap_fop: bool = _b("3.5", "R10,R62", "dma_buf_fops.mmap = dma_buf_mmap_internal")
    mmap_internal_reads_uninitialised_dmabuf: bool = _b(
        "rfc-2012 only", "R61", "the RFC checks dmabuf->size before assigning dmabuf"
    )
    mmap_internal_checks_null_op: bool = _b(
        "5.3", "R12", "dma_buf_mmap_internal/dma_buf_mmap return -EINVAL without ops->mmap"
    )
    per_buffer_inode: bool = _b(
        "5.3",
        "R25-R27,R48",
        "each dma-buf has its own inode/address_space; else all share the anon inode",
    )
    has_llseek: bool = _b("3.12", "R41,R42", "dma_buf_llseek (SEEK_SET/SEEK_END, offset 0)")
    has_poll: bool = _b("3.17", "R50", "dma_buf_poll on implicit fences")
    has_sync_ioctl: bool = _b("4.6", "R43-R46", "DMA_BUF_IOCTL_SYNC")
    has_set_name: bool = _b("5.3", "R48", "DMA_BUF_SET_NAME_A/_B")
    set_name_ebusy_when_attached: bool = _b(
        "5.3 (removed ~5.16)", "R48", "SET_NAME refused with -EBUSY while attached"
    )
    has_fdinfo: bool = _b("5.3", "R49", "dma_buf_show_fdinfo")
    has_sync_file_ioctls: bool = _b("6.0", "R51", "DMA_BUF_IOCTL_EXPORT/IMPORT_SYNC_FILE")
    tracepoints: bool = _b("after 6.19", "", "trace events dma_buf_export, _mmap_internal, ...")

    # --- dma_buf_mmap (importer helper) --------------------------------------------
    dma_buf_mmap_swap: SwapMode = _v(
        "3.5 fput_then_get; 3.9 restore_on_error; 5.11 vma_set_file",
        attrs.validators.in_(("fput_then_get", "restore_on_error", "vma_set_file")),
        "R22-R24",
        "how dma_buf_mmap swaps vma->vm_file and whether it restores it on failure",
    )

    # --- kernel CPU access ---------------------------------------------------------
    cpu_access_has_range_args: bool = _b(
        "3.4 (removed 4.6)", "R52", "begin/end_cpu_access(dmabuf, start, len, dir)"
    )
    end_cpu_access_returns_int: bool = _b("4.6", "R44", "end_cpu_access returns int")
    begin_cpu_access_waits_implicit_fences: bool = _b(
        "4.8", "R46", "core waits for implicit fences after ops->begin_cpu_access"
    )

    # --- mm ------------------------------------------------------------------------
    mmap_region_error_fputs: ErrorFput = _v(
        "original_file until 5.10; vm_file since 5.11",
        attrs.validators.in_(("original_file", "vm_file")),
        "R23,R24",
        "which file mmap_region's error path fputs when ->mmap fails",
    )
    fault_without_handler: NoHandler = _v(
        "sigbus since the dummy vm_ops / VM_SHARED check (4.x-5.x)",
        attrs.validators.in_(("anonymous", "sigbus")),
        "R30,R31",
        "a PTE-less access to a shared file vma without ->fault",
    )
    vma_init_dummy_vm_ops: bool = _b("5.x", "R30", "vma_init gives new vmas empty vm_ops")
    remap_pfn_range_flags: int = _v(
        "VM_IO|VM_RESERVED|VM_PFNMAP until 3.6; +DONTEXPAND|DONTDUMP after",
        attrs.validators.instance_of(int),
        "R36",
        "vm_flags remap_pfn_range sets",
    )
    vfs_file_mmap_ok: bool = _b(
        "4.19", "R6", "file_mmap_ok: EOVERFLOW for offsets past the file's max size"
    )
    has_map_shared_validate: bool = _b("4.15", "R9", "MAP_SHARED_VALIDATE and EOPNOTSUPP")
    has_map_fixed_noreplace: bool = _b("4.17", "", "MAP_FIXED_NOREPLACE and EEXIST")
    vmf_insert_api: bool = _b(
        "4.17", "R38", "vmf_insert_pfn/mixed return vm_fault_t (older: vm_insert_pfn int)"
    )
    vm_special_flags: int = _v(
        "VM_IO|DONTEXPAND|RESERVED|PFNMAP in 3.x; IO|DONTEXPAND|PFNMAP|MIXEDMAP later",
        attrs.validators.instance_of(int),
        "R35",
        "flags that forbid merging (VM_SPECIAL)",
    )
    remap_pfn_range_sets_pgoff_whole_vma: bool = _b(
        "until 3.6",
        "R36",
        "remap_pfn_range over a whole vma sets vm_pgoff = pfn even for shared mappings"
        " (later only COW mappings)",
    )
    mremap_dontunmap_special_einval: bool = _b(
        "5.13",
        "",
        "MREMAP_DONTUNMAP on VM_DONTEXPAND/VM_PFNMAP vmas → EINVAL",
        commit="a4609387859f (mm: extend MREMAP_DONTUNMAP to non-anonymous mappings)",
    )
    mremap_dontunmap_anon_only: bool = _b(
        "5.7 until 5.13",
        "",
        "MREMAP_DONTUNMAP only moves private anonymous vmas (EINVAL for any other)",
        commit="e346b3813067 (5.7); lifted by a4609387859f (5.13)",
    )
    mremap_vma_lookup_first: bool = _b(
        "5.16",
        "",
        "mremap looks the old vma up (EFAULT) before the MREMAP_FIXED/DONTUNMAP checks",
        commit="550a7d60bd5e (hugetlb: add support for mremap() for hugetlb backed vma)",
    )
    mremap_remap_move: bool = _b(
        "6.17 (parameter checks first since 6.16)",
        "",
        "mremap's vma_remap_struct rework: every EINVAL parameter check before the vma"
        " lookup (check_mremap_params), the source checked (check_prep_vma) before a"
        " MREMAP_FIXED target is unmapped, and a same-length MREMAP_FIXED move may span"
        " several vmas, gaps kept (remap_move)",
        commit="d23cb648e365 (mm/mremap: permit mremap() move of multiple VMAs), with"
        " 'mm/mremap: check remap conditions earlier' of the same series",
    )
    pseudo_fs_noexec: bool = _b(
        "7.2 (stable 7.1.4, 6.18.y after 6.18.15)",
        "R7-R9",
        "init_pseudo() sets SB_I_NOEXEC: mmap(PROT_EXEC) of a dma-buf → EPERM,"
        " no VM_MAYEXEC so mprotect(+PROT_EXEC) → EACCES",
        commit="6de2aeffabaa (libfs: set SB_I_NOEXEC and SB_I_NODEV by default in"
        " init_pseudo(); Fixes 1e7ab6f67824)",
        stable="7.1.4 (f96b96539f48); 6.18.y July 2026 (b9d45d328fcd)",
    )

    # --- madvise(2): which advice values madvise_behavior_valid() knows ------------
    madvise_free: bool = _b("4.5", "", "MADV_FREE (lazy free of private anonymous pages)")
    madvise_wipeonfork: bool = _b("4.14", "", "MADV_WIPEONFORK / MADV_KEEPONFORK")
    madvise_cold_pageout: bool = _b("5.4", "", "MADV_COLD / MADV_PAGEOUT")
    madvise_populate: bool = _b(
        "5.14",
        "",
        "MADV_POPULATE_READ / MADV_POPULATE_WRITE",
        commit="4ca9b3859dac (mm/madvise: introduce MADV_POPULATE_(READ|WRITE))",
    )
    madvise_dontneed_locked: bool = _b(
        "5.18",
        "",
        "MADV_DONTNEED_LOCKED",
        commit="9457056ac426 (mm: madvise: MADV_DONTNEED_LOCKED)",
    )
    madvise_collapse: bool = _b(
        "6.1",
        "",
        "MADV_COLLAPSE (synchronous THP collapse)",
        commit="7d8faaf15545 (mm/madvise: introduce MADV_COLLAPSE sync hugepage collapse)",
    )
    madvise_remove_shared_maywrite: bool = _b(
        "6.7",
        "",
        "MADV_REMOVE wants VM_SHARED|VM_MAYWRITE (before: VM_SHARED|VM_WRITE, the current"
        " protection) else EACCES",
        commit="e8e17ee90eaf (mm: drop the assumption that VM_SHARED always implies writable)",
    )
    memfd_noexec_seal: bool = _b(
        "6.3",
        "",
        "memfd_create knows MFD_NOEXEC_SEAL / MFD_EXEC (EINVAL before); NOEXEC_SEAL drops"
        " the x bits of the 0777 mode",
        commit="105ff5339f49 (mm/memfd: add MFD_NOEXEC_SEAL and MFD_EXEC)",
    )
    madvise_guard: bool = _b(
        "6.13",
        "",
        "MADV_GUARD_INSTALL / MADV_GUARD_REMOVE (refused on VM_SPECIAL vmas such as dma-bufs)",
        commit="662df3e5c376 (mm: madvise: implement lightweight guard page mechanism)",
    )

    # --- the VFS ---------------------------------------------------------------------
    proc_fdinfo_mnt_id: bool = _b(
        "3.15",
        "R49",
        "/proc/<pid>/fdinfo/<fd> has a mnt_id: line",
        commit="49d063cb3532 (proc: show mnt_id in /proc/pid/fdinfo)",
    )
    proc_fdinfo_ino: bool = _b(
        "5.14",
        "R49",
        "/proc/<pid>/fdinfo/<fd> has an ino: line",
        commit="3845f256a8b5 (procfs/dmabuf: add inode number to /proc/*/fdinfo)",
    )
    fallocate_mode_switch: bool = _b(
        "6.12",
        "",
        "vfs_fallocate validates the mode with one switch (EOPNOTSUPP for every bad"
        " combination; older kernels answer EINVAL for COLLAPSE/INSERT/UNSHARE mixes)",
        commit="fs: sort out the fallocate mode mess (Christoph Hellwig, Aug 2024)",
    )
    falloc_write_zeroes: bool = _b(
        "6.17", "", "FALLOC_FL_WRITE_ZEROES (0x80) is a known fallocate mode"
    )

    # --- reference exporters -------------------------------------------------------
    has_dma_heaps: bool = _b("5.6", "", "/dev/dma_heap/{system,...}")
    has_udmabuf: bool = _b("4.20", "", "/dev/udmabuf")
    system_heap_remap_per_chunk: bool = _b(
        "6.19", "R37", "system heap remaps one sg chunk per call (else one page per call)"
    )
    cma_heap_pfnmap: bool = _b(
        "6.8", "R34", "cma heap sets VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP, vmf_insert_pfn"
    )
    cma_heap_fault_off_by_one: bool = _b(
        "until 6.11 (fixed in 6.11; stable 6.1.y Sept 2024)",
        "R34",
        "cma heap fault checks pgoff > pagecount (off by one)",
        commit="ea5ff5d351b5 (dma-buf: heaps: Fix off-by-one in CMA heap fault handler;"
        " T.J. Mercier, Aug 2024)",
        stable="6.1.y, 6.6.52, 5.15.y, 5.10.y (Sept 2024); in 6.1.192",
    )
    udmabuf_pfnmap: bool = _b(
        "6.12", "R34", "udmabuf sets VM_PFNMAP|VM_DONTEXPAND and uses vmf_insert_pfn"
    )
    udmabuf_prefault: bool = _b(
        "6.13",
        "",
        "udmabuf pre-faults the rest of the vma on fault (invisible to the modelled syscalls)",
        commit="udmabuf: pre-fault when first page fault (Huan Yang, for 6.13)",
    )
    udmabuf_begin_cpu_always_syncs: bool = _b(
        "7.2 (stable 7.1.y, 6.18.y, 6.12.y, 6.6.y, 6.1.y, 5.15.y, 5.10.y, Aug 2026)",
        "R44",
        "udmabuf's begin_cpu_access syncs for the CPU also the first time, when it makes"
        " its sg table (before, that mapping only cleaned the cache, so a line the CPU had"
        " cached stayed stale over what a device wrote)",
        commit="1d0e25c1ddf2 (udmabuf: Ensure to perform cache synchronisation in"
        " begin_cpu_udmabuf(); Robert Mader)",
        stable="7.1.y, 6.18.y, 6.12.y, 6.6.y, 6.1.y, 5.15.y, 5.10.y (Aug 2026); in 6.12.117"
        " and 6.1.192, not in 6.19.14",
    )
    udmabuf_denies_future_write: bool = _b(
        "6.13 (Dec 2024; stable 6.12.y, 6.1.y, Jan 2025)",
        "",
        "udmabuf refuses memfds sealed F_SEAL_FUTURE_WRITE (EINVAL)",
        commit="0a16e24e34f2 (udmabuf: also check for F_SEAL_FUTURE_WRITE; Jann Horn)",
        stable="6.12.y, 6.6.y, 6.1.y, 5.15.y, 5.10.y (Jan 2025)",
    )

    # --- DRM (vgem and the GEM shmem helpers) ----------------------------------
    drm_core_ioctl_count: int = _v(
        "0xCF in 6.1; 0xD1 since 6.8 (MODE_CLOSEFB); 0xD3 since 6.18 (GEM_CHANGE_HANDLE)",
        attrs.validators.instance_of(int),
        "",
        "DRM_CORE_IOCTL_COUNT: one past the newest core ioctl",
    )
    drm_mode_size_dumb: bool = _b(
        "6.19",
        "",
        "dumb buffers sized by drm_mode_size_dumb() (GEM shmem: no pitch alignment, the"
        " 6.19-rc SZ_8 reverted by 4cbae3748fc4); failing dumb ioctls clear outputs",
    )
    drm_shmem_import_put_on_success: bool = _b(
        "6.2 (stable 6.1.y, 5.4.y Dec 2022)",
        "",
        "shmem mmap of an import drops its object reference only if dma_buf_mmap worked",
        commit="24013314be6e (drm/shmem-helper: Remove errant put in error path; CVE-2022-48981)",
        stable="6.1.y and 5.4.y (Dec 2022)",
    )
    drm_shmem_resv_locking: bool = _b(
        "6.5", "", "GEM shmem pins and faults under the dma_resv lock; imports clear vm_ops"
    )
    drm_shmem_rejects_cow: bool = _b(
        "6.9 (stable 6.1.y, 6.6.y mid 2024)",
        "",
        "GEM shmem mmap refuses MAP_PRIVATE (EINVAL)",
        commit="39bc27bd6880 (drm/shmem-helper: Fix BUG_ON() on mmap(PROT_WRITE, MAP_PRIVATE))",
        stable="6.9.6, 6.6.y, 6.1.y (June 2024); in 6.1.192",
    )
    vgem_shmem_helpers: bool = _b(
        "5.15",
        "R60",
        "vgem is built on the GEM shmem helpers (before: its own GEM code, whose PRIME mmap"
        " maps the shmem file itself)",
        commit="45d9c8dde4cd (drm/vgem: use shmem helpers)",
    )

    # --- fences, timelines, modules (defaulted: specs built without them get these) ----
    dma_resv_usages: bool = field(
        default=True,
        validator=attrs.validators.instance_of(bool),
        metadata=_meta(
            "5.19",
            "R46,R50,R51",
            "fences carry a usage (KERNEL<WRITE<READ<BOOKKEEP); before, one exclusive"
            " (write) fence and a list of shared (read) fences",
            commit='7bc80a5462c3 ("dma-buf: add enum dma_resv_usage v4")',
        ),
    )
    has_sw_sync: bool = field(
        default=True,
        validator=attrs.validators.instance_of(bool),
        metadata=_meta(
            "4.9 (drivers/dma-buf/sw_sync.c; drivers/staging/android before)",
            "",
            "<debugfs>/sync/sw_sync: software timelines whose fences come as sync_files",
        ),
    )
    delete_module_never_waits: bool = field(
        default=True,
        validator=attrs.validators.instance_of(bool),
        metadata=_meta(
            "3.13",
            "",
            "delete_module fails EWOULDBLOCK while the module is in use; before, without"
            " O_NONBLOCK it slept until the refcount reached 0",
            commit='3f2b9c9cdf38 ("module: remove rmmod --wait option.")',
        ),
    )

    def replace(self, **changes: Any) -> Spec:
        """Return a copy with some behaviours changed (a "what if" kernel).

        The copy's name gets a ``+custom`` suffix unless ``name`` is given.
        """
        if "name" not in changes:
            changes["name"] = self.name if self.name.endswith("+custom") else self.name + "+custom"
        return attrs.evolve(self, **changes)

    def __attrs_post_init__(self) -> None:
        if not self.config_dma_shared_buffer and not self.has_config_stubs:
            raise ValueError(
                f"spec {self.name!r}: config_dma_shared_buffer=False needs has_config_stubs=True;"
                " kernels since 5.x have no !CONFIG_DMA_SHARED_BUFFER stubs"
            )
        if self.mmap_op_mandatory and not self.has_mmap_fop:
            raise ValueError(
                f"spec {self.name!r}: mmap_op_mandatory=True makes no sense without has_mmap_fop"
            )

    @classmethod
    def behaviours(cls) -> tuple[attrs.Attribute[Any], ...]:
        """The behaviour fields (everything but name and kernel_version), in order."""
        return tuple(f for f in attrs.fields(cls) if f.name not in ("name", "kernel_version"))


_OLD_REMAP = _VM_IO | _VM_RESERVED | _VM_PFNMAP
_NEW_REMAP = _VM_IO | _VM_PFNMAP | _VM_DONTEXPAND | _VM_DONTDUMP

_V35 = Spec(
    name="v3.5",
    kernel_version="3.5",
    config_dma_shared_buffer=True,
    has_config_stubs=True,
    export_info_form=False,
    mmap_op_mandatory=True,
    kmap_ops_mandatory=True,
    has_kmap=True,
    has_vmap=True,
    vmap_returns_errno=False,
    vmap_requires_resv_held=False,
    export_checks_pin_unpin_pair=False,
    export_checks_cache_sgt_with_pin=False,
    export_file_before_alloc=False,
    has_mmap_fop=True,
    mmap_internal_reads_uninitialised_dmabuf=False,
    mmap_internal_checks_null_op=False,
    per_buffer_inode=False,
    has_llseek=False,
    has_poll=False,
    has_sync_ioctl=False,
    has_set_name=False,
    set_name_ebusy_when_attached=False,
    has_fdinfo=False,
    has_sync_file_ioctls=False,
    tracepoints=False,
    dma_buf_mmap_swap="fput_then_get",
    cpu_access_has_range_args=True,
    end_cpu_access_returns_int=False,
    begin_cpu_access_waits_implicit_fences=False,
    mmap_region_error_fputs="original_file",
    fault_without_handler="anonymous",
    vma_init_dummy_vm_ops=False,
    remap_pfn_range_flags=_OLD_REMAP,
    vfs_file_mmap_ok=False,
    has_map_shared_validate=False,
    has_map_fixed_noreplace=False,
    vmf_insert_api=False,
    vm_special_flags=_VM_IO | _VM_DONTEXPAND | _VM_RESERVED | _VM_PFNMAP,
    remap_pfn_range_sets_pgoff_whole_vma=True,
    mremap_dontunmap_special_einval=False,
    has_dma_heaps=False,
    has_udmabuf=False,
    system_heap_remap_per_chunk=False,
    cma_heap_pfnmap=False,
    cma_heap_fault_off_by_one=False,
    udmabuf_pfnmap=False,
    udmabuf_prefault=False,
    udmabuf_denies_future_write=False,
    udmabuf_begin_cpu_always_syncs=False,
    drm_core_ioctl_count=0xCF,
    drm_mode_size_dumb=False,
    drm_shmem_import_put_on_success=False,
    drm_shmem_resv_locking=False,
    drm_shmem_rejects_cow=False,
    vgem_shmem_helpers=False,
    mremap_dontunmap_anon_only=False,
    mremap_vma_lookup_first=False,
    mremap_remap_move=False,
    pseudo_fs_noexec=False,
    madvise_free=False,
    madvise_wipeonfork=False,
    madvise_cold_pageout=False,
    madvise_populate=False,
    madvise_dontneed_locked=False,
    madvise_collapse=False,
    madvise_remove_shared_maywrite=False,
    memfd_noexec_seal=False,
    madvise_guard=False,
    proc_fdinfo_mnt_id=False,
    proc_fdinfo_ino=False,
    fallocate_mode_switch=False,
    falloc_write_zeroes=False,
    dma_resv_usages=False,  # no dma_resv at all before 3.17; slots until 5.19
    has_sw_sync=False,
    delete_module_never_waits=False,
)

# The RFC as posted differs from the merge only in the uninitialised read (R61);
# the misspelt type and the unnamed stub parameter would not compile and are not modelled.
_RFC = attrs.evolve(
    _V35, name="rfc-2012", kernel_version="3.4+rfc", mmap_internal_reads_uninitialised_dmabuf=True
)

# Linux 3.4: kernel CPU access existed, mmap and vmap did not.
_V34 = attrs.evolve(
    _V35,
    name="v3.4",
    kernel_version="3.4",
    has_mmap_fop=False,
    mmap_op_mandatory=False,
    has_vmap=False,
)

# Debian's 6.1.192: 6.1 LTS with the stable backports named in the field metadata
# (the CMA fault off-by-one fixed, GEM shmem refusing COW mappings, the errant put
# removed, udmabuf refusing F_SEAL_FUTURE_WRITE).  SPECS["v6.1"].replace(...) with
# those four fields flipped gives the 6.1.0 release.
_V61 = Spec(
    name="v6.1",
    kernel_version="6.1.192",
    config_dma_shared_buffer=True,
    has_config_stubs=False,
    export_info_form=True,
    mmap_op_mandatory=False,
    kmap_ops_mandatory=False,
    has_kmap=False,
    has_vmap=True,
    vmap_returns_errno=True,
    vmap_requires_resv_held=False,
    export_checks_pin_unpin_pair=True,
    export_checks_cache_sgt_with_pin=True,
    export_file_before_alloc=False,
    has_mmap_fop=True,
    mmap_internal_reads_uninitialised_dmabuf=False,
    mmap_internal_checks_null_op=True,
    per_buffer_inode=True,
    has_llseek=True,
    has_poll=True,
    has_sync_ioctl=True,
    has_set_name=True,
    set_name_ebusy_when_attached=False,
    has_fdinfo=True,
    has_sync_file_ioctls=True,
    tracepoints=False,
    dma_buf_mmap_swap="vma_set_file",
    cpu_access_has_range_args=False,
    end_cpu_access_returns_int=True,
    begin_cpu_access_waits_implicit_fences=True,
    mmap_region_error_fputs="vm_file",
    fault_without_handler="sigbus",
    vma_init_dummy_vm_ops=True,
    remap_pfn_range_flags=_NEW_REMAP,
    vfs_file_mmap_ok=True,
    has_map_shared_validate=True,
    has_map_fixed_noreplace=True,
    vmf_insert_api=True,
    vm_special_flags=_VM_IO | _VM_DONTEXPAND | _VM_PFNMAP | _VM_MIXEDMAP,
    remap_pfn_range_sets_pgoff_whole_vma=False,
    mremap_dontunmap_special_einval=True,
    has_dma_heaps=True,
    has_udmabuf=True,
    system_heap_remap_per_chunk=False,
    cma_heap_pfnmap=False,
    cma_heap_fault_off_by_one=False,  # stable, Sept 2024
    udmabuf_pfnmap=False,
    udmabuf_prefault=False,
    udmabuf_denies_future_write=True,  # stable, Jan 2025
    udmabuf_begin_cpu_always_syncs=True,  # stable, Aug 2026
    drm_core_ioctl_count=0xCF,
    drm_mode_size_dumb=False,
    drm_shmem_import_put_on_success=True,  # stable, Dec 2022
    drm_shmem_resv_locking=False,
    drm_shmem_rejects_cow=True,  # stable, mid 2024: 6.1.192 refuses MAP_PRIVATE
    vgem_shmem_helpers=True,
    mremap_dontunmap_anon_only=False,
    mremap_vma_lookup_first=True,
    mremap_remap_move=False,
    pseudo_fs_noexec=False,
    madvise_free=True,
    madvise_wipeonfork=True,
    madvise_cold_pageout=True,
    madvise_populate=True,
    madvise_dontneed_locked=True,
    madvise_collapse=True,
    madvise_remove_shared_maywrite=False,
    memfd_noexec_seal=True,
    madvise_guard=False,
    proc_fdinfo_mnt_id=True,
    proc_fdinfo_ino=True,
    fallocate_mode_switch=False,
    falloc_write_zeroes=False,
    dma_resv_usages=True,
    has_sw_sync=True,
    delete_module_never_waits=True,
)

# 6.12 vs 6.1 (read in the sources; see docs/research-kernel-6.12.md): vmap under the
# resv lock (6.2), the file allocated before the dma_buf (6.10), CMA heap PFNMAP (6.8)
# with the off-by-one fixed (6.11), udmabuf PFNMAP via vmf_insert_pfn (6.12; the
# pre-fault arrived in 6.13).
#
# The recordings of 6.16.12, 6.17.13 and 6.18.15 agree with it on every modelled case:
# what 6.13-6.18 changed (udmabuf's pre-fault, guard regions, 6.17's multi-vma mremap
# moves, GEM_CHANGE_HANDLE in 6.18) is not observed by the recorded probes; see
# docs/kernel-lines.md.  Those changes are modelled from the sources in v6.19.
_V612 = attrs.evolve(
    _V61,
    name="v6.12",
    kernel_version="6.12.117",
    vmap_requires_resv_held=True,
    export_file_before_alloc=True,
    cma_heap_pfnmap=True,
    udmabuf_pfnmap=True,
    drm_core_ioctl_count=0xD1,
    drm_shmem_resv_locking=True,
    fallocate_mode_switch=True,
    madvise_remove_shared_maywrite=True,
)

# Debian's 5.10.223 (July 2024): vgem on its own GEM code (shmem helpers came in
# 5.15), no sync_file ioctls (6.0), no ino: in fdinfo (5.14), vmap returning a
# pointer (5.11), mmap_region's error path fputting the original file (5.11),
# MREMAP_DONTUNMAP for private anonymous vmas only (5.13).  Its config builds
# neither the dma-heaps nor udmabuf, so neither device exists.
_V510 = attrs.evolve(
    _V61,
    name="v5.10",
    kernel_version="5.10.223",
    vmap_returns_errno=False,
    set_name_ebusy_when_attached=True,
    has_sync_file_ioctls=False,
    dma_buf_mmap_swap="restore_on_error",
    mmap_region_error_fputs="original_file",
    mremap_dontunmap_special_einval=False,
    mremap_dontunmap_anon_only=True,
    mremap_vma_lookup_first=False,
    has_dma_heaps=False,  # CONFIG_DMABUF_HEAPS is off in Debian's 5.10
    has_udmabuf=False,  # CONFIG_UDMABUF is off in Debian's 5.10
    cma_heap_fault_off_by_one=True,  # the stable fix came with 5.10.226
    udmabuf_denies_future_write=False,  # stable fix of Jan 2025, after 5.10.223
    drm_shmem_rejects_cow=False,  # the 5.10.y backport came in Nov 2024
    dma_resv_usages=False,  # usages arrived in 5.19 (7bc80a5462c3): exclusive/shared slots
    vgem_shmem_helpers=False,
    madvise_populate=False,
    madvise_dontneed_locked=False,
    madvise_collapse=False,
    memfd_noexec_seal=False,
    proc_fdinfo_ino=False,
)

# 6.19.14 (7.0.y agrees): cache_sgt_mapping gone, the system heap remaps whole sg
# chunks (04c7adb5871a, Barry Song), udmabuf pre-faults (6.13), guard regions
# (6.13), mremap's rework (6.16-6.17), GEM_CHANGE_HANDLE (6.18), drm_mode_size_dumb()
# for dumb buffers.
_V619 = attrs.evolve(
    _V612,
    name="v6.19",
    kernel_version="6.19.14",
    export_checks_cache_sgt_with_pin=False,
    system_heap_remap_per_chunk=True,
    udmabuf_prefault=True,
    drm_core_ioctl_count=0xD3,
    drm_mode_size_dumb=True,
    madvise_guard=True,
    falloc_write_zeroes=True,
    mremap_remap_move=True,
    udmabuf_begin_cpu_always_syncs=False,  # 6.19.y had ended before the Aug 2026 fix
)

# latest = Linux 7.3 (7.3.4): the dma-buf tracepoints (7.0) and noexec pseudo
# filesystems (6de2aeffabaa; in 7.1.y from 7.1.4).
_LATEST = attrs.evolve(
    _V619,
    name="latest",
    kernel_version="7.3.4",
    tracepoints=True,
    pseudo_fs_noexec=True,
    udmabuf_begin_cpu_always_syncs=True,
)


_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse_release(release: str) -> tuple[int, int, int]:
    """``"6.12.117+deb12-amd64"`` → ``(6, 12, 117)``; ``"6.17"`` → ``(6, 17, 0)``.

    The first ``major.minor[.patch]`` of a ``uname -r`` style string counts;
    distribution suffixes (``+deb12``, ``-amd64``) are ignored.
    """
    if not isinstance(release, str):
        raise TypeError(f"release must be a str such as '6.12.117', not {type(release).__name__}")
    m = _RELEASE.match(release.strip())
    if m is None:
        raise ValueError(
            f"release {release!r} is not a kernel release; pass one such as '6.12.117'"
            " or '6.12.117+deb12-amd64' (what uname -r prints)"
        )
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@frozen
class ReleaseRange:
    """Kernel releases ``first`` .. ``last`` (inclusive) that one spec models."""

    first: tuple[int, int, int]
    last: tuple[int, int, int]
    spec: str
    recorded: str = ""
    """The release recorded on a real machine for this range, if any."""
    note: str = ""

    def __contains__(self, release: object) -> bool:
        return isinstance(release, tuple) and self.first <= release <= self.last

    def describe(self) -> str:
        def fmt(v: tuple[int, int, int], last: bool) -> str:
            if last and v[2] == _ANY:
                return f"{v[0]}.{v[1]}.y"
            return f"{v[0]}.{v[1]}.{v[2]}"

        return f"{fmt(self.first, False)} – {fmt(self.last, True)}"


_ANY = 1 << 20  # "every point release of this line"

RELEASES: tuple[ReleaseRange, ...] = (
    ReleaseRange((3, 4, 0), (3, 4, _ANY), "v3.4", note="dma-buf without mmap"),
    ReleaseRange((3, 5, 0), (3, 8, _ANY), "v3.5", note="dma-buf mmap as merged"),
    ReleaseRange(
        (5, 10, 0),
        (5, 10, _ANY),
        "v5.10",
        "5.10.223",
        "Debian's config: no heaps, no udmabuf; later 5.10.y took the CMA and COW fixes",
    ),
    ReleaseRange(
        (6, 1, 0),
        (6, 1, _ANY),
        "v6.1",
        "6.1.192",
        "models 6.1.192; releases before the backports differ in cma_heap_fault_off_by_one,"
        " drm_shmem_rejects_cow, drm_shmem_import_put_on_success, udmabuf_denies_future_write,"
        " udmabuf_begin_cpu_always_syncs",
    ),
    ReleaseRange(
        (6, 12, 0),
        (6, 18, _ANY),
        "v6.12",
        "6.12.117, 6.16.12, 6.17.13, 6.18.15",
        "6.18.y from July 2026 carries the noexec pseudo filesystems (pseudo_fs_noexec)",
    ),
    ReleaseRange((6, 19, 0), (7, 0, _ANY), "v6.19", "6.19.14, 7.0.13"),
    ReleaseRange(
        (7, 1, 0),
        (7, 1, 3),
        "v6.19",
        note="before the noexec backport (7.1.4)",
    ),
    ReleaseRange((7, 1, 4), (7, 3, _ANY), "latest", "7.1.13, 7.2.13, 7.3.4"),
)
"""Which spec models which releases: data, consulted by :meth:`SpecTable.for_release`."""


class SpecTable(Mapping[str, Spec]):
    """The built-in specs by name (oldest first) and the releases each one models."""

    __slots__ = ("_releases", "_specs")

    def __init__(self, specs: tuple[Spec, ...], releases: tuple[ReleaseRange, ...]) -> None:
        self._specs = {s.name: s for s in specs}
        self._releases = releases
        for r in releases:
            if r.spec not in self._specs:
                raise ValueError(f"release range {r.describe()} names unknown spec {r.spec!r}")

    def __getitem__(self, name: str) -> Spec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"SpecTable({', '.join(self._specs)})"

    @property
    def releases(self) -> tuple[ReleaseRange, ...]:
        return self._releases

    def release_range(self, release: str) -> ReleaseRange:
        """The :class:`ReleaseRange` holding ``release`` (``ValueError`` if none does)."""
        version = parse_release(release)
        for r in self._releases:
            if version in r:
                return r
        modelled = ", ".join(r.describe() for r in self._releases)
        raise ValueError(
            f"no built-in spec models Linux {release}; the modelled releases are {modelled}."
            " Build one with SPECS[name].replace(...)"
        )

    def for_release(self, release: str) -> Spec:
        """The spec that models ``release`` (a ``uname -r`` string such as ``"6.17.13"``)."""
        return self._specs[self.release_range(release).spec]


SPECS: SpecTable = SpecTable((_RFC, _V34, _V35, _V510, _V61, _V612, _V619, _LATEST), RELEASES)
"""The built-in specs by name, oldest first; ``SPECS.for_release("6.17.13")`` by release."""

DEFAULT_SPEC = "v6.12"
"""The spec every command and entry point uses unless told otherwise: the newest LTS line."""


def spec_names() -> tuple[str, ...]:
    return tuple(SPECS)


def get_spec(spec: str | Spec) -> Spec:
    """Resolve a spec name (or pass a :class:`Spec` through)."""
    if isinstance(spec, Spec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a spec name or a Spec, not {type(spec).__name__}")
    try:
        return SPECS[spec]
    except KeyError:
        raise ValueError(
            f"unknown spec {spec!r}; choose one of {', '.join(SPECS)} or build one with"
            " SPECS[name].replace(...)"
        ) from None
