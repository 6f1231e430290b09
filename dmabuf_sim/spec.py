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
``v6.1``, ``v6.12``  those LTS kernels;
``latest``    v6.19 plus the mainline tracepoints added after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs
from attrs import field, frozen

__all__ = ["DEFAULT_SPEC", "SPECS", "Spec", "get_spec", "spec_names"]

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


def _b(since: str, rules: str = "", doc: str = "") -> Any:
    """A boolean behaviour field with provenance metadata."""
    return field(
        validator=attrs.validators.instance_of(bool),
        metadata={"since": since, "rules": rules, "doc": doc},
    )


def _v(since: str, validator: Any, rules: str = "", doc: str = "") -> Any:
    return field(validator=validator, metadata={"since": since, "rules": rules, "doc": doc})


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
        "5.13", "", "MREMAP_DONTUNMAP on VM_DONTEXPAND/VM_PFNMAP vmas → EINVAL"
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
        "until 6.11", "R34", "cma heap fault checks pgoff > pagecount (off by one)"
    )
    udmabuf_pfnmap: bool = _b(
        "6.12", "R34", "udmabuf sets VM_PFNMAP|VM_DONTEXPAND and uses vmf_insert_pfn"
    )
    udmabuf_prefault: bool = _b("6.13", "", "udmabuf pre-faults the rest of the vma on fault")
    udmabuf_denies_future_write: bool = _b(
        "0a16e24e34f2 (Dec 2024; in 6.12.y stable)",
        "",
        "udmabuf refuses memfds sealed F_SEAL_FUTURE_WRITE (EINVAL)",
    )

    # --- DRM (vgem and the GEM shmem helpers) ----------------------------------
    drm_core_ioctl_count: int = _v(
        "0xCF in 6.1; 0xD1 since 6.8 (MODE_CLOSEFB); 0xD3 since 6.18 (GEM_CHANGE_HANDLE)",
        attrs.validators.instance_of(int),
        "",
        "DRM_CORE_IOCTL_COUNT: one past the newest core ioctl",
    )
    drm_mode_size_dumb: bool = _b(
        "6.19", "", "dumb buffers sized by drm_mode_size_dumb(); failing dumb ioctls clear outputs"
    )
    drm_shmem_import_put_on_success: bool = _b(
        "6.2", "", "shmem mmap of an import drops its object reference only if dma_buf_mmap worked"
    )
    drm_shmem_resv_locking: bool = _b(
        "6.5", "", "GEM shmem pins and faults under the dma_resv lock; imports clear vm_ops"
    )
    drm_shmem_rejects_cow: bool = _b("6.9", "", "GEM shmem mmap refuses MAP_PRIVATE (EINVAL)")

    # --- fences, timelines, modules (defaulted: specs built without them get these) ----
    dma_resv_usages: bool = field(
        default=True,
        validator=attrs.validators.instance_of(bool),
        metadata={
            "since": '5.19 (7bc80a5462c3 "dma-buf: add enum dma_resv_usage v4")',
            "rules": "R46,R50,R51",
            "doc": "fences carry a usage (KERNEL<WRITE<READ<BOOKKEEP); before, one exclusive"
            " (write) fence and a list of shared (read) fences",
        },
    )
    has_sw_sync: bool = field(
        default=True,
        validator=attrs.validators.instance_of(bool),
        metadata={
            "since": "4.9 (drivers/dma-buf/sw_sync.c; drivers/staging/android before)",
            "rules": "",
            "doc": "<debugfs>/sync/sw_sync: software timelines whose fences come as sync_files",
        },
    )
    delete_module_never_waits: bool = field(
        default=True,
        validator=attrs.validators.instance_of(bool),
        metadata={
            "since": '3.13 (3f2b9c9cdf38 "module: remove rmmod --wait option.")',
            "rules": "",
            "doc": "delete_module fails EWOULDBLOCK while the module is in use; before, without"
            " O_NONBLOCK it slept until the refcount reached 0",
        },
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
    drm_core_ioctl_count=0xCF,
    drm_mode_size_dumb=False,
    drm_shmem_import_put_on_success=False,
    drm_shmem_resv_locking=False,
    drm_shmem_rejects_cow=False,
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

_V61 = Spec(
    name="v6.1",
    kernel_version="6.1",
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
    cma_heap_fault_off_by_one=True,
    udmabuf_pfnmap=False,
    udmabuf_prefault=False,
    udmabuf_denies_future_write=False,
    drm_core_ioctl_count=0xCF,
    drm_mode_size_dumb=False,
    drm_shmem_import_put_on_success=False,
    drm_shmem_resv_locking=False,
    drm_shmem_rejects_cow=False,
    dma_resv_usages=True,
    has_sw_sync=True,
    delete_module_never_waits=True,
)

# 6.12 vs 6.1 (read in the sources; see docs/research-kernel-6.12.md): vmap under the
# resv lock (6.2), the file allocated before the dma_buf (6.10), CMA heap PFNMAP (6.8)
# with the off-by-one fixed (6.11), udmabuf PFNMAP via vmf_insert_pfn (6.12; the
# pre-fault arrived in 6.13).
_V612 = attrs.evolve(
    _V61,
    name="v6.12",
    kernel_version="6.12",
    vmap_requires_resv_held=True,
    export_file_before_alloc=True,
    cma_heap_pfnmap=True,
    cma_heap_fault_off_by_one=False,
    udmabuf_pfnmap=True,
    udmabuf_denies_future_write=True,  # the recorded Debian 6.12.117 has the backport
    drm_core_ioctl_count=0xD1,
    drm_shmem_import_put_on_success=True,
    drm_shmem_resv_locking=True,
    drm_shmem_rejects_cow=True,
)

# latest = 6.19 (+ the tracepoints merged after it): cache_sgt_mapping gone, the
# system heap remaps whole sg chunks (Barry Song, 6.19), udmabuf pre-faults (6.13).
_LATEST = attrs.evolve(
    _V612,
    name="latest",
    kernel_version="6.19+",
    export_checks_cache_sgt_with_pin=False,
    tracepoints=True,
    mremap_dontunmap_special_einval=True,
    system_heap_remap_per_chunk=True,
    udmabuf_prefault=True,
    drm_core_ioctl_count=0xD3,
    drm_mode_size_dumb=True,
)

SPECS: Mapping[str, Spec] = MappingProxyType(
    {s.name: s for s in (_RFC, _V34, _V35, _V61, _V612, _LATEST)}
)
"""The built-in specs by name, oldest first."""

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
