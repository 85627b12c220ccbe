"""The client side of coordinator failover (HA_CONTRACT, item 4), against scripted
coordinators served with the real servicer on loopback ports: a standby's hint is followed
at once (and hops are capped), a dead address is rotated past, a deposed leader's reply is
refused (its task never trained, its model never taken), a task of an old epoch is dropped
once a higher epoch is seen, requests carry the highest epoch (the task's on a push), and a
coordinator of another run ends the client. Also: ``BusyError`` is retried, bounded, and a
``SizeLimitError`` is not resent."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest
from tests.fake_coordinator import FakeCoordinator, Served, task
from tests.unit.test_grpc_client import (
    ME,
    agent_for,
    join_agent,
    make_app,
    publish,
    run_bounded,
    shard,
    start_agent,
    wait_for,
)

from phalanx.errors import BusyError, ConfigError, RunMismatchError, SizeLimitError
from phalanx.runtime.grpc.client import AgentOptions, Backoff, Retrying, TransportError
from phalanx.runtime.grpc.client.channel import parse_addresses
from phalanx.runtime.grpc.client.leader import DeposedLeaderError


@pytest.fixture
def pair() -> Iterator[tuple[Served, Served]]:
    """Two coordinators of one run; the test decides who leads."""
    with Served(FakeCoordinator()) as first, Served(FakeCoordinator()) as second:
        yield first, second


def dead_address() -> str:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_a_standby_hint_is_followed_at_once(pair: tuple[Served, Served]) -> None:
    standby, leader = pair
    standby.fake.standby = leader.target
    leader.fake.epoch = 3
    work = shard()
    leader.fake.tasks.append(task(0, ME, publish(leader, work), epoch=3))  # type: ignore[arg-type]
    leader.fake.finish = True
    agent = agent_for(standby, work)  # only the standby's address is given
    sleeps: list[float] = []
    agent.session.retrying = Retrying(Backoff(0.05, 0.2, random.Random(1)), sleep=sleeps.append)

    run_bounded(agent)

    assert [m for m, _ in standby.fake.stamps] == ["join"]  # one refusal, then the leader
    assert sleeps == []  # the hint was followed without a backoff wait
    assert len(leader.fake.joins) == 1 and leader.fake.joins[0].envelope.epoch == 0
    assert [u.key.round for u in leader.fake.updates] == [0]
    assert agent.session.calls.connection.target == leader.target
    assert agent.session.leadership.epoch == 3


def test_standbys_naming_each_other_hop_at_most_the_cap_then_back_off(
    pair: tuple[Served, Served],
) -> None:
    first, second = pair
    first.fake.standby, second.fake.standby = second.target, first.target
    agent = agent_for(first, shard())
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    agent.session.retrying = Retrying(
        Backoff(0.05, 0.2, random.Random(1)), sleep=sleep, clock=lambda: now[0], max_hops=3
    )
    agent.session.give_up_s = 1.0
    with pytest.raises(TransportError, match=r"join: gave up after 1\.0 s"):
        agent.session.join()
    agent.session.calls.connection.close()

    tries = len(first.fake.stamps) + len(second.fake.stamps)
    assert tries == 1 + 3 + len(sleeps)  # three hops at once, then a wait before each try
    assert len(sleeps) >= 5 and sum(sleeps) <= 1.0 + 1e-9


def test_a_dead_address_is_rotated_past(served: Served) -> None:
    work = shard()
    served.fake.tasks.append(task(0, ME, publish(served, work)))  # type: ignore[arg-type]
    served.fake.finish = True
    dead = dead_address()
    agent = agent_for(served, work, server=f"{dead},{served.target}")
    connection = agent.session.calls.connection
    assert connection.target == dead

    run_bounded(agent)

    assert connection.switches >= 1 and connection.target == served.target
    assert [u.key.round for u in served.fake.updates] == [0]


def test_a_deposed_leader_is_refused_its_task_and_its_model(pair: tuple[Served, Served]) -> None:
    """The client learns epoch 5 from the leader; the leader dies; the next address is a
    deposed leader of epoch 2 that still answers (any session): its task and its model are
    never used; the client goes on until the leader is back and finishes there."""
    leader, deposed = pair
    leader.fake.epoch = 5
    deposed.fake.epoch, deposed.fake.any_session = 2, True
    work = shard()
    v0 = publish(leader, work)
    publish(deposed, work)
    leader.fake.tasks.append(task(0, ME, v0, epoch=5))  # type: ignore[arg-type]
    deposed.fake.tasks.extend(task(r, ME, v0, epoch=2) for r in (1, 2))  # type: ignore[arg-type]
    agent = agent_for(leader, work, server=f"{leader.target},{deposed.target}")
    thread, errors = start_agent(agent)
    wait_for(lambda: len(leader.fake.updates) == 1)

    leader.stop()
    leader.fake.forget_sessions()
    wait_for(lambda: len(deposed.fake.handed) >= 1)  # it answered, with its task
    leader.fake.finish = True
    leader.start()
    join_agent(thread, errors, 30.0)

    assert deposed.fake.downloads == [] and deposed.fake.admitted == []
    assert deposed.fake.reports == []
    assert [u.key.round for u in leader.fake.updates] == [0]
    assert len(leader.fake.joins) == 2 and agent.session.leadership.epoch == 5
    assert agent.stats.tasks == 1  # the deposed leader's task never reached the agent


def test_a_paused_leader_is_left_within_a_few_heartbeats(pair: tuple[Served, Served]) -> None:
    """The leader stops answering (its loop blocked, connections open: a SIGSTOP) while the
    client long-polls it; a failed heartbeat moves the client on, cancelling the poll, and
    the new leader's task is trained and pushed well before the old one would answer."""
    paused, leader = pair
    paused.fake.epoch, leader.fake.standby = 1, paused.target
    work = shard()
    agent = agent_for(paused, work, server=f"{paused.target},{leader.target}")
    thread, errors = start_agent(agent)
    wait_for(lambda: paused.fake.heartbeats >= 2)

    started = time.monotonic()
    paused.freeze(30.0)
    leader.fake.standby, leader.fake.epoch = None, 2
    leader.fake.tasks.append(task(0, ME, publish(leader, work), epoch=2))  # type: ignore[arg-type]
    leader.fake.finish = True
    join_agent(thread, errors, 15.0)

    assert time.monotonic() - started < 15.0  # half the pause
    assert [(u.key.round, u.envelope.epoch) for u in leader.fake.updates] == [(0, 2)]
    assert agent.session.leadership.epoch == 2


def test_a_deposed_leaders_model_is_refused_on_its_header(served: Served) -> None:
    deposed = served
    deposed.fake.epoch, deposed.fake.any_session = 2, True
    work = shard()
    ref = publish(deposed, work)
    agent = agent_for(deposed, work)
    agent.session.join()
    agent.session.leadership.epoch = 4  # a leader of epoch 4 was seen meanwhile
    try:
        with pytest.raises(DeposedLeaderError, match="epoch 2, below epoch 4"):
            agent.session.calls.get_model(agent.session.caller, ref)  # type: ignore[arg-type]
    finally:
        agent.session.calls.connection.close()
    assert agent.models.downloads == 0


def test_an_old_epochs_task_is_dropped_once_a_higher_epoch_is_seen(
    pair: tuple[Served, Served],
) -> None:
    """The old leader (epoch 2) dies while the client trains its task; the next address
    leads at epoch 5 and redoes the round with the same task key: the old task is never
    pushed anywhere, the new one is, with its own epoch on the push."""
    old, new = pair
    old.fake.epoch, new.fake.epoch = 2, 5
    work = shard(make_app(step_s=0.15))  # 4 steps: 0.6 s of training
    v0 = publish(old, work)
    publish(new, work)
    old.fake.tasks.append(task(0, ME, v0, epoch=2))  # type: ignore[arg-type]
    new.fake.tasks.append(task(0, ME, v0, epoch=5))  # type: ignore[arg-type]
    new.fake.finish = True
    options = AgentOptions(give_up_s=20.0)
    agent = agent_for(old, work, options=options, server=f"{old.target},{new.target}")
    thread, errors = start_agent(agent)
    wait_for(lambda: len(old.fake.handed) == 1)

    old.stop()  # dies mid-training
    join_agent(thread, errors, 30.0)

    assert old.fake.admitted == []
    assert [(u.key, u.envelope.epoch) for u in new.fake.updates] == [(new.fake.handed[0].key, 5)]
    assert agent.stats.superseded == 1 and agent.stats.pushed == 1
    assert [j.envelope.epoch for j in new.fake.joins] == [2]  # the highest seen then


def test_requests_carry_the_highest_epoch_and_a_push_its_tasks(served: Served) -> None:
    """Epoch 3 seen: every call carries it; then the same coordinator leads again at epoch
    7 (a reply from above the session's epoch): the client joins again, drops the epoch-3
    task it was training, and pushes the epoch-7 one stamped 7."""
    fake = served.fake
    fake.epoch = 3
    work = shard(make_app(step_s=0.15))
    v0 = publish(served, work)
    fake.tasks.append(task(0, ME, v0, epoch=3))  # type: ignore[arg-type]
    agent = agent_for(served, work)
    thread, errors = start_agent(agent)
    wait_for(lambda: len(fake.handed) == 1)
    mark = len(fake.stamps)
    fake.epoch = 7  # re-elected while the task trains; the heartbeat tells the client
    fake.tasks.append(task(0, ME, v0, epoch=7))  # type: ignore[arg-type]
    fake.finish = True
    join_agent(thread, errors, 30.0)

    assert [(h.key.round, h.envelope.epoch) for h in fake.admitted] == [(0, 7)]
    assert [j.envelope.epoch for j in fake.joins] == [0, 7]
    assert [epoch for method, epoch in fake.stamps if method == "push"] == [7]
    assert {epoch for _, epoch in fake.stamps[1:mark]} == {3}  # after the first join
    assert agent.stats.superseded == 1


def test_a_coordinator_of_another_run_ends_the_client(pair: tuple[Served, Served]) -> None:
    first, other = pair
    other.fake.run_id = "another-run"
    agent = agent_for(first, shard(), server=f"{first.target},{other.target}")
    thread, errors = start_agent(agent)
    wait_for(lambda: len(first.fake.joins) == 1)

    first.stop()
    first.fake.forget_sessions()
    with pytest.raises(RunMismatchError, match="runs 'another-run'; this client joined run"):
        join_agent(thread, errors, 30.0)
    assert RunMismatchError("x").exit_code == 12
    assert other.fake.handed == []


def test_busy_is_retried_with_backoff_and_a_size_refusal_is_not_resent(served: Served) -> None:
    fake = served.fake
    work = shard()
    v0 = publish(served, work)
    fake.tasks.extend([task(0, ME, v0), task(1, ME, v0)])  # type: ignore[arg-type]
    fake.finish = True
    refusals = {
        0: iter([BusyError("2 updates in flight; retry in 0.1 s")] * 2),
        1: iter([SizeLimitError("the update is over the 1 MB limit")]),
    }
    fake.refuse = lambda header: next(refusals[header.key.round], None)
    agent = agent_for(served, work)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    agent.session.retrying = Retrying(Backoff(0.05, 0.2, random.Random(1)), sleep=sleep)
    run_bounded(agent)

    assert [h.key.round for h in fake.admitted] == [0, 0, 0, 1]  # busy twice, then taken
    assert [u.key.round for u in fake.updates] == [0]
    assert len(sleeps) >= 2 and agent.stats.pushed == 1 and agent.stats.refused == 1


def test_busy_past_the_deadline_gives_up(served: Served) -> None:
    fake = served.fake
    work = shard()
    fake.tasks.append(task(0, ME, publish(served, work), ttl_s=1.5))  # type: ignore[arg-type]
    fake.finish = True
    fake.refuse = lambda header: BusyError("over its rate; retry in 5 s")
    agent = agent_for(served, work)

    run_bounded(agent)

    assert 2 <= len(fake.admitted) <= 40 and fake.updates == []  # bounded by the ttl
    assert agent.stats.pushed == 0 and agent.stats.refused == 0


def test_the_server_list_is_checked() -> None:
    assert parse_addresses("a:1, b:2,a:1") == ("a:1", "b:2")
    assert parse_addresses("[::1]:7000") == ("[::1]:7000",)
    for bad in ("", "a", "a:", "a:x", "a:1,,b:2", "a:70000"):
        with pytest.raises(ConfigError, match="is not HOST:PORT"):
            parse_addresses(bad)
