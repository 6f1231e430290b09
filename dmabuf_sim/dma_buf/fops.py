"""The rest of ``dma_buf_fops``: llseek, poll, ioctl, show_fdinfo (drivers/dma-buf/dma-buf.c).

Which of these exist depends on the spec (``dma_buf_fops`` grew over the
years, kernel-spec §3); :func:`~dmabuf_sim.dma_buf.core._build_fops` leaves
the missing ones NULL so the VFS answers ``ESPIPE``/``ENOTTY``/default poll
mask exactly as the old kernels did (R42, R47, R50, R62).
"""

from __future__ import annotations

import errno
import os
from typing import Any, TypeVar

from ..device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from ..fs import File, fput, get_file
from ..fs_file import fd_install, fdget, get_unused_fd_flags, put_unused_fd
from ..trace import kernel_function
from ..uaccess import copy_from_user, copy_to_user, strndup_user
from ..uapi import (
    DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
    DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_NAME_LEN,
    DMA_BUF_SET_NAME_A,
    DMA_BUF_SET_NAME_B,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_VALID_FLAGS_MASK,
    DMA_BUF_SYNC_WRITE,
    POLLERR,
    POLLIN,
    POLLOUT,
    DmaBufExportSyncFile,
    DmaBufImportSyncFile,
    DmaBufSync,
)
from .access import dma_buf_begin_cpu_access, dma_buf_end_cpu_access
from .core import DmaBuf, is_dma_buf_file
from .dma_fence import DmaFence, dma_fence_array_create
from .dma_resv import DmaResvUsage, dma_resv_usage_rw
from .sync_file import sync_file_create, sync_file_get_fence

_SyncFileReq = TypeVar("_SyncFileReq", DmaBufExportSyncFile, DmaBufImportSyncFile)

__all__ = [
    "dma_buf_ioctl",
    "dma_buf_llseek",
    "dma_buf_poll",
    "dma_buf_set_name",
    "dma_buf_show_fdinfo",
]


def _dmabuf(file: File) -> DmaBuf:
    dmabuf = file.private_data
    assert isinstance(dmabuf, DmaBuf)
    return dmabuf


@kernel_function("dma_buf_llseek", file="drivers/dma-buf/dma-buf.c")
def dma_buf_llseek(file: File, offset: int, whence: int) -> int:
    """Only ``SEEK_END``/``SEEK_SET`` with offset 0: the size, or 0; f_pos untouched (R41)."""
    if not is_dma_buf_file(file):
        return -errno.EBADF
    dmabuf = _dmabuf(file)
    if whence == os.SEEK_END:
        base = dmabuf.size
    elif whence == os.SEEK_SET:
        base = 0
    else:
        return -errno.EINVAL
    if offset != 0:
        return -errno.EINVAL
    return base


# -- poll ---------------------------------------------------------------------------
@kernel_function("dma_buf_poll", file="drivers/dma-buf/dma-buf.c")
def dma_buf_poll(file: File, events: int) -> int:
    """Ready when the implicit fences of the direction have signalled (R50)."""
    dmabuf = file.private_data
    if not isinstance(dmabuf, DmaBuf) or dmabuf.resv is None:
        return POLLERR
    events &= POLLIN | POLLOUT
    if not events:
        return 0
    if events & POLLOUT:
        if dmabuf.poll_cb_out is not None or _poll_add_cb(file, dmabuf, write=True):
            events &= ~POLLOUT
    if events & POLLIN:
        if dmabuf.poll_cb_in is not None or _poll_add_cb(file, dmabuf, write=False):
            events &= ~POLLIN
    return events


def _poll_add_cb(file: File, dmabuf: DmaBuf, *, write: bool) -> bool:
    """Arm a callback on the first pending fence; True if one was pending."""
    assert dmabuf.resv is not None
    usage = dma_resv_usage_rw(write)
    for fence in dmabuf.resv.iter_unsignaled(usage):
        get_file(file)  # the armed callback holds a file reference (v6.1)

        def done(_f: DmaFence, write: bool = write) -> None:
            if write:
                dmabuf.poll_cb_out = None
            else:
                dmabuf.poll_cb_in = None
            fput(file)

        if fence.add_callback(done):
            if write:
                dmabuf.poll_cb_out = fence
            else:
                dmabuf.poll_cb_in = fence
            return True
        fput(file)
    return False


# -- ioctls ---------------------------------------------------------------------------
@kernel_function("dma_buf_ioctl", file="drivers/dma-buf/dma-buf.c")
def dma_buf_ioctl(file: File, cmd: int, arg: Any) -> int:
    spec = file.kernel.spec
    dmabuf = _dmabuf(file)
    if cmd == DMA_BUF_IOCTL_SYNC and spec.has_sync_ioctl:
        return _ioctl_sync(dmabuf, arg)
    if cmd in (DMA_BUF_SET_NAME_A, DMA_BUF_SET_NAME_B) and spec.has_set_name:
        return dma_buf_set_name(dmabuf, arg)
    if cmd == DMA_BUF_IOCTL_EXPORT_SYNC_FILE and spec.has_sync_file_ioctls:
        return dma_buf_export_sync_file(dmabuf, arg)
    if cmd == DMA_BUF_IOCTL_IMPORT_SYNC_FILE and spec.has_sync_file_ioctls:
        return dma_buf_import_sync_file(dmabuf, arg)
    return -errno.ENOTTY  # R47


def _ioctl_sync(dmabuf: DmaBuf, arg: Any) -> int:
    """``DMA_BUF_IOCTL_SYNC`` (R43-R45): no state is kept between START and END."""
    sync = copy_from_user(dmabuf.kernel, arg, DmaBufSync)
    if isinstance(sync, int):
        return -errno.EFAULT
    if sync.flags & ~DMA_BUF_SYNC_VALID_FLAGS_MASK:
        return -errno.EINVAL
    rw = sync.flags & DMA_BUF_SYNC_RW
    if rw == DMA_BUF_SYNC_READ:
        direction = DMA_FROM_DEVICE
    elif rw == DMA_BUF_SYNC_WRITE:
        direction = DMA_TO_DEVICE
    elif rw == DMA_BUF_SYNC_RW:
        direction = DMA_BIDIRECTIONAL
    else:
        return -errno.EINVAL
    if sync.flags & DMA_BUF_SYNC_END:
        ret = dma_buf_end_cpu_access(dmabuf, direction)
    else:
        ret = dma_buf_begin_cpu_access(dmabuf, direction)
    return int(ret or 0)


@kernel_function("dma_buf_set_name", file="drivers/dma-buf/dma-buf.c")
def dma_buf_set_name(dmabuf: DmaBuf, arg: Any) -> int:
    """``DMA_BUF_SET_NAME``: at most 31 characters plus the NUL (R48)."""
    name = strndup_user(dmabuf.kernel, arg, DMA_BUF_NAME_LEN)
    if isinstance(name, int):
        return name
    if dmabuf.kernel.spec.set_name_ebusy_when_attached and dmabuf.attachments:
        return -errno.EBUSY
    dmabuf.name = name.decode(errors="replace")
    return 0


def _sync_file_request(kernel: Any, arg: Any, cls: type[_SyncFileReq]) -> _SyncFileReq | int:
    """The checks both sync-file ioctls start with: copy in (-EFAULT), then the flags
    must be a non-empty subset of READ|WRITE (-EINVAL) (R51)."""
    req = copy_from_user(kernel, arg, cls)
    if isinstance(req, int):
        return -errno.EFAULT
    if req.flags & ~DMA_BUF_SYNC_RW:
        return -errno.EINVAL
    if not req.flags & DMA_BUF_SYNC_RW:
        return -errno.EINVAL
    return req


@kernel_function("dma_buf_export_sync_file", file="drivers/dma-buf/dma-buf.c")
def dma_buf_export_sync_file(dmabuf: DmaBuf, arg: Any) -> int:
    """A sync_file fd for the fences a new access of that kind would wait for (R51)."""
    kernel = dmabuf.kernel
    req = _sync_file_request(kernel, arg, DmaBufExportSyncFile)
    if isinstance(req, int):
        return req
    task = kernel.current
    assert task is not None and dmabuf.resv is not None
    fd = get_unused_fd_flags(task, os.O_CLOEXEC)
    if fd < 0:
        return fd
    usage = dma_resv_usage_rw(bool(req.flags & DMA_BUF_SYNC_WRITE))
    # dma_resv_get_singleton: none → the signalled stub, one → that fence, several → an
    # array that signals only when all of them have
    pending = list(dmabuf.resv.iter_unsignaled(usage))
    if len(pending) == 1:
        fence = pending[0]
    elif pending:
        fence = dma_fence_array_create(kernel, pending)
    else:
        fence = DmaFence(kernel, "stub", 0, signaled=True)  # dma_fence_get_stub()
    sync_file = sync_file_create(kernel, fence)
    req.fd = fd
    if copy_to_user(kernel, arg, req):
        fput(sync_file)
        put_unused_fd(task, fd)
        return -errno.EFAULT
    fd_install(task, fd, sync_file)
    return 0


@kernel_function("dma_buf_import_sync_file", file="drivers/dma-buf/dma-buf.c")
def dma_buf_import_sync_file(dmabuf: DmaBuf, arg: Any) -> int:
    """Add a sync_file's fence to the buffer as an implicit WRITE or READ fence (R51)."""
    kernel = dmabuf.kernel
    req = _sync_file_request(kernel, arg, DmaBufImportSyncFile)
    if isinstance(req, int):
        return req
    task = kernel.current
    assert task is not None and dmabuf.resv is not None
    fence = sync_file_get_fence(kernel, fdget(task, req.fd))
    if fence is None:
        return -errno.EINVAL
    usage = DmaResvUsage.WRITE if req.flags & DMA_BUF_SYNC_WRITE else DmaResvUsage.READ
    for f in fence.components or [fence]:  # dma_fence_unwrap_for_each: add every leaf
        dmabuf.resv.add_fence(f, usage)
    return 0


@kernel_function("dma_buf_show_fdinfo", file="drivers/dma-buf/dma-buf.c")
def dma_buf_show_fdinfo(file: File) -> str:
    """``size``, ``count`` (file refcount minus procfs's own), ``exp_name``, ``name`` (R49)."""
    dmabuf = _dmabuf(file)
    text = f"size:\t{dmabuf.size}\ncount:\t{file.f_count - 1}\nexp_name:\t{dmabuf.exp_name}\n"
    if dmabuf.name is not None:  # "if (dmabuf->name)": a name set to "" still prints
        text += f"name:\t{dmabuf.name}\n"
    return text
