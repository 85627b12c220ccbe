"""The client process's agent, in this process, against a scripted coordinator served with
the real servicer on a loopback port: join, pull, one download per model version, chunked
pushes; backoff on UNAVAILABLE; reconnect and re-join after a restart; refusals never
resent; version mismatch; the time-to-live (partial work, or a reported timeout);
cancellations; faults through the client package (drop, corrupt, hang, Byzantine)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
import pytest
import torch
from tests import client_app
from tests.fake_coordinator import LIMITS, TOKEN, FakeCoordinator, Served, task
from tests.pki import make_pki
from torch import nn

from phalanx.client import TrainContext
from phalanx.config import RunConfig, build_config
from phalanx.core.messages import Envelope
from phalanx.core.tensors import flatten
from phalanx.errors import (
    AuthError,
    ConfigError,
    RuntimeBackendError,
    StaleError,
    VersionMismatchError,
)
from phalanx.runtime.grpc.client import (
    AgentOptions,
    Backoff,
    ClientAgent,
    ClientApp,
    Deadlines,
    Retrying,
    Shard,
    TlsFiles,
    TransportError,
    app_shard,
    load_app,
    tls_credentials,
)
from phalanx.runtime.grpc.client.assemble import ClientSettings, build_agent
from phalanx.runtime.grpc.client.calls import CoordinatorCalls
from phalanx.runtime.grpc.client.channel import Connection
from phalanx.runtime.grpc.client.session import MAX_REJOINS, SessionChurnError
from phalanx.runtime.grpc.session import JoinRequest
from phalanx.types import FailureKind
from phalanx.workloads.base import ClientData

ME = 1
STEP_S = 0.02  # the app's training sleeps this long per step


def data(seed: int) -> ClientData:
    generator = torch.Generator().manual_seed(seed)
    return ClientData(torch.randn(16, 64, generator=generator), torch.randint(0, 4, (16,)))


def model() -> nn.Module:
    return nn.Linear(64, 100)  # 6,500 floats: 26 kB, two 16 kB chunks


def make_app(step_s: float = STEP_S) -> ClientApp:
    def train(net: nn.Module, examples: ClientData, ctx: TrainContext) -> Mapping[str, float]:
        optimiser = torch.optim.SGD(net.parameters(), lr=ctx.config.lr)
        steps = 0
        for _ in range(ctx.config.local_epochs):
            for batch in torch.randperm(len(examples), generator=ctx.generator).split(4):
                if steps == ctx.max_steps:
                    break
                time.sleep(step_s)
                loss = net(examples.x[batch])[:, :4].logsumexp(1).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                steps += 1
        return {"steps": steps}

    return ClientApp(model, [data(i) for i in range(3)], train)


def config(**byzantine: object) -> RunConfig:
    tree: dict[str, object] = {"selection": {"clients_per_round": 2}, "quorum": {"min_updates": 1}}
    if byzantine:
        tree["faults"] = {"byzantine": byzantine}
    return build_config(tree)


def shard(app: ClientApp | None = None, *, byzantine: bool = False, **attack: object) -> Shard:
    return app_shard(app or make_app(), config(**attack), ME, byzantine=byzantine)


def agent_for(served: Served, work: Shard, **kw: object) -> ClientAgent:
    """An agent for ``served`` (or the ``server`` list given)."""
    options = kw.pop("options", AgentOptions(give_up_s=10.0, reconnect_s=0.1))
    server = kw.pop("server", served.target)
    settings = ClientSettings(
        server=server, credential=TOKEN,  # type: ignore[arg-type] backoff_base_s=0.05, backoff_cap_s=0.2,
        backoff_seed=1, deadlines=Deadlines(unary_s=5.0, poll_s=5.0, transfer_s=10.0),
        limits=LIMITS, options=options, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return build_agent(work, settings)


def start_agent(agent: ClientAgent) -> tuple[threading.Thread, list[BaseException]]:
    """``agent.run()`` on a thread of its own, and where its error will be."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            agent.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def join_agent(thread: threading.Thread, errors: list[BaseException], timeout_s: float) -> None:
    thread.join(timeout_s)
    assert not thread.is_alive(), "the agent did not finish in time"
    if errors:
        raise errors[0]


def run_bounded(agent: ClientAgent, timeout_s: float = 30.0) -> None:
    """``agent.run()`` on a thread, joined within ``timeout_s``; its error re-raised."""
    join_agent(*start_agent(agent), timeout_s)


def wait_for(condition: object, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def publish(served: Served, work: Shard, version: int = 0, shift: float = 0.0) -> object:
    params = {n: p.detach() + shift for n, p in work.template.named_parameters()}
    return served.fake.publish(version, params)


def test_join_pull_fetch_once_per_version_push_chunked_and_leave(served: Served) -> None:
    work = shard()
    fake = served.fake
    v0, v1 = publish(served, work, 0), publish(served, work, 1, shift=0.5)
    fake.tasks.extend(
        [task(0, ME, v0), task(0, ME, v0, attempt=1), task(1, ME, v1)]  # type: ignore[arg-type]
    )
    fake.finish = True
    agent = agent_for(served, work)

    run_bounded(agent)

    assert [(j.client, j.credential, j.num_examples) for j in fake.joins] == [(ME, TOKEN, 16)]
    assert fake.downloads == [v0, v1]  # the retry on v0 fetched nothing
    assert [u.key for u in fake.updates] == [t.key for t in fake.handed]
    assert [u.base for u in fake.updates] == [v0, v0, v1]
    assert all(h.total_bytes > LIMITS.chunk_bytes for h in fake.admitted)  # chunked
    assert all(u.sender == ME and u.steps_done == u.steps_planned == 4 for u in fake.updates)
    assert fake.heartbeats >= 1
    assert fake.leaves == ["the run finished"]
    assert agent.stats.pushed == 3 and agent.stats.refused == 0


def test_backoff_is_capped_full_jitter_from_its_seed() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    reference = random.Random(7)
    delays = [backoff.delay(n) for n in range(12)]
    expected = [reference.uniform(0.0, min(1.0, 0.1 * 2**n)) for n in range(12)]
    assert delays == expected
    assert all(0 <= d < min(1.0, 0.1 * 2**n) for n, d in enumerate(delays))
    assert len(set(delays)) == 12  # jittered, not a fixed ladder


def test_unavailable_is_retried_on_the_backoff_schedule_then_given_up() -> None:
    """A coordinator that is not there: UNAVAILABLE, retried (capped, jittered, seeded) on a
    fake clock until the deadline, then a TransportError."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    retrying = Retrying(Backoff(0.1, 0.4, random.Random(3)), sleep=sleep, clock=lambda: now[0])
    calls = CoordinatorCalls(Connection("127.0.0.1:1", LIMITS), Deadlines(unary_s=2.0))
    request = JoinRequest(Envelope(), ME, TOKEN, 16)

    with pytest.raises(TransportError, match=r"gave up after 3\.0 s"):
        retrying.call(lambda: calls.join(request), what="join", deadline_s=3.0)

    reference = Backoff(0.1, 0.4, random.Random(3))
    assert sleeps[:-1] == [reference.delay(n) for n in range(len(sleeps) - 1)]
    assert all(s <= 0.4 for s in sleeps) and sum(sleeps) <= 3.0 + 1e-9
    assert len(sleeps) > 8 and calls.connection.resets == len(sleeps) + 1
    calls.connection.close()


def test_reconnects_and_joins_again_after_a_coordinator_restart(served: Served) -> None:
    work = shard()
    fake = served.fake
    v0 = publish(served, work)
    fake.tasks.append(task(0, ME, v0))  # type: ignore[arg-type]
    agent = agent_for(served, work)
    thread, errors = start_agent(agent)
    wait_for(lambda: len(fake.updates) == 1)

    served.stop()  # the coordinator dies: every session with it
    fake.forget_sessions()
    time.sleep(0.3)  # the client fails, backs off, fails again
    fake.tasks.append(task(1, ME, v0))  # type: ignore[arg-type]
    fake.finish = True
    served.start()
    join_agent(thread, errors, 30.0)

    assert len(fake.joins) == 2, fake.joins  # joined again once, after the restart
    assert [u.key.round for u in fake.updates] == [0, 1], fake.admitted
    assert agent.session.calls.connection.resets >= 1


def test_a_session_refused_at_once_ends_the_client_instead_of_a_loop(served: Served) -> None:
    """A coordinator that forgets every session at once: joined again ``MAX_REJOINS`` times
    (it may have restarted right after each join), then the client ends with exit 6 (its
    joins were accepted: not a refused credential) instead of looping."""
    served.fake.amnesia = True
    with pytest.raises(SessionChurnError, match="is not known") as caught:
        run_bounded(agent_for(served, shard()))
    assert caught.value.exit_code == 6
    assert len(served.fake.joins) == 1 + MAX_REJOINS


def test_a_restart_before_the_first_call_is_recovered_too(served: Served) -> None:
    """Joined, then the coordinator restarts before any call succeeds: the reconnection is
    the evidence of the restart, so the refused session joins again."""
    fake = served.fake
    session = agent_for(served, shard()).session
    session.join()
    served.stop()
    fake.forget_sessions()
    timer = threading.Timer(0.3, served.start)
    timer.start()
    try:
        reply = session.call("pull", session.calls.pull, deadline_s=20.0)
    finally:
        timer.join()
        session.calls.connection.close()

    assert reply.status.value == "none_yet" and len(fake.joins) == 2


def test_a_refused_update_is_never_resent(served: Served) -> None:
    work = shard()
    fake = served.fake
    v0 = publish(served, work)
    fake.refuse = lambda h: StaleError("round 0 is over") if h.key.round == 0 else None
    fake.tasks.extend([task(0, ME, v0), task(1, ME, v0)])  # type: ignore[arg-type]
    fake.finish = True
    agent = agent_for(served, work)

    run_bounded(agent)

    assert [h.key.round for h in fake.admitted] == [0, 1]  # round 0 pushed once
    assert [u.key.round for u in fake.updates] == [1]
    assert agent.stats.refused == 1 and agent.stats.pushed == 1


def test_a_push_that_fails_in_the_transport_is_sent_again_whole(served: Served) -> None:
    """UNAVAILABLE (the coordinator's ``RuntimeBackendError``) is a transport failure: the
    push is retried, from its header, and arrives once."""
    work = shard()
    fake = served.fake
    fake.tasks.append(task(0, ME, publish(served, work)))  # type: ignore[arg-type]
    fake.finish = True
    failures = iter([RuntimeBackendError("restarting")])
    fake.refuse = lambda header: next(failures, None)
    agent = agent_for(served, work)

    run_bounded(agent)

    assert len(fake.admitted) == 2 and [u.key.round for u in fake.updates] == [0]
    assert agent.stats.pushed == 1 and agent.stats.refused == 0


def test_another_protocol_version_names_both(served: Served) -> None:
    served.fake.protocol = 2
    with pytest.raises(VersionMismatchError, match=r"version 2.*version 1"):
        run_bounded(agent_for(served, shard()))


def test_a_refused_credential_ends_the_client(served: Served) -> None:
    agent = agent_for(served, shard())
    agent.session.identity = type(agent.session.identity)(ME, "wrong", 16)
    with pytest.raises(AuthError, match="credential not accepted"):
        run_bounded(agent)
    assert served.fake.joins == []


def test_time_to_live_gives_partial_work_or_a_reported_timeout(served: Served) -> None:
    """12 steps of 50 ms: the first task measures the pace; with 0.3 s to live, partial
    work sends what fits; without it, the attempt runs over and is reported. (It was 20 ms
    steps and 0.12 s: about 5 steps fitted, and a loaded machine's wake-up delay of 34 ms a
    step left fewer than the 2 that partial work needs, so all 12 ran over; now 85 ms.)"""
    work = shard(make_app(step_s=0.05))
    fake = served.fake
    v0 = publish(served, work)
    fake.tasks.extend(
        [
            task(0, ME, v0, epochs=3),
            task(1, ME, v0, epochs=3, ttl_s=0.3, partial=True),
            task(2, ME, v0, epochs=3, ttl_s=0.3),
        ]  # type: ignore[arg-type]
    )
    fake.finish = True
    agent = agent_for(served, work)

    run_bounded(agent)

    full, partial = fake.updates
    assert (full.steps_done, full.steps_planned) == (12, 12)
    assert partial.key.round == 1 and 2 <= partial.steps_done < 12 == partial.steps_planned
    assert [(r.key.round, r.kind) for r in fake.reports] == [(2, FailureKind.TIMEOUT)]


def test_a_cancelled_task_is_not_pushed(served: Served) -> None:
    work = shard(make_app(step_s=0.05))
    fake = served.fake
    v0 = publish(served, work)
    fake.tasks.append(task(0, ME, v0, epochs=3))  # type: ignore[arg-type]  # 0.6 s of training
    fake.cancelled = (fake.tasks[0].key,)
    fake.finish = True
    agent = agent_for(served, work)

    run_bounded(agent)

    assert fake.updates == [] and fake.admitted == []
    assert agent.stats.skipped == 1


def test_a_drop_cuts_the_push_and_the_client_comes_back(served: Served) -> None:
    work = shard()
    fake = served.fake
    v0 = publish(served, work)
    fake.tasks.extend([task(0, ME, v0), task(1, ME, v0)])  # type: ignore[arg-type]
    fake.finish = True
    agent = agent_for(served, work, faults=("drop@0",))

    run_bounded(agent)

    assert [h.key.round for h in fake.admitted] == [0, 1]
    assert len(fake.push_failures) == 1  # the coordinator saw round 0's push cut off
    assert [u.key.round for u in fake.updates] == [1]
    assert agent.stats.dropped == 1 and agent.session.calls.connection.resets >= 1


def test_corrupt_and_hang_play_through_the_client_package(served: Served) -> None:
    work = shard()
    fake = served.fake
    v0 = publish(served, work)
    fake.tasks.extend([task(0, ME, v0), task(1, ME, v0), task(2, ME, v0)])  # type: ignore[arg-type]
    fake.finish = True
    options = AgentOptions(give_up_s=10.0, hang_s=0.5)
    agent = agent_for(served, work, faults=("corrupt:nan@0", "hang@1"), options=options)
    started = time.monotonic()

    run_bounded(agent)

    assert time.monotonic() - started >= 0.5
    nan, honest = fake.updates
    assert all(int(t.isnan().sum()) == 1 for t in nan.tensors.values())  # sealed: digest matched
    assert [nan.key.round, honest.key.round] == [0, 2]
    assert fake.reports == []  # a hung client says nothing


def test_a_byzantine_client_sends_its_attack(served: Served) -> None:
    work = shard(byzantine=True, clients=[ME], attack="sign_flip")
    fake = served.fake
    v0 = publish(served, work)
    handed = task(0, ME, v0)  # type: ignore[arg-type]
    fake.tasks.append(handed)
    fake.finish = True
    agent = agent_for(served, work, inject_faults=True)

    run_bounded(agent)

    (sent,) = fake.updates
    model = agent.models.get(v0)  # type: ignore[arg-type]
    honest = work.train(handed, model, 4)
    crafted = 2 * model.params - flatten(honest.tensors, work.manifest)
    assert torch.allclose(flatten(sent.tensors, work.manifest), crafted, atol=1e-6)


def test_colluding_attacks_are_refused_in_a_process(served: Served) -> None:
    work = shard(byzantine=True, clients=[ME], attack="alie")
    with pytest.raises(ConfigError, match="'alie' colludes"):
        agent_for(served, work, inject_faults=True)


def test_fault_specs_are_checked() -> None:
    from phalanx.runtime.grpc.client import parse_fault

    assert parse_fault("corrupt:nan@3.1").round == 3
    for bad in ("explode@1", "crash", "crash:nan@1", "corrupt:melt@1"):
        with pytest.raises(ConfigError, match="--fault"):
            parse_fault(bad)


def test_mutual_tls_from_pem_files(tmp_path: Path) -> None:
    """The client's channel over TLS with its client certificate (``--tls-ca/-cert/-key``); a
    client without one is refused in the handshake and gives up within its bound."""
    pki = make_pki(tmp_path, client=ME)
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(), require_client_auth=True,
    )  # fmt: skip
    served = Served(FakeCoordinator(), credentials)
    served.start()
    try:
        work = shard()
        served.fake.tasks.append(task(0, ME, publish(served, work)))  # type: ignore[arg-type]
        served.fake.finish = True
        tls = TlsFiles(pki.ca, pki.client_cert, pki.client_key)
        run_bounded(agent_for(served, work, tls=tls))
        assert [u.key.round for u in served.fake.updates] == [0]

        options = AgentOptions(give_up_s=1.0)
        anonymous = agent_for(served, work, tls=TlsFiles(pki.ca), options=options)
        with pytest.raises(TransportError, match="gave up"):
            run_bounded(anonymous)
        assert len(served.fake.joins) == 1
    finally:
        served.close()


def test_tls_files_are_checked(tmp_path: Path) -> None:
    assert tls_credentials(TlsFiles()) is None
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM file"):
        tls_credentials(TlsFiles(not_pem))
    with pytest.raises(ConfigError, match="cannot read"):
        tls_credentials(TlsFiles(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        tls_credentials(TlsFiles(cert=not_pem))


def test_an_app_is_named_module_colon_object() -> None:
    app = load_app("tests.client_app:APP")
    assert len(app.clients) == 4 and app.train is client_app.train
    assert len(load_app("tests.client_app:make").clients) == 4  # a factory is called
    for spec, problem in (
        ("tests.client_app", "not of the form"),
        ("tests.no_such_module:APP", "cannot import"),
        ("tests.client_app:MISSING", "has no 'MISSING'"),
        ("tests.client_app:NOT_AN_APP", "gives no model, clients, train"),
    ):
        with pytest.raises(ConfigError, match=problem):
            load_app(spec)


def test_a_straggler_is_slow_for_real(served: Served) -> None:
    """20x slower (the scenario's straggle_factor): with partial work it plans the steps
    that fit at its slowed pace and sends them in time; without, it runs over and says so.
    1.6 s to live, not 1.0 s: 1 to 3 of the 4 steps (20 ms sleeps, 0.4 s slowed) fit in
    0.9 x the time left while a step measures 0.018 to 0.072 s; with 1.0 s a step over
    0.044 s (0.039 s was measured at a load average of 9 on 2 CPUs) fitted none, and the
    client ran all 4, over the time to live."""
    work = shard()
    fake = served.fake
    v0 = publish(served, work)
    fake.tasks.extend(
        [
            task(0, ME, v0),
            task(1, ME, v0, ttl_s=1.6, partial=True),
            task(2, ME, v0, ttl_s=0.3),
        ]  # type: ignore[arg-type]
    )
    fake.finish = True
    agent = agent_for(served, work, faults=("straggle@1", "straggle@2"))

    run_bounded(agent)

    assert [(u.key.round, u.steps_planned) for u in fake.updates] == [(0, 4), (1, 4)]
    assert 1 <= fake.updates[1].steps_done < 4
    assert [(r.key.round, r.kind) for r in fake.reports] == [(2, FailureKind.TIMEOUT)]
