"""Device drivers the simulated kernel can load (misc devices and friends).

:func:`load_builtin_drivers` registers, per spec, the device nodes a machine
of that era would have: the teaching ``/dev/simmem`` always; the dma-heaps,
udmabuf and vgem where the spec has them (see :mod:`dmabuf_sim.exporters`);
sw_sync's ``<debugfs>/sync/sw_sync`` where the spec has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dma_buf.sw_sync import sw_sync_init
from ..exporters import load_exporter_drivers
from .simmem import SimMem

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["load_builtin_drivers"]


def load_builtin_drivers(kernel: Kernel) -> None:
    SimMem.register(kernel)
    load_exporter_drivers(kernel)
    if kernel.spec.has_sw_sync and kernel.spec.config_dma_shared_buffer:
        sw_sync_init(kernel)  # CONFIG_SW_SYNC: <debugfs>/sync/sw_sync
