"""Exporter modules and their reference counts (kernel/module/main.c; kernel-spec §4.1 step 4).

An exporter module stays while anything can call its code: an open device fd, or a
dma-buf exported with ``exp_info.owner`` = the module (its fds, mappings, attachments
and kernel references all keep the buffer).  ``delete_module(name, O_NONBLOCK)`` fails
EWOULDBLOCK until then, and returns 0 after the last release.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim.device import Device
from dmabuf_sim.dma_buf import (
    DmaBuf,
    DmaBufExportInfo,
    DmaBufOps,
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_export,
    dma_buf_fd,
    dma_buf_get,
    dma_buf_put,
)
from dmabuf_sim.errors import KernelError, TaskHung
from dmabuf_sim.fs import FileOperations
from dmabuf_sim.mm.memory import remap_pfn_range
from dmabuf_sim.module import Module, load_module, request_module
from dmabuf_sim.process import Process
from dmabuf_sim.spec import SPECS

PAGE = 4096


class ModuleExporter(DmaBufOps):
    """A minimal exporter living in a module; ``owner=None`` forgets THIS_MODULE."""

    def __init__(self, owner: Module | str | None) -> None:
        self.owner = owner

    def make(self, kernel: Kernel) -> DmaBuf:
        pfn = kernel.mem.alloc_contig(1)
        info = DmaBufExportInfo(ops=self, size=PAGE, priv=pfn, owner=self.owner)
        return dma_buf_export(kernel, info)

    def map_dma_buf(self, attach: Any, direction: Any) -> Any:
        raise NotImplementedError

    def unmap_dma_buf(self, attach: Any, sgt: Any, direction: Any) -> None:
        raise NotImplementedError

    def mmap(self, dmabuf: DmaBuf, vma: Any) -> int:
        return remap_pfn_range(vma, vma.vm_start, dmabuf.priv, PAGE, vma.vm_page_prot)

    def release(self, dmabuf: DmaBuf) -> None:
        dmabuf.kernel.mem.free_contig(dmabuf.priv, 1)


def rmmod(p: Process, name: str) -> int:
    """What kmod's rmmod sees: 0 or the errno."""
    try:
        return p.delete_module(name, os.O_NONBLOCK)
    except OSError as err:
        return err.errno


def exported(spec: str = "v6.12") -> tuple[Kernel, Process, Module, ModuleExporter, int]:
    k = Kernel(spec)
    p = k.spawn("rmmod")
    mod = load_module(k, "my_exporter", exit=lambda m: None, code=(ModuleExporter,))
    exp = ModuleExporter(mod)
    with k.running(p):
        fd = dma_buf_fd(exp.make(k), os.O_CLOEXEC)
    return k, p, mod, exp, fd


def test_export_takes_a_module_reference_until_release() -> None:
    k, p, mod, _exp, fd = exported()
    assert mod.refcnt == 1
    assert rmmod(p, "my_exporter") == errno.EWOULDBLOCK
    assert "my_exporter" in k.modules and mod.state == "live"
    p.close(fd)
    assert mod.refcnt == 0
    assert rmmod(p, "my_exporter") == 0
    assert "my_exporter" not in k.modules and mod.state == "unloaded"
    assert [(u.name, u.leftovers) for u in k.module_unloads] == [("my_exporter", ())]
    assert rmmod(p, "my_exporter") == errno.ENOENT


def test_a_mapping_keeps_the_module_after_close() -> None:
    _k, p, mod, _exp, fd = exported()
    addr = p.mmap(0, PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    p.close(fd)
    assert rmmod(p, "my_exporter") == errno.EWOULDBLOCK and mod.refcnt == 1
    p.munmap(addr, PAGE)
    assert rmmod(p, "my_exporter") == 0


def test_an_importer_reference_and_attachment_keep_the_module() -> None:
    k, p, mod, _exp, fd = exported()
    with k.running(p):
        dmabuf = dma_buf_get(k, fd)
    attach = dma_buf_attach(dmabuf, Device(k, "importer"))
    p.close(fd)
    assert rmmod(p, "my_exporter") == errno.EWOULDBLOCK
    dma_buf_detach(dmabuf, attach)
    assert rmmod(p, "my_exporter") == errno.EWOULDBLOCK  # the importer's dma_buf_get
    dma_buf_put(dmabuf)
    assert mod.refcnt == 0 and rmmod(p, "my_exporter") == 0


def test_forgetting_this_module_lets_buffers_outlive_their_module() -> None:
    """The exporter's bug: no exp_info.owner.  rmmod succeeds while a buffer whose ops are
    the module's code is alive; the unload record names it for the conformance kit."""
    k = Kernel("v6.12")
    p = k.spawn("rmmod")
    mod = load_module(k, "leaky", exit=lambda m: None, code=(ModuleExporter,))
    with k.running(p):
        fd = dma_buf_fd(ModuleExporter(None).make(k), 0)
    assert mod.refcnt == 0
    assert rmmod(p, "leaky") == 0
    (unload,) = k.module_unloads
    assert unload.name == "leaky" and unload.leftovers == ("dmabuf(ModuleExporter, 0x1000)",)
    p.close(fd)


def test_export_fails_enoent_once_the_owner_is_gone() -> None:
    """§4.1 step 4: try_module_get(exp_info->owner) fails → ERR_PTR(-ENOENT); a failed
    export takes no reference."""
    k, p, mod, exp, fd = exported()
    p.close(fd)
    assert rmmod(p, "my_exporter") == 0
    with pytest.raises(KernelError) as err:
        exp.make(k)
    assert err.value.errno == errno.ENOENT and mod.refcnt == 0
    with pytest.raises(KernelError) as err:
        ModuleExporter("my_exporter").make(k)  # the name of a module unloaded before
    assert err.value.errno == errno.ENOENT


def test_owner_by_name_and_bad_owners() -> None:
    k = Kernel("v6.12")
    mod = load_module(k, "named")
    dmabuf = ModuleExporter("named").make(k)
    assert dmabuf.owner is mod and mod.refcnt == 1
    with pytest.raises(ValueError, match="names no module"):
        ModuleExporter("typo").make(k)
    with pytest.raises(TypeError, match=r"exp_info\.owner"):
        ModuleExporter(42).make(k)  # type: ignore[arg-type]
    assert mod.refcnt == 1


def test_an_open_device_fd_holds_its_module_and_the_node_goes_with_it() -> None:
    k = Kernel("v6.12")
    p = k.spawn("app")

    def init(m: Module) -> int:
        k.register_chrdev("/dev/mine", FileOperations(owner="mine", module=m))
        return 0

    mod = load_module(k, "mine", init=init, exit=lambda m: k.unregister_chrdev("/dev/mine"))
    fd = p.open("/dev/mine", os.O_RDWR)
    child = p.fork()  # fork shares the open file: no new module reference
    assert mod.refcnt == 1 and rmmod(p, "mine") == errno.EWOULDBLOCK
    p.close(fd)
    assert rmmod(p, "mine") == errno.EWOULDBLOCK
    child.exit()
    assert rmmod(p, "mine") == 0
    with pytest.raises(OSError) as err:
        p.open("/dev/mine", os.O_RDWR)
    assert err.value.errno == errno.ENOENT


def test_modules_that_cannot_be_removed_or_loaded_twice() -> None:
    k = Kernel("v6.12")
    p = k.spawn("app")
    load_module(k, "no_exit", init=lambda m: 0)
    assert rmmod(p, "no_exit") == errno.EBUSY
    with pytest.raises(KernelError) as err:
        load_module(k, "no_exit")
    assert err.value.errno == errno.EEXIST
    with pytest.raises(KernelError) as err:
        load_module(k, "failing", init=lambda m: -errno.ENODEV)
    assert err.value.errno == errno.ENODEV and "failing" not in k.modules
    assert request_module(k, "nonexistent") == -errno.ENOENT


@pytest.mark.parametrize("name", ["udmabuf", "system_heap", "cma_heap"])
def test_built_in_drivers_have_no_module(name: str) -> None:
    """CONFIG_UDMABUF and the heaps are bool: built in, no struct module, so delete_module
    finds nothing (ENOENT), and their buffers take no module reference."""
    k = Kernel("v6.12")
    p = k.spawn("rmmod")
    assert rmmod(p, name) == errno.ENOENT


def test_delete_module_arguments_are_validated() -> None:
    k = Kernel("v6.12")
    p = k.spawn("rmmod")
    with pytest.raises(TypeError, match="module name"):
        p.delete_module(b"vgem")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C int"):
        p.delete_module("vgem", 1 << 40)
    assert "vgem" in k.modules


def test_before_3_13_rmmod_without_o_nonblock_sleeps_until_the_last_reference() -> None:
    """delete_module_never_waits=False: without O_NONBLOCK the caller sleeps
    (uninterruptibly) until the count drains — here an event closes the fd at 7 ms; with
    O_NONBLOCK it fails EWOULDBLOCK; if nothing will ever drop the reference it hangs."""
    k = Kernel(SPECS["v3.5"])
    p = k.spawn("rmmod")
    holder = k.spawn("app")

    def init(m: Module) -> int:
        k.register_chrdev("/dev/old", FileOperations(owner="old", module=m))
        return 0

    load_module(k, "old", init=init, exit=lambda m: k.unregister_chrdev("/dev/old"))
    fd = holder.open("/dev/old", os.O_RDWR)
    assert rmmod(p, "old") == errno.EWOULDBLOCK
    k.schedule(7_000_000, lambda: holder.close(fd))
    assert p.delete_module("old", 0) == 0 and k.clock == 7_000_000
    load_module(k, "stuck", init=init, exit=lambda m: None)
    holder.open("/dev/old", os.O_RDWR)
    with pytest.raises(TaskHung, match="module\\(stuck\\)"):
        p.delete_module("stuck", 0)
