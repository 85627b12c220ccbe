"""How the ``phalanx`` process ends: without the interpreter's teardown once a command has
said that everything it wrote is durable.

At exit the interpreter tears every module down and frees torch's ~190k objects one by one
(about 0.1 s, a twentieth of the default run) to return memory the kernel reclaims anyway.
A command that has fsynced its outputs, closed its files, reaped its child processes and
released its locks calls ``outputs_durable``; ``leave`` then does what exiting must still
do (join the threads a normal exit would wait for, run the ``atexit`` callbacks, shut
logging down, flush stdout and stderr) and ends the process with ``os._exit``. Without that
call (another command, a bug's traceback, ``main`` called in-process by a test) or while a
non-daemon thread is still running, it leaves the ordinary way, ``sys.exit``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import NoReturn

_JOIN_S = 0.1  # for non-daemon threads, which a normal exit waits for: ours have ended
_durable = threading.Event()


def outputs_durable() -> None:
    """Declare that nothing this process wrote still needs the interpreter to reach disk."""
    _durable.set()


def forget() -> None:
    """Withdraw the declaration (``main`` starts each invocation from here)."""
    _durable.clear()


def exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` would end with (a message goes to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def leave(code: int | str | None) -> NoReturn:
    """End the process with ``code``: at once if outputs are durable and no thread keeps
    it, else through the interpreter's ordinary exit."""
    if not _durable.is_set() or not _threads_ended(time.monotonic() + _JOIN_S):
        sys.exit(code)
    status = exit_status(code)
    atexit._run_exitfuncs()  # what a normal exit runs after the threads end
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            status = status or 120  # the interpreter's own status for a failed flush
    os._exit(status)


def _threads_ended(deadline: float) -> bool:
    """Join the non-daemon threads (as exiting would) until ``deadline``; all ended?"""
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            return False
    return True
