"""Device work on the virtual clock, for tests and scenarios.

What a GPU driver does around a job, reduced to what the peer test suites need
(IGT's dummy loads and spinners, the dma-buf selftests' mock fences):

* :func:`device_job` — a job whose fence the device signals at a given virtual
  time (or never: a hung job);
* :func:`device_job_after` — a job that starts once other fences have signalled
  (its dependencies: a render job waiting for an implicit write fence) and
  runs for a given time;
* :func:`signal_at` — an event that signals a fence at a time, optionally with an
  error first: a driver's hang check or timeout handler;
* :func:`attach_fence` — make a fence an implicit fence of a buffer, as a
  writer (exclusive) or a reader (shared), in the form the spec's ``dma_resv``
  has (usages since 5.19, slots before);
* :func:`interrupt_at` — an event that leaves a signal pending on a process at
  a time (an ``alarm()``/``setitimer`` signal), so an interruptible wait in
  progress returns ``-ERESTARTSYS`` (userspace: ``EINTR``).

Every job fence's ``work`` runs just before it signals (e.g. the device's DMA
writes).  Times are nanoseconds of the kernel's virtual clock; nothing happens
until a task sleeps or the clock is advanced (:mod:`dmabuf_sim.wait`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..kstate import Key
from .dma_fence import DmaFence, dma_fence_set_error, dma_fence_signal
from .dma_resv import DmaResvUsage

if TYPE_CHECKING:
    from ..kernel import Kernel, Timer
    from ..process import Process
    from .core import DmaBuf

__all__ = ["attach_fence", "device_job", "device_job_after", "interrupt_at", "signal_at"]


DEVICE_JOB_SEQNOS: Key[dict[str, int]] = Key("device_job_seqnos")
"""The last seqno handed out per fence context by the simulated device jobs."""


def _next_seqno(kernel: Kernel, context: str) -> int:
    """Seqnos count up per context, as a ring's fences do."""
    seqnos = kernel.subsys.setdefault(DEVICE_JOB_SEQNOS, dict)
    seqnos[context] = seqnos.get(context, 0) + 1
    return seqnos[context]


def _time(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (ns of virtual time), not {type(value).__name__}")
    return value


def device_job(
    kernel: Kernel,
    done_at: int | None,
    *,
    context: str = "gpu",
    work: Callable[[], None] | None = None,
) -> DmaFence:
    """A job the device finishes at virtual time ``done_at``: its fence signals then.

    ``done_at=None`` is a job that never finishes by itself (a hang); only
    :func:`signal_at`, a driver or the test can signal it.  ``work`` runs just before
    the signal.
    """
    if done_at is not None:
        _time("done_at", done_at)
    fence = DmaFence(kernel, context, _next_seqno(kernel, context), completes_at=done_at)
    if work is not None:
        fence.work.append(work)
    return fence


def device_job_after(
    kernel: Kernel,
    deps: Iterable[DmaFence],
    duration: int,
    *,
    context: str = "gpu",
    work: Callable[[], None] | None = None,
) -> DmaFence:
    """A job that starts when every fence of ``deps`` has signalled and runs ``duration`` ns.

    This is how a driver honours implicit sync: a job on a buffer waits (on the GPU, not
    in a task) for the buffer's fences.  Simplified: a dependency's error is not passed on.
    """
    _time("duration", duration)
    if duration < 0:
        raise ValueError(f"duration must be >= 0 ns, not {duration}")
    deps = list(deps)
    fence = DmaFence(kernel, context, _next_seqno(kernel, context))
    if work is not None:
        fence.work.append(work)

    def start() -> None:
        fence.timer = kernel.schedule(
            kernel.clock + duration, _signal_if_pending(fence), name=f"{fence.trace_name()} done"
        )

    def dep_done(_f: DmaFence) -> None:
        if all(d.signaled for d in deps):
            start()

    pending = [d for d in deps if not d.signaled]
    if not pending:
        start()
    for d in pending:
        d.add_callback(dep_done)
    return fence


def _signal_if_pending(fence: DmaFence, error: int = 0) -> Callable[[], None]:
    def fire() -> None:
        if fence.signaled:
            return
        if error:
            dma_fence_set_error(fence, error)
        dma_fence_signal(fence)

    return fire


def signal_at(kernel: Kernel, fence: DmaFence, at: int, *, error: int = 0) -> Timer:
    """An event that signals ``fence`` at ``at`` if it is still pending, setting ``error``
    (a negative errno such as ``-ETIMEDOUT``) first: a hang check cancelling a job."""
    _time("at", at)
    if error and not -4095 <= error < 0:
        raise ValueError(f"error must be a negative errno (e.g. -errno.ETIMEDOUT), not {error}")
    what = f"signal {fence.trace_name()}" + (f" with {error}" if error else "")
    return kernel.schedule(at, _signal_if_pending(fence, error), name=what)


def attach_fence(dmabuf: DmaBuf, fence: DmaFence, *, write: bool) -> None:
    """Make ``fence`` an implicit fence of ``dmabuf``: its writer, or one of its readers.

    The resv lock is taken around ``dma_resv_add_fence`` with usage WRITE or READ (5.19+),
    or — specs without usages — ``dma_resv_add_excl_fence`` / ``dma_resv_add_shared_fence``.
    """
    resv = dmabuf.resv
    if resv is None:
        raise ValueError(
            f"spec {dmabuf.kernel.spec.name} has no dma_resv: implicit fences arrived in 3.17"
        )
    resv.lock()
    try:
        resv.add_fence(fence, DmaResvUsage.WRITE if write else DmaResvUsage.READ)
    finally:
        resv.unlock()


def interrupt_at(proc: Process, at: int) -> Timer:
    """An event that leaves a signal pending on ``proc`` at ``at`` (an alarm's SIGALRM with
    a handler installed): interruptible waits then end with ``-ERESTARTSYS``/``EINTR``.
    Clear ``proc.signal_pending`` to model the handler having run."""
    _time("at", at)

    def deliver() -> None:
        proc.signal_pending = True

    return proc.kernel.schedule(at, deliver, name=f"signal for {proc.trace_name()}")
