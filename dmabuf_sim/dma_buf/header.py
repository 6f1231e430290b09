"""``<linux/dma-buf.h>`` as one kernel was built: the real API or the ``!CONFIG`` stubs.

Which implementation a driver calls is a compile-time choice in C; here it is
a per-kernel namespace, :func:`dma_buf_h`.  With ``CONFIG_DMA_SHARED_BUFFER=n``
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
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import KernelError
from . import access, core, mmap

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["dma_buf_h"]

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


def _real(kernel: Kernel) -> dict[str, Any]:
    return {
        "dma_buf_export": lambda *a: core.dma_buf_export(kernel, *a),
        "dma_buf_get": lambda fd: core.dma_buf_get(kernel, fd),
        "dma_buf_fd": core.dma_buf_fd,
        "dma_buf_put": core.dma_buf_put,
        "get_dma_buf": core.get_dma_buf,
        "dma_buf_mmap": mmap.dma_buf_mmap,
        "dma_buf_attach": access.dma_buf_attach,
        "dma_buf_detach": access.dma_buf_detach,
        "dma_buf_map_attachment": access.dma_buf_map_attachment,
        "dma_buf_unmap_attachment": access.dma_buf_unmap_attachment,
        "dma_buf_begin_cpu_access": access.dma_buf_begin_cpu_access,
        "dma_buf_end_cpu_access": access.dma_buf_end_cpu_access,
        "dma_buf_kmap": access.dma_buf_kmap,
        "dma_buf_kmap_atomic": access.dma_buf_kmap_atomic,
        "dma_buf_kunmap": access.dma_buf_kunmap,
        "dma_buf_vmap": access.dma_buf_vmap,
        "dma_buf_vunmap": access.dma_buf_vunmap,
    }


def _stubs() -> dict[str, Any]:
    table: dict[str, Any] = {"get_dma_buf": core.get_dma_buf}
    for name in _ERR_PTR:

        def err_ptr(*_a: Any, _name: str = name) -> NoReturn:
            raise KernelError(errno.ENODEV, _name)

        table[name] = err_ptr
    for name in _ENODEV:
        table[name] = lambda *_a: -errno.ENODEV
    for name in _NULL:
        table[name] = lambda *_a: None
    for name in _VOID:
        table[name] = lambda *_a: None
    return table


def dma_buf_h(kernel: Kernel) -> SimpleNamespace:
    """The dma-buf API this kernel was built with (cached per kernel)."""
    ns = kernel.drivers.get("dma-buf.h")
    if ns is None:
        table = _real(kernel) if kernel.spec.config_dma_shared_buffer else _stubs()
        ns = kernel.drivers["dma-buf.h"] = SimpleNamespace(**table)
    assert isinstance(ns, SimpleNamespace)
    return ns
