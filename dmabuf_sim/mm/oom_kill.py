"""The OOM killer, as a page fault reaches it (mm/oom_kill.c).

A user page fault whose handler returns ``VM_FAULT_OOM`` ends in
``pagefault_out_of_memory`` → ``out_of_memory``, which picks a victim and
sends it ``SIGKILL``; the victim dies on its way back to userspace.

Simplified: the victim is always the faulting task, as with the
``vm.oom_kill_allocating_task=1`` sysctl (the kernel's default instead ranks
every task by ``oom_badness``).  Kernel allocations never invoke the OOM
killer here: they fail at once (see :mod:`.page_alloc`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import SIGKILL
from ..trace import kernel_function

if TYPE_CHECKING:
    from .mmap import MmStruct

__all__ = ["pagefault_out_of_memory"]


@kernel_function("pagefault_out_of_memory", file="mm/oom_kill.c")
def pagefault_out_of_memory(mm: MmStruct, addr: int) -> SIGKILL:
    """Kill the faulting task: queue ``SIGKILL`` and return the signal to raise.

    The syscall-return path (:meth:`~dmabuf_sim.process.Process`) sees the
    fatal signal and runs ``do_exit``, which gives every page back."""
    proc = mm.owner
    pid = proc.pid if proc is not None else 0
    tracer = mm.kernel.tracer
    if tracer.enabled:
        comm = proc.comm if proc is not None else "?"
        tracer.event("oom_kill_process", f"Out of memory: Killed process {pid} ({comm})")
    if proc is not None:
        proc.fatal_signal_pending = True
    return SIGKILL(addr, pid)
