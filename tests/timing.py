"""Wall-clock bounds that hold on a quiet machine and on a loaded one.

A bound on how long something took is a property of the code only while the machine is not
the bottleneck: under a load average of several runnable tasks per CPU a process start, a
plot or a sweep thread's wake-up waits its turn for seconds. ``bound_s`` keeps the quiet
machine's bound and stretches it by the load per CPU (the larger of the 1-minute load
average now and ``load_before``, read when the timed work began), never below it.
"""

from __future__ import annotations

import os


def load_per_cpu() -> float:
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def bound_s(quiet_s: float, load_before: float = 0.0) -> float:
    """``quiet_s`` on a quiet machine; times the load per CPU past one runnable task each."""
    return quiet_s * max(1.0, load_before, load_per_cpu())
