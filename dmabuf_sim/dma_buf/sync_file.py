"""``sync_file``: a fence as a file descriptor (drivers/dma-buf/sync_file.c).

Only what the dma-buf sync-file ioctls need: create a sync_file around a
fence, get the fence back from an fd (``sync_file_get_fence``), poll it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..fs import File, FileOperations, anon_inode_getfile
from ..trace import kernel_function
from ..uapi import POLLIN
from .dma_fence import DmaFence

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["sync_file_create", "sync_file_get_fence"]


def _sync_file_poll(file: File, events: int) -> int:
    fence = file.private_data
    assert isinstance(fence, DmaFence)
    return POLLIN if fence.signaled else 0


def _fops(kernel: Kernel) -> FileOperations:
    fops = kernel.drivers.get("sync_file_fops")
    if fops is None:
        fops = kernel.drivers["sync_file_fops"] = FileOperations(
            owner="sync_file", poll=_sync_file_poll
        )
    assert isinstance(fops, FileOperations)
    return fops


@kernel_function("sync_file_create", file="drivers/dma-buf/sync_file.c")
def sync_file_create(kernel: Kernel, fence: DmaFence) -> File:
    return anon_inode_getfile(kernel, "sync_file", _fops(kernel), fence, 0o2)


@kernel_function("sync_file_get_fence", file="drivers/dma-buf/sync_file.c")
def sync_file_get_fence(kernel: Kernel, file: File | None) -> DmaFence | None:
    if file is None or file.f_op is not _fops(kernel):
        return None
    fence = file.private_data
    return fence if isinstance(fence, DmaFence) else None
