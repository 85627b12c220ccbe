"""The client process's loop: pull a task, fetch its model, train, push; until FINISHED.

One task at a time, each bounded by its time-to-live counted from its arrival here:

1. a task the coordinator already cancelled (heartbeat replies) is dropped, and so is a task
   of an epoch below the highest seen (its leader was deposed; the new one redoes the
   round), before training and again before its push or failure report;
2. the model is fetched once per version (``ModelCache``); a version the coordinator no
   longer holds ends the task quietly (it is over);
3. the partial-work decision (``steps_to_do``, with this client's measured pace) fixes the
   steps; the composed client (``faults.compose``) trains on a worker thread, and the agent
   waits for it no longer than the time left; past it, the task is reported as a timeout;
4. faults are acted out for real: a crash SIGKILLs this process partway through, a hang
   silences the heartbeats (the connection stays open) for a bounded time, a straggler
   sleeps its slowdown, a drop closes the connection mid-push and reconnects later;
5. the update is pushed in chunks, stamped with its task's epoch; transport failures, busy
   refusals and redirects to the leader are retried within the time left (a duplicate then
   means an earlier try arrived); a refusal (stale, late, duplicate, malformed, over the
   size limit) is logged and never resent; a failure the client knows of is reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from phalanx.client import Adversary, ClientFault, Reply, steps_to_do
from phalanx.client.payload import Trained
from phalanx.core.messages import ClientUpdate, TaskFailure, TrainTask
from phalanx.core.models import PublishedModel
from phalanx.errors import (
    ConfigError,
    DuplicateError,
    PhalanxError,
    ProtocolError,
    RefusedError,
    StaleError,
)
from phalanx.faults.plan import FaultDecision
from phalanx.runtime.grpc.client.acts import Attempt, die_after, go_silent, push_cut_off
from phalanx.runtime.grpc.client.backoff import TransportError
from phalanx.runtime.grpc.client.faults import FaultSource, compose
from phalanx.runtime.grpc.client.heartbeat import Cancellations, Heartbeat
from phalanx.runtime.grpc.client.leader import SupersededError
from phalanx.runtime.grpc.client.models import ModelCache
from phalanx.runtime.grpc.client.pace import MeasuredPace, TaskTimer
from phalanx.runtime.grpc.client.session import Session, answering
from phalanx.runtime.grpc.client.work import Shard
from phalanx.runtime.grpc.session import Caller, PullStatus
from phalanx.types import FailureKind, FaultKind

log = logging.getLogger("phalanx.client")
T = TypeVar("T")
REPORT_S = 10.0  # at most this long spent reporting one failure
PLAN_SHARE = 0.9  # partial work plans for this share of the time left: room for noise


@dataclass(frozen=True)
class AgentOptions:
    """``give_up_s``: how long transport failures may last before the client exits (code 6);
    ``hang_s``: how long an injected hang stays silent (None: the task's time-to-live plus
    the lease's patience, so the coordinator notices); ``reconnect_s``: how long a dropped
    client stays away; ``leave_s``: the deadline of the farewell call."""

    give_up_s: float = 300.0
    hang_s: float | None = None
    reconnect_s: float = 0.5
    leave_s: float = 2.0


@dataclass
class AgentStats:
    tasks: int = 0
    pushed: int = 0
    refused: int = 0
    reported: int = 0
    dropped: int = 0
    skipped: int = 0  # cancelled, or over before it could start
    superseded: int = 0  # of a deposed leader's epoch: dropped unpushed

    def line(self) -> str:
        return (
            f"{self.tasks} tasks, {self.pushed} updates pushed, {self.refused} refused, "
            f"{self.reported} failures reported, {self.dropped} dropped, {self.skipped} skipped"
            + (f", {self.superseded} of a deposed leader" if self.superseded else "")
        )


class ClientAgent:
    def __init__(
        self,
        shard: Shard,
        session: Session,
        faults: FaultSource,
        *,
        adversary: Adversary | None = None,
        options: AgentOptions = AgentOptions(),
    ) -> None:
        self.shard = shard
        self.session = session
        self.faults = faults
        self.adversary = adversary
        self.options = options
        self.cancelled = Cancellations()
        self.heartbeat = Heartbeat(session, self.cancelled)
        self.models = ModelCache(
            shard.manifest, lambda ref: session.calls.get_model(session.caller, ref)
        )
        self.pace = MeasuredPace()
        self.stats = AgentStats()
        self._training: Attempt | None = None

    def run(self) -> None:
        """Serve tasks until the run is over (returns after leaving) or an error ends the
        client (raised: version mismatch, refused credential, transport down too long)."""
        try:
            self.session.join()
            self.heartbeat.start()
            while True:
                reply = self.session.call("pull", self.session.calls.pull)
                if reply.status is PullStatus.FINISHED:
                    self._leave("the run finished")
                    return
                if reply.task is not None:
                    self._serve(reply.task)
        except (KeyboardInterrupt, SystemExit):
            self._leave("stopped by a signal")
            raise
        finally:
            self.heartbeat.stop()
            self.session.calls.connection.close()

    # -- one task ------------------------------------------------------------------------

    def _serve(self, task: TrainTask) -> None:
        self.stats.tasks += 1
        timer = TaskTimer(task.config.ttl_s)
        if self._superseded(task):
            return
        if self.cancelled.holds(task):
            self.stats.skipped += 1
            return
        model = self._model(task, timer)
        if model is None:
            return
        decision = self.faults.decide(task.key)
        kind = decision.kind if decision is not None else None
        reply = self._train(task, model, timer, decision)
        if reply is None:
            return
        if isinstance(reply, ClientFault):
            self._act_out(task, reply, kind, timer)
        elif self.cancelled.holds(task):
            self.stats.skipped += 1
        elif timer.left() <= 0:
            self._report(
                task, FailureKind.TIMEOUT, f"ran past its {task.config.ttl_s} s time-to-live"
            )
        elif kind is FaultKind.DROP:
            self._drop(task, reply)
        else:
            self._push(task, reply, timer)

    def _superseded(self, task: TrainTask) -> bool:
        """Whether ``task`` is of an epoch below the highest seen (counted and logged)."""
        if not self.session.leadership.outdated(task.envelope):
            return False
        log.warning(
            "task %s of epoch %d dropped: a leader of epoch %d is known",
            task.key, task.envelope.epoch, self.session.leadership.epoch,
        )  # fmt: skip
        self.stats.superseded += 1
        return True

    def _as_answer(self, task: TrainTask, fn: Callable[[Caller], T]) -> Callable[[Caller], T]:
        """``fn`` called with the task's envelope on the caller, and never for a task whose
        leader was deposed meanwhile (``SupersededError``, not retried)."""

        def call(caller: Caller) -> T:
            if self.session.leadership.outdated(task.envelope):
                raise SupersededError(f"task {task.key} is of a deposed leader's epoch")
            return fn(answering(caller, task.envelope))

        return call

    def _model(self, task: TrainTask, timer: TaskTimer) -> PublishedModel | None:
        try:
            return self.session.call(
                "get model", lambda _: self.models.get(task.model), deadline_s=max(timer.left(), 0)
            )
        except StaleError as exc:
            log.info("task %s is over: %s", task.key, exc)
            self.stats.skipped += 1
        except ConfigError as exc:
            self._report(task, FailureKind.CRASH, str(exc))
            raise
        except ProtocolError as exc:
            self._report(task, FailureKind.CRASH, f"model download refused: {exc}")
        except TransportError as exc:
            log.warning("task %s: no model within its time-to-live: %s", task.key, exc)
            self.stats.skipped += 1
        return None

    def _train(
        self,
        task: TrainTask,
        model: PublishedModel,
        timer: TaskTimer,
        decision: FaultDecision | None,
    ) -> Reply | None:
        if self._training is not None and self._training.alive:
            self._report(task, FailureKind.CRASH, "busy: an earlier attempt is still training")
            return None
        kind = decision.kind if decision is not None else None
        pace = self.pace.slowed(self._slowdown()) if kind is FaultKind.STRAGGLE else self.pace
        started = time.monotonic()

        def trainer(task: TrainTask, model: PublishedModel) -> Trained | ClientFault:
            total = self.shard.total_steps(task.config)
            steps = steps_to_do(total, PLAN_SHARE * timer.left(), pace, task.config.partial)
            try:
                trained = self.shard.train(task, model, steps)
            except Exception as exc:  # the user's code: a failure to report, not a crash of ours
                log.warning("training failed", exc_info=exc)
                return ClientFault(FailureKind.CRASH, f"error: {type(exc).__name__}: {exc}")
            self.pace.trained(steps, time.monotonic() - started)
            return trained

        client = compose(
            self.shard.client, trainer, decision, task.key,
            config=self.shard.config, adversary=self.adversary,
        )  # fmt: skip
        attempt = self._training = Attempt(lambda: client.train(task, model))
        reply = attempt.result(timeout_s=max(timer.left(), 0.0))
        if reply is None:
            self._report(
                task,
                FailureKind.TIMEOUT,
                f"training ran past its {task.config.ttl_s} s time-to-live",
            )
            return None
        if kind is FaultKind.STRAGGLE:  # the slowdown, really waited (bounded by the ttl)
            extra = (self._slowdown() - 1.0) * (time.monotonic() - started)
            threading.Event().wait(min(extra, max(timer.left(), 0.0) + 0.05))
        return reply

    def _slowdown(self) -> float:
        return self.shard.config.latency.straggle_factor

    # -- what happens to a reply ---------------------------------------------------------

    def _act_out(
        self, task: TrainTask, fault: ClientFault, kind: FaultKind | None, timer: TaskTimer
    ) -> None:
        if kind is FaultKind.CRASH:
            self._crash(task, fault.at_fraction, timer)
        elif kind is FaultKind.HANG:
            self._hang(task)
        else:
            self._report(task, fault.kind, fault.detail)

    def _crash(self, task: TrainTask, fraction: float, timer: TaskTimer) -> None:
        """Die partway through the task, as a killed process does: no reply, no goodbye.
        Partway: ``fraction`` of the task's expected length (measured pace; 1 s unknown)."""
        steps = self.shard.total_steps(task.config)
        expected = self.pace.duration(steps) if self.pace.step_s is not None else 1.0
        die_after(fraction * min(max(timer.left(), 0.0), expected), self.shard.client)

    def _hang(self, task: TrainTask) -> None:
        """Stop answering, connection open: heartbeats stop and nothing is sent."""
        lease = self.session.lease
        silent = self.options.hang_s
        if silent is None:
            silent = task.config.ttl_s + lease.patience_s + 2 * lease.heartbeat_interval_s
        go_silent(self.heartbeat, silent, self.shard.client)

    def _drop(self, task: TrainTask, update: ClientUpdate) -> None:
        """Push, then cut the connection mid-stream; come back after ``reconnect_s``."""
        timeout = max(task.config.ttl_s, 1.0)
        caller = answering(self.session.caller, task.envelope)
        if push_cut_off(self.session.calls, caller, update, timeout):
            self.stats.dropped += 1
        else:
            self.stats.pushed += 1
        threading.Event().wait(self.options.reconnect_s)

    def _push(self, task: TrainTask, update: ClientUpdate, timer: TaskTimer) -> None:
        started = time.monotonic()
        try:
            self.session.call(
                "push",
                self._as_answer(
                    task,
                    lambda caller: self.session.calls.push(caller, update, max(timer.left(), 0.1)),
                ),
                deadline_s=max(timer.left(), 0.0),
            )
        except DuplicateError:  # an earlier try arrived although its reply was lost
            log.info("update %s was already received", task.key)
        except SupersededError:  # a higher epoch was seen while it trained or pushed
            self._superseded(task)
            return
        except (RefusedError, ProtocolError) as exc:
            log.warning("update %s refused, not resent: %s", task.key, exc)
            self.stats.refused += 1
            return
        except TransportError as exc:
            log.warning("update %s lost: %s", task.key, exc)
            return
        self.pace.pushed(time.monotonic() - started)
        self.stats.pushed += 1

    def _report(self, task: TrainTask, kind: FailureKind, detail: str) -> None:
        failure = TaskFailure(task.key, kind, detail, task.envelope)
        if self._superseded(task):
            return
        try:
            self.session.call(
                "report failure",
                self._as_answer(
                    task, lambda caller: self.session.calls.report_failure(caller, failure)
                ),
                deadline_s=REPORT_S,
            )
            self.stats.reported += 1
        except SupersededError:
            self._superseded(task)
        except PhalanxError as exc:  # the coordinator will find out by itself
            log.warning("could not report the failure of %s: %s", task.key, exc)

    def _leave(self, reason: str) -> None:
        try:
            self.session.calls.leave(self.session.caller, reason, self.options.leave_s)
        except (PhalanxError, RuntimeError) as exc:
            log.info("leave not delivered: %s", exc)
