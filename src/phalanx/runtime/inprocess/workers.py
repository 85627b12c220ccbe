"""Worker processes that run a user's per-client training function under a wall-clock guard.

The simulation uses this pool for training it cannot batch. Workers are forked, so they inherit
``train_fn`` and all it closes over without pickling; parent and worker then exchange bytes
only (frames of the one codec, ``core.codec``: 4-byte length, JSON header, safetensors),
and nothing that crossed is unpickled.

The hand-off is amortised: an idle worker gets a share of the queued jobs that train on the
same weights in one message, the weights once. Shares are balanced by each job's cost (its
local steps; ``shares.planned_share``), so a round's workers finish together instead of one
waiting on another's big client. A worker answers each job as soon as it is done, so the
parent can use one result while the worker trains the next, and the hang guard still times
each job on its own. ``start`` forks the workers ahead of the first job, so the first round
does not wait for them. A worker is sent work only when idle: it never has a
reply and a request in flight at once, so a large model cannot fill both pipes and deadlock.

``WorkerOutcome.error`` is None, ``"error: ..."`` (the function raised; the worker lives on),
``"crash: ..."`` (the worker died) or ``"hang: ..."`` (no reply within ``hang_guard_s``: the
worker is SIGKILLed). Dead workers are replaced when next needed. Workers are daemonic (a
user's function cannot start processes), and die with the coordinator however it ends,
SIGKILL included: each asks the kernel for SIGKILL when its parent dies (Linux
``PR_SET_PDEATHSIG``) and exits at once if the parent is already gone. While a batch runs,
a stop signal to the coordinator (``phalanx.coordinator.stop_requested``) ends it within
``_STOP_POLL_S``: the workers are killed and ``RunInterrupted`` is raised.

libgomp is not fork-safe: a worker forked from a parent that ran torch on several threads
hangs in its first multi-threaded kernel, so workers get ``threads_per_worker`` threads only
while the parent's torch runs on one.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkProcess
from typing import Any

import torch

from phalanx.coordinator.signals import RunInterrupted, stop_requested
from phalanx.core.codec import pack_frame, unpack_frame
from phalanx.core.processes import die_with_parent
from phalanx.errors import ConfigError, ProtocolError, RuntimeBackendError
from phalanx.runtime.inprocess.shares import planned_share

log = logging.getLogger("phalanx.runtime.workers")

Tensors = dict[str, torch.Tensor]
TrainFn = Callable[[int, Tensors, dict[str, Any]], tuple[Tensors, dict[str, float]]]
_REAP_S = 5.0  # bound on waiting for a killed worker to be reaped
_CLOSE_GRACE_S = 1.0  # idle workers exit on EOF; busy ones are killed after this
_STOP_POLL_S = 0.1  # how often a running batch looks for a stop signal


@dataclass(frozen=True)
class WorkerJob:
    job_id: int
    client_id: int
    params: Tensors
    meta: dict[str, Any]  # JSON-serialisable
    cost: float = 1.0  # relative work (local steps): what shares are balanced by


@dataclass(frozen=True)
class WorkerOutcome:
    """New tensors by name, or None and the reason ("hang: ..." / "crash: ..." / "error: ...")."""

    job_id: int
    tensors: Tensors | None
    metrics: dict[str, float]
    error: str | None
    wall_s: float


def _answer(train_fn: TrainFn, job: dict[str, Any], params: Tensors) -> bytes:
    reply: dict[str, Any] = {"job_id": job["job_id"], "metrics": {}, "error": None}
    try:
        tensors, metrics = train_fn(job["client_id"], params, job["meta"])
        reply["metrics"] = {str(k): float(v) for k, v in metrics.items()}
        return pack_frame(reply, tensors)
    except Exception as exc:
        reply["metrics"], reply["error"] = {}, f"error: {type(exc).__name__}: {exc}"
        return pack_frame(reply, None)


def _answer_all(train_fn: TrainFn, request: bytes) -> Iterator[bytes]:
    """One reply per job of ``request``, in order, each as soon as it is computed."""
    header, params = unpack_frame(request)
    for job in header["jobs"]:
        yield _answer(train_fn, job, params or {})


def _serve(
    conn: Connection,
    train_fn: TrainFn,
    threads: int,
    inherited: list[Connection],
    parent: int,
) -> None:
    """A worker's life: answer each request's jobs, one reply per job, until the parent
    closes the pipe."""
    die_with_parent(parent)
    for other in inherited:  # the parent's ends: holding them would hide the parent's EOF
        other.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for sig in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)  # never poke the parent's event loop
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # refused once inter-op work has started
        torch.set_num_interop_threads(threads)
    while True:
        try:
            for reply in _answer_all(train_fn, conn.recv_bytes()):
                conn.send_bytes(reply)
        except (EOFError, OSError):
            return


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "crash: worker lost, exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"crash: killed by signal {signal.Signals(-code).name}"
        return f"crash: killed by signal {-code}"
    return f"crash: exit code {code}"


@dataclass
class _Slot:
    proc: ForkProcess
    conn: Connection
    jobs: deque[WorkerJob] = field(default_factory=deque)  # sent, unanswered, in order
    started: float = 0.0  # when the first of ``jobs`` started (as far as the parent knows)


class WorkerPool:
    """Runs ``train_fn`` for each job on up to ``workers`` forked processes.

    ``run(jobs)`` blocks until every job has an outcome. ``submit`` and ``result`` split it:
    jobs submitted together start at once, and each ``result`` waits for one of them while
    the others go on; ``forget`` drops a job whose outcome is no longer wanted.
    """

    def __init__(
        self,
        train_fn: TrainFn,
        *,
        workers: int = 2,
        threads_per_worker: int = 1,
        hang_guard_s: float = 120.0,
    ) -> None:
        if workers < 1 or threads_per_worker < 1 or not hang_guard_s > 0:
            raise ConfigError(
                "WorkerPool needs workers >= 1, threads_per_worker >= 1, hang_guard_s > 0; "
                f"got {workers}, {threads_per_worker}, {hang_guard_s}"
            )
        try:
            self._ctx = mp.get_context("fork")
        except ValueError as exc:
            raise RuntimeBackendError("WorkerPool needs the 'fork' start method") from exc
        self._train_fn, self._threads, self._guard = train_fn, threads_per_worker, hang_guard_s
        self._slots: list[_Slot | None] = [None] * workers
        self._queue: deque[WorkerJob] = deque()
        self._wanted: set[int] = set()  # submitted, not yet returned nor forgotten
        self._done: dict[int, WorkerOutcome] = {}
        self._closed = False

    def start(self) -> None:
        """Fork every worker not yet running, ahead of the first job (a worker that dies
        later is replaced when next needed)."""
        if self._closed:
            raise RuntimeBackendError("WorkerPool used after close()")
        for i, slot in enumerate(self._slots):
            if slot is None:
                self._slots[i] = self._spawn()

    def run(self, jobs: Sequence[WorkerJob]) -> list[WorkerOutcome]:
        """Run every job; block until each has an outcome; return them in job order."""
        self.submit(jobs)
        return [self.result(job.job_id) for job in jobs]

    def submit(self, jobs: Sequence[WorkerJob]) -> None:
        """Queue ``jobs`` (ids unique among those not yet returned) and start what can."""
        if self._closed:
            raise RuntimeBackendError("WorkerPool used after close()")
        self._queue.extend(jobs)
        self._wanted.update(job.job_id for job in jobs)
        self._guarded(self._dispatch)

    def result(self, job_id: int) -> WorkerOutcome:
        """Block until job ``job_id`` has an outcome and return it."""
        while job_id not in self._done:  # each pass ends a job or waits out a deadline
            if job_id not in self._wanted:
                raise RuntimeBackendError(f"job {job_id} is not in this pool (lost or returned)")
            self._guarded(self._pump)
        self._wanted.discard(job_id)
        return self._done.pop(job_id)

    def forget(self, job_id: int) -> None:
        """The outcome of ``job_id`` is not wanted: drop it, or never run it if queued."""
        self._wanted.discard(job_id)
        self._done.pop(job_id, None)

    def close(self) -> None:
        self._closed = True
        self._shutdown(_CLOSE_GRACE_S)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException:  # workers hold jobs we no longer track
            self._shutdown(0.0)
            self._queue.clear()
            self._wanted.clear()
            self._done.clear()
            raise

    def _pump(self) -> None:
        self._dispatch()
        self._collect()
        signum = stop_requested()  # a waiting batch still hears the coordinator's stop
        if signum is not None:
            raise RunInterrupted(signum)

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe()
        inherited = [s.conn for s in self._slots if s is not None] + [parent]
        threads = self._threads if torch.get_num_threads() == 1 else 1  # libgomp: see above
        if threads < self._threads:
            log.warning("multi-threaded parent: workers get 1 thread, not %s", self._threads)
        args = (child, self._train_fn, threads, inherited, os.getpid())
        proc = self._ctx.Process(target=_serve, args=args, daemon=True)
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def _share(self, asker: int) -> list[WorkerJob]:
        """Idle worker ``asker``'s share of the queue: of the jobs at its head that train
        on the head's weights, its part of a plan balanced by cost (``planned_share``)."""
        while self._queue and self._queue[0].job_id not in self._wanted:
            self._queue.popleft()  # forgotten before it started
        if not self._queue:
            return []
        weights = self._queue[0].params
        head: list[int] = []  # positions of the wanted jobs on the head's weights
        for position, job in enumerate(self._queue):
            if job.params is not weights:
                break
            if job.job_id in self._wanted:
                head.append(position)
        others = [
            sum(job.cost for job in slot.jobs) if slot is not None else 0.0
            for i, slot in enumerate(self._slots)
            if i != asker
        ]
        picked = planned_share([self._queue[p].cost for p in head], others)
        taken = {head[k] for k in picked}
        share = [self._queue[p] for p in sorted(taken)]
        self._queue = deque(job for p, job in enumerate(self._queue) if p not in taken)
        return share

    def _dispatch(self) -> None:
        for i, slot in enumerate(self._slots):
            if slot is not None and slot.jobs:
                continue
            share = self._share(i)
            if not share:
                return
            if slot is None or not slot.proc.is_alive():
                self._stop(i, 0.0)
                slot = self._slots[i] = self._spawn()
            slot.jobs.extend(share)
            slot.started = time.monotonic()
            header = {
                "jobs": [
                    {"job_id": j.job_id, "client_id": j.client_id, "meta": j.meta} for j in share
                ]
            }
            try:
                slot.conn.send_bytes(pack_frame(header, share[0].params))
            except OSError:
                self._lost(i, slot, None)

    def _collect(self) -> None:
        busy = [(i, s) for i, s in enumerate(self._slots) if s is not None and s.jobs]
        if not busy:
            return
        timeout = min(s.started for _, s in busy) + self._guard - time.monotonic()
        objs = [o for _, s in busy for o in (s.conn, s.proc.sentinel)]
        ready = set(wait(objs, min(max(0.0, timeout), _STOP_POLL_S)))
        for i, slot in busy:
            if slot.conn in ready:
                self._receive(i, slot)
            elif slot.proc.sentinel in ready:
                self._lost(i, slot, None)
            elif time.monotonic() >= slot.started + self._guard:
                self._lost(i, slot, f"hang: no reply within {self._guard:g} s; worker killed")

    def _receive(self, i: int, slot: _Slot) -> None:
        """Every reply ``slot`` has ready, each ending its oldest job."""
        while slot.jobs and slot.conn.poll():
            try:
                header, tensors = unpack_frame(slot.conn.recv_bytes())
                if header.get("job_id") != slot.jobs[0].job_id:
                    raise ProtocolError(f"reply for job {header.get('job_id')!r}")
            except (EOFError, OSError):
                self._lost(i, slot, None)
                return
            except ProtocolError as exc:  # a garbled reply: that worker is not to be trusted
                self._lost(i, slot, f"crash: unreadable reply ({exc})")
                return
            job, now = slot.jobs.popleft(), time.monotonic()
            outcome = WorkerOutcome(
                job.job_id, tensors, header["metrics"], header["error"], now - slot.started
            )
            slot.started = now  # the next job started no earlier than this reply was read
            self._finish(outcome)

    def _finish(self, outcome: WorkerOutcome) -> None:
        if outcome.job_id in self._wanted:
            self._done[outcome.job_id] = outcome

    def _lost(self, i: int, slot: _Slot, reason: str | None) -> None:
        """Stop slot i's worker: its current job fails (``reason`` None: it died, and its
        exit code says why); the jobs it had not started go back to the queue's head."""
        job, rest = slot.jobs[0], list(slot.jobs)[1:]
        wall = time.monotonic() - slot.started
        code = self._stop(i, 0.0 if reason else _REAP_S)
        reason = reason or _exit_reason(code)
        log.warning("worker job %s (client %s): %s", job.job_id, job.client_id, reason)
        self._queue.extendleft(reversed(rest))
        self._finish(WorkerOutcome(job.job_id, None, {}, reason, wall))

    def _stop(self, i: int, grace_s: float) -> int | None:
        """Free slot i: close its pipe, give its worker ``grace_s`` to exit, then SIGKILL it."""
        slot, self._slots[i] = self._slots[i], None
        if slot is None:
            return None
        slot.conn.close()
        slot.proc.join(grace_s)
        if slot.proc.exitcode is None:
            slot.proc.kill()
            slot.proc.join(_REAP_S)
        code = slot.proc.exitcode
        if code is not None:
            slot.proc.close()
        return code

    def _shutdown(self, grace_s: float) -> None:
        for slot in self._slots:  # idle workers see EOF and exit on their own
            if slot is not None:
                slot.conn.close()
        deadline = time.monotonic() + grace_s
        for i in range(len(self._slots)):
            self._stop(i, max(0.0, deadline - time.monotonic()))
