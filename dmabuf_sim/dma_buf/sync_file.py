"""``sync_file``: a fence as a file descriptor (drivers/dma-buf/sync_file.c).

What the dma-buf sync-file ioctls and sw_sync need: create a sync_file around a
fence, get the fence back from an fd (``sync_file_get_fence``), poll it
(``POLLIN`` once signalled, with or without an error), and
``SYNC_IOC_FILE_INFO`` (its status: 0 pending, 1 signalled, a negative errno
if signalled with an error; and, on request, one ``sync_fence_info`` per fence
it stands for).

Simplified: a fence's obj/driver names are its context and ``dmabuf_sim``;
``SYNC_IOC_MERGE`` is not modelled (NotImplementedError).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from ..fs import File, FileOperations, anon_inode_getfile
from ..kstate import Key
from ..trace import kernel_function
from ..uaccess import copy_bytes_to_user, copy_from_user, copy_to_user
from ..uapi import POLLIN, SYNC_IOC_FILE_INFO, SYNC_IOC_MERGE, SyncFenceInfo, SyncFileInfo
from .dma_fence import DmaFence, dma_fence_get_status

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["sync_file_create", "sync_file_get_fence"]


def _sync_file_poll(file: File, events: int) -> int:
    fence = file.private_data
    assert isinstance(fence, DmaFence)
    return POLLIN if fence.signaled else 0


SYNC_FILE_FOPS: Key[FileOperations] = Key("sync_file_fops")
"""``sync_file_fops``: one table per kernel, so ``f_op ==`` identifies a sync_file."""


def _fops(kernel: Kernel) -> FileOperations:
    return kernel.subsys.setdefault(
        SYNC_FILE_FOPS,
        lambda: FileOperations(
            owner="sync_file", poll=_sync_file_poll, unlocked_ioctl=sync_file_ioctl
        ),
    )


@kernel_function("sync_file_create", file="drivers/dma-buf/sync_file.c")
def sync_file_create(kernel: Kernel, fence: DmaFence) -> File:
    # sync_file_alloc(): anon_inode_getfile("sync_file", &sync_file_fops, sync_file, 0), so
    # the file is O_RDONLY (fdinfo "flags: 02000000" on the recorded kernels)
    return anon_inode_getfile(kernel, "sync_file", _fops(kernel), fence, 0)


@kernel_function("sync_file_get_fence", file="drivers/dma-buf/sync_file.c")
def sync_file_get_fence(kernel: Kernel, file: File | None) -> DmaFence | None:
    if file is None or file.f_op is not _fops(kernel):
        return None
    fence = file.private_data
    return fence if isinstance(fence, DmaFence) else None


@kernel_function("sync_file_ioctl", file="drivers/dma-buf/sync_file.c")
def sync_file_ioctl(file: File, cmd: int, arg: Any) -> int:
    if cmd == SYNC_IOC_MERGE:
        raise NotImplementedError("SYNC_IOC_MERGE (sync_file_merge) is not modelled")
    if cmd == SYNC_IOC_FILE_INFO:
        fence = file.private_data
        assert isinstance(fence, DmaFence)
        return sync_file_ioctl_fence_info(file.kernel, fence, arg)
    return -errno.ENOTTY


def _leaves(fence: DmaFence) -> list[DmaFence]:
    """``dma_fence_unwrap_for_each``: the fences a container stands for."""
    return list(fence.components) or [fence]


def _name(fence: DmaFence) -> bytes:
    """``sync_file_get_name``: driver, timeline, context and seqno (names simplified)."""
    return f"dmabuf_sim-{fence.context}-{fence.seqno}".encode()[:31]


@kernel_function("sync_file_ioctl_fence_info", file="drivers/dma-buf/sync_file.c")
def sync_file_ioctl_fence_info(kernel: Kernel, fence: DmaFence, arg: Any) -> int:
    """``SYNC_IOC_FILE_INFO``: flags/pad must be 0 (``EINVAL``); ``num_fences`` 0 asks for
    the count and the status only; otherwise it must be at least the count (``EINVAL``) and
    one ``sync_fence_info`` per fence is written at ``sync_fence_info``."""
    info = copy_from_user(kernel, arg, SyncFileInfo)
    if isinstance(info, int):
        return -errno.EFAULT
    if info.flags or info.pad:
        return -errno.EINVAL
    leaves = _leaves(fence)
    if not info.num_fences:
        info.status = dma_fence_get_status(fence)
    else:
        if info.num_fences < len(leaves):
            return -errno.EINVAL
        status = 1
        data = b""
        for leaf in leaves:
            one = SyncFenceInfo(
                obj_name=leaf.context.encode()[:31],
                driver_name=b"dmabuf_sim",
                status=dma_fence_get_status(leaf),
                timestamp_ns=leaf.timestamp if leaf.signaled and leaf.timestamp else 0,
            )
            status = status if status <= 0 else one.status
            data += one.pack()
        info.status = status
        if copy_bytes_to_user(kernel, info.sync_fence_info, data):
            return -errno.EFAULT
    info.name = _name(fence)
    info.num_fences = len(leaves)
    return -errno.EFAULT if copy_to_user(kernel, arg, info) else 0
