"""``<linux/dma-buf.h>`` as one kernel was built: the real API or the ``!CONFIG`` stubs.

Which implementation a driver calls is a compile-time choice in C; here it is
a per-kernel table of typed fields, :func:`dma_buf_h`.  With ``CONFIG_DMA_SHARED_BUFFER=n``
(spec ``config_dma_shared_buffer=False``, only on the 3.x specs that had
stubs) every call answers like the header's inline stubs (R53):

* ``dma_buf_export``, ``dma_buf_get``, ``dma_buf_attach``,
  ``dma_buf_map_attachment`` → ``ERR_PTR(-ENODEV)`` (raised as KernelError);
* ``dma_buf_fd``, ``dma_buf_begin_cpu_access``, ``dma_buf_mmap`` → ``-ENODEV``;
* ``dma_buf_kmap``, ``dma_buf_kmap_atomic``, ``dma_buf_vmap`` → ``None`` (NULL);
* ``dma_buf_put``, ``dma_buf_detach``, ``dma_buf_unmap_attachment``,
  ``dma_buf_end_cpu_access``, ``dma_buf_kunmap``, ``dma_buf_vunmap`` → nothing.

``get_dma_buf`` sits outside the ``#ifdef`` and is always ``get_file``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from attrs import fields, frozen

from ..errors import KernelError
from ..kstate import Key
from . import access, core, mmap

if TYPE_CHECKING:
    from ..device import DmaDataDirection, SgTable
    from ..kernel import Kernel
    from ..mm.vma import VmAreaStruct
    from .core import DmaBuf, DmaBufAttachment

__all__ = ["DMA_BUF_H", "DmaBufH", "dma_buf_h"]

_ERR_PTR = ("dma_buf_export", "dma_buf_get", "dma_buf_attach", "dma_buf_map_attachment")
_ENODEV = ("dma_buf_fd", "dma_buf_begin_cpu_access", "dma_buf_mmap")
_NULL = ("dma_buf_kmap", "dma_buf_kmap_atomic", "dma_buf_vmap")
_VOID = (
    "dma_buf_put",
    "dma_buf_detach",
    "dma_buf_unmap_attachment",
    "dma_buf_end_cpu_access",
    "dma_buf_kunmap",
    "dma_buf_vunmap",
)


@frozen
class DmaBufH:
    """The functions ``<linux/dma-buf.h>`` declares, as this kernel was built.

    The types are the real implementation's; the stubs take the same arguments.
    ``dma_buf_export`` takes the spec's argument list (``exp_info``, or the 3.x
    ``priv, ops, size, flags``), as :func:`~dmabuf_sim.dma_buf.core.dma_buf_export`.
    """

    dma_buf_export: Callable[..., DmaBuf]
    dma_buf_get: Callable[[int], DmaBuf]
    dma_buf_fd: Callable[[DmaBuf | None, int], int]
    dma_buf_put: Callable[[DmaBuf | None], None]
    get_dma_buf: Callable[[DmaBuf], None]
    dma_buf_mmap: Callable[[DmaBuf | None, VmAreaStruct | None, int], int]
    dma_buf_attach: Callable[[DmaBuf | None, Any], DmaBufAttachment]
    dma_buf_detach: Callable[[DmaBuf | None, DmaBufAttachment | None], None]
    dma_buf_map_attachment: Callable[[DmaBufAttachment | None, DmaDataDirection], SgTable]
    dma_buf_unmap_attachment: Callable[
        [DmaBufAttachment | None, SgTable | None, DmaDataDirection], None
    ]
    dma_buf_begin_cpu_access: Callable[..., int]
    dma_buf_end_cpu_access: Callable[..., int | None]
    dma_buf_kmap: Callable[[DmaBuf | None, int], Any]
    dma_buf_kmap_atomic: Callable[[DmaBuf | None, int], Any]
    dma_buf_kunmap: Callable[[DmaBuf | None, int, Any], None]
    dma_buf_vmap: Callable[..., Any]
    dma_buf_vunmap: Callable[[DmaBuf | None, Any], None]


DMA_BUF_H: Key[DmaBufH] = Key("dma-buf.h")


def _real(kernel: Kernel) -> DmaBufH:
    def export(*args: Any) -> DmaBuf:
        return core.dma_buf_export(kernel, *args)

    def get(fd: int) -> DmaBuf:
        return core.dma_buf_get(kernel, fd)

    return DmaBufH(
        dma_buf_export=export,
        dma_buf_get=get,
        dma_buf_fd=core.dma_buf_fd,
        dma_buf_put=core.dma_buf_put,
        get_dma_buf=core.get_dma_buf,
        dma_buf_mmap=mmap.dma_buf_mmap,
        dma_buf_attach=access.dma_buf_attach,
        dma_buf_detach=access.dma_buf_detach,
        dma_buf_map_attachment=access.dma_buf_map_attachment,
        dma_buf_unmap_attachment=access.dma_buf_unmap_attachment,
        dma_buf_begin_cpu_access=access.dma_buf_begin_cpu_access,
        dma_buf_end_cpu_access=access.dma_buf_end_cpu_access,
        dma_buf_kmap=access.dma_buf_kmap,
        dma_buf_kmap_atomic=access.dma_buf_kmap_atomic,
        dma_buf_kunmap=access.dma_buf_kunmap,
        dma_buf_vmap=access.dma_buf_vmap,
        dma_buf_vunmap=access.dma_buf_vunmap,
    )


def _stubs() -> DmaBufH:
    table: dict[str, Callable[..., Any]] = {"get_dma_buf": core.get_dma_buf}
    for name in _ERR_PTR:

        def err_ptr(*_a: Any, _name: str = name) -> NoReturn:
            raise KernelError(errno.ENODEV, _name)

        table[name] = err_ptr
    for name in _ENODEV:
        table[name] = lambda *_a: -errno.ENODEV
    for name in _NULL + _VOID:
        table[name] = lambda *_a: None
    assert set(table) == {f.name for f in fields(DmaBufH)}
    return DmaBufH(**table)


def dma_buf_h(kernel: Kernel) -> DmaBufH:
    """The dma-buf API this kernel was built with (made once per kernel)."""
    spec = kernel.spec
    return kernel.subsys.setdefault(
        DMA_BUF_H, lambda: _real(kernel) if spec.config_dma_shared_buffer else _stubs()
    )
