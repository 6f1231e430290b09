"""dma_buf_export per spec: mandatory ops, WARNs, the file it creates (R11-R14, R25-R27 at
the file level).  kernel-spec §2.2, §4.1."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace
from typing import Any

import pytest

from dmabuf_sim.dma_buf import DmaBufExportInfo, dma_buf_export
from dmabuf_sim.errors import KernelError
from dmabuf_sim.fs import FMODE_READ, FMODE_WRITE, S_IFREG
from dmabuf_sim.spec import SPECS

ALL = ["rfc-2012", "v3.4", "v3.5", "v5.10", "v6.1", "v6.12", "v6.19", "latest"]
OLD = ["rfc-2012", "v3.4", "v3.5"]
MODERN = ["v6.1", "v6.12", "latest"]
PAGE = 4096


def test_spec_names_are_the_ones_these_tests_know() -> None:
    """If a spec is added, the per-rule spec lists in tests/dmabuf need a look."""
    assert list(SPECS) == ALL


def assert_export_fails(kit: SimpleNamespace, kernel: Any, exp: Any, what: str, **kw: Any) -> None:
    """Export must fail -EINVAL with exactly one WARN naming ``what`` and create nothing."""
    ino_before = kernel.next_ino()
    nwarn = len(kernel.warnings)
    with kernel.trace() as events, pytest.raises(KernelError) as ei:
        kit.export(kernel, exp, 4 * PAGE, **kw)
    assert ei.value.errno == errno.EINVAL
    new = kernel.warnings[nwarn:]
    assert len(new) == 1, new
    assert new[0].startswith("dma_buf_export: WARN_ON(")
    assert what in new[0]
    # no file, no inode, no dma_buf, no release of the exporter's object
    called = {e.func for e in events if e.kind == "entry"}
    assert "anon_inode_getfile" not in called
    assert "dma_buf_getfile" not in called
    assert kernel.next_ino() == ino_before + 1
    assert kernel.dma_bufs == []
    assert exp.release_calls == 0


# -- R11 / R12: ops->mmap mandatory in the 2012 specs, optional since 5.3 -------------------


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.5"])
def test_r11_export_without_mmap_fails_einval_with_warn(kit: SimpleNamespace, spec: str) -> None:
    """R11: ops->mmap == NULL → -EINVAL, a WARN, and no file is created."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE, missing=("mmap",))
    assert_export_fails(kit, k, exp, "mmap")


def test_r11_v34_does_not_require_mmap(kit: SimpleNamespace) -> None:
    """In Linux 3.4 itself mmap did not exist, so a NULL ops->mmap exports fine (R11, R62)."""
    k = kit.make_kernel("v3.4")
    exp = kit.TestExporter(k, 4 * PAGE, missing=("mmap",))
    db = kit.export(k, exp, 4 * PAGE)
    assert db.file.f_count == 1 and k.warnings == []


@pytest.mark.parametrize("spec", MODERN)
def test_r12_export_without_mmap_succeeds_then_mmap_fails_einval(
    kit: SimpleNamespace, spec: str
) -> None:
    """R12: no ops->mmap exports fine; mmap(2) then fails EINVAL, dma_buf_mmap -EINVAL."""

    env = kit.new_env(spec, 4 * PAGE, missing=("mmap",))
    assert env.kernel.warnings == []
    p = env.proc
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, 3, 1, env.fd, 0)
    assert ei.value.errno == errno.EINVAL
    assert p.mm.vmas == () and len(p.mm.pgtable) == 0
    assert env.file.f_count == 1
    # the importer path
    imp = kit.Importer(env.kernel, env.dmabuf)
    ifd = p.open(kit.IMPORTER_PATH, os.O_RDWR)
    with pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, 3, 1, ifd, 0)
    assert ei.value.errno == errno.EINVAL
    assert imp.results[0]["ret"] == -errno.EINVAL
    assert imp.results[0]["file_after"] is imp.results[0]["importer_file"]
    assert env.file.f_count == 1
    assert p.file(ifd).f_count == 1


# -- R13 / R14: the other mandatory ops --------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("op", ["map_dma_buf", "unmap_dma_buf", "release"])
def test_r13_export_without_core_op_fails(kit: SimpleNamespace, spec: str, op: str) -> None:
    """R13: map_dma_buf, unmap_dma_buf and release are mandatory on every spec."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE, missing=(op,))
    assert_export_fails(kit, k, exp, op)


@pytest.mark.parametrize("spec", ALL)
def test_r13_export_without_priv_fails(kit: SimpleNamespace, spec: str) -> None:
    """R13: a NULL priv → -EINVAL (WARN)."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE)
    assert_export_fails(kit, k, exp, "priv", priv=None)


@pytest.mark.parametrize("spec", ALL)
def test_r13_export_without_ops_fails(kit: SimpleNamespace, spec: str) -> None:
    """R13: a NULL ops table → -EINVAL (WARN), in both call forms."""
    k = kit.make_kernel(spec)
    nwarn = len(k.warnings)
    with pytest.raises(KernelError) as ei:
        if k.spec.export_info_form:
            dma_buf_export(k, DmaBufExportInfo(ops=None, size=PAGE, priv="p"))
        else:
            dma_buf_export(k, "p", None, PAGE, os.O_RDWR)
    assert ei.value.errno == errno.EINVAL
    assert len(k.warnings) == nwarn + 1 and "ops" in k.warnings[-1]
    assert k.dma_bufs == []


@pytest.mark.parametrize("spec", OLD)
@pytest.mark.parametrize("op", ["kmap", "kmap_atomic"])
def test_r13_kmap_ops_mandatory_in_3x(kit: SimpleNamespace, spec: str, op: str) -> None:
    """R13: in the 3.x specs kmap and kmap_atomic are mandatory too."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE, missing=(op,))
    assert_export_fails(kit, k, exp, op)


@pytest.mark.parametrize("spec", MODERN)
def test_r13_kmap_ops_not_needed_on_modern(kit: SimpleNamespace, spec: str) -> None:
    """R13: modern kernels have no kmap ops at all; an exporter without them exports."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE, missing=("kmap", "kmap_atomic", "kunmap"))
    db = kit.export(k, exp, 4 * PAGE)
    assert k.dma_bufs == [db] and k.warnings == []


@pytest.mark.parametrize("spec", MODERN)
@pytest.mark.parametrize("which", ["pin", "unpin"])
def test_r14_pin_without_unpin_fails(kit: SimpleNamespace, spec: str, which: str) -> None:
    """R14: exactly one of pin/unpin → -EINVAL with a WARN."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE, pin=which)
    assert_export_fails(kit, k, exp, "pin")


@pytest.mark.parametrize("spec", MODERN)
def test_r14_pin_and_unpin_together_export(kit: SimpleNamespace, spec: str) -> None:
    """R14: both pin and unpin is fine."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE, pin=True)
    db = kit.export(k, exp, 4 * PAGE)
    assert k.dma_bufs == [db] and k.warnings == []


@pytest.mark.parametrize(("spec", "fails"), [("v6.1", True), ("v6.12", True), ("latest", False)])
def test_cache_sgt_mapping_with_pin_rejected_until_6_19(
    kit: SimpleNamespace, spec: str, fails: bool
) -> None:
    """kernel-spec §4.1 step 2: cache_sgt_mapping && (pin || unpin) → -EINVAL (gone in 6.19)."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 4 * PAGE, pin=True, cache_sgt=True)
    if fails:
        assert_export_fails(kit, k, exp, "cache_sgt_mapping")
    else:
        db = kit.export(k, exp, 4 * PAGE)
        assert k.dma_bufs == [db] and k.warnings == []


# -- what a successful export creates ----------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize(
    ("flags", "fmode"),
    [
        (os.O_RDONLY, FMODE_READ),
        (os.O_WRONLY, FMODE_WRITE),
        (os.O_RDWR, FMODE_READ | FMODE_WRITE),
        (os.O_RDWR | os.O_NONBLOCK, FMODE_READ | FMODE_WRITE),
    ],
)
def test_export_creates_one_file_with_one_reference(
    kit: SimpleNamespace, spec: str, flags: int, fmode: int
) -> None:
    """§2.1/§2.2/§4.1: one file, f_count 1, f_mode = OPEN_FMODE(flags),
    f_flags = flags & (O_ACCMODE|O_NONBLOCK), private_data = the dma_buf."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, 3 * PAGE)
    db = kit.export(k, exp, 3 * PAGE, flags=flags | os.O_CLOEXEC | os.O_APPEND)
    f = db.file
    assert f is not None and f.f_count == 1
    assert f.f_mode & (FMODE_READ | FMODE_WRITE) == fmode
    assert f.f_flags == flags & (os.O_ACCMODE | os.O_NONBLOCK)
    assert f.private_data is db
    assert db.size == 3 * PAGE
    assert k.dma_bufs == [db]
    assert exp.release_calls == 0


@pytest.mark.parametrize("spec", ["rfc-2012", "v3.4", "v3.5"])
def test_r26_old_specs_share_the_anon_inode(kit: SimpleNamespace, spec: str) -> None:
    """R26 (file level): every dma-buf file is on kernel.anon_inode and shares its i_mapping;
    the inode is not a regular file (mode 0600)."""
    k = kit.make_kernel(spec)
    a = kit.export(k, kit.TestExporter(k, PAGE), PAGE)
    b = kit.export(k, kit.TestExporter(k, 2 * PAGE), 2 * PAGE)
    assert a.file is not b.file
    assert a.file.f_inode is k.anon_inode and b.file.f_inode is k.anon_inode
    assert a.file.f_mapping is b.file.f_mapping is k.anon_inode.i_mapping
    assert k.anon_inode.i_mode & 0o777 == 0o600
    assert not k.anon_inode.i_mode & S_IFREG
    assert a.file.path() == b.file.path() == "anon_inode:dmabuf"


@pytest.mark.parametrize("spec", MODERN)
def test_r27_modern_specs_give_each_buffer_its_own_inode(kit: SimpleNamespace, spec: str) -> None:
    """R27 (file level): one inode (and address_space) per buffer, i_size = size,
    distinct inode numbers, dentry name shown as /dmabuf:."""
    k = kit.make_kernel(spec)
    a = kit.export(k, kit.TestExporter(k, PAGE), PAGE)
    b = kit.export(k, kit.TestExporter(k, 6000), 6000)
    ia, ib = a.file.f_inode, b.file.f_inode
    assert ia is not ib and ia is not k.anon_inode and ib is not k.anon_inode
    assert a.file.f_mapping is ia.i_mapping and b.file.f_mapping is ib.i_mapping
    assert a.file.f_mapping is not b.file.f_mapping
    assert (ia.i_size, ib.i_size) == (PAGE, 6000)
    assert ia.i_ino != ib.i_ino
    assert (a.ino, b.ino) == (ia.i_ino, ib.i_ino)
    assert not ia.i_mode & S_IFREG
    assert a.file.path() == "/dmabuf:"


@pytest.mark.parametrize("spec", MODERN)
def test_exp_name_from_export_info(kit: SimpleNamespace, spec: str) -> None:
    """§4.1: exp_info.exp_name names the exporter (fdinfo's exp_name)."""
    k = kit.make_kernel(spec)
    db = kit.export(k, kit.TestExporter(k, PAGE), PAGE, exp_name="my-heap")
    assert db.exp_name == "my-heap"


@pytest.mark.parametrize("spec", ALL)
def test_export_does_not_call_exporter_ops(kit: SimpleNamespace, spec: str) -> None:
    """Exporting only records the ops: no op is called until someone uses the buffer."""
    k = kit.make_kernel(spec)
    exp = kit.TestExporter(k, PAGE)
    kit.export(k, exp, PAGE)
    assert exp.calls == [] and exp.mmap_calls == []
