"""One round: select -> collect -> validate -> aggregate -> gate -> evaluate.

Errors during a round are latched, not raised; one gate at the end decides whether the round
commits. A discarded round leaves the global model exactly as it was (never an older one).
``run_round`` returns the next state and the round's record; making it durable (checkpoint,
history log) and telling observers is the run lifecycle's (``phalanx.coordinator``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from phalanx.aggregation import Aggregator, RoundContext, StreamingAggregator, build_aggregator
from phalanx.aggregation.base import refused_relative, round_f
from phalanx.config import RunConfig
from phalanx.core.messages import Envelope
from phalanx.core.models import ModelBook
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.engine.collect import Collection, Collector, RoundInputs
from phalanx.engine.health import HealthMonitor, flag_floor
from phalanx.engine.health_index import HealthIndex
from phalanx.engine.heap import fit_to_round, settle_long_lived
from phalanx.engine.history import RoundRecord
from phalanx.engine.membership import Membership
from phalanx.engine.offload import Offloader
from phalanx.engine.pool import UpdatePool, stack_bytes
from phalanx.engine.ports import Runtime
from phalanx.engine.retry import RetryPolicy
from phalanx.engine.selection import sample_ranked
from phalanx.errors import AggregationError

log = logging.getLogger("phalanx.engine")

Evaluate = Callable[[torch.Tensor], dict[str, float]]
# An observer of committed rounds (progress, on_round): called by the run lifecycle after the
# round is durable, with the state after it and its record.
RoundHook = Callable[[ServerState, RoundRecord], None]
# What a simulation injected into a round (fault plan, attacks), for ``RoundRecord.injected``.
RoundFaults = Callable[[int], list[dict[str, Any]]]


class Engine:
    def __init__(
        self,
        config: RunConfig,
        runtime: Runtime,
        *,
        membership: Membership,
        evaluate: Evaluate | None = None,
        aggregator: Aggregator | None = None,
        models: ModelBook | None = None,
        round_faults: RoundFaults | None = None,
        run_id: str | None = None,
        offload: Offloader | None = None,
        epoch: int = 0,
    ) -> None:
        self._config = config
        self._runtime = runtime
        self._membership = membership
        self._models = models  # each round's model is published here for the runtime
        self._round_faults = round_faults
        # Stamped on every message of the run (the run directory's run id); without one, the
        # trajectory digest names the run.
        self._run_id = run_id
        self.epoch = epoch  # the leader's fencing epoch, stamped on every task (0: no failover)
        self._index: HealthIndex | None = None
        self._evaluate = evaluate
        self._aggregator = aggregator or build_aggregator(config.aggregation)
        self._health = HealthMonitor(config.health)
        self._flag_floor = flag_floor(self._aggregator, config)
        retry = RetryPolicy(config.retry, seed=config.seed)
        # CPU work (validation, stacking aggregation, evaluation) runs off the event loop;
        # the engine owns the executor unless it was given one (close() releases it).
        self._owns_offload = offload is None
        self.offload = offload or Offloader()
        self._collector = Collector(
            config, runtime, membership, self._health, retry, offload=self.offload
        )
        # With ``defer_evaluation`` a round returns before its evaluation lands; the run
        # lifecycle ``settle``s it, so the next round can train meanwhile (its evaluator
        # must then not share a module with training: the built-in ones keep their own).
        self.defer_evaluation = False
        self._deferred: dict[int, asyncio.Future[dict[str, float]]] = {}

    def close(self) -> None:
        """Release the engine's executor threads (idempotent)."""
        if self._owns_offload:
            self.offload.close()

    def initial_state(self, params: torch.Tensor, manifest: Manifest) -> ServerState:
        return ServerState(
            round=0,
            model_version=0,
            params=params.detach().float().clone(),
            manifest=manifest,
            health=self._health.new_table(self._membership.registered()),
        )

    async def run_round(self, state: ServerState) -> tuple[ServerState, RoundRecord]:
        """Run round ``state.round``; return the state after it and what happened."""
        wall_start = time.perf_counter()
        clock = self._runtime.clock
        record = RoundRecord(
            round=state.round, model_version=state.model_version, started_at=clock.now()
        )
        index = await self._open_health(state, record)
        healthy, probation = index.healthy, index.probation
        record.sidelined = len(index.table) - len(healthy)
        if self._models is None:  # a runtime that resolves no model needs no shared book
            self._models = ModelBook(state.manifest)
        inputs = RoundInputs(
            state.round, state.model_version, state.params, state.manifest,
            model=self._models.publish(state.model_version, state.params),
            envelope=Envelope(run_id=self._run_id or state.config_digest, epoch=self.epoch),
        )  # fmt: skip
        col = Collection(
            inputs,
            deadline=clock.now() + self._config.deadlines.round_s,
            index=index,
            record=record,
            pool=UpdatePool(
                self._aggregator, self._config.validation, dim=state.manifest.dim,
                budget_bytes=self._config.aggregation.memory_budget_bytes,
                prior_norms=state.extra.get("accepted_norms"),
            ),
        )  # fmt: skip
        probes = sample_ranked(
            probation, self._config.health.max_probes_per_round,
            seed=self._config.seed, round_index=state.round, stream="probe",
        )  # fmt: skip
        required = self._config.quorum.required(self._config.selection.clients_per_round)
        refusal = self._memory_refusal(state.manifest.dim)
        if refusal:
            record.reasons.append(refusal)
        elif len(healthy) + len(probes) < required:
            record.reasons.append(
                f"only {len(healthy)} healthy and {len(probes)} probed clients; "
                f"quorum needs {required}"
            )
        else:
            await self._collector.collect(col, probes)
        events = [(e.client, e.reason) for e in record.events]
        f = round_f(self._config.aggregation.f, events)
        record.effective_f = f if f < self._config.aggregation.f else None
        context = RoundContext(
            self._config.seed, state.round, state.tensors, f=f, refused=refused_relative(events)
        )
        new_params, carried = await self._gate_and_aggregate(col, required, context)
        if self._round_faults is not None:
            record.injected = self._round_faults(state.round)
        evaluation = self._evaluation(state, new_params)
        if evaluation is not None and not self.defer_evaluation:
            record.metrics, evaluation = await evaluation, None
        new_state, record = self._finish(state, col, new_params, carried, wall_start)
        if evaluation is not None:  # deferred: the lifecycle settles it
            self._deferred[record.round] = evaluation
        return new_state, record

    def _evaluation(
        self, state: ServerState, new_params: torch.Tensor | None
    ) -> asyncio.Future[dict[str, float]] | None:
        """The round's model evaluated, when the cadence says so, started now on the
        executor's thread: thread-local torch state (grad mode) is that thread's, so an
        evaluator sets its own (the built-in ones run under ``torch.no_grad``)."""
        if self._evaluate is None or (state.round + 1) % self._config.eval_every != 0:
            return None
        params = new_params if new_params is not None else state.params
        return self.offload.start(self._evaluate, params)

    def pending(self, record: RoundRecord) -> bool:
        """Whether ``record``'s evaluation was deferred and ``settle`` has yet to wait for it."""
        return record.round in self._deferred

    async def settle(self, state: ServerState, record: RoundRecord) -> ServerState:
        """``state`` (the one ``run_round`` returned with ``record``) once the round's
        deferred evaluation has landed: its metrics in ``record`` and in the state's
        ``last_record``. A round without one is returned as it is."""
        evaluation = self._deferred.pop(record.round, None)
        if evaluation is None:
            return state
        record.metrics = await evaluation
        return state.with_changes(last_record=record.to_json())

    async def _open_health(self, state: ServerState, record: RoundRecord) -> HealthIndex:
        """The health index at this round's opening: built once from ``state.health`` (on
        start or resume), after waiting, if need be, for enough live members."""
        index = self._index
        if index is None or not index.current_for(state.health, state.round):
            index = HealthIndex(state.health, state.round, self._membership.is_live)
            index.add_missing(self._membership.registered())
            self._membership.changes()  # already reflected in registered()
            self._index = index
            settle_long_lived()  # the long-lived heap is set up: out of the collector's way
        # The collector's cadence follows the round's size (engine/heap.py): with fixed
        # thresholds a round's collections would grow as the square of its clients.
        fit_to_round(self._config.selection.dispatch_count)
        needed = self._config.quorum.required(self._config.selection.clients_per_round)
        wait_s = self._config.selection.member_wait_s
        if self._membership.live_count() < needed and wait_s > 0:
            clock = self._runtime.clock
            start = clock.now()
            await self._membership.wait_for(needed, wait_s)
            record.member_wait_s = clock.now() - start
        index.apply(self._membership.changes())
        index.open_round(state.round)
        return index

    def _memory_refusal(self, dim: int) -> str | None:
        """Refuse, before dispatching anything, a round whose stack cannot fit the budget."""
        if isinstance(self._aggregator, StreamingAggregator):
            return None
        target = self._config.selection.clients_per_round
        budget = self._config.aggregation.memory_budget_bytes
        need = stack_bytes(target, dim)
        if need <= budget:
            return None
        return (
            f"aggregator {self._aggregator.name!r} needs all updates at once: "
            f"{target} x {dim} float32 = {need} bytes exceeds "
            f"aggregation.memory_budget_bytes = {budget}"
        )

    async def _gate_and_aggregate(
        self, col: Collection, required: int, context: RoundContext
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The new global model (None: the round is discarded) and the aggregator state to
        carry forward if it commits."""
        record = col.record
        chosen = col.pool.members()  # canonical order
        record.accepted = [m.client for m in chosen]
        record.accepted_attempts = [m.attempt for m in chosen]
        record.partial = sum(1 for m in chosen if m.work_fraction < 1)
        if record.reasons:
            return None, {}
        if len(chosen) < required:
            record.reasons.append(f"quorum not met: {len(chosen)} accepted updates < {required}")
            return None, {}
        try:
            size = col.pool.held_bytes() + col.inputs.update_bytes
            result, clients = await self.offload.cpu(size, col.pool.aggregate, context)
        except AggregationError as error:  # latched: the round is discarded, not the run
            record.reasons.append(f"aggregation failed: {error}")
            return None, {}
        if not bool(torch.isfinite(result.vector).all()):
            record.reasons.append("aggregate is not finite")
            return None, {}
        record.discarded = [clients[row] for row in result.discarded]
        record.scaled = {clients[row]: round(f, 6) for row, f in result.scaled.items()}
        self._flag(col, [clients[row] for row in result.flagged])
        return col.inputs.params + result.vector, dict(result.state)

    def _flag(self, col: Collection, flagged: list[int]) -> None:
        """Let the health monitor learn from the aggregator's verdicts (``health_feedback``),
        never sidelining the healthy pool below the aggregator's floor (``flag_floor``)."""
        col.record.flagged = sorted(flagged)
        if not self._config.aggregation.health_feedback:
            return
        col.record.flag_sidelined = self._health.apply_flags(
            col.index, col.record.flagged, col.inputs.round_index, floor=self._flag_floor,
            set_health=functools.partial(self._collector.set_health, col),
        )  # fmt: skip

    def _finish(
        self,
        state: ServerState,
        col: Collection,
        new_params: torch.Tensor | None,
        carried: dict[str, torch.Tensor],
        wall_start: float,
    ) -> tuple[ServerState, RoundRecord]:
        record = col.record
        record.committed = new_params is not None
        params = new_params if new_params is not None else state.params
        version = state.model_version + (1 if record.committed else 0)
        record.model_version = version
        record.ended_at = self._runtime.clock.now()
        record.wall_s = time.perf_counter() - wall_start
        if not record.committed:
            log.warning("round %s discarded: %s", state.round, "; ".join(record.reasons))
        new_state = state.with_changes(
            round=state.round + 1,
            model_version=version,
            params=params,
            health=col.index.table,
            last_record=record.to_json(),
            extra=(
                {**state.extra, "accepted_norms": col.pool.accepted_norms()}
                if record.committed
                else state.extra
            ),
            clock=record.ended_at,
            tensors={**state.tensors, **carried} if record.committed else state.tensors,
        )
        col.index.close_round()
        return new_state, record
