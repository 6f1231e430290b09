"""The dma-buf core (drivers/dma-buf/): objects, export, mmap, file ops, access, fences.

Modules follow the concerns of ``dma-buf.c``: :mod:`.core` (struct dma_buf,
export, fd/get/put, release), :mod:`.mmap` (the seed: ``dma_buf_mmap_internal``
and ``dma_buf_mmap``), :mod:`.fops` (llseek, poll, ioctl, fdinfo),
:mod:`.access` (attach/map, CPU access, kmap, vmap), :mod:`.header` (the API
per build config, stubs included), and the fence machinery
(:mod:`.dma_fence`, :mod:`.dma_resv`, :mod:`.sync_file`, :mod:`.sw_sync`), with
:mod:`.device_jobs` to schedule device work on the virtual clock.
"""

from __future__ import annotations

from .access import (
    dma_buf_attach,
    dma_buf_begin_cpu_access,
    dma_buf_detach,
    dma_buf_end_cpu_access,
    dma_buf_kmap,
    dma_buf_kmap_atomic,
    dma_buf_kunmap,
    dma_buf_map_attachment,
    dma_buf_map_attachment_unlocked,
    dma_buf_unmap_attachment,
    dma_buf_unmap_attachment_unlocked,
    dma_buf_vmap,
    dma_buf_vmap_unlocked,
    dma_buf_vunmap,
    dma_buf_vunmap_unlocked,
)
from .core import (
    DmaBuf,
    DmaBufAttachment,
    DmaBufExportInfo,
    DmaBufOps,
    IosysMap,
    dma_buf_export,
    dma_buf_fd,
    dma_buf_get,
    dma_buf_put,
    get_dma_buf,
    is_dma_buf_file,
)
from .dma_fence import DmaFence, dma_fence_signal, dma_fence_wait, dma_fence_wait_timeout
from .dma_resv import DmaResv, DmaResvUsage, dma_resv_wait_timeout
from .header import dma_buf_h
from .mmap import dma_buf_mmap, dma_buf_mmap_internal

__all__ = [
    "DmaBuf",
    "DmaBufAttachment",
    "DmaBufExportInfo",
    "DmaBufOps",
    "DmaFence",
    "DmaResv",
    "DmaResvUsage",
    "IosysMap",
    "dma_buf_attach",
    "dma_buf_begin_cpu_access",
    "dma_buf_detach",
    "dma_buf_end_cpu_access",
    "dma_buf_export",
    "dma_buf_fd",
    "dma_buf_get",
    "dma_buf_h",
    "dma_buf_kmap",
    "dma_buf_kmap_atomic",
    "dma_buf_kunmap",
    "dma_buf_map_attachment",
    "dma_buf_map_attachment_unlocked",
    "dma_buf_mmap",
    "dma_buf_mmap_internal",
    "dma_buf_put",
    "dma_buf_unmap_attachment",
    "dma_buf_unmap_attachment_unlocked",
    "dma_buf_vmap",
    "dma_buf_vmap_unlocked",
    "dma_buf_vunmap",
    "dma_buf_vunmap_unlocked",
    "dma_fence_signal",
    "dma_fence_wait",
    "dma_fence_wait_timeout",
    "dma_resv_wait_timeout",
    "get_dma_buf",
    "is_dma_buf_file",
]
