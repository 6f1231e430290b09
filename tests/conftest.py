"""Shared fixtures and hypothesis profiles.

Profiles (``HYPOTHESIS_PROFILE``): ``default`` keeps the suite under five
minutes on two cores; ``deep`` runs many more examples.  Every profile sets
``deadline=None``: these machines are shared and noisy, and no test may
depend on timing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

from dmabuf_sim import Kernel
from dmabuf_sim.spec import SPECS

settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("quick", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ALL_SPECS = list(SPECS)
MMAP_SPECS = [s for s in SPECS if SPECS[s].has_mmap_fop]
MODERN_SPECS = ["v6.1", "v6.12", "latest"]
OLD_SPECS = ["rfc-2012", "v3.5"]


@pytest.fixture(params=ALL_SPECS)
def any_spec(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_kernel() -> Callable[..., Kernel]:
    def make(spec: str = "v6.12", **kw: object) -> Kernel:
        return Kernel(spec, **kw)  # type: ignore[arg-type]

    return make
