"""Reference exporters, one module each, with the real uapi.

* :mod:`.system_heap` — ``/dev/dma_heap/system`` (scattered pages, eager remap);
* :mod:`.cma_heap` — ``/dev/dma_heap/reserved`` (contiguous, fault-time insert);
* :mod:`.udmabuf` — ``/dev/udmabuf`` over a sealed memfd;
* :mod:`.vgem` — ``/dev/dri/card0``, GEM shmem objects exported and imported with PRIME
  (with :mod:`.drm_gem` and :mod:`.drm_prime`, the DRM core pieces);
* :mod:`.shootdown` — the seed's faked coherency by PTE shoot-down;
* :mod:`.teaching` — exporters with one documented defect each;
* :mod:`.registry` — all of them behind one factory interface.

Which device nodes exist depends on the spec (dma-heaps since 5.6, udmabuf
since 4.20): :func:`load_exporter_drivers` registers those the kernel had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cma_heap import CMA_HEAP, CmaHeap
from .system_heap import SYSTEM_HEAP, SystemHeap
from .udmabuf import UDMABUF, UdmabufDriver
from .vgem import VgemDevice

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["load_exporter_drivers"]


def load_exporter_drivers(kernel: Kernel) -> None:
    spec = kernel.spec
    if not spec.config_dma_shared_buffer:
        return
    if spec.has_dma_heaps:
        kernel.drivers.add(SYSTEM_HEAP, SystemHeap.register(kernel))
        kernel.drivers.add(CMA_HEAP, CmaHeap.register(kernel))
    if spec.has_udmabuf:
        kernel.drivers.add(UDMABUF, UdmabufDriver.register(kernel))
    if spec.export_info_form:
        # vgem on the modern specs: /dev/dri/card0, a GEM exporter and importer

        VgemDevice.register(kernel)  # modprobe vgem: adds kernel.drivers[VGEM]
