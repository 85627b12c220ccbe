"""The coordinator's handlers and runtime without a network: exact refusals (stale round,
stale model, late, duplicate, not yours, busy, unknown session, another protocol version),
the long-poll, cancellations told through heartbeats, and silence turned into a failure
within the patience. The network path is in the contract suite and tests/integration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import torch
from tests.grpc_clients import TokenBook
from tests.timing import bound_s, load_per_cpu

from phalanx.core.messages import (
    ClientUpdate,
    Envelope,
    ModelRef,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.core.models import ModelBook
from phalanx.core.tensors import Manifest, payload_digest
from phalanx.errors import (
    AuthError,
    BusyError,
    DuplicateError,
    PermissionDeniedError,
    ProtocolError,
    StaleError,
    VersionMismatchError,
)
from phalanx.runtime.grpc.coordinator import CoordinatorService, GrpcRuntime, ServeSettings
from phalanx.runtime.grpc.coordinator.access import OperatorToken
from phalanx.runtime.grpc.session import Caller, JoinRequest, PullStatus, StatusQuery, UpdateHeader
from phalanx.types import FailureKind

MANIFEST = Manifest.of({"w": torch.zeros(3)})
RUN = "run-1"


class Coordinator:
    """A runtime and its service, with helpers that speak as client ``c``."""

    def __init__(self, settings: ServeSettings, limiter: object = None) -> None:
        self.book = ModelBook(MANIFEST)
        self.ref = self.book.publish(0, torch.zeros(3))
        self.runtime = GrpcRuntime(models=self.book, settings=settings, run_id=RUN)
        tokens = TokenBook({c: f"token-{c}" for c in range(5)})
        self.service = CoordinatorService(self.runtime, tokens, limiter=limiter)  # type: ignore[arg-type]
        self.callers: dict[int, Caller] = {}

    async def join(self, client: int) -> Caller:
        lease = await self.service.join(JoinRequest(Envelope(), client, f"token-{client}", 10))
        self.callers[client] = Caller(Envelope(), client, lease.session)
        return self.callers[client]

    def submit(
        self, round_: int, client: int, *, ttl_s: float = 60.0, ref: ModelRef | None = None
    ) -> TaskKey:
        key = TaskKey(round_, client, 1)
        config = TaskConfig(local_epochs=1, batch_size=4, lr=0.1, ttl_s=ttl_s)
        self.runtime.submit(TrainTask(Envelope(run_id=RUN), key, ref or self.ref, config))
        return key

    async def pull(self, client: int) -> TrainTask | None:
        return (await self.service.pull_task(self.callers[client])).task

    def update(self, key: TaskKey, base: ModelRef | None = None) -> ClientUpdate:
        tensors = {"w": torch.full((3,), 0.01)}
        return ClientUpdate(
            Envelope(run_id=RUN), key, base or self.ref, 4, 4, 10, tensors,
            payload_digest(tensors), sender=key.client,
        )  # fmt: skip

    def header(self, key: TaskKey, base: ModelRef | None = None) -> UpdateHeader:
        update = self.update(key, base)
        return UpdateHeader(
            update.envelope, key, update.base, 4, 4, 10, {}, MANIFEST.specs, update.digest, 12
        )

    async def admit(self, client: int, key: TaskKey, base: ModelRef | None = None) -> None:
        await self.service.admit_update(self.callers[client], self.header(key, base))

    async def push(self, client: int, key: TaskKey) -> None:
        await self.admit(client, key)
        await self.service.push_update(self.callers[client], self.update(key))


async def taken(c: Coordinator) -> TaskKey:
    """The key of the next update the engine takes (within a second)."""
    event = await c.runtime.next_event(c.runtime.clock.now() + 1)
    assert isinstance(event, ClientUpdate) and event.sender == event.key.client
    return event.key


FAST = ServeSettings(heartbeat_s=0.05, patience_s=0.3, pull_wait_s=0.2, max_uploads=2)


def run(body: Callable[[Coordinator], Awaitable[None]], settings: ServeSettings = FAST) -> None:
    async def main() -> None:
        coordinator = Coordinator(settings)
        try:
            await body(coordinator)
        finally:
            await coordinator.runtime.close(timeout_s=1.0)

    asyncio.run(main())


def test_join_checks_credential_protocol_and_declared_examples() -> None:
    async def body(c: Coordinator) -> None:
        with pytest.raises(AuthError, match="client 1: credential not accepted"):
            await c.service.join(JoinRequest(Envelope(), 1, "wrong", 10))
        with pytest.raises(
            VersionMismatchError, match="version 2; this coordinator speaks version 1"
        ):
            await c.service.join(JoinRequest(Envelope(protocol=2), 1, "token-1", 10))
        with pytest.raises(AuthError):  # the credential first: nothing else is said before
            await c.service.join(JoinRequest(Envelope(), 1, "wrong", 0))
        with pytest.raises(ProtocolError, match="declares 0 examples"):
            await c.service.join(JoinRequest(Envelope(), 1, "token-1", 0))
        assert not c.runtime.membership.is_live(1)
        lease = await c.service.join(JoinRequest(Envelope(), 1, "token-1", 10))
        assert (lease.client, lease.heartbeat_interval_s, lease.patience_s) == (1, 0.05, 0.3)
        assert c.runtime.membership.is_live(1)
        assert c.runtime.membership.declared_examples(1) == 10

    run(body)


def test_every_later_call_needs_the_session_issued_at_join() -> None:
    async def body(c: Coordinator) -> None:
        one, two = await c.join(1), await c.join(2)
        with pytest.raises(AuthError, match="client 1: credential not accepted"):
            await c.service.heartbeat(Caller(Envelope(), 1, two.session))  # not its own
        with pytest.raises(AuthError, match="client 3: credential not accepted"):
            await c.service.pull_task(Caller(Envelope(), 3, "made-up"))  # never joined
        with pytest.raises(VersionMismatchError):
            await c.service.heartbeat(Caller(Envelope(protocol=7), 1, one.session))
        await c.join(1)  # a rejoin replaces the session
        with pytest.raises(AuthError):
            await c.service.heartbeat(one)
        await c.service.leave(c.callers[2], "done")
        with pytest.raises(AuthError):
            await c.service.heartbeat(two)
        assert not c.runtime.membership.is_live(2)

    run(body)


def test_pull_hands_out_the_task_waits_then_says_none_yet_or_finished() -> None:
    async def body(c: Coordinator) -> None:
        await c.join(1)
        key = c.submit(0, 1)
        c.submit(0, 1)  # idempotent by key: one task only
        assert (await c.pull(1)).key == key  # type: ignore[union-attr]
        start = time.monotonic()
        reply = await c.service.pull_task(c.callers[1])
        assert reply.status is PullStatus.NONE_YET and time.monotonic() - start >= 0.19
        later = asyncio.get_running_loop().call_later(0.05, c.submit, 1, 1)
        assert (await c.pull(1)).key == TaskKey(1, 1, 1)  # type: ignore[union-attr]
        later.cancel()
        c.runtime.board.finish()
        assert (await c.service.pull_task(c.callers[1])).status is PullStatus.FINISHED

    run(body)


def test_a_push_is_refused_with_its_reason_when_stale_late_duplicate_or_not_yours() -> None:
    async def body(c: Coordinator) -> None:
        await c.join(1)
        await c.join(2)
        with pytest.raises(StaleError, match="no longer wanted"):
            await c.admit(1, TaskKey(0, 1, 1))  # never sent
        key = c.submit(0, 1)
        with pytest.raises(StaleError, match="never handed to its client"):
            await c.admit(1, key)
        await c.pull(1)
        with pytest.raises(PermissionDeniedError, match="client 2 may not push"):
            await c.admit(2, key)
        other = ModelRef(7, "ab" * 32)
        with pytest.raises(StaleError, match="trained from model version 7"):
            await c.admit(1, key, base=other)
        await c.push(1, key)
        with pytest.raises(DuplicateError, match="already received"):
            await c.admit(1, key)
        assert await taken(c) == key
        c.submit(1, 2)  # the coordinator moves on to round 1
        with pytest.raises(StaleError, match="round 0 is over"):
            await c.admit(2, TaskKey(0, 2, 1))
        late = c.submit(1, 1, ttl_s=0.05)
        await c.pull(1)
        await asyncio.sleep(0.1)
        with pytest.raises(StaleError, match=r"late by 0\.\d+ s"):
            await c.admit(1, late)

    run(body)


def test_uploads_beyond_the_slots_are_busy_until_the_engine_takes_one() -> None:
    async def body(c: Coordinator) -> None:
        keys = []
        for client in (1, 2, 3):
            await c.join(client)
            keys.append(c.submit(0, client))
            await c.pull(client)
        await c.push(1, keys[0])
        await c.admit(2, keys[1])  # streaming
        with pytest.raises(BusyError, match="2 updates in flight"):
            await c.admit(3, keys[2])
        with pytest.raises(DuplicateError, match="already being received"):
            await c.admit(2, keys[1])
        assert await taken(c) == keys[0]
        await c.admit(3, keys[2])  # the engine took one: a slot is free
        assert c.runtime.uploads.in_flight == 2
        c.service.push_failed(c.callers[2], c.header(keys[1]), "cut off")  # the stream broke
        assert c.runtime.uploads.in_flight == 1

    run(body)


def test_a_cancelled_task_is_told_in_the_next_heartbeat_and_its_push_refused() -> None:
    async def body(c: Coordinator) -> None:
        await c.join(1)
        key = c.submit(0, 1)
        await c.pull(1)
        c.runtime.cancel(key)
        c.runtime.cancel(key)
        assert (await c.service.heartbeat(c.callers[1])).cancelled == (key,)
        assert (await c.service.heartbeat(c.callers[1])).cancelled == ()
        with pytest.raises(StaleError, match="no longer wanted"):
            await c.admit(1, key)

    run(body)


def test_a_reported_failure_is_an_event_and_a_silent_client_fails_within_the_patience() -> None:
    async def body(c: Coordinator) -> None:
        await c.join(1)
        await c.join(2)
        reported, silent = c.submit(0, 1), c.submit(0, 2)
        await c.pull(1)
        await c.pull(2)
        failure = TaskFailure(reported, FailureKind.CRASH, "out of memory")
        await c.service.report_failure(c.callers[1], failure)
        event = await c.runtime.next_event(c.runtime.clock.now() + 1)
        assert event == TaskFailure(
            reported, FailureKind.CRASH, "the client reported: out of memory"
        )
        start, load = c.runtime.clock.now(), load_per_cpu()
        for _ in range(10):  # client 1 keeps beating; client 2 has gone quiet
            await c.service.heartbeat(c.callers[1])
            event = await c.runtime.next_event(c.runtime.clock.now() + 0.05)
            if event is not None:
                break
        assert isinstance(event, TaskFailure) and event.key == silent
        assert event.kind is FailureKind.CRASH and "no sign of life" in event.detail
        # 0.15 s of slack past patience + sweep on a quiet machine; a loaded one stalls the
        # whole process now and then, so it stretches with the load per CPU (tests/timing.py)
        slack = bound_s(0.15, load)
        assert 0.3 <= c.runtime.clock.now() - start <= 0.3 + FAST.sweep_s + slack
        await asyncio.sleep(FAST.sweep_s * 2)
        assert not c.runtime.membership.is_live(2) and c.runtime.membership.is_live(1)
        await c.service.heartbeat(c.callers[2])  # it was only paused: live again
        assert c.runtime.membership.is_live(2)

    run(body)


def test_a_client_waiting_in_a_long_poll_is_not_silent() -> None:
    settings = ServeSettings(heartbeat_s=0.05, patience_s=0.3, pull_wait_s=0.8)

    async def body(c: Coordinator) -> None:
        await c.join(1)
        poll = asyncio.get_running_loop().create_task(c.service.pull_task(c.callers[1]))
        await asyncio.sleep(0.6)  # twice the patience, no heartbeat: but it is polling
        assert c.runtime.membership.is_live(1)
        assert (await poll).status is PullStatus.NONE_YET
        assert c.runtime.membership.is_live(1)
        await asyncio.sleep(0.3 + 2 * settings.sweep_s + 0.1)  # now it is silent
        assert not c.runtime.membership.is_live(1)

    run(body, settings)


def test_a_task_for_a_client_that_is_not_connected_fails_at_once() -> None:
    async def body(c: Coordinator) -> None:
        key = c.submit(0, 4)  # never joined
        event = await c.runtime.next_event(c.runtime.clock.now() + 1)
        assert isinstance(event, TaskFailure) and event.key == key
        assert event.detail == "the client is not connected"

    run(body)


def test_a_rejoin_fails_the_tasks_the_previous_process_had_taken() -> None:
    async def body(c: Coordinator) -> None:
        await c.join(1)
        key = c.submit(0, 1)
        await c.pull(1)
        await c.join(1)
        event = await c.runtime.next_event(c.runtime.clock.now() + 1)
        assert event == TaskFailure(
            key, FailureKind.CRASH, "the client joined again (it restarted)", Envelope(run_id=RUN)
        )

    run(body)


class Limiter:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.charged: list[tuple[int, int]] = []

    def charge(self, client: int, nbytes: int) -> None:
        self.charged.append((client, nbytes))
        if nbytes > self.max_bytes:
            raise BusyError(f"client {client}: {nbytes} bytes is over its limit")


def test_the_limiter_is_charged_and_its_refusal_frees_the_upload_slot() -> None:
    async def main() -> None:
        limiter = Limiter(max_bytes=100)
        c = Coordinator(FAST, limiter)
        try:
            await c.join(1)
            await c.service.get_model(c.callers[1], c.ref)
            key = c.submit(0, 1)
            await c.pull(1)
            await c.service.heartbeat(c.callers[1])  # never charged: liveness gets through
            limiter.max_bytes = 11
            with pytest.raises(BusyError, match="12 bytes is over its limit"):
                await c.admit(1, key)
            assert c.runtime.uploads.in_flight == 0
            assert limiter.charged == [(1, 0), (1, 12), (1, 0), (1, 12)]
        finally:
            await c.runtime.close(timeout_s=1.0)

    asyncio.run(main())


def test_status_tells_an_operator_members_liveness_and_progress() -> None:
    async def main() -> None:
        c = Coordinator(FAST)
        c.service = CoordinatorService(
            c.runtime, TokenBook({1: "token-1", 2: "token-2"}), operator=OperatorToken("op")
        )
        try:
            with pytest.raises(AuthError, match="operator: credential not accepted"):
                await c.service.status(StatusQuery(Envelope(), "guess"))
            await c.join(1)
            await c.join(2)
            await c.service.leave(c.callers[2], "done")
            c.runtime.progress.round_in_flight = 4
            c.runtime.progress.committed, c.runtime.progress.failed = 3, 1
            status = await c.service.status(StatusQuery(Envelope(), "op"))
            assert [(m.client, m.live) for m in status.members] == [(1, True), (2, False)]
            assert all(
                m.heartbeat_age_s is not None and m.heartbeat_age_s < 1 for m in status.members
            )
            assert (status.round_in_flight, status.rounds_committed, status.rounds_failed) == (
                4,
                3,
                1,
            )
            assert status.envelope.run_id == RUN
        finally:
            await c.runtime.close(timeout_s=1.0)

    asyncio.run(main())


def test_every_call_after_join_refuses_a_forged_session_with_the_same_message() -> None:
    async def body(c: Coordinator) -> None:
        await c.join(1)
        key = c.submit(0, 1)
        await c.pull(1)
        forged = Caller(Envelope(), 1, "forged")
        failure = TaskFailure(key, FailureKind.CRASH, "x")
        calls = {
            "heartbeat": lambda: c.service.heartbeat(forged),
            "pull_task": lambda: c.service.pull_task(forged),
            "get_model": lambda: c.service.get_model(forged, c.ref),
            "admit_update": lambda: c.service.admit_update(forged, c.header(key)),
            "report_failure": lambda: c.service.report_failure(forged, failure),
            "leave": lambda: c.service.leave(forged, "bye"),
        }
        for name, call in calls.items():
            with pytest.raises(AuthError) as refused:
                await call()
            assert str(refused.value) == "client 1: credential not accepted", name
        assert c.runtime.membership.is_live(1) and c.runtime.uploads.in_flight == 0
        assert c.runtime.board.delivered_to(1) == [key]  # nothing was reported or dropped

    run(body)
