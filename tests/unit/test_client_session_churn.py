"""Sessions and heartbeats against a fake coordinator served on loopback (the real servicer
and the real client channel): a coordinator that forgets the session twice in a row (two
restarts within one call, the chaos run's seed 99) is joined again each time, and so is one
that loses and regains leadership at the same address (``test_grpc_client`` has the one
that forgets every session at once: exit 6 after ``MAX_REJOINS`` joins). A heartbeat whose
deadline passes does not close the channel a join or a long-poll is using."""

from __future__ import annotations

from tests.fake_coordinator import Served, task
from tests.unit.test_grpc_client import (
    ME,
    agent_for,
    join_agent,
    publish,
    run_bounded,
    shard,
    start_agent,
    wait_for,
)


def test_a_session_forgotten_twice_in_a_row_is_joined_again_each_time(served: Served) -> None:
    work = shard()
    served.fake.tasks.append(task(0, ME, publish(served, work)))  # type: ignore[arg-type]
    served.fake.finish = True
    served.fake.forget_on_pull = 2  # restarted before the pull, and again after the re-join
    agent = agent_for(served, work)
    run_bounded(agent)
    assert len(served.fake.joins) == 3
    assert [u.key.round for u in served.fake.updates] == [0]


def test_leadership_lost_and_regained_at_the_same_address_is_joined_again(
    served: Served,
) -> None:
    fake = served.fake
    fake.epoch = 1
    work = shard()
    agent = agent_for(served, work)
    thread, errors = start_agent(agent)
    wait_for(lambda: fake.heartbeats >= 2)
    fake.standby = ""  # lost the lease: a standby that knows no leader
    seen = len(fake.stamps)
    wait_for(lambda: len(fake.stamps) >= seen + 3)
    fake.forget_sessions()  # leads again, at a new epoch, without the old sessions
    # (the first pull led forgets again, the second forgets the new join's: a restart)
    fake.forget_on_pull, fake.epoch = 2, 2
    fake.tasks.append(task(0, ME, publish(served, work), epoch=2))  # type: ignore[arg-type]
    fake.finish = True
    fake.standby = None
    join_agent(thread, errors, 30.0)
    assert len(fake.joins) == 3 and agent.session.leadership.epoch == 2
    assert [(u.key.round, u.envelope.epoch) for u in fake.updates] == [(0, 2)]


def test_a_slow_heartbeat_does_not_close_the_channel_of_a_join(served: Served) -> None:
    fake = served.fake
    work = shard()
    agent = agent_for(served, work)
    thread, errors = start_agent(agent)
    wait_for(lambda: fake.heartbeats >= 2)
    fake.join_delay_s = 1.0  # the re-join takes five heartbeat deadlines
    fake.slow_heartbeats, fake.heartbeat_delay_s = 100, 0.5
    fake.forget_on_pull = 1
    wait_for(lambda: len(fake.joins) == 2)
    fake.slow_heartbeats = 0
    fake.finish = True
    join_agent(thread, errors, 30.0)
    assert len(fake.joins) == 2
    assert agent.session.calls.connection.resets == 0


def test_missed_heartbeats_under_a_long_poll_keep_the_channel_up_to_the_limit(
    served: Served,
) -> None:
    fake = served.fake
    fake.pull_delay_s = 1.5  # a long-poll is in progress nearly all the time
    fake.slow_heartbeats, fake.heartbeat_delay_s = 2, 0.4  # two misses (deadline 0.2 s)
    agent = agent_for(served, shard())
    thread, errors = start_agent(agent)
    wait_for(lambda: fake.heartbeats >= 4)  # the two slow ones and two on time
    fake.finish = True
    join_agent(thread, errors, 30.0)
    assert agent.session.calls.connection.resets == 0
    assert agent.heartbeat.sent >= 2
