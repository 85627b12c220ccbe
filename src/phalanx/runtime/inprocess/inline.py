"""Training in the calling process (``simulation.workers = 0``): no hand-off at all.

For a machine with one core, where a worker process only adds the cost of moving every job
and its result through a pipe. The pool has ``WorkerPool``'s interface; a job runs when its
result is asked for, so a job forgotten first never runs.

The hang guard is SIGALRM: ``setitimer`` arms it for ``hang_guard_s`` before each attempt
and its handler raises ``AttemptHung`` (a ``BaseException``, so a function's ``except
Exception`` does not swallow it) inside the user's function, which comes back as "hang:
...", a timeout to the engine. Its limits, and why worker processes stay the default:
it interrupts Python code only (a function stuck inside one long C call is interrupted when
that call returns to the interpreter), it needs the main thread (where signals are
delivered; elsewhere the pool refuses to run), and nothing isolates the simulation from a
function that crashes the process or corrupts its state. The parent's global generators
(torch, numpy, random), which the training function re-seeds, are restored after each
attempt.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

import numpy as np
import torch

from phalanx.errors import ConfigError, RuntimeBackendError
from phalanx.runtime.inprocess.workers import TrainFn, WorkerJob, WorkerOutcome


class AttemptHung(BaseException):
    """Raised by the SIGALRM guard inside an attempt that outlived ``hang_guard_s``."""


def _hung(signum: int, frame: FrameType | None) -> None:
    raise AttemptHung


@contextmanager
def _globals_kept() -> Iterator[None]:
    """The process's global generators as they were before the block."""
    state = (np.random.get_state(), random.getstate())
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(state[0])
            random.setstate(state[1])


class InlinePool:
    """Runs ``train_fn`` for each job in this process, under a SIGALRM hang guard."""

    def __init__(self, train_fn: TrainFn, *, hang_guard_s: float = 120.0) -> None:
        if not hang_guard_s > 0:
            raise ConfigError(f"InlinePool needs hang_guard_s > 0; got {hang_guard_s}")
        self._train_fn, self._guard = train_fn, hang_guard_s
        self._jobs: dict[int, WorkerJob] = {}

    def run(self, jobs: Sequence[WorkerJob]) -> list[WorkerOutcome]:
        self.submit(jobs)
        return [self.result(job.job_id) for job in jobs]

    def submit(self, jobs: Sequence[WorkerJob]) -> None:
        self._jobs.update((job.job_id, job) for job in jobs)

    def result(self, job_id: int) -> WorkerOutcome:
        job = self._jobs.pop(job_id, None)
        if job is None:
            raise RuntimeBackendError(f"job {job_id} is not in this pool (lost or returned)")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeBackendError(
                "in-process training (simulation.workers = 0) needs the main thread for its "
                "SIGALRM hang guard; run the simulation there or use workers >= 1"
            )
        return self._attempt(job)

    def forget(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)

    def close(self) -> None:
        self._jobs.clear()

    def _attempt(self, job: WorkerJob) -> WorkerOutcome:
        start = time.monotonic()
        try:
            previous = signal.signal(signal.SIGALRM, _hung)
            try:
                signal.setitimer(signal.ITIMER_REAL, self._guard)
                with _globals_kept():
                    tensors, metrics = self._train_fn(job.client_id, job.params, job.meta)
                floats = {str(k): float(v) for k, v in metrics.items()}
            finally:  # disarmed first; an alarm that fires in between is caught below
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        except AttemptHung:
            error = f"hang: no reply within {self._guard:g} s; attempt interrupted"
            return WorkerOutcome(job.job_id, None, {}, error, time.monotonic() - start)
        except Exception as exc:
            error = f"error: {type(exc).__name__}: {exc}"
            return WorkerOutcome(job.job_id, None, {}, error, time.monotonic() - start)
        return WorkerOutcome(job.job_id, tensors, floats, None, time.monotonic() - start)
