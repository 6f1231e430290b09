"""Which simulator spec models a kernel release.

This is the one place a release string (``6.12.117+deb12``, ``6.1.0-57``,
``6.12.117+deb12-amd64`` as ``uname -r`` prints it, ``7.3.4``) becomes a spec
name: the release table of :data:`~dmabuf_sim.spec.SPECS` (``SPECS.for_release``)
where it covers the release; otherwise the spec of the newest modelled kernel
line not newer than the release (or the oldest modern spec), with
:attr:`SpecChoice.note` saying which spec stands in for it, which every report
prints.
"""

from __future__ import annotations

import re

from attrs import frozen

from ..spec import SPECS

__all__ = ["SpecChoice", "spec_for_release"]

_LINES: tuple[tuple[tuple[int, int], str], ...] = (
    ((5, 10), "v5.10"),
    ((6, 1), "v6.1"),
    ((6, 12), "v6.12"),
    ((6, 19), "v6.19"),
    ((7, 3), "latest"),
)
"""Kernel lines the built-in specs model, oldest first (the fallback when the table misses)."""


@frozen
class SpecChoice:
    spec: str
    exact: bool
    """The spec models this kernel line itself (not a neighbour standing in)."""
    note: str = ""


def spec_for_release(release: str) -> SpecChoice:
    """The spec for a kernel release (Debian or upstream spelling)."""
    try:
        return SpecChoice(SPECS.release_range(release).spec, True)
    except ValueError:
        pass
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        raise ValueError(
            f"cannot read a kernel version from {release!r}; pass --spec to choose the spec"
        )
    line = (int(m.group(1)), int(m.group(2)))
    name = f"{line[0]}.{line[1]}"
    for modelled, spec in _LINES:
        if modelled == line:
            return SpecChoice(spec, True)
    older = [(m_, s) for m_, s in _LINES if m_ < line]
    if older:
        (ml, spec) = older[-1]
        return SpecChoice(
            spec,
            False,
            f"no spec models Linux {name}; {spec} (Linux {ml[0]}.{ml[1]}) stands in for it",
        )
    (ml, spec) = _LINES[0]
    return SpecChoice(
        spec,
        False,
        f"no spec models Linux {name}; {spec} (Linux {ml[0]}.{ml[1]}), the oldest modern"
        " spec, stands in for it",
    )
