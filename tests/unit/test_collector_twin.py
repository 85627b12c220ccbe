"""The collector's policies on the scripted twin, with exact expectations: retry with
backoff, replacement, quorum, over-selection cancel, deadline, partial work, waiting for
members, and indifference to late, duplicate and unknown events. No training runs."""

from __future__ import annotations

import asyncio

import pytest
import torch
from tests.twin import MANIFEST, one_round, twin_config

from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskConfig, TaskKey, TrainTask
from phalanx.core.tensors import payload_digest
from phalanx.engine.engine import Engine
from phalanx.engine.retry import RetryPolicy
from phalanx.engine.selection import sample_clients
from phalanx.errors import StaleStateError
from phalanx.testing import Reply, ScriptedRuntime
from phalanx.types import FailureKind


def first_pick(clients: int, count: int, seed: int = 42) -> list[int]:
    return sample_clients(range(clients), count, seed=seed, round_index=0, stream="select")


def test_a_crash_is_retried_after_its_jittered_backoff() -> None:
    config = twin_config(
        5, "selection.clients_per_round=3", "selection.over_selection=1.0", "quorum.min_updates=3"
    )
    crasher = first_pick(5, 3)[0]
    twin = ScriptedRuntime(MANIFEST, 5, script={(0, crasher, 1): Reply(fail=FailureKind.CRASH)})
    _, record = one_round(config, twin, twin.membership)
    backoff = RetryPolicy(config.retry, seed=config.seed).backoff(0, crasher, 1)
    assert (1.0 + backoff, TaskKey(0, crasher, 2)) in twin.submitted
    assert record["retries"] == 1 and record["replacements"] == 0 and record["committed"]
    assert record["accepted_attempts"][record["accepted"].index(crasher)] == 2
    assert record["failures"] == {"crash": 1}


def test_a_timeout_is_replaced_by_the_seeded_fresh_client() -> None:
    config = twin_config(
        8, "selection.clients_per_round=3", "selection.over_selection=1.0",
        "quorum.min_updates=3", "deadlines.task_s=10",
    )  # fmt: skip
    first = first_pick(8, 3)
    twin = ScriptedRuntime(MANIFEST, 8, script={(0, first[1], 1): Reply(silent=True)})
    _, record = one_round(config, twin, twin.membership)
    fresh = sorted(set(range(8)) - set(first))
    [expected] = sample_clients(fresh, 1, seed=config.seed, round_index=0, stream="replace/0")
    assert (10.0, TaskKey(0, expected, 1)) in twin.submitted
    assert record["dispatched"] == [*first, expected] and record["replacements"] == 1
    assert sorted(record["accepted"]) == sorted([first[0], first[2], expected])
    assert record["failures"] == {"timeout": 1} and record["ended_at"] == 11.0


def test_a_round_short_of_quorum_is_discarded_with_its_reason() -> None:
    config = twin_config(
        4, "selection.clients_per_round=4", "selection.over_selection=1.0",
        "quorum.min_updates=3", "retry.max_attempts=1", "replacement.enabled=false",
    )  # fmt: skip
    twin = ScriptedRuntime(
        MANIFEST, 4, script=lambda key: Reply(fail=FailureKind.DROP if key.client < 2 else None)
    )
    state, record = one_round(config, twin, twin.membership)
    assert not record["committed"] and record["reasons"] == [
        "quorum not met: 2 accepted updates < 3"
    ]
    assert torch.equal(state.params, torch.zeros(3)) and state.model_version == 0


def test_over_selected_tasks_still_running_are_cancelled_once_the_target_is_met() -> None:
    config = twin_config(
        10, "selection.clients_per_round=2", "selection.over_selection=2.0", "quorum.min_updates=2"
    )
    twin = ScriptedRuntime(MANIFEST, 10, script=lambda key: Reply(after_s=1.0 + key.client))
    _, record = one_round(config, twin, twin.membership)
    asked = sorted(first_pick(10, 4))
    assert sorted(record["accepted"]) == asked[:2] and record["cancelled"] == 2
    assert sorted(twin.cancelled, key=lambda k: k.client) == [TaskKey(0, c, 1) for c in asked[2:]]
    assert record["ended_at"] == 1.0 + asked[1]


def test_the_round_deadline_bounds_every_task_and_ends_collection() -> None:
    config = twin_config(
        6, "selection.clients_per_round=3", "selection.over_selection=1.0",
        "quorum.min_updates=2", "deadlines.round_s=20", "deadlines.task_s=60",
    )  # fmt: skip
    silent = first_pick(6, 3)[2]
    twin = ScriptedRuntime(MANIFEST, 6, script={(0, silent, 1): Reply(silent=True)})
    _, record = one_round(config, twin, twin.membership)
    assert record["ended_at"] == 20.0 and record["failures"] == {"timeout": 1}
    assert record["events"][0]["detail"] == "no reply by t=20.00"
    assert record["replacements"] == 0  # 0 s left < replacement.min_remaining_s
    assert record["committed"] and silent not in record["accepted"]


def test_partial_work_weighs_an_update_by_the_share_of_steps_done() -> None:
    config = twin_config(
        3, "selection.clients_per_round=3", "selection.over_selection=1.0", "quorum.min_updates=3"
    )
    script = {
        (0, 0, 1): Reply(delta=0.2, work_fraction=0.5),
        (0, 1, 1): Reply(delta=0.1),
        (0, 2, 1): Reply(delta=0.1),
    }
    twin = ScriptedRuntime(MANIFEST, 3, script=script)
    state, record = one_round(config, twin, twin.membership)
    # weights 10 x 0.5, 10, 10: (5 x 0.2 + 10 x 0.1 + 10 x 0.1) / 25 = 0.12
    assert torch.allclose(state.params, torch.full((3,), 0.12))
    assert record["partial"] == 1 and record["committed"]


def test_a_round_waits_for_members_to_join_and_says_how_long() -> None:
    config = twin_config(5, "selection.clients_per_round=3", "quorum.min_updates=3")
    twin = ScriptedRuntime(MANIFEST, 5, live=False, joins=[(30.0, c) for c in range(5)])
    _, record = one_round(config, twin, twin.membership)
    assert record["member_wait_s"] == 30.0 and record["started_at"] == 0.0
    assert record["committed"] and record["dispatched"]


def test_a_round_gives_up_waiting_after_member_wait_s() -> None:
    config = twin_config(
        5, "selection.clients_per_round=3", "quorum.min_updates=3", "selection.member_wait_s=45"
    )
    twin = ScriptedRuntime(MANIFEST, 5, live=False, joins=[(100.0, 0)])
    _, record = one_round(config, twin, twin.membership)
    assert record["member_wait_s"] == 45.0 and not record["committed"]
    assert record["reasons"] == ["only 0 healthy and 0 probed clients; quorum needs 3"]


def test_late_duplicate_and_unknown_events_change_nothing() -> None:
    config = twin_config(
        10, "selection.clients_per_round=2", "selection.over_selection=2.0", "quorum.min_updates=2"
    )
    asked = sorted(first_pick(10, 4))
    plain = ScriptedRuntime(MANIFEST, 10, script=lambda key: Reply(after_s=1.0 + key.client))
    noisy = ScriptedRuntime(MANIFEST, 10, script=lambda key: Reply(after_s=1.0 + key.client))
    tensors = {"w": torch.full((3,), 0.01)}

    def forged(key: TaskKey) -> ClientUpdate:
        digest = payload_digest(tensors)
        return ClientUpdate(
            Envelope(), key, ModelRef(0, digest), steps_done=1, steps_planned=1,
            num_examples=10, tensors=tensors, digest=digest, sender=key.client,
        )  # fmt: skip

    noisy.inject(forged(TaskKey(0, asked[0], 1)), at=1.5 + asked[0])  # a duplicate
    noisy.inject(forged(TaskKey(0, 99, 1)), at=1.0)  # an unknown client
    noisy.inject(forged(TaskKey(0, asked[0], 7)), at=1.0)  # an attempt never sent
    _, expected = one_round(config, plain, plain.membership)
    _, record = one_round(config, noisy, noisy.membership)
    for field in ("accepted", "accepted_attempts", "events", "cancelled", "ended_at"):
        assert record[field] == expected[field]


def test_an_engine_round_on_the_twin_trains_nothing_with_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training ran")

    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.optim.Optimizer, "step", refuse)
    monkeypatch.setattr("phalanx.training.batched.BatchedSGD.train", refuse)
    config = twin_config(50, "selection.clients_per_round=20")
    twin = ScriptedRuntime(MANIFEST, 50)
    _, record = one_round(config, twin, twin.membership)
    assert record["committed"] and len(record["accepted"]) == 20


def test_a_round_from_a_superseded_state_is_refused_not_silently_mixed() -> None:
    config = twin_config(6, "selection.clients_per_round=3", "quorum.min_updates=3")
    twin = ScriptedRuntime(MANIFEST, 6)
    engine = Engine(config, twin, membership=twin.membership, models=twin.models)
    first = engine.initial_state(torch.zeros(MANIFEST.dim), MANIFEST)

    async def rounds() -> None:
        second, _ = await engine.run_round(first)
        await engine.run_round(second)  # from the state the last round returned: fine
        await engine.run_round(first)  # the initial table was copied: re-indexed, fine
        with pytest.raises(StaleStateError, match="round 1 started from a state"):
            await engine.run_round(second)

    asyncio.run(rounds())


def test_the_twin_answers_a_key_once_and_forgets_rounds_before_the_last_two() -> None:
    """A key submitted again after its answer gets no second event; what the twin keeps to
    know that stays bounded over a long run (a set of every answered key made a benchmark's
    garbage collections grow with the rounds run)."""
    twin = ScriptedRuntime(MANIFEST, 4, script=lambda key: Reply(after_s=1.0))
    config = twin_config(
        4, "selection.clients_per_round=4", "selection.over_selection=1.0", "quorum.min_updates=4"
    )
    engine = Engine(config, twin, membership=twin.membership, models=twin.models)

    async def rounds() -> list[int]:
        state = engine.initial_state(torch.zeros(3), MANIFEST)
        answered = []
        for _ in range(5):
            state, record = await engine.run_round(state)
            answered.append(len(record.accepted))
            again = twin.submitted[-1][1]  # answered this round: submitted once more
            config = TaskConfig(local_epochs=1, batch_size=1, lr=0.1, ttl_s=1e6)
            twin.submit(TrainTask(Envelope(), again, ModelRef(0, "unused"), config))
            assert await twin.next_event(twin.clock.now() + 10.0) is None
        return answered

    assert asyncio.run(rounds()) == [4] * 5
    assert set(twin._delivered) == {3, 4}  # the bound is the point
