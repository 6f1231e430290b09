"""One way to watch a kernel (dmabuf_sim.observe), and tracing that costs nothing when off.

Observers of every kind — the tracer, access checkers, instruments — attach to one
per-kernel registry; kernel functions are patched to report calls only while some
kernel listens, and get their own code back afterwards.
"""

from __future__ import annotations

import gc
import mmap
import os
from pathlib import Path
from typing import Any

import pytest

from dmabuf_sim import Kernel
from dmabuf_sim import trace as trace_mod
from dmabuf_sim.coherency import CoherencyChecker
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.mm.memory import handle_mm_fault
from dmabuf_sim.observe import EVENTS, Observers
from dmabuf_sim.trace import call_tracing_active, kernel_function

RW = mmap.PROT_READ | mmap.PROT_WRITE


class Log:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.seen: list[tuple[Any, ...]] = []

    def on_cpu_access(self, pa: int, data: bytes, write: bool, origin: str) -> None:
        self.seen.append(("cpu", write, data))

    def on_entry(self, func: str, args: tuple[Any, ...]) -> None:
        self.seen.append(("entry", func))

    def on_exit(self, func: str, ret: Any, note: str) -> None:
        self.seen.append(("exit", func, note))


def buffer(k: Kernel) -> tuple[Any, int]:
    p = k.spawn("obs")
    fd = EXPORTERS["system_heap"].make_fd(p, 2 * 4096, os.O_RDWR)
    return p, p.mmap(0, 2 * 4096, RW, mmap.MAP_SHARED, fd, 0)


def test_an_observer_hears_the_events_it_has_methods_for_until_detached() -> None:
    k = Kernel("v6.12")
    p, addr = buffer(k)
    log = Log(k)
    detach = k.observe(log)
    assert log in k.observers and k.observers.cpu_access and k.observers.entry
    p.write_memory(addr, b"hi")
    assert ("cpu", True, b"hi") in log.seen
    assert ("entry", "handle_mm_fault") not in log.seen  # a present PTE: no fault
    p.read_memory(addr + 4096, 1)
    assert ("entry", "do_user_addr_fault") not in log.seen  # system heap: remapped in ->mmap
    assert log.seen[-1] == ("cpu", False, b"\0")
    detach()
    detach()  # a second call does nothing
    n = len(log.seen)
    p.write_memory(addr, b"x")
    assert len(log.seen) == n
    assert log not in k.observers and not k.observers.cpu_access and not k.observers.entry


def test_call_hooks_see_every_kernel_function_with_what_it_raised() -> None:
    k = Kernel("v6.12")
    p = k.spawn("obs")
    anon = p.mmap(0, 4096, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    log = Log(k)
    detach = k.observe(log)
    with pytest.raises(Exception, match="SIGSEGV"):
        p.write_memory(anon, b"x")  # read-only: do_user_addr_fault raises
    detach()
    assert ("entry", "do_user_addr_fault") in log.seen
    assert ("exit", "do_user_addr_fault", "raised SIGSEGV") in log.seen


def test_several_observers_of_one_event_hear_it_in_attach_order() -> None:
    k = Kernel("v6.12")
    p, addr = buffer(k)
    order: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def on_cpu_access(self, *args: Any) -> None:
            order.append(self.name)

    first, second = Named("a"), Named("b")
    k.observe(first)
    undo = k.observe(second)
    checker = CoherencyChecker.attach(k)
    p.write_memory(addr, b"z")
    assert order == ["a", "b"]
    assert checker.checked_reads == 0
    p.read_memory(addr, 1)
    assert checker.checked_reads == 1 and not checker.stale
    undo()
    p.read_memory(addr, 1)
    assert order == ["a", "b", "a", "b", "a"]


def test_an_object_that_watches_nothing_is_refused() -> None:
    with pytest.raises(TypeError, match="no on_<event> method"):
        Kernel("v6.12").observe(object())


def test_add_observer_takes_the_older_method_names() -> None:
    k = Kernel("v6.12")
    p, addr = buffer(k)
    seen: list[bytes] = []

    class Old:
        def cpu_access(self, pa: int, data: bytes, write: bool, origin: str) -> None:
            seen.append(data)

        def device_access(self, dev: Any, pa: int, data: bytes, write: bool) -> None:
            pass

        def memory_reset(self, pfn: int, npages: int) -> None:
            pass

    remove = k.add_observer(Old())
    p.write_memory(addr, b"old")
    remove()
    p.write_memory(addr, b"new")
    assert seen == [b"old"]


def test_every_event_is_an_empty_tuple_until_watched() -> None:
    obs = Observers()
    assert all(getattr(obs, event) == () for event in EVENTS)
    assert "nothing" in repr(obs)


# -- the code patch -------------------------------------------------------------------------------


class Base:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def size(self, n: int) -> int:
        return n


class Child(Base):
    @kernel_function("test_child_size", file="(test)")
    def size(self, n: int, *, extra: int = 1) -> int:
        return super().size(n) + extra  # super(): a closure over __class__


@kernel_function("test_defaults", file="(test)")
def with_defaults(kernel: Kernel, a: int, b: int = 2, *, c: int = 3) -> int:
    return a + b + c


def test_a_patched_function_keeps_its_arguments_defaults_and_closure() -> None:
    gc.collect()
    k = Kernel("v6.12")
    own = with_defaults.__code__
    assert with_defaults(k, 1) == 6 and Child(k).size(10) == 11
    with k.trace() as events:
        assert call_tracing_active()
        assert with_defaults.__code__ is not own
        assert with_defaults(k, 1) == 6
        assert with_defaults(k, 1, 5, c=0) == 6
        assert Child(k).size(10) == 11
        assert Child(k).size(10, extra=5) == 15
    assert with_defaults.__code__ is own
    assert with_defaults.__defaults__ == (2,) and with_defaults.__kwdefaults__ == {"c": 3}
    assert [e.func for e in events if e.kind == "entry"] == [
        "test_defaults",
        "test_defaults",
        "test_child_size",
        "test_child_size",
    ]
    assert [e.ret for e in events if e.kind == "exit"] == [6, 6, 11, 15]


def test_a_function_declared_while_tracing_is_patched_at_once() -> None:
    k = Kernel("v6.12", trace=True)

    @kernel_function("test_late", file="(test)")
    def late(kernel: Kernel) -> int:
        return 7

    k.tracer.clear()  # the boot
    assert late(k) == 7
    assert [e.func for e in k.tracer.events if e.kind == "entry"] == ["test_late"]
    k.tracer.enabled = False
    assert late.__code__ is late.__kernel_function__.code  # type: ignore[attr-defined]


def test_kernel_function_refuses_what_is_not_a_function() -> None:
    with pytest.raises(TypeError, match="plain function"):
        kernel_function("nope", file="(test)")(len)  # type: ignore[arg-type]


def test_the_fault_path_is_its_own_code_while_nobody_traces() -> None:
    gc.collect()
    assert not call_tracing_active()
    kf = handle_mm_fault.__kernel_function__  # type: ignore[attr-defined]
    assert handle_mm_fault.__code__ is kf.code
    assert trace_mod.KERNEL_FUNCTIONS["handle_mm_fault"].file == "mm/memory.c"


def test_the_readme_python_examples_run_and_the_observer_prints_what_it_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```python\n")[1:3]
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(block.split("```", 1)[0], namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "CPU (pid 1, va 0x7effffffd000) b'seen'"
    assert not namespace["k"].observers.cpu_access  # detached
