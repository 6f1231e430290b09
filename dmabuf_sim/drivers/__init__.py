"""Device drivers the simulated kernel can load (misc devices and friends).

:func:`load_builtin_drivers` registers, per spec, the device nodes a machine
of that era would have: the teaching ``/dev/simmem`` always; the dma-heaps,
udmabuf and vgem where the spec has them (see :mod:`dmabuf_sim.exporters`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["load_builtin_drivers"]


def load_builtin_drivers(kernel: Kernel) -> None:
    from ..exporters import load_exporter_drivers
    from .simmem import SimMem

    SimMem.register(kernel)
    load_exporter_drivers(kernel)
