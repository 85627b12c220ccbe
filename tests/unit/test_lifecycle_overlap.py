"""The run lifecycle with deferred evaluations: a round's evaluation overlaps the next round,
commits stay in round order, checkpointed rounds wait for theirs, and errors and stops lose
nothing that committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from tests.scenario.conftest import tiny_config

from phalanx.checkpoint import LocalCheckpointStore
from phalanx.config import RunConfig
from phalanx.coordinator import MemoryHistory, RunLifecycle
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.engine.history import RoundRecord
from phalanx.simulation import Simulation


def initial() -> ServerState:
    params = torch.zeros(2)
    return ServerState(0, 0, params, Manifest.of({"w": params}), health={})


class Rounds:
    """A scripted engine: each round logs its start, and its evaluation is a future that the
    test (or the next round) resolves, as the executor thread would."""

    def __init__(
        self, last: int, *, finish_before_next: bool = False, failing: int | None = None
    ) -> None:
        self.last = last  # the run's last round: nothing after it lands its evaluation
        self.log: list[str] = []
        self.evaluations: dict[int, asyncio.Future[dict[str, float]]] = {}
        self.finish_before_next = finish_before_next
        self.failing = failing

    async def run_round(self, state: ServerState) -> tuple[ServerState, RoundRecord]:
        r = state.round
        self.log.append(f"start {r}")
        if r > 0 and not self.finish_before_next:
            # The previous round's evaluation lands while this round runs.
            await asyncio.sleep(0)
            self._land(r - 1)
            await asyncio.sleep(0)
        record = RoundRecord(round=r, model_version=r + 1, committed=True)
        self.evaluations[r] = asyncio.get_running_loop().create_future()
        if self.finish_before_next or r == self.last:
            self._land(r)
        self.log.append(f"end {r}")
        new = state.with_changes(round=r + 1, model_version=r + 1, last_record=record.to_json())
        return new, record

    def _land(self, r: int) -> None:
        future = self.evaluations[r]
        if not future.done():
            if r == self.failing:
                future.set_exception(RuntimeError(f"evaluation of round {r} failed"))
            else:
                future.set_result({"accuracy": r / 10})

    def pending(self, record: RoundRecord) -> bool:
        return record.round in self.evaluations

    async def settle(self, state: ServerState, record: RoundRecord) -> ServerState:
        record.metrics = await self.evaluations[record.round]
        self.log.append(f"settled {record.round}")
        return state.with_changes(last_record=record.to_json())


def lifecycle(config: RunConfig, store: LocalCheckpointStore | None = None) -> RunLifecycle:
    committed: list[str] = []
    run = RunLifecycle(
        config, store=store, history=MemoryHistory(),
        observers=[lambda s, r: committed.append(f"commit {r.round}")],
    )  # fmt: skip
    run.committed = committed  # type: ignore[attr-defined]
    return run


def test_the_next_round_starts_before_the_last_ones_evaluation_and_commits_stay_ordered() -> None:
    config = tiny_config("rounds=4")
    rounds, run = Rounds(last=3), lifecycle(config)
    state = asyncio.run(run.run(rounds.run_round, run.start(initial(), resume=False),
                                evaluations=rounds))  # fmt: skip

    assert state.round == 4 and run.state is not None and run.state.round == 4
    log = rounds.log
    assert log.index("start 1") < log.index("settled 0")  # round 0's evaluation overlapped
    assert log.index("start 2") < log.index("settled 1")
    records = run.history.records()  # type: ignore[attr-defined]
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert [r["metrics"]["accuracy"] for r in records] == [0.0, 0.1, 0.2, 0.3]
    assert run.committed == ["commit 0", "commit 1", "commit 2", "commit 3"]  # type: ignore[attr-defined]


def test_a_checkpointed_round_is_settled_before_the_next_round_starts(tmp_path: Path) -> None:
    config = tiny_config("rounds=4", "checkpoint.every=2")
    rounds = Rounds(last=3, finish_before_next=True)
    run = lifecycle(config, LocalCheckpointStore(tmp_path))
    asyncio.run(run.run(rounds.run_round, run.start(initial(), resume=False),
                        evaluations=rounds))  # fmt: skip
    run.close()

    log = rounds.log
    # Rounds 1 and 3 end in states 2 and 4: checkpointed, so settled before the next start.
    assert log.index("settled 1") < log.index("start 2")
    assert log.index("start 1") < log.index("settled 0")  # round 0 wrote none: overlapped
    assert isinstance(run.store, LocalCheckpointStore)
    assert {2, 4} <= set(run.store.rounds())


def test_a_failed_evaluation_stops_the_run_and_commits_nothing_after_it() -> None:
    config = tiny_config("rounds=5")
    rounds, run = Rounds(last=4, failing=1), lifecycle(config)
    with pytest.raises(RuntimeError, match="evaluation of round 1 failed"):
        asyncio.run(run.run(rounds.run_round, run.start(initial(), resume=False),
                            evaluations=rounds))  # fmt: skip
    assert run.committed == ["commit 0"]  # type: ignore[attr-defined]
    assert run.state is not None and run.state.round == 1


def test_a_stop_while_a_commit_is_behind_keeps_the_last_committed_state() -> None:
    config = tiny_config("rounds=6")
    rounds, run = Rounds(last=5), lifecycle(config)
    stop_in = 3

    async def stopping_round(state: ServerState) -> tuple[ServerState, RoundRecord]:
        if state.round == stop_in:
            await asyncio.sleep(0)
            raise asyncio.CancelledError  # as a stop signal cancels the round in flight
        return await rounds.run_round(state)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run.run(stopping_round, run.start(initial(), resume=False),
                            evaluations=rounds))  # fmt: skip
    # Round 2's evaluation never landed (round 3 would have landed it): abandoned with the
    # round in flight. Rounds 0 and 1 stay committed, in order.
    assert run.committed == ["commit 0", "commit 1"]  # type: ignore[attr-defined]
    assert run.state is not None and run.state.round == 2


def test_a_simulation_with_deferred_evaluation_matches_one_without() -> None:
    config = tiny_config("rounds=4")
    deferred = Simulation(config).run()
    plain = Simulation(config)
    plain._evaluation_overlaps = False  # the engine awaits each evaluation in its round
    serial = plain.run()

    def comparable(history: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in h.items() if k != "wall_s"} for h in history]

    assert comparable(deferred.history) == comparable(serial.history)
    assert all("accuracy" in h["metrics"] for h in deferred.history)  # type: ignore[operator]


def test_an_evaluator_never_touches_the_module_it_was_built_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It may run while the next round trains from that module (a worker's deep copy of the
    template): ``functional_call`` swaps the parameters of the module it is given."""
    import phalanx.evaluation as evaluation

    sim = Simulation(tiny_config("rounds=1"))
    seen: list[torch.nn.Module] = []
    real = evaluation.functional_call

    def spy(module: torch.nn.Module, *args: object, **kwargs: object) -> object:
        seen.append(module)
        return real(module, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluation, "functional_call", spy)
    assert sim._evaluate is not None
    metrics = sim._evaluate(sim.initial_params)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert seen and all(module is not sim.model for module in seen)
