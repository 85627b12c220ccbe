"""Election and fenced commits against a real etcd (one member, loopback): one leader at a
time, epochs that grow, a lease that ends unrenewed, and a commit refused once its epoch is
not the leader key's; a 3-member cluster that lost its quorum commits nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch

from phalanx.checkpoint import LocalCheckpointStore
from phalanx.coordinator.history_log import MemoryHistory
from phalanx.coordinator.store_calls import StoreCalls
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.errors import ConfigError
from phalanx.ha.commit import FencedCommit, LeadershipLostError
from phalanx.ha.commitlog import CommitLog, read_log
from phalanx.ha.election import Elector, HaSettings, Term
from phalanx.ha.etcd import EtcdUnavailableError, Target
from phalanx.ha.etcd_server import EtcdCluster
from phalanx.ha.pointer import Pointer, load_committed, model_digest
from tests.ha.conftest import client


def elector(cluster: EtcdCluster, advertise: str, ttl_s: int = 1) -> Elector:
    settings = HaSettings(Target(tuple(cluster.endpoints), "t"), advertise, ttl_s=ttl_s)
    return Elector(client(cluster), settings)


def state(round_: int, value: float) -> ServerState:
    params = torch.full((3,), value)
    manifest = Manifest.of({"w": params})
    return ServerState(round_, round_, params, manifest, {}, config_digest="cfg")


def fenced(term: Term, tmp_path: Path, previous: Pointer | None = None) -> FencedCommit:
    start = state(0, 0.0)
    store = LocalCheckpointStore(tmp_path / f"epoch-{term.epoch}")
    return FencedCommit(
        term=term, store=store, history=MemoryHistory(),
        commits=CommitLog(tmp_path / f"commits-{term.epoch}.jsonl", coordinator="x"),
        calls=StoreCalls(10.0), previous=previous, last_round=5,
        base=Pointer(
            run_id="r", round=0, model_version=0, model_digest=model_digest(start.params),
            base_digest=model_digest(start.params), epoch=term.epoch, checkpoint="",
            stores=(store.location,), config_digest="cfg", finished=False,
        ),
    )  # fmt: skip


def test_target_parse_names_the_problem() -> None:
    target = Target.parse("etcd://127.0.0.1:2379,127.0.0.1:2380/phalanx/demo")
    assert target.endpoints == ("127.0.0.1:2379", "127.0.0.1:2380")
    assert target.key("leader") == "/phalanx/demo/leader"
    for bad in ("http://127.0.0.1:2379/p", "etcd://127.0.0.1:2379", "etcd://host/p"):
        with pytest.raises(ConfigError):
            Target.parse(bad)


def test_one_leader_at_a_time_and_epochs_grow(etcd: EtcdCluster) -> None:
    a, b = elector(etcd, "a:1"), elector(etcd, "b:1")
    term_a = a.try_acquire()
    assert term_a is not None and b.try_acquire() is None
    leader = b.leader()
    assert leader is not None and (leader.address, leader.epoch) == ("a:1", term_a.epoch)
    a.resign(term_a)
    term_b = b.try_acquire()
    assert term_b is not None and term_b.epoch > term_a.epoch


def test_an_unrenewed_lease_ends_and_the_leader_demotes_first(etcd: EtcdCluster) -> None:
    a, b = elector(etcd, "a:1"), elector(etcd, "b:1")
    term = a.try_acquire()
    assert term is not None
    demoted_after = time.monotonic()
    assert term.leading
    time.sleep(term.demote_at - time.monotonic() + 0.01)
    assert not term.leading  # demoted before etcd let anyone else in
    end = time.monotonic() + 5
    successor = None
    while successor is None and time.monotonic() < end:
        successor = b.try_acquire()
        time.sleep(0.05)
    assert successor is not None and successor.epoch > term.epoch
    assert time.monotonic() - demoted_after >= 0.75  # TTL 1 s minus the 0.25 s margin


def test_a_renewing_leader_keeps_the_lease(etcd: EtcdCluster) -> None:
    # A 2 s lease, not 1 s: renewed every TTL / 4, a 1 s lease is lost after one renewal
    # stalls ~0.5 s (a thread and an etcd round trip waiting for a CPU on a loaded machine).
    # 2.5 s still outlasts an unrenewed lease (its leader demotes itself at 1.5 s).
    a, b = elector(etcd, "a:1", ttl_s=2), elector(etcd, "b:1", ttl_s=2)
    term = a.try_acquire()
    assert term is not None

    async def hold() -> None:
        keeper = asyncio.create_task(term.keep())
        await asyncio.sleep(2.5)  # 1.25 TTLs
        assert term.leading and b.try_acquire() is None
        keeper.cancel()

    asyncio.run(hold())


def test_a_deposed_leaders_commit_is_refused(etcd: EtcdCluster, tmp_path: Path) -> None:
    a, b = elector(etcd, "a:1", ttl_s=2), elector(etcd, "b:1", ttl_s=2)
    old = a.try_acquire()
    assert old is not None
    commit_old = fenced(old, tmp_path)
    asyncio.run(commit_old.commit(state(1, 1.0)))
    a.etcd.revoke(old.lease)  # as if it paused past its TTL: etcd ended the lease
    new = b.try_acquire()
    assert new is not None
    pointer = Pointer.decode(b.etcd.get("/t/committed").value)  # type: ignore[union-attr]
    assert (pointer.round, pointer.epoch) == (1, old.epoch)
    old.deadline = time.monotonic() + 10  # it still believes it leads
    with pytest.raises(LeadershipLostError, match="refused"):
        asyncio.run(commit_old.commit(state(2, 2.0)))
    assert [e["kind"] for e in read_log(tmp_path / f"commits-{old.epoch}.jsonl")] == [
        "commit", "refused",
    ]  # fmt: skip
    loaded = load_committed(pointer, config_digest="cfg")
    assert torch.equal(loaded.params, torch.full((3,), 1.0))
    asyncio.run(fenced(new, tmp_path, previous=pointer).commit(state(2, 3.0)))
    after = Pointer.decode(b.etcd.get("/t/committed").value)  # type: ignore[union-attr]
    assert (after.round, after.epoch, after.base_digest) == (2, new.epoch, pointer.model_digest)


def test_a_commit_that_skips_a_round_is_refused(etcd: EtcdCluster, tmp_path: Path) -> None:
    term = elector(etcd, "a:1", ttl_s=2).try_acquire()
    assert term is not None
    asyncio.run(fenced(term, tmp_path).commit(state(1, 1.0)))
    stale = fenced(term, tmp_path)  # still believes nothing was committed
    with pytest.raises(LeadershipLostError, match="refused"):
        asyncio.run(stale.commit(state(1, 5.0)))


def test_a_cluster_without_quorum_commits_nothing(etcd3: EtcdCluster, tmp_path: Path) -> None:
    a = elector(etcd3, "a:1", ttl_s=2)
    term = a.try_acquire()
    assert term is not None
    etcd3.kill(1)
    etcd3.kill(2)
    with pytest.raises(LeadershipLostError, match="uncertain"):
        asyncio.run(fenced(term, tmp_path).commit(state(1, 1.0)))
    with pytest.raises(EtcdUnavailableError):
        a.etcd.get("/t/committed")  # no quorum: no linearizable read either
    etcd3.restart(1)
    assert etcd3.wait_healthy(20, [etcd3.members[0], etcd3.members[1]])
    found = a.etcd.get("/t/committed")
    # A proposal made without quorum may still apply once the quorum is back: then it is
    # exactly the commit that was tried (the successor's takeover records it), never another.
    if found is not None:
        pointer = Pointer.decode(found.value)
        assert (pointer.round, pointer.epoch) == (1, term.epoch)
        assert pointer.model_digest == model_digest(torch.full((3,), 1.0))
