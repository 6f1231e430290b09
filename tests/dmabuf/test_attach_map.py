"""dma_buf_attach/detach and map/unmap_attachment.  kernel-spec §2.8, §4.10."""

from __future__ import annotations

import errno
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim.device import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from dmabuf_sim.dma_buf import (
    DmaFence,
    DmaResvUsage,
    dma_buf_attach,
    dma_buf_detach,
    dma_buf_map_attachment,
    dma_buf_map_attachment_unlocked,
    dma_buf_put,
    dma_buf_unmap_attachment,
    dma_buf_unmap_attachment_unlocked,
)
from dmabuf_sim.errors import KernelError, KernelOops

ALL = ["rfc-2012", "v3.4", "v3.5", "v6.1", "v6.12", "latest"]
OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
LOCKED_MAP = ["v6.12", "latest"]
CACHING = [
    "v6.1",
    "v6.12",
]  # cache_sgt_mapping: ~4.19 until 6.15  # map/unmap_attachment assert the resv lock (6.2+)
PAGE = 4096


def map_(att: Any, direction: Any) -> Any:
    """Map the way a well-behaved importer of that kernel would."""
    if att.dmabuf.kernel.spec.vmap_requires_resv_held:
        return dma_buf_map_attachment_unlocked(att, direction)
    return dma_buf_map_attachment(att, direction)


def unmap(att: Any, sgt: Any, direction: Any) -> None:
    if att.dmabuf.kernel.spec.vmap_requires_resv_held:
        dma_buf_unmap_attachment_unlocked(att, sgt, direction)
    else:
        dma_buf_unmap_attachment(att, sgt, direction)


def env_dev(kit: SimpleNamespace, spec: Any, **kw: Any) -> tuple[SimpleNamespace, Any]:
    env = kit.new_env(spec, 4 * PAGE, fd=False, **kw)
    return env, kit.Device(env.kernel, "gpu")


# -- attach / detach ------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
def test_attach_calls_the_exporter_with_the_spec_signature(kit: SimpleNamespace, spec: str) -> None:
    """§2.8/§4.10: ops->attach(dmabuf, dev, attach) in 3.x, (dmabuf, attach) since."""
    env, dev = env_dev(kit, spec)
    att = dma_buf_attach(env.dmabuf, dev)
    assert att.dmabuf is env.dmabuf and att.dev is dev
    assert env.dmabuf.attachments == [att]
    (call,) = env.exp.ops_called("attach")
    if spec in OLD:
        assert call == (env.dmabuf, dev, att)
    else:
        assert call == (env.dmabuf, att)
    dma_buf_detach(env.dmabuf, att)
    assert env.dmabuf.attachments == []
    assert env.exp.ops_called("detach") == [(env.dmabuf, att)]
    assert env.kernel.warnings == []


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("err", [errno.EBUSY, errno.ENOMEM, errno.EINVAL])
def test_attach_op_error_propagates(kit: SimpleNamespace, spec: str, err: int) -> None:
    """§2.8: a nonzero ops->attach return becomes ERR_PTR(ret); nothing is attached."""
    env, dev = env_dev(kit, spec, attach_ret=-err)
    with pytest.raises(KernelError) as ei:
        dma_buf_attach(env.dmabuf, dev)
    assert ei.value.errno == err
    assert env.dmabuf.attachments == []
    assert env.exp.ops_called("detach") == []


@pytest.mark.parametrize("spec", ALL)
def test_attach_without_attach_op(kit: SimpleNamespace, spec: str) -> None:
    """§2.8: attach/detach ops are optional."""
    env, dev = env_dev(kit, spec, missing=("attach", "detach"))
    att = dma_buf_attach(env.dmabuf, dev)
    assert env.dmabuf.attachments == [att]
    dma_buf_detach(env.dmabuf, att)
    assert env.dmabuf.attachments == []


@pytest.mark.parametrize("spec", ALL)
def test_attach_null_is_einval_with_warn(kit: SimpleNamespace, spec: str) -> None:
    """§2.8: WARN_ON(!dmabuf || !dev) → ERR_PTR(-EINVAL)."""
    env, dev = env_dev(kit, spec)
    for args in ((None, dev), (env.dmabuf, None)):
        with pytest.raises(KernelError) as ei:
            dma_buf_attach(*args)
        assert ei.value.errno == errno.EINVAL
    assert env.kernel.warnings == ["dma_buf_attach: WARN_ON(!dmabuf || !dev)"] * 2
    assert env.dmabuf.attachments == [] and env.exp.calls == []


@pytest.mark.parametrize("spec", ALL)
def test_detach_null_warns_and_does_nothing(kit: SimpleNamespace, spec: str) -> None:
    """§2.8: WARN_ON(!dmabuf || !attach) → return without calling the exporter."""
    env, dev = env_dev(kit, spec)
    att = dma_buf_attach(env.dmabuf, dev)
    dma_buf_detach(env.dmabuf, None)
    dma_buf_detach(None, att)
    assert len(env.kernel.warnings) == 2
    assert env.dmabuf.attachments == [att]
    assert env.exp.ops_called("detach") == []


@pytest.mark.parametrize("spec", LOCKED_MAP)
def test_detach_foreign_attachment_warns_since_6_2(kit: SimpleNamespace, spec: str) -> None:
    """6.2+ (Osipenko's locking series): WARN_ON(dmabuf != attach->dmabuf) → return.
    (Older kernels have no such check; the simulator warns there too — see the report.)"""
    env, dev = env_dev(kit, spec)
    other = kit.export(env.kernel, kit.TestExporter(env.kernel, PAGE), PAGE)
    att = dma_buf_attach(env.dmabuf, dev)
    dma_buf_detach(other, att)
    assert len(env.kernel.warnings) == 1
    assert env.dmabuf.attachments == [att]
    assert env.exp.ops_called("detach") == []


@pytest.mark.parametrize("spec", ALL)
def test_release_with_attachments_warns_since_5_15(kit: SimpleNamespace, spec: str) -> None:
    """§4.1: releasing a buffer that still has attachments WARNs after ops->release (added in
    5.15 to dma_buf_release); the 3.x f_op->release just calls ops->release and frees."""
    env, dev = env_dev(kit, spec)
    dma_buf_attach(env.dmabuf, dev)
    dma_buf_put(env.dmabuf)
    assert env.exp.release_calls == 1
    if spec in OLD:
        assert env.kernel.warnings == []
    else:
        assert env.kernel.warnings == [
            "dma_buf_release: WARN_ON(!list_empty(&dmabuf->attachments))"
        ]


# -- map / unmap ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("direction", [DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL])
def test_map_returns_the_exporters_table(kit: SimpleNamespace, spec: str, direction: Any) -> None:
    """§2.8: map_attachment returns what ops->map_dma_buf returns; unmap passes the table and
    direction back."""
    env, dev = env_dev(kit, spec)
    att = dma_buf_attach(env.dmabuf, dev)
    sgt = map_(att, direction)
    assert sgt.entries == [(env.exp.base_pfn, 4)]
    assert env.exp.ops_called("map_dma_buf") == [(att, direction)]
    unmap(att, sgt, direction)
    assert env.exp.ops_called("unmap_dma_buf") == [(att, sgt, direction)]


@pytest.mark.parametrize("spec", ALL)
def test_map_of_null_attachment_is_einval(kit: SimpleNamespace, spec: str) -> None:
    with pytest.raises(KernelError) as ei:
        dma_buf_map_attachment(None, DMA_TO_DEVICE)
    assert ei.value.errno == errno.EINVAL


@pytest.mark.parametrize("spec", ALL)
def test_unmap_of_null_table_warns(kit: SimpleNamespace, spec: str) -> None:
    """§2.8: WARN_ON(!attach || !sg_table) → return."""
    env, dev = env_dev(kit, spec)
    att = dma_buf_attach(env.dmabuf, dev)
    unmap(att, None, DMA_TO_DEVICE)
    assert env.exp.ops_called("unmap_dma_buf") == []
    assert len(env.kernel.warnings) == 1 and "unmap_attachment" in env.kernel.warnings[0]


@pytest.mark.parametrize("spec", MODERN)
def test_map_null_from_exporter_becomes_enomem(kit: SimpleNamespace, spec: str) -> None:
    """§4.10: NULL from ops->map_dma_buf becomes ERR_PTR(-ENOMEM)."""
    env, dev = env_dev(kit, spec)
    env.exp.map_dma_buf = lambda attach, direction: None
    att = dma_buf_attach(env.dmabuf, dev)
    with pytest.raises(KernelError) as ei:
        map_(att, DMA_TO_DEVICE)
    assert ei.value.errno == errno.ENOMEM


@pytest.mark.parametrize("spec", MODERN)
def test_map_error_from_exporter_propagates(kit: SimpleNamespace, spec: str) -> None:
    env, dev = env_dev(kit, spec)

    def fail(attach: Any, direction: Any) -> Any:
        raise KernelError(errno.ENOSPC, "map_dma_buf")

    env.exp.map_dma_buf = fail
    att = dma_buf_attach(env.dmabuf, dev)
    with pytest.raises(KernelError) as ei:
        map_(att, DMA_TO_DEVICE)
    assert ei.value.errno == errno.ENOSPC
    assert att.sgt is None


@pytest.mark.parametrize("spec", LOCKED_MAP)
def test_locked_map_without_resv_lock_oopses(kit: SimpleNamespace, spec: str) -> None:
    """6.2+: dma_buf_map_attachment asserts the resv lock; importers use the _unlocked
    wrappers, which leave the lock free again."""
    env, dev = env_dev(kit, spec)
    att = dma_buf_attach(env.dmabuf, dev)
    with pytest.raises(KernelOops):
        dma_buf_map_attachment(att, DMA_TO_DEVICE)
    assert env.exp.ops_called("map_dma_buf") == []
    sgt = dma_buf_map_attachment_unlocked(att, DMA_TO_DEVICE)
    assert not env.dmabuf.resv.is_locked()
    env.dmabuf.resv.lock()
    try:
        dma_buf_unmap_attachment(att, sgt, DMA_TO_DEVICE)
    finally:
        env.dmabuf.resv.unlock()
    assert len(env.exp.ops_called("unmap_dma_buf")) == 1


@pytest.mark.parametrize("spec", MODERN)
def test_map_waits_for_kernel_fences_only(kit: SimpleNamespace, spec: str) -> None:
    """§4.10: a non-dynamic importer's map waits for DMA_RESV_USAGE_KERNEL fences (memory
    moves), not for WRITE/READ fences."""
    env, dev = env_dev(kit, spec)
    k, resv = env.kernel, env.dmabuf.resv
    kf = DmaFence(k, "move", 1, completes_at=50)
    wf = DmaFence(k, "gpu", 1, completes_at=90)
    resv.add_fence(kf, DmaResvUsage.KERNEL)
    resv.add_fence(wf, DmaResvUsage.WRITE)
    att = dma_buf_attach(env.dmabuf, dev)
    map_(att, DMA_TO_DEVICE)
    assert kf.signaled and not wf.signaled and k.clock == 50


# -- cache_sgt_mapping ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", CACHING)
def test_cached_mapping_is_reused_and_unmapped_at_detach(kit: SimpleNamespace, spec: str) -> None:
    """§4.10: with cache_sgt_mapping the first map is cached per attachment; later maps of
    the same direction return it without calling the exporter; unmap is a no-op for it;
    detach unmaps it with the cached direction."""
    env, dev = env_dev(kit, spec, cache_sgt=True)
    att = dma_buf_attach(env.dmabuf, dev)
    s1 = map_(att, DMA_FROM_DEVICE)
    s2 = map_(att, DMA_FROM_DEVICE)
    assert s1 is s2
    assert len(env.exp.ops_called("map_dma_buf")) == 1
    unmap(att, s1, DMA_FROM_DEVICE)
    assert env.exp.ops_called("unmap_dma_buf") == []
    dma_buf_detach(env.dmabuf, att)
    assert env.exp.ops_called("unmap_dma_buf") == [(att, s1, DMA_FROM_DEVICE)]


@pytest.mark.parametrize("spec", CACHING)
@pytest.mark.parametrize(
    ("first", "second", "ok"),
    [
        (DMA_FROM_DEVICE, DMA_TO_DEVICE, False),
        (DMA_TO_DEVICE, DMA_BIDIRECTIONAL, False),
        (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, True),
        (DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, True),
    ],
)
def test_cached_mapping_direction_mismatch_is_ebusy(
    kit: SimpleNamespace, spec: str, first: Any, second: Any, ok: bool
) -> None:
    """§4.10: a cached table is returned if the direction matches or the cached one is
    BIDIRECTIONAL; otherwise ERR_PTR(-EBUSY)."""
    env, dev = env_dev(kit, spec, cache_sgt=True)
    att = dma_buf_attach(env.dmabuf, dev)
    s1 = map_(att, first)
    if ok:
        assert map_(att, second) is s1
    else:
        with pytest.raises(KernelError) as ei:
            map_(att, second)
        assert ei.value.errno == errno.EBUSY
    assert len(env.exp.ops_called("map_dma_buf")) == 1


@pytest.mark.parametrize("spec", ALL)
def test_uncached_mappings_call_the_exporter_every_time(kit: SimpleNamespace, spec: str) -> None:
    env, dev = env_dev(kit, spec)
    att = dma_buf_attach(env.dmabuf, dev)
    s1 = map_(att, DMA_TO_DEVICE)
    s2 = map_(att, DMA_FROM_DEVICE)
    assert s1 is not s2
    assert len(env.exp.ops_called("map_dma_buf")) == 2
    dma_buf_detach(env.dmabuf, att)
    assert env.exp.ops_called("unmap_dma_buf") == []


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.4", "v3.5", "latest"])
def test_no_sgt_caching_where_the_field_does_not_exist(kit: SimpleNamespace, spec: str) -> None:
    """cache_sgt_mapping exists from ~4.19 until b72f66f22c0e "dma-buf: drop caching of
    sg_tables" (6.15): on the 3.x specs and on latest an exporter setting it gets no
    caching — every map calls ops->map_dma_buf, mismatched directions are fine, unmap always
    reaches the exporter."""
    env, dev = env_dev(kit, spec, cache_sgt=True)
    att = dma_buf_attach(env.dmabuf, dev)
    s1 = map_(att, DMA_FROM_DEVICE)
    s2 = map_(att, DMA_TO_DEVICE)
    assert s1 is not s2 and att.sgt is None
    assert len(env.exp.ops_called("map_dma_buf")) == 2
    unmap(att, s1, DMA_FROM_DEVICE)
    assert env.exp.ops_called("unmap_dma_buf") == [(att, s1, DMA_FROM_DEVICE)]
