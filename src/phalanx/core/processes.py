"""Child processes that die with their parent, however the parent ends (SIGKILL included).

Linux's ``PR_SET_PDEATHSIG`` has the kernel SIGKILL a process when its parent dies; that is
the one guarantee that survives a SIGKILLed coordinator, which runs no cleanup. Workers,
the plot helper and the launcher's children all use it, from here, and all start with
``ONE_THREAD_ENV``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# One thread for every native numerical library of a child process: on a shared machine,
# default thread pools slow every process down when anything else runs (torch's own count
# is set by each child, deliberately).
ONE_THREAD_ENV = {
    name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
}


def kill_me_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies. A no-op where prctl does
    not exist (not Linux): there the parent's own kill on close is all there is. Safe between
    fork and exec (``preexec_fn``)."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def die_with_parent(parent: int) -> None:
    """``kill_me_with_parent``, and exit now if ``parent`` died before it took effect."""
    kill_me_with_parent()
    if os.getppid() != parent:
        os._exit(1)
