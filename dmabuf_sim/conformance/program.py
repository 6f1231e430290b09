"""Programs of machine steps: record them, replay them, shrink them, print them.

A :class:`Program` is a list of :class:`Call` s on a :class:`~.machine.DmaBufMachine`;
an argument that is an object an earlier step made is a :class:`Ref` to that
step's result, so a program can lose steps and still mean the same thing.
:func:`replay` runs a program on a fresh machine; :func:`shrink` removes every
step the failure does not need (dropping the steps that depend on a removed
one with it); :func:`reproducer` prints the program as a self-contained Python
snippet — imports, the machine bound to the exporter and spec, every step —
that raises the same finding when run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from .machine import DmaBufMachine, KitError, _Precondition
from .sanitizers import RuleViolation

if TYPE_CHECKING:
    from .sanitizers import Finding

__all__ = ["Call", "Failure", "Program", "Ref", "replay", "reproducer", "shrink", "simplify"]


@frozen
class Ref:
    """The ``index``-th object step ``step`` returned."""

    step: int
    index: int = 0


@frozen
class Call:
    method: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def refs(self) -> Iterable[Ref]:
        for value in (*self.args, *(v for _k, v in self.kwargs)):
            if isinstance(value, Ref):
                yield value


Program = list[Call]


@define
class Failure:
    """A program that broke a rule: the findings and the step (index) that raised them."""

    findings: list[Finding]
    step: int
    program: Program
    notes: list[str] = field(factory=list)

    @property
    def rule(self) -> str:
        return self.findings[0].rule


@define
class Run:
    """What one replay did: the calls actually run, and the failure if any."""

    executed: Program
    failure: Failure | None
    names: list[tuple[str, ...]]
    """Per executed call, the names of what it returned (``""`` for None)."""
    invalid: bool = False


def replay(machine: type[DmaBufMachine], program: Program, *, lenient: bool = False) -> Run:
    """Run ``program`` on a fresh machine.

    A call whose references are missing (an earlier step was left out, or
    returned None) or whose precondition fails is skipped when ``lenient``
    (directed programs adapt to what an exporter supports); otherwise the run
    is *invalid*.  Stops at the first failure.
    """
    state = machine()
    env: dict[Ref, Any] = {}
    executed: Program = []
    names: list[tuple[str, ...]] = []
    new_index: dict[int, int] = {}  # old step index -> index in executed
    for i, call in enumerate(program):
        try:
            args = tuple(_resolve(v, env) for v in call.args)
            kwargs = {k: _resolve(v, env) for k, v in call.kwargs}
        except KeyError:
            if lenient:
                continue
            return Run(executed, None, names, invalid=True)
        renamed = _renumber(call, new_index)
        try:
            result = getattr(state, call.method)(*args, **kwargs)
        except _Precondition:
            if lenient:
                continue
            return Run(executed, None, names, invalid=True)
        except RuleViolation as exc:
            new_index[i] = len(executed)
            executed.append(renamed)
            names.append(())
            notes = list(getattr(exc, "__notes__", []))
            return Run(
                executed, Failure(list(exc.findings), len(executed) - 1, executed, notes), names
            )
        new_index[i] = len(executed)
        executed.append(renamed)
        values = result if isinstance(result, tuple) else (result,)
        names.append(tuple(getattr(v, "name", "") if v is not None else "" for v in values))
        for j, v in enumerate(values):
            if v is not None:
                env[Ref(i, j)] = v
    return Run(executed, None, names)


def _resolve(value: Any, env: dict[Ref, Any]) -> Any:
    if isinstance(value, Ref):
        return env[value]  # KeyError: the step that made it is gone or returned None
    return value


def _renumber(call: Call, new_index: dict[int, int]) -> Call:
    def fix(v: Any) -> Any:
        return Ref(new_index[v.step], v.index) if isinstance(v, Ref) else v

    return Call(
        call.method, tuple(fix(a) for a in call.args), tuple((k, fix(v)) for k, v in call.kwargs)
    )


def without(program: Program, drop: int, count: int = 1) -> Program:
    """``program`` without steps ``drop .. drop+count-1`` and every step using what they made."""
    gone = set(range(drop, min(drop + count, len(program))))
    for i in range(drop + 1, len(program)):
        if i not in gone and any(r.step in gone for r in program[i].refs()):
            gone.add(i)
    index: dict[int, int] = {}
    out: Program = []
    for i, call in enumerate(program):
        if i in gone:
            continue
        index[i] = len(out)
        out.append(_renumber(call, index))
    return out


def shrink(
    machine: type[DmaBufMachine],
    failure: Failure,
    *,
    same: Callable[[Failure], bool] | None = None,
    budget: int = 400,
) -> Failure:
    """Remove every step the failure does not need (one at a time, from the end, to a fixpoint).

    ``same`` decides whether a candidate still shows the failure (default: the
    same first rule); ``budget`` bounds the replays.  A step is removed with
    every step that uses what it made; a candidate the protocol does not allow
    (a read outside the bracket it needed) is not taken.
    """
    rule = failure.rule
    is_same = same or (lambda f: f.rule == rule)
    best = failure
    improved = True
    while improved and budget > 0:
        improved = False
        # windows of 4, then 2, then single steps: a SYNC START/END pair or an
        # attach+map go together, and neither half can go alone
        for width in (4, 2, 1):
            program = best.program[: best.step + 1]
            i = len(program) - width
            while i >= 0 and budget > 0:
                candidate = without(program, i, width)
                i -= 1
                if not candidate:
                    continue
                budget -= 1
                found = _still_fails(machine, candidate, is_same)
                if found is not None:
                    best = found
                    program = best.program[: best.step + 1]
                    i = min(i, len(program) - width)
                    improved = True
    return best


def simplify(
    machine: type[DmaBufMachine],
    failure: Failure,
    *,
    same: Callable[[Failure], bool] | None = None,
    budget: int = 60,
) -> Failure:
    """Shorten the data of the steps that remain (a written or read length of one byte often
    shows the same thing), keeping every change the failure survives."""
    rule = failure.rule
    is_same = same or (lambda f: f.rule == rule)
    best = failure
    for i in range(best.step + 1):
        for key, value in best.program[i].kwargs:
            for candidate in _smaller(key, value):
                if budget <= 0:
                    return best
                budget -= 1
                program = best.program[: best.step + 1]
                call = program[i]
                kwargs = tuple((k, candidate if k == key else v) for k, v in call.kwargs)
                program[i] = Call(call.method, call.args, kwargs)
                found = _still_fails(machine, program, is_same)
                if found is not None:
                    best = found
                    break
    return best


def _smaller(key: str, value: Any) -> list[Any]:
    if isinstance(value, bytes) and len(value) > 1:
        return [value[:1], value[: len(value) // 2]]
    if key == "n" and isinstance(value, int) and value > 1:
        return [1, value // 2]
    return []


def _still_fails(
    machine: type[DmaBufMachine], program: Program, is_same: Callable[[Failure], bool]
) -> Failure | None:
    run = replay(machine, program)
    if run.failure is None and not run.invalid and not _ends_in_teardown(program):
        run = replay(machine, [*program, Call("teardown")])  # a leak shows at teardown
    if run.failure is not None and is_same(run.failure):
        return run.failure
    return None


def _ends_in_teardown(program: Program) -> bool:
    return bool(program) and program[-1].method == "teardown"


def reproducer(machine: type[DmaBufMachine], failure: Failure) -> str:
    """The failing program as a self-contained Python snippet (imports, binding, every step)."""
    program = failure.program[: failure.step + 1]
    run = replay(machine, program)
    cls = machine.__name__
    lines = []
    if machine.target:
        lines += [
            "from dmabuf_sim.conformance import make_machine",
            "",
            f"{cls} = make_machine({machine.target!r}, {machine.spec!r})",
        ]
    else:
        lines += [
            f"# {cls} = make_machine(<your exporter>, {machine.spec!r})"
            "  (it has no importable name)"
        ]
    lines.append(f"state = {cls}()")
    names = run.names
    for i, call in enumerate(run.executed):
        text = "state." + _format(call, run.executed, names)
        results = names[i] if i < len(names) else ()
        if any(results):
            text = f"{', '.join(n or '_' for n in results)} = {text}"
        if run.failure is not None and i == run.failure.step:
            text += f"  # {run.failure.rule}"
        lines.append(text)
    return "\n".join(lines)


def _format(call: Call, program: Program, names: list[tuple[str, ...]]) -> str:
    def lit(v: Any) -> str:
        if isinstance(v, Ref):
            return names[v.step][v.index]
        return repr(v)

    parts = [lit(a) for a in call.args] + [f"{k}={lit(v)}" for k, v in call.kwargs]
    return f"{call.method}({', '.join(parts)})"


def check_replays(text: str, machine: type[DmaBufMachine], rule: str) -> str:
    """Run a printed reproducer; returns "" if it raises ``rule``, else what went wrong."""
    namespace: dict[str, Any] = {machine.__name__: machine}
    try:
        exec(compile(text, "<reproducer>", "exec"), namespace)
    except RuleViolation as exc:
        return "" if exc.rule == rule else f"it raised {exc.rule} instead of {rule}"
    except KitError:
        raise
    except Exception as exc:
        return f"it raised {type(exc).__name__}: {exc}"
    return "it raised nothing"
