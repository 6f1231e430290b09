"""The exporter interface is typed: mypy rejects an op whose signature matches no kernel.

``DmaBufOps`` declares each op with the signature the kernel gives it (both forms where
kernels differ), so an exporter that subclasses it is checked by ``mypy --strict`` like
a C exporter is by the compiler against ``struct dma_buf_ops``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (pip install -e '.[dev]' installs the pinned version)",
)

_HEADER = """\
from __future__ import annotations

from typing import Any

from dmabuf_sim.device import Device, DmaDataDirection, SgTable
from dmabuf_sim.dma_buf import DmaBuf, DmaBufAttachment, DmaBufOps, IosysMap
from dmabuf_sim.mm.vma import VmAreaStruct
from dmabuf_sim.mm.vmalloc import KernelMapping
"""

GOOD = '''
class Modern(DmaBufOps):
    """Every op in its modern form."""

    def attach(self, dmabuf: DmaBuf, attachment: DmaBufAttachment) -> int:
        return 0

    def detach(self, dmabuf: DmaBuf, attachment: DmaBufAttachment) -> None: ...

    def map_dma_buf(self, attachment: DmaBufAttachment, direction: DmaDataDirection) -> SgTable:
        raise NotImplementedError

    def unmap_dma_buf(
        self, attachment: DmaBufAttachment, sgt: SgTable, direction: DmaDataDirection
    ) -> None: ...

    def release(self, dmabuf: DmaBuf) -> None: ...

    def begin_cpu_access(self, dmabuf: DmaBuf, direction: DmaDataDirection) -> int:
        return 0

    def end_cpu_access(self, dmabuf: DmaBuf, direction: DmaDataDirection) -> int:
        return 0

    def mmap(self, dmabuf: DmaBuf, vma: VmAreaStruct) -> int:
        return 0

    def vmap(self, dmabuf: DmaBuf, map: IosysMap) -> int:
        return 0

    def vunmap(self, dmabuf: DmaBuf, map: IosysMap) -> None: ...


class Old(DmaBufOps):
    """The 3.x forms."""

    def attach(self, dmabuf: DmaBuf, dev: Device, attachment: DmaBufAttachment) -> int:
        return 0

    def begin_cpu_access(
        self, dmabuf: DmaBuf, start: int, length: int, direction: DmaDataDirection
    ) -> int:
        return 0

    def end_cpu_access(
        self, dmabuf: DmaBuf, start: int, length: int, direction: DmaDataDirection
    ) -> None: ...

    def kmap(self, dmabuf: DmaBuf, page_num: int) -> KernelMapping | None:
        return None

    kmap_atomic = kmap

    def vmap(self, dmabuf: DmaBuf) -> KernelMapping | None:
        return None


class EverySpec(DmaBufOps):
    """One exporter serving both forms takes the arguments as they come."""

    def attach(self, dmabuf: DmaBuf, *args: Any) -> int:
        return 0

    def begin_cpu_access(self, dmabuf: DmaBuf, *args: Any) -> int:
        return 0
'''

BAD = """
class Bad(DmaBufOps):
    def mmap(self, dmabuf: DmaBuf) -> int:  # forgot the vma
        return 0

    def release(self, dmabuf: DmaBuf) -> int:  # release is void
        return 0

    def attach(self, attachment: DmaBufAttachment) -> int:  # that is pin's signature
        return 0

    def map_dma_buf(self, attachment: DmaBufAttachment) -> SgTable:  # no direction
        raise NotImplementedError

    def vunmap(self, dmabuf: DmaBuf, map: IosysMap, extra: int) -> None: ...
"""


def test_mypy_accepts_typed_exporters_and_rejects_wrong_op_signatures(tmp_path: Path) -> None:
    (tmp_path / "good_exporter.py").write_text(_HEADER + textwrap.dedent(GOOD))
    (tmp_path / "bad_exporter.py").write_text(_HEADER + textwrap.dedent(BAD))
    proc = subprocess.run(  # noqa: PLW1510 - the output is what is checked
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "good_exporter.py",
            "bad_exporter.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("good_exporter.py")], proc.stdout
    rejected = {
        e.split('"')[1]
        for e in errors
        if e.startswith("bad_exporter.py") and "incompatible with supertype" in e
    }
    assert rejected == {"mmap", "release", "attach", "map_dma_buf", "vunmap"}, proc.stdout
