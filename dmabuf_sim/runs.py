"""One named scenario or story, run traced: what the command line, the step-through
view and notebooks share.

:func:`run_named` runs a shared scenario (with an exporter) or a story under one
spec, with the kernel's tracer on from the first step of the story (the boot and
the harness's set-up are not part of it), and returns a :class:`NamedRun`: the
outcome, the kernel as the story left it, and the trace.  A scenario that cannot
run under the spec is *skipped*, with the reason and an exporter that would work
there.  In a notebook a run draws itself: its outcome and the final state.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from attrs import define, field

from .conformance.sanitizers import Finding
from .conformance.scenarios import SCENARIOS, STEP_CHECKS, Harness, Skip
from .errors import KernelOops, Signal
from .exporters.registry import EXPORTERS, ExporterInfo
from .exporters.registry import exporter as lookup
from .kernel import Kernel
from .picture import snapshot_graph, to_svg_fallback
from .spec import DEFAULT_SPEC, SPECS, get_spec
from .stories import STORIES
from .trace import TraceEvent

__all__ = ["NamedRun", "is_named", "run_named", "suggest_exporter"]

_PREFERRED = ("system_heap", "simple", "shootdown", "udmabuf", "cma_heap", "vgem")
"""Reference exporters in the order a suggestion tries them."""


@define(eq=False, repr=False)
class NamedRun:
    """The outcome of one scenario or story under one spec."""

    name: str
    kind: str
    """``scenario`` or ``story``."""
    spec: str
    exporter: str
    """The exporter a scenario ran with (empty for stories, which choose their own)."""
    status: str
    """``passed``, ``failed``, ``skipped`` (scenarios) or ``ran`` (stories)."""
    observations: dict[str, str] = field(factory=dict)
    """A story's observations, or a scenario's findings (``finding 1`` ...)."""
    reason: str = ""
    """Why a skipped scenario could not run."""
    hint: str = ""
    """What to try instead, for a skipped scenario."""
    kernel: Kernel | None = field(default=None, repr=False)
    events: list[TraceEvent] = field(factory=list, repr=False)

    def __repr__(self) -> str:
        return f"<NamedRun {self.headline}>"

    @property
    def headline(self) -> str:
        """``round-trip [system_heap, spec v6.12]: passed`` (with the reason when skipped)."""
        who = f"{self.exporter}, spec {self.spec}" if self.exporter else f"spec {self.spec}"
        head = f"{self.name} [{who}]: {self.status}"
        return f"{head} ({self.reason})" if self.status == "skipped" else head

    def lines(self) -> list[str]:
        """The outcome as lines of text: the headline, observations, a hint."""
        out = [self.headline]
        out += [f"  {key}: {value}" for key, value in self.observations.items()]
        if self.hint:
            out.append(f"  {self.hint}")
        return out

    def _repr_svg_(self) -> str | None:
        """The state the run left (Jupyter draws it)."""
        if self.kernel is None:
            return None

        return to_svg_fallback(snapshot_graph(self.kernel))

    def _repr_html_(self) -> str:
        """The outcome, then the final state (Jupyter shows this rather than the SVG)."""
        items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in self.lines()[1:])
        picture = self._repr_svg_() or ""
        if picture.startswith("<?xml"):
            picture = picture.split("?>", 1)[1]
        return (
            f'<div class="dmabuf-sim-run"><p><b>{html.escape(self.headline)}</b></p>'
            f"<ul>{items}</ul>{picture}</div>"
        )


def is_named(name: str) -> bool:
    """Whether ``name`` is a shared scenario or a story."""
    return name in SCENARIOS or name in STORIES


def suggest_exporter(spec: str, *, exclude: str = "") -> str:
    """One line saying what would run under ``spec``: another exporter, or another spec."""
    spec_obj = get_spec(spec)
    for name in _PREFERRED:
        if name != exclude and EXPORTERS[name].available(spec_obj) is None:
            hint = f"try --exporter {name}, which exists on {spec_obj.name}"
            if spec_obj.mmap_internal_reads_uninitialised_dmabuf:
                hint += " (where every mmap of a dma-buf oopses: R61)"
            return hint
    usable = [
        s.name
        for s in SPECS.values()
        if EXPORTERS["simple"].available(s) is None
        and not s.mmap_internal_reads_uninitialised_dmabuf
    ]
    return f"no exporter can be mapped on {spec_obj.name}; try --spec {usable[0]}"


def run_named(
    name: str,
    spec: str = DEFAULT_SPEC,
    exporter: str = "system_heap",
    *,
    prepare: Callable[[Kernel], object] | None = None,
) -> NamedRun:
    """Run the scenario or story ``name`` under ``spec``, traced.

    ``exporter`` matters for scenarios only.  ``prepare(kernel)`` is called once
    the kernel is built, before the story starts and the tracer is turned on (the
    step-through view attaches its recorder there).  Raises :class:`ValueError`
    for an unknown name, spec or exporter.
    """
    spec_name = get_spec(spec).name
    if name in STORIES:
        kernel = Kernel(spec)
        _start(kernel, prepare)
        observations = STORIES[name].run(kernel)
        return NamedRun(
            name, "story", spec_name, "", "ran", observations, kernel=kernel, events=_events(kernel)
        )
    if name not in SCENARIOS:
        raise ValueError(
            f"unknown scenario {name!r}; see 'dmabuf-sim scenarios list' for the names"
        )

    info = lookup(exporter)
    why = info.available(get_spec(spec))
    if why:
        return _skipped(name, info, spec_name, why)
    return _run_scenario(name, info, spec, prepare)


def _start(kernel: Kernel, prepare: Callable[[Kernel], object] | None) -> None:
    if prepare is not None:
        prepare(kernel)
    kernel.tracer.enabled = True


def _events(kernel: Kernel) -> list[TraceEvent]:
    return list(kernel.tracer.events)


def _skipped(name: str, info: ExporterInfo, spec: str, why: str) -> NamedRun:
    return NamedRun(
        name,
        "scenario",
        spec,
        info.name,
        "skipped",
        reason=why,
        hint=suggest_exporter(spec, exclude=info.name),
    )


def _run_scenario(
    name: str, info: ExporterInfo, spec: str, prepare: Callable[[Kernel], object] | None
) -> NamedRun:
    """The shared scenario under the harness, judged as the kit judges it."""
    h = Harness.create(info, spec)
    spec_name = h.kernel.spec.name
    _start(h.kernel, prepare)
    try:
        SCENARIOS[name](h)
    except Skip as skip:
        return _skipped(name, info, spec_name, str(skip))
    except Signal as sig:
        h.findings.append(Finding("R32", f"unexpected {sig}"))
    except KernelOops as oops:
        h.findings.append(Finding(oops.rule or "oops", str(oops)))
    except OSError as exc:
        h.findings.append(Finding("syscall", f"unexpected {exc!r}"))
    h.findings.extend(h.world.check(STEP_CHECKS))
    findings = list(dict.fromkeys(h.findings))
    observations = {f"finding {i + 1}": str(f) for i, f in enumerate(findings)}
    status = "failed" if findings else "passed"
    return NamedRun(
        name,
        "scenario",
        spec_name,
        info.name,
        status,
        observations,
        kernel=h.kernel,
        events=_events(h.kernel),
    )
