"""The conformance kit: rules, sanitizers, strategies, the state machine and its verdicts.

The names below are imported on first use, so that the pytest plugin (which
lives in this package and loads in every pytest session once dmabuf_sim is
installed) costs nothing until the kit is asked for::

    from dmabuf_sim.conformance import check_exporter, make_machine
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Capabilities",
    "DmaBufMachine",
    "Finding",
    "KitReport",
    "KitResult",
    "RuleViolation",
    "UsageError",
    "check_exporter",
    "make_machine",
    "resolve_exporter",
    "run_operations",
]

_HOME = {
    "Capabilities": "dmabuf_sim.exporters.registry",
    "DmaBufMachine": "dmabuf_sim.conformance.machine",
    "Finding": "dmabuf_sim.conformance.sanitizers",
    "KitReport": "dmabuf_sim.conformance.kit",
    "KitResult": "dmabuf_sim.conformance.kit",
    "RuleViolation": "dmabuf_sim.conformance.sanitizers",
    "UsageError": "dmabuf_sim.errors",
    "check_exporter": "dmabuf_sim.conformance.kit",
    "make_machine": "dmabuf_sim.conformance.machine",
    "resolve_exporter": "dmabuf_sim.conformance.kit",
    "run_operations": "dmabuf_sim.conformance.machine",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'dmabuf_sim.conformance' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
