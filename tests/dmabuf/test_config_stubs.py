"""CONFIG_DMA_SHARED_BUFFER=n: the header stubs (R53).  kernel-spec §2.9."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim.device import DMA_TO_DEVICE
from dmabuf_sim.dma_buf import DmaBufExportInfo, dma_buf_export, dma_buf_h, dma_buf_mmap
from dmabuf_sim.errors import KernelError
from dmabuf_sim.spec import SPECS

PAGE = 4096
OFF_BASES = ["rfc-2012", "v3.4", "v3.5"]


def off(kit: SimpleNamespace, base: str) -> Any:
    return kit.make_kernel(kit.custom(base, config_dma_shared_buffer=False))


@pytest.mark.parametrize("base", OFF_BASES)
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("dma_buf_export", ("priv", "ops", PAGE, os.O_RDWR)),
        ("dma_buf_get", (3,)),
        ("dma_buf_attach", ("dmabuf", "dev")),
        ("dma_buf_map_attachment", ("attach", DMA_TO_DEVICE)),
    ],
)
def test_r53_err_ptr_stubs_are_enodev(
    kit: SimpleNamespace, base: str, name: str, args: tuple[Any, ...]
) -> None:
    """R53: export/get/attach/map_attachment → ERR_PTR(-ENODEV)."""
    h = dma_buf_h(off(kit, base))
    with pytest.raises(KernelError) as ei:
        getattr(h, name)(*args)
    assert ei.value.errno == errno.ENODEV


@pytest.mark.parametrize(
    ("base", "name", "args"),
    [
        *[(b, "dma_buf_fd", ("dmabuf", 0)) for b in OFF_BASES],
        *[(b, "dma_buf_begin_cpu_access", ("dmabuf", 0, PAGE, DMA_TO_DEVICE)) for b in OFF_BASES],
        # the mmap stub arrived with the RFC/3.5 (the RFC's own version did not compile)
        *[(b, "dma_buf_mmap", ("dmabuf", "vma", 0)) for b in ("rfc-2012", "v3.5")],
    ],
)
def test_r53_int_stubs_are_minus_enodev(
    kit: SimpleNamespace, base: str, name: str, args: tuple[Any, ...]
) -> None:
    """R53: dma_buf_fd, begin_cpu_access and dma_buf_mmap → -ENODEV."""
    h = dma_buf_h(off(kit, base))
    assert getattr(h, name)(*args) == -errno.ENODEV


@pytest.mark.parametrize(
    ("base", "name", "args"),
    [
        *[(b, "dma_buf_kmap", ("dmabuf", 0)) for b in OFF_BASES],
        *[(b, "dma_buf_kmap_atomic", ("dmabuf", 0)) for b in OFF_BASES],
        ("v3.5", "dma_buf_vmap", ("dmabuf",)),  # vmap arrived in 3.5
    ],
)
def test_r53_pointer_stubs_are_null(
    kit: SimpleNamespace, base: str, name: str, args: tuple[Any, ...]
) -> None:
    """R53: kmap, kmap_atomic and vmap → NULL."""
    assert getattr(dma_buf_h(off(kit, base)), name)(*args) is None


@pytest.mark.parametrize(
    ("base", "name", "args"),
    [
        *[
            (b, name, args)
            for b in OFF_BASES
            for name, args in (
                ("dma_buf_put", ("dmabuf",)),
                ("dma_buf_detach", ("dmabuf", "attach")),
                ("dma_buf_unmap_attachment", ("attach", "sgt", DMA_TO_DEVICE)),
                ("dma_buf_end_cpu_access", ("dmabuf", 0, PAGE, DMA_TO_DEVICE)),
                ("dma_buf_kunmap", ("dmabuf", 0, None)),
            )
        ],
        ("v3.5", "dma_buf_vunmap", ("dmabuf", None)),
    ],
)
def test_r53_void_stubs_do_nothing(
    kit: SimpleNamespace, base: str, name: str, args: tuple[Any, ...]
) -> None:
    """R53: put/detach/unmap/end/kunmap/vunmap are no-ops (even on garbage arguments)."""
    k = off(kit, base)
    assert getattr(dma_buf_h(k), name)(*args) is None
    assert k.warnings == [] and not k.tainted


@pytest.mark.parametrize("base", OFF_BASES)
def test_r53_direct_export_is_enodev_and_creates_nothing(kit: SimpleNamespace, base: str) -> None:
    """R53: calling dma_buf_export itself on such a kernel answers like the stub."""
    k = off(kit, base)
    exp = kit.TestExporter(k, PAGE)
    with pytest.raises(KernelError) as ei:
        dma_buf_export(k, exp, exp, PAGE, os.O_RDWR)
    assert ei.value.errno == errno.ENODEV
    assert k.dma_bufs == [] and k.warnings == []


@pytest.mark.parametrize("base", OFF_BASES)
def test_r53_get_dma_buf_is_outside_the_ifdef(kit: SimpleNamespace, base: str) -> None:
    """§2.9: get_dma_buf is always get_file (it is defined outside the #ifdef)."""
    on = kit.new_env(base, PAGE, fd=False)
    h_off = dma_buf_h(off(kit, base))
    h_off.get_dma_buf(on.dmabuf)
    assert on.file.f_count == 2


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"])
def test_r53_config_on_namespace_is_the_real_api(kit: SimpleNamespace, spec: str) -> None:
    """With the option on, dma_buf_h is the real implementation (a NULL dmabuf gives the
    real -EINVAL of dma_buf_mmap, not -ENODEV)."""
    k = kit.make_kernel(spec)
    h = dma_buf_h(k)
    assert h is dma_buf_h(k)  # built once per kernel
    assert h.dma_buf_mmap is dma_buf_mmap
    assert h.dma_buf_mmap(None, None, 0) == -errno.EINVAL
    exp = kit.TestExporter(k, PAGE)
    if k.spec.export_info_form:
        db = h.dma_buf_export(DmaBufExportInfo(ops=exp, size=PAGE, priv=exp))
    else:
        db = h.dma_buf_export(exp, exp, PAGE, os.O_RDWR)
    assert k.dma_bufs == [db]


@pytest.mark.parametrize("spec", ["v6.1", "v6.12", "latest"])
def test_r53_modern_kernels_have_no_stubs(spec: str) -> None:
    """§2.9: since 5.x the symbol is select-ed; a modern kernel without it cannot be built."""
    with pytest.raises(ValueError, match="config_dma_shared_buffer"):
        SPECS[spec].replace(config_dma_shared_buffer=False)
