"""Jiffies: the kernel's tick count and timeout unit (include/linux/jiffies.h).

Kernel timeouts (``dma_fence_wait_timeout``, ``dma_resv_wait_timeout``,
``schedule_timeout``, timers armed with ``mod_timer``) count jiffies, ticks of
``1/HZ`` seconds.  The simulator derives them from the virtual clock:
``jiffies = clock // TICK_NSEC``.

Simplified: ``HZ`` is 250 (``CONFIG_HZ_250``, the setting of Debian's and
Ubuntu's x86-64 kernels); jiffies start at 0 rather than ``INITIAL_JIFFIES``
(five minutes before the 32-bit wrap) and never wrap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = [
    "HZ",
    "MAX_SCHEDULE_TIMEOUT",
    "NSEC_PER_MSEC",
    "NSEC_PER_SEC",
    "TICK_NSEC",
    "jiffies",
    "jiffies_to_nsecs",
    "msecs_to_jiffies",
]

HZ = 250
NSEC_PER_SEC = 1_000_000_000
NSEC_PER_MSEC = 1_000_000
TICK_NSEC = NSEC_PER_SEC // HZ
MAX_SCHEDULE_TIMEOUT = (1 << 63) - 1
"""``LONG_MAX``: a timeout that never expires."""


def jiffies(kernel: Kernel) -> int:
    """The current tick count."""
    return kernel.clock // TICK_NSEC


def msecs_to_jiffies(m: int) -> int:
    """Milliseconds to jiffies, rounded up (a timeout never ends early)."""
    if m < 0:
        raise ValueError(f"msecs_to_jiffies of a negative time ({m} ms)")
    return -(-m * HZ // 1000)


def jiffies_to_nsecs(j: int) -> int:
    return j * TICK_NSEC
