"""Specs as named behaviours: lookup, Spec.replace, and a replaced spec driving the mm."""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from dmabuf_sim import SIGBUS, Kernel, get_spec
from dmabuf_sim.spec import SPECS, Spec, spec_names

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH = mmap.MAP_SHARED


def test_spec_names_in_order() -> None:
    assert spec_names() == (
        "rfc-2012",
        "v3.4",
        "v3.5",
        "v5.10",
        "v6.1",
        "v6.12",
        "v6.19",
        "latest",
    )
    assert Kernel("v3.5").spec is SPECS["v3.5"]
    assert get_spec(SPECS["v6.1"]) is SPECS["v6.1"]


@pytest.mark.parametrize("bad", ["v9", "", "V6.12", "6.12"])
def test_bad_spec_name_lists_the_names(bad: str) -> None:
    with pytest.raises(ValueError) as ei:
        Kernel(bad)
    message = str(ei.value)
    assert repr(bad) in message
    for name in SPECS:
        assert name in message


def test_spec_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="spec"):
        get_spec(6.12)  # type: ignore[arg-type]


def test_replace_makes_a_custom_copy() -> None:
    base = SPECS["v6.1"]
    what_if = base.replace(per_buffer_inode=False)
    assert what_if.per_buffer_inode is False and base.per_buffer_inode is True
    assert what_if.name == "v6.1+custom"
    assert what_if.replace(has_llseek=False).name == "v6.1+custom"  # no double suffix
    assert base.replace(name="mine").name == "mine"
    for f in Spec.behaviours():
        if f.name != "per_buffer_inode":
            assert getattr(what_if, f.name) == getattr(base, f.name)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        base.per_buffer_inode = False  # type: ignore[misc]


def test_replace_rejects_unknown_names_and_bad_values() -> None:
    with pytest.raises(TypeError):
        SPECS["v6.12"].replace(no_such_behaviour=True)
    with pytest.raises(ValueError):
        SPECS["v6.12"].replace(fault_without_handler="panic")
    with pytest.raises(TypeError):
        SPECS["v6.12"].replace(vfs_file_mmap_ok="yes")
    with pytest.raises(ValueError, match="has_config_stubs"):
        SPECS["v6.12"].replace(config_dma_shared_buffer=False)


def test_behaviours_carry_provenance() -> None:
    fields = {f.name: f for f in Spec.behaviours()}
    assert "name" not in fields and "kernel_version" not in fields
    assert fields["vfs_file_mmap_ok"].metadata["rules"] == "R6"
    assert "R30" in fields["fault_without_handler"].metadata["rules"]
    assert all(f.metadata.get("since") for f in fields.values())


def test_replaced_spec_drives_do_mmap() -> None:
    """v6.12 without file_mmap_ok behaves like v3.5 for R6 (the driver is reached)."""
    k = Kernel(SPECS["v6.12"].replace(vfs_file_mmap_ok=False))
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    with k.trace() as events, pytest.raises(OSError) as ei:
        p.mmap(0, PAGE, R, SH, fd, -PAGE)
    assert ei.value.errno == errno.EINVAL
    assert "simmem_mmap" in [e.func for e in events]


def test_replaced_spec_drives_the_fault_path(make_driver: Callable[..., Any]) -> None:
    """fault_without_handler='anonymous' on a modern kernel gives R31's behaviour."""
    results = {}
    for label, spec in [
        ("stock", SPECS["v6.12"]),
        ("what-if", SPECS["v6.12"].replace(fault_without_handler="anonymous")),
    ]:
        k = Kernel(spec)

        def mmap_fn(d: Any, file: Any, vma: Any) -> int:
            vma.vm_ops = d.vm_ops(fault=False)
            return 0

        make_driver(k, mmap_fn)
        p = k.spawn()
        fd = p.open("/dev/toy", os.O_RDWR)
        addr = p.mmap(0, PAGE, R | W, SH, fd, 0)
        try:
            p.write_memory(addr, b"anon")
            results[label] = p.read_memory(addr, 4)
        except SIGBUS as e:
            results[label] = e.addr == addr
    assert results == {"stock": True, "what-if": b"anon"}
