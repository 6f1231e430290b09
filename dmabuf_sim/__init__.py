"""dmabuf_sim — a reference executable model of the Linux dma-buf subsystem.

Start with :class:`Kernel` (the machine, one spec version) and
:meth:`Kernel.spawn` (a userspace :class:`Process`); :func:`snapshot` records what a
process or the kernel holds, to compare before and after a call.
"""

from __future__ import annotations

import importlib
import pkgutil

from .errors import (
    SIGBUS,
    SIGKILL,
    SIGSEGV,
    DmaBufSimError,
    KernelError,
    KernelOops,
    OutOfMemory,
    Signal,
)
from .kernel import Kernel
from .process import Process
from .snapshot import snapshot
from .spec import SPECS, Spec, get_spec

__all__ = [
    "SIGBUS",
    "SIGKILL",
    "SIGSEGV",
    "SPECS",
    "DmaBufSimError",
    "Kernel",
    "KernelError",
    "KernelOops",
    "OutOfMemory",
    "Process",
    "Signal",
    "Spec",
    "get_spec",
    "snapshot",
]

__version__ = "0.1.0"


def load_everything() -> None:
    """Import every module that declares kernel functions (fills the registry)."""
    for mod in pkgutil.walk_packages(__path__, __name__ + "."):
        if mod.name.endswith(("__main__", "pytest_plugin")):
            continue
        importlib.import_module(mod.name)
