"""The gate's answers (standby, deposed, stale task) and the history checker on tiny
literal histories whose verdict is known by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from phalanx.core.messages import Envelope, TaskFailure, TaskKey
from phalanx.errors import NotLeaderError, StaleError
from phalanx.ha.checker import check
from phalanx.ha.gate import Gate
from phalanx.ha.history import TermHistory
from phalanx.ha.pointer import Pointer
from phalanx.runtime.grpc.session import Ack, Caller, JoinRequest
from phalanx.types import ClientId, FailureKind


class Service:
    """Answers like a leading CoordinatorService would, recording what reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def join(self, request: JoinRequest) -> str:
        self.calls.append("join")
        return "lease"

    async def report_failure(self, caller: Caller, failure: TaskFailure) -> Ack:
        self.calls.append("report")
        return Ack(Envelope(epoch=7))


def caller(epoch: int) -> Caller:
    return Caller(Envelope(epoch=epoch), ClientId(1), "s")


def failure(epoch: int) -> TaskFailure:
    key = TaskKey(3, ClientId(1), 0)
    return TaskFailure(key, FailureKind.CRASH, "", Envelope(epoch=epoch))


def test_a_standby_names_the_leader() -> None:
    gate = Gate()
    gate.stand_by("10.0.0.2:7000")
    with pytest.raises(NotLeaderError) as refused:
        asyncio.run(gate.join(JoinRequest(Envelope(), ClientId(1), "c", 5)))
    assert refused.value.leader == "10.0.0.2:7000"


def test_a_leader_refuses_newer_epochs_and_older_tasks() -> None:
    gate, service = Gate(), Service()
    gate.lead(service, 7, "me:1")  # type: ignore[arg-type]
    assert asyncio.run(gate.join(JoinRequest(Envelope(epoch=5), ClientId(1), "c", 5))) == "lease"
    with pytest.raises(NotLeaderError, match="deposed"):
        asyncio.run(gate.join(JoinRequest(Envelope(epoch=9), ClientId(1), "c", 5)))
    with pytest.raises(StaleError, match="epoch 6; this coordinator leads at epoch 7"):
        asyncio.run(gate.report_failure(caller(7), failure(6)))
    asyncio.run(gate.report_failure(caller(7), failure(7)))
    assert service.calls == ["join", "report"]


def commit(round_: int, model: str, base: str, epoch: int, who: str = "a") -> dict[str, Any]:
    return {"kind": "commit", "round": round_, "model_digest": model, "base_digest": base,
            "epoch": epoch, "coordinator": who}  # fmt: skip


def takeover(epoch: int, round_: int, model: str, pointer_epoch: int) -> dict[str, Any]:
    return {"kind": "takeover", "epoch": epoch, "round": round_, "model_digest": model,
            "pointer_epoch": pointer_epoch, "base_digest": "", "coordinator": "b"}  # fmt: skip


def final(round_: int, model: str, base: str, epoch: int) -> Pointer:
    return Pointer(
        run_id="r", round=round_, model_version=round_, model_digest=model, base_digest=base,
        epoch=epoch, checkpoint="", stores=(), config_digest="c", finished=True,
    )  # fmt: skip


CHAIN = [takeover(3, 0, "m0", 0), commit(1, "m1", "m0", 3), commit(2, "m2", "m1", 3)]


def test_one_chain_across_a_failover_passes() -> None:
    entries = [*CHAIN, takeover(8, 2, "m2", 3), commit(3, "m3", "m2", 8)]
    verdict = check(entries, final(3, "m3", "m2", 8), rounds=3)
    assert verdict.ok, verdict.violations
    assert (verdict.rounds, verdict.epochs) == (3, [3, 8])


def test_a_round_only_a_takeover_saw_is_not_lost() -> None:
    # epoch 3 died between its transaction for round 3 and its log line
    entries = [*CHAIN, takeover(8, 3, "m3", 3), commit(4, "m4", "m3", 8)]
    assert check(entries, final(4, "m4", "m3", 8), rounds=4).ok


@pytest.mark.parametrize(
    ("extra", "rounds", "last", "violation"),
    [
        ([commit(2, "m2x", "m1", 8)], 2, final(2, "m2", "m1", 3), "round 2 observed with 2 models"),
        ([commit(3, "m3", "m1", 8)], 3, final(3, "m3", "m1", 8), "not from round 2's model"),
        ([commit(4, "m4", "m3", 8)], 4, final(4, "m4", "m3", 8), "lost"),
        ([commit(3, "m3", "m2", 2)], 3, final(3, "m3", "m2", 2), "follows epoch 3"),
        ([], 3, final(2, "m2", "m1", 3), "the run has 3 rounds"),
    ],
)
def test_each_kind_of_broken_history_is_found(
    extra: list[dict[str, Any]], rounds: int, last: Pointer, violation: str
) -> None:
    verdict = check([*CHAIN, *extra], last, rounds=rounds)
    assert any(violation in v for v in verdict.violations), verdict.violations


def test_a_coordinators_history_is_appended_term_after_term(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b'{"round": 0}\n{"round": 1}\n{"rou')  # a SIGKILL mid-append
    history = TermHistory(path)
    history.start(5, None)  # a later term: nothing before round 5 is cut
    history.append({"round": 5})
    history.close()
    assert [r["round"] for r in history.records()] == [0, 1, 5]
