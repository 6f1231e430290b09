"""Per-kernel state behind typed keys: the driver registry and the subsystems' statics."""

from __future__ import annotations

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.dma_buf.core import DMA_BUF_SUBSYS, dma_buf_subsys
from dmabuf_sim.dma_buf.header import DMA_BUF_H, DmaBufH, dma_buf_h
from dmabuf_sim.drivers.simmem import SIMMEM, SimMem
from dmabuf_sim.exporters.system_heap import SYSTEM_HEAP
from dmabuf_sim.exporters.udmabuf import UDMABUF, UdmabufDriver
from dmabuf_sim.exporters.vgem import VGEM, VgemDevice
from dmabuf_sim.kstate import Key, Registry


def test_each_kernel_has_its_own_drivers_under_typed_keys() -> None:
    a, b = Kernel("v6.12"), Kernel("v6.12")
    assert isinstance(a.drivers[SIMMEM], SimMem)
    assert isinstance(a.drivers[UDMABUF], UdmabufDriver)
    assert isinstance(a.drivers[VGEM], VgemDevice)
    assert a.drivers[SYSTEM_HEAP].name == "system"
    assert a.drivers[SIMMEM] is not b.drivers[SIMMEM]
    assert a.drivers["simmem"] is a.drivers[SIMMEM]  # the name works where no type is needed
    assert sorted(a.drivers) == ["cma_heap", "simmem", "system_heap", "udmabuf", "vgem"]


def test_a_spec_without_a_driver_has_no_entry() -> None:
    k = Kernel("v3.5")
    assert UDMABUF not in k.drivers and "udmabuf" not in k.drivers
    assert k.drivers.get(UDMABUF) is None
    with pytest.raises(KeyError):
        k.drivers[UDMABUF]


def test_registering_a_driver_twice_is_refused() -> None:
    k = Kernel("v6.12")
    with pytest.raises(ValueError, match="driver 'simmem' is already registered"):
        k.drivers.add(SIMMEM, SimMem(k))


def test_a_key_is_its_identity_not_its_name() -> None:
    """Two modules choosing one name do not see each other's state."""
    reg = Registry("thing")
    mine: Key[int] = Key("x")
    other: Key[str] = Key("x")
    reg.add(mine, 1)
    assert reg.get(other) is None and other not in reg
    with pytest.raises(KeyError):
        reg[other]
    reg.remove(other)  # not ours: nothing happens
    assert reg[mine] == 1
    reg.remove(mine, 2)  # holds another value: nothing happens
    assert reg[mine] == 1
    reg.remove(mine)
    assert len(reg) == 0


def test_subsystem_statics_are_made_once_per_kernel() -> None:
    k = Kernel("v6.12")
    assert dma_buf_subsys(k) is dma_buf_subsys(k) is k.subsys[DMA_BUF_SUBSYS]
    assert dma_buf_subsys(k) is not dma_buf_subsys(Kernel("v6.12"))
    h = dma_buf_h(k)
    assert isinstance(h, DmaBufH) and k.subsys[DMA_BUF_H] is h


def test_unloading_vgem_takes_it_out_of_the_registry() -> None:
    k = Kernel("v6.12")
    p = k.spawn("rmmod")
    p.delete_module("vgem", 0o4000)  # O_NONBLOCK
    assert VGEM not in k.drivers
