"""The seed: ``dma_buf_mmap_internal`` and ``dma_buf_mmap`` (drivers/dma-buf/dma-buf.c).

``dma_buf_mmap_internal`` is ``f_op->mmap`` of every dma-buf file: userspace
calls ``mmap(2)`` on the fd, the VFS has already checked offsets and modes
(kernel-spec §5.1), and the core only bounds-checks the vma against the
buffer, in whole pages, before handing it to ``ops->mmap`` (R1, R2):

    vm_pgoff + vma_pages(vma) > dmabuf->size >> PAGE_SHIFT   →  -EINVAL

``dma_buf_mmap`` lets an *importer* forward its own mmap (the seed's second
use case): it checks for offset overflow (``-EOVERFLOW``) and the same bound
(``-EINVAL``), re-points ``vma->vm_file`` at the dma-buf file, sets
``vm_pgoff`` and calls ``ops->mmap`` (R20-R24).  How it swaps ``vm_file``
is the most version-dependent step of all:

* ``fput_then_get`` (RFC, 3.5-3.8): drop the importer's file first, take the
  dma-buf file, no restore on failure — and ``mmap_region``'s error path then
  puts the *original* file again: one reference too few on the importer's
  file, one too many on the dma-buf's (R23; fixed in 3.9);
* ``restore_on_error`` (3.9-5.10): restore the old file if ``ops->mmap`` fails;
* ``vma_set_file`` (5.11+): swap with :func:`~dmabuf_sim.mm.util.vma_set_file`,
  no restore, because ``mmap_region``'s error path now puts whatever file the
  vma holds (R24).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import KernelOops
from ..fs import File, fput, get_file
from ..mm.page_alloc import PAGE_SHIFT, ULONG_MAX
from ..mm.util import vma_set_file
from ..mm.vma import VmAreaStruct, vma_pages
from ..trace import kernel_function
from .core import DmaBuf, is_dma_buf_file, op

if TYPE_CHECKING:
    pass

__all__ = ["dma_buf_mmap", "dma_buf_mmap_internal"]


@kernel_function("dma_buf_mmap_internal", file="drivers/dma-buf/dma-buf.c")
def dma_buf_mmap_internal(file: File, vma: VmAreaStruct) -> int:
    """``f_op->mmap`` of a dma-buf file."""
    kernel = file.kernel
    spec = kernel.spec
    if not is_dma_buf_file(file):
        return -errno.EINVAL
    if spec.mmap_internal_reads_uninitialised_dmabuf:
        # The RFC as posted checks "dmabuf->size" before "dmabuf = file->private_data":
        # the pointer is uninitialised stack garbage.  No errno is the right answer (R61).
        kernel.tainted = True
        kernel.tracer.event("oops", "dma_buf_mmap_internal: read of uninitialised dmabuf [R61]")
        raise KernelOops(
            "dma_buf_mmap_internal",
            "dmabuf->size read through an uninitialised pointer (RFC as posted)",
            rule="R61",
        )
    dmabuf = file.private_data
    assert isinstance(dmabuf, DmaBuf)
    mmap = op(dmabuf.ops, "mmap")
    if spec.mmap_internal_checks_null_op and mmap is None:
        return -errno.EINVAL  # R12: mmap is optional since 5.3
    # check for overflowing the buffer's size (R1, R2): whole pages only
    if vma.vm_pgoff + vma_pages(vma) > dmabuf.size >> PAGE_SHIFT:
        return -errno.EINVAL
    if spec.tracepoints:
        kernel.tracer.event("dma_buf_mmap_internal", f"exp_name={dmabuf.exp_name}")
    assert mmap is not None  # mandatory at export where the core does not check it (R13)
    return int(mmap(dmabuf, vma))


@kernel_function("dma_buf_mmap", file="drivers/dma-buf/dma-buf.c")
def dma_buf_mmap(dmabuf: DmaBuf | None, vma: VmAreaStruct | None, pgoff: int) -> int:
    """Set up a userspace mapping of ``dmabuf`` in an importer's ``vma`` at page ``pgoff``."""
    if dmabuf is None or vma is None:
        kernel = dmabuf.kernel if dmabuf is not None else vma.kernel if vma is not None else None
        if kernel is not None:
            kernel.warn("dma_buf_mmap", "!dmabuf || !vma")
        return -errno.EINVAL  # R21
    if isinstance(pgoff, bool) or not isinstance(pgoff, int) or not 0 <= pgoff <= ULONG_MAX:
        raise ValueError(f"pgoff must be an unsigned long (0 .. 2**64-1), not {pgoff!r}")
    spec = dmabuf.kernel.spec
    mmap = op(dmabuf.ops, "mmap")
    if spec.mmap_internal_checks_null_op and mmap is None:
        return -errno.EINVAL  # R12
    assert mmap is not None  # mandatory at export where the core does not check it (R13)
    npages = vma_pages(vma)
    if pgoff + npages > ULONG_MAX:  # "pgoff + npages < pgoff" in unsigned arithmetic
        return -errno.EOVERFLOW  # R20
    if pgoff + npages > dmabuf.size >> PAGE_SHIFT:
        return -errno.EINVAL  # R20
    assert dmabuf.file is not None
    if spec.dma_buf_mmap_swap == "fput_then_get":
        # 3.5: drop the importer's reference first; nothing is restored on failure (R23)
        if vma.vm_file is not None:
            fput(vma.vm_file)
        vma.vm_file = dmabuf.file
        get_file(vma.vm_file)
        vma.vm_pgoff = pgoff
        return int(mmap(dmabuf, vma))
    if spec.dma_buf_mmap_swap == "restore_on_error":
        get_file(dmabuf.file)
        oldfile = vma.vm_file
        vma.vm_file = dmabuf.file
        vma.vm_pgoff = pgoff
        ret = int(mmap(dmabuf, vma))
        if ret:
            vma.vm_file = oldfile
            fput(dmabuf.file)
        elif oldfile is not None:
            fput(oldfile)
        return ret
    vma_set_file(vma, dmabuf.file)  # 5.11+: no restore; mmap_region puts vm_file (R24)
    vma.vm_pgoff = pgoff
    if spec.tracepoints:
        dmabuf.kernel.tracer.event("dma_buf_mmap", f"exp_name={dmabuf.exp_name}")
    if mmap is None:
        raise KernelOops("dma_buf_mmap", "NULL ops->mmap called")
    return int(mmap(dmabuf, vma))
