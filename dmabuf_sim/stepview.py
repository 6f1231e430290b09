"""The step-through view: a scenario, story or the tour as one self-contained HTML page.

Like Python Tutor, for the kernel.  A :class:`Recorder` attached to a kernel
cuts its traced run into :class:`Frame`\\ s, one per userspace call (and one
per stretch of kernel-side work no call made, such as a device's DMA): the
call as strace prints it, the kernel's function graph for it (plumbing and
the harness's own calls hidden), a sentence of narration, and the state
picture just after it, with what the call changed outlined in amber.

:func:`walkthrough` runs one scenario or story under every spec and keeps each
run, so the page's spec selector shows how the same story ends on another
kernel; :meth:`Walkthrough.to_html` writes the page: no network, no external
file, plain JavaScript (buttons and the arrow keys step back and forth)::

    >>> from dmabuf_sim.stepview import walkthrough
    >>> view = walkthrough("no-fault-handler", specs=["v3.5", "v6.12"])
    >>> [frame.call for frame in view.runs["v6.12"].frames][2]
    'read_memory(0x7effffffe000, 1) = ? SIGBUS {si_code=BUS_ADRERR, si_addr=0x7effffffe000}'
    >>> view.runs["v3.5"].ending[2]
    '  read first byte: ok: 00'

Simplified: frames are cut at userspace calls, so a stretch of kernel work
between two calls is one frame however many functions it ran; the tracer's
ring (a million events) is assumed not to wrap during a recorded run.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from .conformance.scenarios import SCENARIOS
from .narrate import Counts, changes, narrate_call, narrate_kernel
from .picture import Graph, snapshot_graph, to_svg_fallback
from .picture.state import GraphIds
from .runs import run_named
from .spec import DEFAULT_SPEC, SPECS
from .stories import STORIES
from .trace import TraceEvent, format_function_graph, hide_harness, hide_plumbing, strace_line

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Frame", "Recorder", "RunView", "Walkthrough", "walkthrough"]


@frozen(repr=False)
class Frame:
    """One step of the view."""

    kind: str
    """``syscall``, ``access`` (a load or store), ``kernel`` or ``note``."""
    task: str
    call: str
    """The call as strace prints it (a title for kernel work and notes)."""
    narration: str
    trace: str
    """function_graph text of the kernel work the step did (may be empty)."""
    graph: Graph | None
    """The state just after the step (None: nothing to draw)."""
    changed: frozenset[str] = frozenset()
    """Ids of the nodes the step added or changed."""
    new_edges: frozenset[tuple[str, str, str]] = frozenset()
    gone: tuple[str, ...] = ()
    """Titles of the objects the step removed."""
    effects: tuple[str, ...] = ()
    """Counts that moved: ``PTEs 0 → 2``."""
    alert: bool = False
    """The call failed, or ended in a signal or an oops."""
    chapter: str = ""
    """The tour step the frame belongs to (empty outside the tour)."""

    def __repr__(self) -> str:
        return f"<Frame {self.kind}: {self.call or self.narration[:60]}>"


def _diff(
    before: Graph | None, after: Graph
) -> tuple[frozenset[str], frozenset[tuple[str, str, str]], tuple[str, ...]]:
    old = {n.id: n for n in before.nodes} if before is not None else {}
    new = {n.id: n for n in after.nodes}
    changed = frozenset(
        nid
        for nid, node in new.items()
        if nid not in old or old[nid].lines != node.lines or old[nid].marks != node.marks
    )
    old_edges = {(e.src, e.dst, e.label) for e in before.edges} if before is not None else set()
    new_edges = frozenset(
        key for e in after.edges if (key := (e.src, e.dst, e.label)) not in old_edges
    )
    gone = tuple(node.title for nid, node in old.items() if nid not in new)
    return changed, new_edges, gone


@define(eq=False)
class Recorder:
    """An instrument that turns a traced run into :class:`Frame`\\ s.

    Attach it with :meth:`attach` before the story runs, with the kernel's
    tracer on; call :meth:`finish` at the end.  ``sink`` collects the frames
    (several recorders, one per kernel, may share one: the tour does).
    """

    kernel: Kernel
    sink: list[Frame] = field(factory=list)
    full_trace: bool = False
    chapter: str = ""
    _ids: GraphIds = field(factory=GraphIds)
    _graph: Graph | None = None
    _counts: Counts | None = None
    _mark: int = 0
    _open: TraceEvent | None = None
    _start: int = 0

    @classmethod
    def attach(cls, kernel: Kernel, sink: list[Frame] | None = None, **kw: Any) -> Recorder:
        rec = cls(kernel, sink if sink is not None else [], **kw)
        rec._graph = snapshot_graph(kernel, ids=rec._ids)
        rec._counts = Counts.of(kernel)
        rec._mark = len(kernel.tracer.events)
        kernel.observe(rec)
        return rec

    @property
    def frames(self) -> list[Frame]:
        return self.sink

    @property
    def graph(self) -> Graph | None:
        """The state as of the last frame."""
        return self._graph

    def _shown(self, events: list[TraceEvent]) -> list[TraceEvent]:
        return events if self.full_trace else hide_plumbing(hide_harness(events))

    def _snap(self) -> tuple[Graph, Counts]:
        return snapshot_graph(self.kernel, ids=self._ids), Counts.of(self.kernel)

    def _add(
        self, kind: str, task: str, call: str, narration: str, events: list[TraceEvent], alert: bool
    ) -> None:
        graph, counts = self._snap()
        changed, new_edges, gone = _diff(self._graph, graph)
        before = self._counts or counts
        trace = format_function_graph(events, show_task=False) if events else ""
        self.sink.append(
            Frame(
                kind,
                task,
                call,
                narration,
                trace,
                graph,
                changed,
                new_edges,
                gone,
                changes(before, counts),
                alert,
                self.chapter,
            )
        )
        self._graph, self._counts = graph, counts

    def _flush_kernel_side(self, end: int) -> None:
        events = self.kernel.tracer.events[self._mark : end]
        self._mark = end
        shown = self._shown(events)
        if not any(ev.kind in ("entry", "event") for ev in shown):
            return
        title, narration = narrate_kernel(shown)
        alert = any(ev.kind == "event" and ev.func in ("oops", "stale_read") for ev in shown)
        self._add("kernel", "kernel", title, narration, shown, alert)

    # -- instrument hooks (see Process) ------------------------------------------------
    def on_user_call_entry(self, record: TraceEvent) -> None:
        if self._open is not None:
            return  # a call made while another is running: part of it
        index = len(self.kernel.tracer.events) - 1
        self._flush_kernel_side(index)
        self._open, self._start = record, index

    def on_user_call_exit(self, record: TraceEvent) -> None:
        if record is not self._open:
            return
        events = self.kernel.tracer.events[self._start + 1 :]
        shown = self._shown(events)
        failed = isinstance(record.ret, int) and record.ret < 0
        alert = failed or record.note.startswith(("SIG", "oops"))
        self._add(
            record.kind,
            f"{record.comm}-{record.pid}",
            strace_line(record),
            narrate_call(record, shown),
            shown,
            alert,
        )
        self._open = None
        self._mark = len(self.kernel.tracer.events)

    def finish(self) -> None:
        """Frame the kernel work since the last call (call once the run is over)."""
        self._flush_kernel_side(len(self.kernel.tracer.events))


@frozen(repr=False)
class RunView:
    """One spec's run: its frames and how it ends."""

    spec: str
    status: str
    ending: tuple[str, ...]
    """The outcome, line by line (the first line is the headline)."""
    frames: tuple[Frame, ...]

    def __repr__(self) -> str:
        return f"<RunView {self.spec}: {self.status}, {len(self.frames)} steps>"


@frozen(repr=False)
class Walkthrough:
    """Runs of one story under several specs, ready to be written as HTML."""

    title: str
    intro: str
    runs: Mapping[str, RunView]
    default_spec: str = DEFAULT_SPEC

    def __repr__(self) -> str:
        runs = ", ".join(
            f"{r.spec} ({r.status}, {len(r.frames)} steps)" for r in self.runs.values()
        )
        return f"<Walkthrough {self.title!r}: {runs}>"

    def to_html(self) -> str:
        """The page: one HTML file, its data inline, no external resources."""
        svgs: dict[str, int] = {}
        runs: dict[str, Any] = {}
        for spec, run in self.runs.items():
            frames = []
            for frame in run.frames:
                svg = ""
                if frame.graph is not None:
                    svg = to_svg_fallback(
                        frame.graph, changed=frame.changed, new_edges=frame.new_edges
                    ).split("?>", 1)[1]
                    svg = _BETWEEN_TAGS.sub("><", svg.strip())
                titles = [
                    n.title
                    for n in (frame.graph.nodes if frame.graph else ())
                    if n.id in frame.changed
                ]
                frames.append(
                    {
                        "kind": frame.kind,
                        "task": frame.task,
                        "call": frame.call,
                        "narration": frame.narration,
                        "trace": frame.trace,
                        "svg": svgs.setdefault(svg, len(svgs)),
                        "changed": titles,
                        "gone": list(frame.gone),
                        "effects": list(frame.effects),
                        "alert": frame.alert,
                        "chapter": frame.chapter,
                    }
                )
            runs[spec] = {"status": run.status, "ending": list(run.ending), "frames": frames}
        default = self.default_spec if self.default_spec in self.runs else next(iter(self.runs))
        data = {
            "title": self.title,
            "intro": self.intro,
            "default": default,
            "specs": list(self.runs),
            "runs": runs,
            "svgs": list(svgs),
        }
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        payload = payload.replace("<!--", "<\\!--")
        return (
            _PAGE.replace("@@TITLE@@", html.escape(self.title))
            .replace("@@STYLE@@", _STYLE)
            .replace("@@SCRIPT@@", _SCRIPT)
            .replace("@@DATA@@", payload)
        )

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_html` to ``path`` (UTF-8); returns the path."""
        path = Path(path)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        """In a notebook: the page in a frame (scripts run inside it)."""
        page = html.escape(self.to_html(), quote=True)
        return (
            f'<iframe srcdoc="{page}" title="{html.escape(self.title)}"'
            ' style="width:100%;height:760px;border:1px solid #cbd5e1"></iframe>'
        )


def record_named(
    name: str, spec: str, exporter: str = "system_heap", *, full_trace: bool = False
) -> RunView:
    """Run scenario or story ``name`` under ``spec`` with a :class:`Recorder` on it."""
    sink: list[Frame] = []
    recorders: list[Recorder] = []

    def prepare(kernel: Kernel) -> None:
        recorders.append(Recorder.attach(kernel, sink, full_trace=full_trace))

    run = run_named(name, spec, exporter, prepare=prepare)
    for rec in recorders:
        rec.finish()
    frames = list(sink)
    if run.status == "skipped":
        frames = [
            Frame("note", "", f"skipped on {run.spec}", f"{run.reason}; {run.hint}.", "", None)
        ]
    return RunView(run.spec, run.status, tuple(run.lines()), tuple(frames))


def walkthrough(
    name: str,
    exporter: str = "system_heap",
    *,
    specs: Iterable[str] | None = None,
    default_spec: str = DEFAULT_SPEC,
    full_trace: bool = False,
) -> Walkthrough:
    """Scenario or story ``name`` under each of ``specs`` (all by default), recorded."""
    chosen = list(specs) if specs is not None else list(SPECS)
    runs = {spec: record_named(name, spec, exporter, full_trace=full_trace) for spec in chosen}
    if name in STORIES:
        story = STORIES[name]
        title = f"{name}: {story.summary}"
        intro = f"A story whose outcome differs between kernels ({', '.join(story.rules)})."
    else:
        doc = (SCENARIOS[name].__doc__ or "").strip()
        title = f"{name} with {exporter}"
        intro = " ".join(doc.split())
    return Walkthrough(title, intro, runs, default_spec)


_BETWEEN_TAGS = re.compile(r">\s+<")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@ — dmabuf_sim step by step</title>
<style>@@STYLE@@</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <p id="intro"></p>
  <label class="spec">Kernel: <select id="spec" aria-label="spec version"></select></label>
  <span id="status"></span>
</header>
<nav id="controls" aria-label="steps">
  <button id="first" title="first step (Home)">&#x00AB; First</button>
  <button id="prev" title="previous step (left arrow)">&#x25C0; Prev</button>
  <span id="counter" aria-live="polite"></span>
  <button id="next" title="next step (right arrow)">Next &#x25B6;</button>
  <button id="last" title="last step (End)">Last &#x00BB;</button>
  <span class="hint">keys: &#x2190; &#x2192; Home End</span>
</nav>
<main>
  <section id="step">
    <p id="chapter"></p>
    <p id="task"></p>
    <pre id="call"></pre>
    <p id="narration"></p>
    <ul id="effects"></ul>
    <details id="trace-box"><summary id="trace-summary">kernel trace</summary>
      <pre id="trace"></pre></details>
    <h2>All steps</h2>
    <ol id="timeline"></ol>
  </section>
  <section id="state">
    <p id="changes"></p>
    <p class="hint">click the picture to see it at full size</p>
    <div id="picture"></div>
  </section>
</main>
<footer>
  <h2>How the same story ends on each kernel</h2>
  <table id="endings"><thead><tr><th>spec</th><th>outcome</th></tr></thead><tbody></tbody></table>
</footer>
<script type="application/json" id="walkthrough-data">@@DATA@@</script>
<script>@@SCRIPT@@</script>
</body>
</html>
"""

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#0f172a;background:#f8fafc}
header,nav,footer{padding:8px 16px}
header{background:#1e293b;color:#f8fafc}
header h1{font-size:20px;margin:4px 0}
header p{margin:4px 0;color:#cbd5e1}
#status{margin-left:12px;font-weight:bold}
#status.failed,#status.skipped{color:#fca5a5}
#status.passed{color:#86efac}
nav{background:#e2e8f0;position:sticky;top:0;display:flex;gap:8px;align-items:center}
nav button{font-size:15px;padding:4px 10px}
.hint{color:#475569;font-size:12px;margin-left:auto}
main{display:flex;gap:16px;padding:8px 16px;align-items:flex-start}
#step{flex:0 0 38%;min-width:320px}
#state{flex:1;overflow:auto;background:#fff;border:1px solid #cbd5e1;padding:6px}
#chapter{font-weight:bold;color:#6d28d9;margin:4px 0}
#task{color:#475569;margin:4px 0}
#call{background:#0f172a;color:#e2e8f0;padding:8px;white-space:pre-wrap;word-break:break-all}
#call.alert{background:#7f1d1d}
#narration{font-size:16px;line-height:1.4}
#effects{padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:6px}
#effects li{background:#fef3c7;border:1px solid #f59e0b;border-radius:10px;padding:2px 8px}
#trace{font-size:12px;max-height:360px;overflow:auto;background:#f1f5f9;padding:6px}
#timeline{font-family:monospace;font-size:12px;max-height:260px;overflow:auto;padding-left:28px}
#timeline li{cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#timeline li.current{background:#fde68a}
#timeline li.alert{color:#b91c1c}
#changes{color:#92400e;margin:4px}
#picture svg{width:100%;height:auto;cursor:zoom-in}
#picture.zoom svg{width:auto;max-width:none;cursor:zoom-out}
#picture:empty::after{content:"(no picture: nothing ran)";color:#64748b}
table{border-collapse:collapse}
td,th{border:1px solid #cbd5e1;padding:3px 8px;text-align:left;vertical-align:top}
tr.current{background:#fde68a}
tbody tr{cursor:pointer}
"""

_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("walkthrough-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var spec = data["default"], index = 0;
  function fromHash() {  // a link can name a step: view.html#spec=v3.5&step=7
    var wanted = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var parts = kv.split("=");
      if (parts.length === 2) { wanted[parts[0]] = decodeURIComponent(parts[1]); }
    });
    if (wanted.spec && data.runs[wanted.spec]) { spec = wanted.spec; }
    if (wanted.step) { index = (parseInt(wanted.step, 10) || 1) - 1; }
  }
  fromHash();
  function run() { return data.runs[spec]; }
  function frames() { return run().frames; }
  $("title").textContent = data.title;
  $("intro").textContent = data.intro;
  data.specs.forEach(function (name) {
    var opt = document.createElement("option");
    opt.value = name;
    opt.textContent = name + " (" + data.runs[name].status + ")";
    $("spec").appendChild(opt);
  });
  function buildEndings() {
    var body = $("endings").tBodies[0];
    body.textContent = "";
    data.specs.forEach(function (name) {
      var tr = document.createElement("tr");
      tr.dataset.spec = name;
      var a = document.createElement("td"), b = document.createElement("td");
      a.textContent = name;
      b.textContent = data.runs[name].ending.join("\\n");
      b.style.whiteSpace = "pre-wrap";
      tr.appendChild(a); tr.appendChild(b);
      tr.addEventListener("click", function () { choose(name); });
      body.appendChild(tr);
    });
  }
  function buildTimeline() {
    var list = $("timeline");
    list.textContent = "";
    frames().forEach(function (f, i) {
      var li = document.createElement("li");
      li.textContent = f.call || f.narration;
      li.title = li.textContent;
      if (f.alert) { li.className = "alert"; }
      li.addEventListener("click", function () { go(i); });
      list.appendChild(li);
    });
  }
  function show() {
    var fs = frames();
    index = Math.max(0, Math.min(index, fs.length - 1));
    var f = fs[index];
    $("counter").textContent = "Step " + (index + 1) + " of " + fs.length;
    $("status").textContent = spec + ": " + run().status;
    $("status").className = run().status;
    $("chapter").textContent = f.chapter;
    $("task").textContent = f.task ? "task " + f.task : "";
    $("call").textContent = f.call;
    $("call").className = f.alert ? "alert" : "";
    $("call").style.display = f.call ? "" : "none";
    $("narration").textContent = f.narration;
    var effects = $("effects");
    effects.textContent = "";
    f.effects.forEach(function (e) {
      var li = document.createElement("li");
      li.textContent = e;
      effects.appendChild(li);
    });
    var lines = f.trace ? f.trace.replace(/\\n$/, "").split("\\n").length : 0;
    $("trace-summary").textContent = "kernel trace (" + lines + " lines)";
    $("trace").textContent = f.trace || "(no kernel function ran)";
    $("picture").innerHTML = data.svgs[f.svg];
    var said = [];
    if (f.changed.length) { said.push("outlined: new or changed: " + f.changed.join(", ")); }
    if (f.gone.length) { said.push("gone: " + f.gone.join(", ")); }
    $("changes").textContent = said.length ? said.join("; ") : "nothing in the picture changed";
    $("prev").disabled = $("first").disabled = index === 0;
    $("next").disabled = $("last").disabled = index === fs.length - 1;
    var items = $("timeline").children;
    for (var i = 0; i < items.length; i++) {
      items[i].classList.toggle("current", i === index);
    }
    if (items[index] && items[index].scrollIntoView) {
      items[index].scrollIntoView({block: "nearest"});
    }
    var rows = $("endings").tBodies[0].rows;
    for (var r = 0; r < rows.length; r++) {
      rows[r].classList.toggle("current", rows[r].dataset.spec === spec);
    }
    $("spec").value = spec;
    if (history.replaceState) {
      history.replaceState(null, "", "#spec=" + encodeURIComponent(spec) + "&step=" + (index + 1));
    }
  }
  function go(i) { index = i; show(); }
  function choose(name) { spec = name; buildTimeline(); show(); }
  $("first").addEventListener("click", function () { go(0); });
  $("prev").addEventListener("click", function () { go(index - 1); });
  $("next").addEventListener("click", function () { go(index + 1); });
  $("last").addEventListener("click", function () { go(frames().length - 1); });
  $("spec").addEventListener("change", function () { choose($("spec").value); });
  $("picture").addEventListener("click", function () { $("picture").classList.toggle("zoom"); });
  window.addEventListener("hashchange", function () { fromHash(); buildTimeline(); show(); });
  document.addEventListener("keydown", function (ev) {
    if (ev.target && ev.target.tagName === "SELECT") { return; }
    if (ev.key === "ArrowRight") { go(index + 1); ev.preventDefault(); }
    else if (ev.key === "ArrowLeft") { go(index - 1); ev.preventDefault(); }
    else if (ev.key === "Home") { go(0); ev.preventDefault(); }
    else if (ev.key === "End") { go(frames().length - 1); ev.preventDefault(); }
  });
  buildEndings();
  buildTimeline();
  show();
})();
"""
