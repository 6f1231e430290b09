"""sw_sync: software timelines for testing fences (drivers/dma-buf/sw_sync.c).

Opening ``<debugfs>/sync/sw_sync`` (:data:`~dmabuf_sim.uapi.SW_SYNC_PATH`)
makes a *timeline*: a 32-bit counter, starting at 0, named after the opening
task.  ``SW_SYNC_IOC_CREATE_FENCE`` makes a fence (a *sync_pt*) at a seqno on
it and returns a sync_file fd; ``SW_SYNC_IOC_INC`` advances the counter and
signals, in seqno order, every point it has reached.  A point at or below the
counter is signalled from birth; asking twice for a pending seqno gives the
same fence.  Closing the timeline signals every pending point with
``-ENOENT`` — the one way sw_sync signals with an error.

Seqnos compare as the kernel's 32-bit fences do: a point is signalled once
``(s32)(seqno - value) <= 0``, so the counter may wrap.

The same machinery is reachable from the kernel side
(:func:`sync_timeline_create`, :func:`sync_pt_create`,
:func:`sync_timeline_signal`, :func:`sync_timeline_release`) for tests that
need no fd.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from attrs import define, field

from ..fs import File, FileOperations, Inode, fput
from ..fs_file import fd_install, get_unused_fd_flags, put_unused_fd
from ..kstate import Key
from ..trace import kernel_function
from ..uaccess import copy_from_user, copy_to_user, get_user_int
from ..uapi import SW_SYNC_IOC_CREATE_FENCE, SW_SYNC_IOC_INC, SW_SYNC_PATH, SwSyncCreateFenceData
from .dma_fence import DmaFence, dma_fence_set_error, dma_fence_signal
from .sync_file import sync_file_create

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "SyncTimeline",
    "sw_sync_init",
    "sync_pt_create",
    "sync_timeline_create",
    "sync_timeline_release",
    "sync_timeline_signal",
]

INT_MAX = (1 << 31) - 1


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


@define(eq=False, slots=True)
class SyncTimeline:
    """``struct sync_timeline``: the counter and its pending points, in seqno order."""

    kernel: Kernel = field(repr=False)
    name: str
    context: str
    value: int = 0
    pt_list: list[DmaFence] = field(factory=list, repr=False)
    """Pending points, earliest first (the kernel's ``pt_list``, sorted like ``pt_tree``)."""

    def trace_name(self) -> str:
        return f"sync_timeline({self.name})"

    def is_signaled(self, fence: DmaFence) -> bool:
        """``timeline_fence_signaled``: ``!__dma_fence_is_later(seqno, value)`` (32-bit)."""
        return _s32(fence.seqno - self.value) <= 0


SW_SYNC_CONTEXTS: Key[Iterator[int]] = Key("sw_sync_contexts")
"""Numbers for the fence contexts of sw_sync timelines, per kernel."""


def _contexts(kernel: Kernel) -> Iterator[int]:
    return kernel.subsys.setdefault(SW_SYNC_CONTEXTS, lambda: itertools.count(1))


@kernel_function("sync_timeline_create", file="drivers/dma-buf/sw_sync.c")
def sync_timeline_create(kernel: Kernel, name: str) -> SyncTimeline:
    """A timeline at 0 on a fresh fence context (``dma_fence_context_alloc(1)``)."""
    return SyncTimeline(kernel, name, f"sw_sync:{name}:{next(_contexts(kernel))}")


@kernel_function("sync_pt_create", file="drivers/dma-buf/sw_sync.c")
def sync_pt_create(obj: SyncTimeline, value: int) -> DmaFence:
    """A point at ``value``: signalled at once if the counter has reached it; the existing
    fence if one is pending at that seqno; else a new pending point, kept in order."""
    value &= 0xFFFFFFFF
    pt = DmaFence(obj.kernel, obj.context, value)
    if obj.is_signaled(pt):
        dma_fence_signal(pt)  # dma_fence_is_signaled_locked: ->signaled says yes
        return pt
    for i, other in enumerate(obj.pt_list):
        cmp = _s32(value - other.seqno)
        if cmp == 0:
            return other  # dma_fence_get_rcu(&other->base): the same point
        if cmp < 0:
            obj.pt_list.insert(i, pt)
            return pt
    obj.pt_list.append(pt)
    return pt


@kernel_function("sync_timeline_signal", file="drivers/dma-buf/sw_sync.c")
def sync_timeline_signal(obj: SyncTimeline, inc: int) -> None:
    """Advance the counter by ``inc`` and signal the points it reached, in seqno order."""
    obj.value = (obj.value + inc) & 0xFFFFFFFF
    while obj.pt_list and obj.is_signaled(obj.pt_list[0]):
        dma_fence_signal(obj.pt_list.pop(0))


@kernel_function("sw_sync_debugfs_release", file="drivers/dma-buf/sw_sync.c")
def sync_timeline_release(obj: SyncTimeline) -> None:
    """The timeline goes away: every pending point is signalled with ``-ENOENT``."""
    pending, obj.pt_list = obj.pt_list, []
    for pt in pending:
        dma_fence_set_error(pt, -errno.ENOENT)
        dma_fence_signal(pt)


# -- the debugfs file ---------------------------------------------------------------------
@kernel_function("sw_sync_debugfs_open", file="drivers/dma-buf/sw_sync.c")
def sw_sync_debugfs_open(inode: Inode, file: File) -> int:
    """Each open makes a timeline named after the task (``get_task_comm``)."""
    kernel = file.kernel
    comm = kernel.current.comm if kernel.current is not None else "kernel"
    file.private_data = sync_timeline_create(kernel, comm)
    return 0


def _sw_sync_release(inode: Inode, file: File) -> int:
    obj = file.private_data
    assert isinstance(obj, SyncTimeline)
    sync_timeline_release(obj)
    return 0


@kernel_function("sw_sync_ioctl", file="drivers/dma-buf/sw_sync.c")
def sw_sync_ioctl(file: File, cmd: int, arg: Any) -> int:
    obj = file.private_data
    assert isinstance(obj, SyncTimeline)
    if cmd == SW_SYNC_IOC_CREATE_FENCE:
        return sw_sync_ioctl_create_fence(obj, arg)
    if cmd == SW_SYNC_IOC_INC:
        return sw_sync_ioctl_inc(obj, arg)
    return -errno.ENOTTY


@kernel_function("sw_sync_ioctl_create_fence", file="drivers/dma-buf/sw_sync.c")
def sw_sync_ioctl_create_fence(obj: SyncTimeline, arg: Any) -> int:
    """A point at ``data.value`` as a sync_file fd (close-on-exec) in ``data.fence``."""
    kernel = obj.kernel
    task = kernel.current
    assert task is not None
    fd = get_unused_fd_flags(task, os.O_CLOEXEC)
    if fd < 0:
        return fd
    data = copy_from_user(kernel, arg, SwSyncCreateFenceData)
    if isinstance(data, int):
        put_unused_fd(task, fd)
        return -errno.EFAULT
    pt = sync_pt_create(obj, data.value)
    sync_file = sync_file_create(kernel, pt)
    data.fence = fd
    if copy_to_user(kernel, arg, data):
        fput(sync_file)
        put_unused_fd(task, fd)
        return -errno.EFAULT
    fd_install(task, fd, sync_file)
    return 0


@kernel_function("sw_sync_ioctl_inc", file="drivers/dma-buf/sw_sync.c")
def sw_sync_ioctl_inc(obj: SyncTimeline, arg: Any) -> int:
    """Advance by the ``__u32`` at ``arg``, in steps of at most INT_MAX."""
    value = get_user_int(obj.kernel, arg)
    if value is None:
        return -errno.EFAULT
    value &= 0xFFFFFFFF
    while value > INT_MAX:
        sync_timeline_signal(obj, INT_MAX)
        value -= INT_MAX
    sync_timeline_signal(obj, value)
    return 0


def sw_sync_init(kernel: Kernel) -> None:
    """Create ``<debugfs>/sync/sw_sync`` (``sync_debugfs_init``, CONFIG_SW_SYNC)."""
    fops = FileOperations(
        owner="sw_sync",
        open=sw_sync_debugfs_open,
        release=_sw_sync_release,
        unlocked_ioctl=sw_sync_ioctl,
    )
    kernel.register_chrdev(SW_SYNC_PATH, fops)
