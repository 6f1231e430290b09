"""How much the kit runs by default, and with ``--deep`` (no imports: the CLI reads it early)."""

from __future__ import annotations

__all__ = ["DEEP", "DEFAULT_EXAMPLES", "DEFAULT_STEPS"]

DEFAULT_EXAMPLES = 200
"""Random programs per check at the default budget (about a second for a passing exporter)."""
DEFAULT_STEPS = 30
"""Steps per random program at most."""
DEEP = (2000, 60)
"""(random programs, steps) of ``--deep``."""
