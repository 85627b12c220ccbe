"""Chaos schedules with real processes: a coordinator and client processes behind the chaos
proxy, clients SIGKILLed and SIGSTOPped, the coordinator SIGKILLed mid-round and inside a
checkpoint write then resumed on the same port, and (where the machine permits network
namespaces) a real partition. Each run must complete with one chain of commits and every
checkpoint on it. The checks themselves are tested on forged run directories first, so a
broken chain is known to fail them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phalanx.checkpoint import LocalCheckpointStore
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.errors import ConfigError
from phalanx.faults.chaos import ChaosSchedule, Delay, Flip, Heal, Reset, Step
from phalanx.testing.chaos import (
    ChaosPlan,
    ChaosRun,
    KillClient,
    KillCoordinator,
    PauseClient,
    check_run,
    draw_plan,
)
from phalanx.testing.chaos.checks import log_crashes
from phalanx.testing.chaos.isolated import run_isolated
from phalanx.testing.chaos.netns import namespaces_unavailable
from phalanx.testing.chaos.plan import Partition

EPOCHS = 10  # a round of ~0.5 s on a quiet machine: long enough for faults to land in it


def record(round_: int, version: int, committed: bool = True) -> dict[str, object]:
    return {"round": round_, "committed": committed, "model_version": version, "accepted": [0]}


def forge(run: Path, records: list[dict[str, object]], *, checkpoints: int = 0) -> None:
    """A run directory with these history lines, a summary that agrees, and checkpoints of
    the first ``checkpoints`` rounds as the lifecycle would write them."""
    run.mkdir(parents=True)
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    committed = sum(bool(r["committed"]) for r in records)
    summary = {"rounds": len(records), "rounds_committed": committed,
               "final_model_version": committed, "corrupt_aggregated": 0}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    store = LocalCheckpointStore(run / "checkpoints", keep=10)
    store.acquire()
    try:
        for r in records[:checkpoints]:
            state = ServerState(
                round=int(str(r["round"])) + 1, model_version=int(str(r["model_version"])),
                params=torch.zeros(4), manifest=Manifest.of({"w": torch.zeros(4)}), health={},
                last_record=r, config_digest="abc",
            )  # fmt: skip
            store.save(state)
    finally:
        store.release()


def test_checks_pass_a_clean_chain_and_count_what_breaks_it(tmp_path: Path) -> None:
    good = [record(0, 1), record(1, 1, committed=False), record(2, 2)]
    forge(tmp_path / "good", good, checkpoints=3)
    verdict = check_run(tmp_path / "good", rounds=3, exits=[(0, False)], snapshots=[good[:2]],
                        coordinator_log=None)  # fmt: skip
    assert verdict.ok and verdict.committed == 2, verdict.problems

    doubled = [record(0, 1), record(1, 2), record(1, 2)]
    forge(tmp_path / "doubled", doubled)
    verdict = check_run(tmp_path / "doubled", rounds=3, exits=[(0, False)], snapshots=[],
                        coordinator_log=None)  # fmt: skip
    assert verdict.doubled == 1 and not verdict.ok

    forge(tmp_path / "lost", [record(0, 1), record(2, 2)])
    verdict = check_run(tmp_path / "lost", rounds=2, exits=[(-9, True), (0, False)],
                        snapshots=[[record(0, 1), record(1, 2)]], coordinator_log=None)  # fmt: skip
    assert verdict.lost >= 2 and not verdict.ok, verdict.problems

    off = [record(0, 1), record(1, 2)]
    forge(tmp_path / "off", off, checkpoints=2)
    (tmp_path / "off" / "history.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [record(0, 1), {**record(1, 2), "accepted": [1]}])
    )
    log = tmp_path / "coordinator.log"
    log.write_text("Traceback (most recent call last):\n  boom\n")
    verdict = check_run(tmp_path / "off", rounds=2, exits=[(-9, False), (0, False)],
                        snapshots=[], coordinator_log=log)  # fmt: skip
    assert verdict.off_chain == 1 and verdict.crashes == 2, verdict.problems


GRPC_REPLY_TO_A_GONE_PEER = """\
INFO phalanx.runtime.grpc.coordinator: client 5 joined (400 examples)
ERROR grpc._cython.cygrpc: ExecuteBatchError raised in core by servicer method [/v1/Heartbeat]
Traceback (most recent call last):
  File "src/python/grpcio/grpc/_cython/_cygrpc/aio/server.pyx.pxi", line 710, in _handle_exceptions
  File "src/python/grpcio/grpc/_cython/_cygrpc/aio/callback_common.pyx.pxi", line 99, in eb
grpc._cython.cygrpc.ExecuteBatchError: Failed "execute_batch": (<SendInitialMetadataOperation>,)
WARNING phalanx.checkpoint.crashpoints: crash point checkpoint.after_tensors reached: SIGKILL
run directory: /tmp/run
"""
PHALANX_FRAME = """\
Traceback (most recent call last):
  File "/work/src/phalanx/runtime/grpc/servicer.py", line 80, in Heartbeat
KeyError: 3
"""


REFUSAL_TO_A_GONE_PEER = """\
ERROR grpc._cython.cygrpc: ExecuteBatchError raised in core by servicer method [/v1/Heartbeat]
Traceback (most recent call last):
  File "/work/src/phalanx/runtime/grpc/servicer.py", line 83, in method
phalanx.errors.AuthError: client 2: credential not accepted

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "src/python/grpcio/grpc/_cython/_cygrpc/aio/server.pyx.pxi", line 710, in _handle
  File "/work/src/phalanx/runtime/grpc/servicer.py", line 85, in method
grpc._cython.cygrpc.ExecuteBatchError: Failed "execute_batch": (<SendStatusFromServer>,)
"""
CANCELLED_AT_STOP = """\
ERROR grpc._cython.cygrpc: Exception not handled by _handle_exceptions in servicer method [/x]
Traceback (most recent call last):
  File "src/python/grpcio/grpc/_cython/_cygrpc/aio/server.pyx.pxi", line 812, in _schedule
asyncio.exceptions.CancelledError
"""


def test_grpcio_records_it_handled_itself_are_counted_apart_and_nothing_else() -> None:
    assert log_crashes(GRPC_REPLY_TO_A_GONE_PEER) == ([], 1)
    assert log_crashes(REFUSAL_TO_A_GONE_PEER) == ([], 1)
    assert log_crashes(CANCELLED_AT_STOP + CANCELLED_AT_STOP) == ([], 2)
    header = "ERROR grpc._cython.cygrpc: Invalid encoding on b'\\xe7rpc-accept-encoding'\n"
    decode = 'Traceback (most recent call last):\n  File "src/python/grpcio/grpc/_cython/x.pxi"\n'
    assert log_crashes(header + decode + "UnicodeDecodeError: 'utf-8'\n") == ([], 1)
    for crash in (
        PHALANX_FRAME,  # before any log record: an uncaught exception
        GRPC_REPLY_TO_A_GONE_PEER + PHALANX_FRAME,  # a second traceback after grpcio's
        "ERROR grpc._cython.cygrpc: Unexpected [KeyError] raised by servicer method [/x]\n"
        + PHALANX_FRAME,
        REFUSAL_TO_A_GONE_PEER.replace("phalanx.errors.AuthError", "KeyError"),  # a bug's
        CANCELLED_AT_STOP.replace("asyncio.exceptions.CancelledError", "KeyError: 3"),
        CANCELLED_AT_STOP.replace('"src/python/grpcio/grpc', '"/work/src/phalanx'),
        "INFO phalanx: done\nWARNING phalanx: StatusCode.INTERNAL returned\n",
    ):
        crashes, _ = log_crashes(crash)
        assert crashes, crash


def test_a_seed_draws_one_plan_that_round_trips_and_names_its_faults() -> None:
    plan = draw_plan(11)
    assert draw_plan(11) == plan != draw_plan(12)
    assert ChaosPlan.from_json(plan.to_json()) == plan
    assert plan.describe().startswith("seed 11:") and plan.network.steps[-1].action == Heal()
    assert not plan.partitions and draw_plan(11, partitions=True).partitions
    with pytest.raises(ConfigError, match="invalid chaos plan"):
        ChaosPlan.from_json('{"seed": 1}')


def test_a_plan_that_flips_bytes_runs_over_tls_unless_told_otherwise() -> None:
    flipping = next(draw_plan(seed) for seed in range(100) if draw_plan(seed).flips)
    clean = next(draw_plan(seed) for seed in range(100) if not draw_plan(seed).flips)
    assert flipping.tls and "TLS" in flipping.describe().splitlines()[0]
    assert not clean.tls and "plaintext" in clean.describe().splitlines()[0]
    assert not flipping.model_copy(update={"transport": "plaintext"}).tls
    assert clean.model_copy(update={"transport": "tls"}).tls
    assert ChaosPlan.from_json(flipping.to_json()).tls


def test_a_partition_plan_never_runs_on_the_hosts_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="private network namespace"):
        ChaosRun(draw_plan(3, partitions=True), tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_clients_killed_and_frozen_and_the_coordinator_killed_mid_round(tmp_path: Path) -> None:
    network = ChaosSchedule(steps=(
        Step(at=1.0, action=Flip(rate=1e-3, seed=5)), Step(at=1.5, action=Heal()),
        Step(at=3.0, action=Reset()), Step(at=4.0, action=Delay(seconds=0.05)),
        Step(at=5.0, action=Heal()),
    ))  # fmt: skip
    plan = ChaosPlan(seed=101, clients=4, rounds=5, network=network, events=(
        KillClient(at=0.1, client=1), PauseClient(at=0.2, client=2, seconds=1.5),
        KillCoordinator(at=0.3),
    ))  # fmt: skip
    outcome = ChaosRun(plan, tmp_path, epochs=EPOCHS).run()
    assert outcome.verdict.ok, plan.describe() + "\n" + "\n".join(outcome.verdict.problems)
    assert [caused for _, caused in outcome.exits] == [True, False]  # killed once, resumed
    assert outcome.verdict.committed >= 1


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_the_coordinator_killed_inside_a_checkpoint_write_resumes_on_the_chain(
    tmp_path: Path,
) -> None:
    plan = ChaosPlan(
        seed=102, clients=4, rounds=3, network=ChaosSchedule(steps=(Step(at=0.0, action=Heal()),)),
        crash_points=("checkpoint.after_tensors@2",),
    )  # fmt: skip
    outcome = ChaosRun(plan, tmp_path, epochs=EPOCHS).run()
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems)
    assert outcome.exits == [(-9, True), (0, False)]
    assert outcome.verdict.committed >= 1


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_partition_in_a_private_network_namespace(tmp_path: Path) -> None:
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(f"partitions need private network namespaces: {reason}")
    plan = ChaosPlan(
        seed=103, clients=4, rounds=3, network=ChaosSchedule(steps=(Step(at=0.0, action=Heal()),)),
        events=(Partition(at=0.1, seconds=1.5), KillClient(at=0.3, client=0)),
    )  # fmt: skip
    outcome = run_isolated(plan, tmp_path, deadline_s=150.0, epochs=EPOCHS)
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems)
