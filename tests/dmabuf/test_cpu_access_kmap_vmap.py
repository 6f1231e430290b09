"""Kernel CPU access: begin/end_cpu_access, kmap (3.x) and vmap (R52, R54).

kernel-spec §2.7, §4.8, §4.9.
"""

from __future__ import annotations

import errno
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim.device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from dmabuf_sim.dma_buf import (
    DmaFence,
    DmaResvUsage,
    IosysMap,
    dma_buf_begin_cpu_access,
    dma_buf_end_cpu_access,
    dma_buf_kmap,
    dma_buf_kmap_atomic,
    dma_buf_kunmap,
    dma_buf_put,
    dma_buf_vmap,
    dma_buf_vmap_unlocked,
    dma_buf_vunmap,
    dma_buf_vunmap_unlocked,
)
from dmabuf_sim.errors import KernelOops

ALL = ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"]
OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096


def env_of(kit: SimpleNamespace, spec: Any, **kw: Any) -> SimpleNamespace:
    return kit.new_env(spec, 4 * PAGE, fd=False, **kw)


# -- R52: begin/end_cpu_access -------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
def test_r52_begin_on_null_is_einval(kit: SimpleNamespace, spec: str) -> None:
    """R52: dma_buf_begin_cpu_access(NULL, ...) → -EINVAL in both signatures."""
    assert dma_buf_begin_cpu_access(None, DMA_TO_DEVICE) == -errno.EINVAL
    assert dma_buf_begin_cpu_access(None, 0, PAGE, DMA_TO_DEVICE) == -errno.EINVAL


@pytest.mark.parametrize("spec", ALL)
def test_r52_end_on_null_oopses(kit: SimpleNamespace, spec: str) -> None:
    """§2.7/§4.8: end_cpu_access WARNs on NULL but carries on into a NULL dereference."""
    with pytest.raises(KernelOops):
        dma_buf_end_cpu_access(None, DMA_TO_DEVICE)


@pytest.mark.parametrize("spec", OLD)
@pytest.mark.parametrize(
    ("start", "length"), [(0, 4 * PAGE), (3 * PAGE, PAGE), (10**9, 2**40), (2**64 - 1, 0)]
)
def test_r52_3x_range_args_pass_through_unchecked(
    kit: SimpleNamespace, spec: str, start: int, length: int
) -> None:
    """R52: in 3.x begin/end take (start, len, dir) and the core does not validate them;
    begin returns the exporter's value, end is void."""
    env = env_of(kit, spec, begin_ret=-errno.EAGAIN, end_ret=-errno.EIO)
    db = env.dmabuf
    assert dma_buf_begin_cpu_access(db, start, length, DMA_FROM_DEVICE) == -errno.EAGAIN
    assert dma_buf_end_cpu_access(db, start, length, DMA_TO_DEVICE) is None
    assert env.exp.calls == [
        ("begin_cpu_access", start, length, DMA_FROM_DEVICE),
        ("end_cpu_access", start, length, DMA_TO_DEVICE),
    ]


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("direction", [DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL])
def test_r52_modern_signature_and_int_end(kit: SimpleNamespace, spec: str, direction: Any) -> None:
    """§4.8: (dmabuf, dir); end_cpu_access returns the exporter's int."""
    env = env_of(kit, spec, end_ret=-errno.EIO)
    assert dma_buf_begin_cpu_access(env.dmabuf, direction) == 0
    assert dma_buf_end_cpu_access(env.dmabuf, direction) == -errno.EIO
    assert env.exp.calls == [("begin_cpu_access", direction), ("end_cpu_access", direction)]


@pytest.mark.parametrize("spec", ALL)
def test_r52_hooks_are_optional(kit: SimpleNamespace, spec: str) -> None:
    env = env_of(kit, spec, missing=("begin_cpu_access", "end_cpu_access"))
    args: tuple[Any, ...] = (0, PAGE, DMA_TO_DEVICE) if spec in OLD else (DMA_TO_DEVICE,)
    assert dma_buf_begin_cpu_access(env.dmabuf, *args) == 0
    assert dma_buf_end_cpu_access(env.dmabuf, *args) == (None if spec in OLD else 0)


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize(
    ("direction", "waits"),
    [(DMA_FROM_DEVICE, False), (DMA_TO_DEVICE, True), (DMA_BIDIRECTIONAL, True)],
)
def test_r46_kernel_begin_waits_like_the_ioctl(
    kit: SimpleNamespace, spec: str, direction: Any, waits: bool
) -> None:
    """R46 from the kernel side: writers (TO_DEVICE/BIDIRECTIONAL) wait for READ fences,
    readers (FROM_DEVICE) do not; end never waits."""
    env = env_of(kit, spec)
    f = DmaFence(env.kernel, "gpu", 1, completes_at=42)
    env.dmabuf.resv.add_fence(f, DmaResvUsage.READ)
    assert dma_buf_end_cpu_access(env.dmabuf, direction) == 0
    assert not f.signaled
    assert dma_buf_begin_cpu_access(env.dmabuf, direction) == 0
    assert f.signaled is waits
    assert env.kernel.clock == (42 if waits else 0)


# -- kmap (3.x) ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", OLD)
def test_kmap_calls_the_mandatory_ops(kit: SimpleNamespace, spec: str) -> None:
    """§2.7: kmap/kmap_atomic return the exporter's pointer; kunmap calls the optional op."""
    env = env_of(kit, spec)
    db, exp = env.dmabuf, env.exp
    assert dma_buf_kmap(db, 2) == ("kmap", exp.pfn(2))
    assert dma_buf_kmap_atomic(db, 3) == ("kmap_atomic", exp.pfn(3))
    dma_buf_kunmap(db, 2, ("kmap", exp.pfn(2)))
    assert exp.calls == [("kmap", 2), ("kmap_atomic", 3), ("kunmap", 2, ("kmap", exp.pfn(2)))]
    exp.kunmap = None
    dma_buf_kunmap(db, 1, None)  # optional: nothing happens
    assert len(exp.calls) == 3


@pytest.mark.parametrize("spec", OLD)
@pytest.mark.parametrize("func", [dma_buf_kmap, dma_buf_kmap_atomic])
def test_kmap_of_null_oopses(kit: SimpleNamespace, spec: str, func: Any) -> None:
    """§2.7: dma_buf_kmap(NULL, n) is WARN_ON(!dmabuf) followed by dmabuf->ops->kmap — a
    NULL dereference, not a NULL return."""
    with pytest.raises(KernelOops):
        func(None, 0)


@pytest.mark.parametrize("spec", OLD)
def test_kunmap_of_null_oopses(kit: SimpleNamespace, spec: str) -> None:
    """§2.7: dma_buf_kunmap(NULL, ...) WARNs, then reads dmabuf->ops: an oops."""
    with pytest.raises(KernelOops):
        dma_buf_kunmap(None, 0, None)


@pytest.mark.parametrize("spec", MODERN)
def test_kmap_is_gone_on_modern_kernels(kit: SimpleNamespace, spec: str) -> None:
    env = env_of(kit, spec)
    with pytest.raises(NotImplementedError):
        dma_buf_kmap(env.dmabuf, 0)


# -- R54: vmap -----------------------------------------------------------------------------


def vmap(db: Any, m: IosysMap) -> int:
    return int(dma_buf_vmap_unlocked(db, m))


def vunmap(db: Any, m: IosysMap) -> None:
    dma_buf_vunmap_unlocked(db, m)


@pytest.mark.parametrize("spec", MODERN)
def test_r54_vmap_is_counted_in_the_core(kit: SimpleNamespace, spec: str) -> None:
    """R54: repeated vmaps return the same address and call the exporter once; only the last
    vunmap calls the exporter's vunmap."""
    env = env_of(kit, spec)
    db, exp = env.dmabuf, env.exp
    maps = [IosysMap() for _ in range(3)]
    for m in maps:
        assert vmap(db, m) == 0
        assert m.vaddr == kit.KVADDR
    assert exp.vmap_calls == 1 and db.vmapping_counter == 3
    vunmap(db, maps[0])
    vunmap(db, maps[1])
    assert exp.vunmap_calls == 0 and db.vmapping_counter == 1
    vunmap(db, maps[2])
    assert exp.vunmap_calls == 1 and db.vmapping_counter == 0
    assert db.vmap_ptr.is_null()
    assert vmap(db, IosysMap()) == 0 and exp.vmap_calls == 2


@pytest.mark.parametrize("spec", MODERN)
def test_r54_vunmap_compares_the_address_by_value(kit: SimpleNamespace, spec: str) -> None:
    """§4.9: BUG_ON(!iosys_map_is_equal(&dmabuf->vmap_ptr, map)) compares the pointer value:
    a caller's own copy of the map (same address) is fine, another address is a BUG."""
    env = env_of(kit, spec)
    db = env.dmabuf
    assert vmap(db, IosysMap()) == 0
    with pytest.raises(KernelOops):
        vunmap(db, IosysMap(vaddr=kit.KVADDR + PAGE))
    copy = IosysMap(vaddr=int(str(kit.KVADDR)))  # equal value, a different int object
    vunmap(db, copy)
    assert db.vmapping_counter == 0 and env.exp.vunmap_calls == 1


@pytest.mark.parametrize("spec", MODERN)
def test_r54_vmap_without_op_is_einval(kit: SimpleNamespace, spec: str) -> None:
    """R54: no ops->vmap → -EINVAL, and the caller's map is cleared."""
    env = env_of(kit, spec, missing=("vmap", "vunmap"))
    m = IosysMap(vaddr=0xDEAD)
    assert vmap(env.dmabuf, m) == -errno.EINVAL
    assert m.is_null()


@pytest.mark.parametrize("spec", MODERN)
def test_r54_vmap_of_null_is_einval_and_clears_the_map(kit: SimpleNamespace, spec: str) -> None:
    """§4.9: iosys_map_clear(map) comes before WARN_ON(!dmabuf) → -EINVAL."""
    m = IosysMap(vaddr=0xDEAD)
    assert dma_buf_vmap(None, m) == -errno.EINVAL
    assert m.is_null()


@pytest.mark.parametrize("spec", MODERN)
def test_r54_exporter_vmap_error_is_returned_with_a_warn(kit: SimpleNamespace, spec: str) -> None:
    env = env_of(kit, spec, vmap_ret=-errno.ENOMEM)
    m = IosysMap()
    assert vmap(env.dmabuf, m) == -errno.ENOMEM
    assert m.is_null() and env.dmabuf.vmapping_counter == 0
    assert len(env.kernel.warnings) == 1 and "dma_buf_vmap" in env.kernel.warnings[0]


@pytest.mark.parametrize("spec", ["v6.12", "latest"])
def test_r54_locked_vmap_needs_the_resv_lock(kit: SimpleNamespace, spec: str) -> None:
    """R54 (6.2+): dma_buf_vmap/vunmap assert the resv lock: without it → an oops; with it
    or through the _unlocked wrappers it works and the lock is free afterwards."""
    env = env_of(kit, spec)
    db, resv = env.dmabuf, env.dmabuf.resv
    m = IosysMap()
    with pytest.raises(KernelOops):
        dma_buf_vmap(db, m)
    assert env.exp.vmap_calls == 0
    assert dma_buf_vmap_unlocked(db, m) == 0 and not resv.is_locked()
    resv.lock()
    try:
        m2 = IosysMap()
        assert dma_buf_vmap(db, m2) == 0
        dma_buf_vunmap(db, m2)
    finally:
        resv.unlock()
    with pytest.raises(KernelOops):
        dma_buf_vunmap(db, m)
    dma_buf_vunmap_unlocked(db, m)
    assert env.exp.vunmap_calls == 1


def test_r54_v61_vmap_takes_no_resv_lock(kit: SimpleNamespace) -> None:
    """R54 (v6.1): the locked dma_buf_vmap works without the resv lock (dmabuf->lock era)."""
    env = env_of(kit, "v6.1")
    m = IosysMap()
    assert dma_buf_vmap(env.dmabuf, m) == 0
    dma_buf_vunmap(env.dmabuf, m)
    assert env.exp.vunmap_calls == 1


@pytest.mark.parametrize("spec", MODERN)
def test_r54_vunmap_unbalanced_is_a_bug(kit: SimpleNamespace, spec: str) -> None:
    env = env_of(kit, spec)
    with pytest.raises(KernelOops):
        vunmap(env.dmabuf, IosysMap(vaddr=kit.KVADDR))


@pytest.mark.parametrize("spec", MODERN)
def test_r54_release_with_a_vmap_outstanding_is_a_bug(kit: SimpleNamespace, spec: str) -> None:
    """§4.1: BUG_ON(dmabuf->vmapping_counter) at release."""
    env = env_of(kit, spec)
    assert vmap(env.dmabuf, IosysMap()) == 0
    with pytest.raises(KernelOops):
        dma_buf_put(env.dmabuf)
    assert env.exp.release_calls == 0


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.5"])
def test_r54_35_vmap_is_a_plain_pass_through(kit: SimpleNamespace, spec: str) -> None:
    """R54 (3.5 era): void *dma_buf_vmap(dmabuf) → the op's pointer, every call (no counting
    in the core); no op or NULL dmabuf → NULL; vunmap calls the op each time."""
    env = env_of(kit, spec)
    db, exp = env.dmabuf, env.exp
    assert dma_buf_vmap(db) == kit.KVADDR
    assert dma_buf_vmap(db) == kit.KVADDR
    assert exp.vmap_calls == 2 and db.vmapping_counter == 0
    dma_buf_vunmap(db, kit.KVADDR)
    dma_buf_vunmap(db, kit.KVADDR)
    assert exp.vunmap_calls == 2
    assert dma_buf_vmap(None) is None
    exp.vmap = None
    assert dma_buf_vmap(db) is None


def test_r54_v34_has_no_vmap(kit: SimpleNamespace) -> None:
    env = env_of(kit, "v3.4")
    with pytest.raises(NotImplementedError):
        dma_buf_vmap(env.dmabuf)
