"""The Byzantine clients of a run, at the message boundary: one adversary behind them all.

A Byzantine client trains like any other; when it replies, ``Adversary.send`` replaces the
genuine weights with the attack's (global model + crafted delta), and the client seals that
(``client.faults.Byzantine``), so the update passes integrity checks.

Colluding attacks (ALIE, IPM, min-max, ...) are omniscient: the adversary sees
(``observe``) the genuine weights of the round's honest clients, and when the first
Byzantine update of a round is sent, a ``RoundGenuine`` callback gives it every reply of
that round still due (the simulation trains them then), so the attack sees the genuine
deltas of all the round's honest updates, those delivered before included. It crafts from a
``RoundView``: those deltas with their client ids, the colluders and the clients selected
so far, and the server's public state -- the round's model, and, once the simulation has
told it the round is opening (``open_round``, wired by ``watching``), the aggregator state
the server carries into the round and its rule as a callable. The crafted vector is computed
once per (round, model version) and every Byzantine update of the round sends it.
Everything is a function of the tasks the engine dispatched and of the checkpointed server
state, both deterministic in the seed, so a resumed round crafts the same vector.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from phalanx.config import RunConfig
from phalanx.core.messages import TaskKey, TrainTask
from phalanx.core.models import PublishedModel
from phalanx.core.rng import torch_rng
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest, flatten, unflatten
from phalanx.faults.attacks import AggregationView, Attack, ColludingAttack, RoundView
from phalanx.faults.byzantine import build_attack, byzantine_clients
from phalanx.types import ClientId

Tensors = dict[str, torch.Tensor]
RoundGenuine = Callable[[], list[tuple[TaskKey, Tensors]]]  # replies still due, trained now
R = TypeVar("R")


@dataclass
class _Round:
    dispatched: set[ClientId] = field(default_factory=set)
    honest: dict[TaskKey, torch.Tensor] = field(default_factory=dict)  # genuine deltas
    crafted: torch.Tensor | None = None


class Adversary:
    def __init__(
        self, attack: Attack, clients: frozenset[int], config: RunConfig, manifest: Manifest
    ) -> None:
        self.attack = attack
        self.clients = clients
        self._seed = config.seed
        self._n = config.selection.clients_per_round
        self._manifest = manifest
        self._config = config
        self._rounds: dict[tuple[int, int], _Round] = {}
        # What the server carries into the round it opens (round, version -> state).
        self._public: tuple[tuple[int, int], Mapping[str, torch.Tensor]] | None = None
        attack.check_round(self._n)

    @classmethod
    def of(cls, config: RunConfig, manifest: Manifest, num_clients: int) -> Adversary | None:
        """The run's adversary, or None when it has no Byzantine client."""
        byzantine = config.faults.byzantine
        attack = build_attack(byzantine)  # checked even when unused: config fails fast
        clients = byzantine_clients(byzantine, num_clients, config.seed)
        return cls(attack, clients, config, manifest) if clients else None

    def is_byzantine(self, client: ClientId) -> bool:
        return client in self.clients

    def open_round(self, state: ServerState) -> None:
        """The server opens round ``state.round``: note the aggregator state it carries
        (public to the colluders, as the literature's omniscient adversary knows it)."""
        self._public = ((state.round, state.model_version), dict(state.tensors))

    def watching(
        self, run_round: Callable[[ServerState], Awaitable[R]]
    ) -> Callable[[ServerState], Awaitable[R]]:
        """``run_round`` that first tells this adversary of the round it opens."""

        async def run(state: ServerState) -> R:
            self.open_round(state)
            return await run_round(state)

        return run

    def dispatched(self, task: TrainTask) -> None:
        """Note a task sent: the colluders count how many of them a round has."""
        self._round(task).dispatched.add(task.key.client)

    def observe(self, task: TrainTask, model: PublishedModel, genuine: Tensors) -> None:
        """An honest client's genuine weights, noted while colluders may still need them."""
        state = self._round(task)
        if isinstance(self.attack, ColludingAttack) and state.crafted is None:
            _keep(state.honest, task.key, self._delta(model, genuine))

    def send(
        self, task: TrainTask, model: PublishedModel, genuine: Tensors, due: RoundGenuine
    ) -> Tensors:
        """What the Byzantine client of ``task`` sends instead of its genuine weights."""
        state, attack = self._round(task), self.attack
        if isinstance(attack, ColludingAttack):
            if state.crafted is None:
                state.crafted = self._collude(attack, task, model, genuine, due)
                state.honest.clear()  # no longer needed: the vector is fixed for the round
            delta = state.crafted
        else:
            key = task.key
            rng = torch_rng(self._seed, "attack", key.round, key.client, key.attempt)
            own = self._delta(model, genuine)
            delta = None if own is None else attack.craft(own, rng)
        if delta is None:
            return genuine  # nothing to attack with: a malformed genuine update goes as is
        sent = unflatten(model.params + delta, self._manifest)
        return {name: sent[name].to(tensor.dtype) for name, tensor in genuine.items()}

    def _collude(
        self,
        attack: ColludingAttack,
        task: TrainTask,
        model: PublishedModel,
        genuine: Tensors,
        due: RoundGenuine,
    ) -> torch.Tensor | None:
        """The round's crafted vector from its honest deltas or, with none, from the
        colluders' own genuine deltas. f counts the Byzantine clients among the round's
        tasks dispatched so far (the colluders know who they are)."""
        state = self._round(task)
        own: dict[TaskKey, torch.Tensor] = {}
        _keep(own, task.key, self._delta(model, genuine))
        for key, tensors in due():
            _keep(
                own if self.is_byzantine(key.client) else state.honest,
                key,
                self._delta(model, tensors),
            )
        pool = state.honest or own
        if not pool:
            return None
        keys = sorted(pool, key=_order)
        return attack.craft_round(self._view(task, model, keys, pool))

    def _view(
        self,
        task: TrainTask,
        model: PublishedModel,
        keys: list[TaskKey],
        pool: dict[TaskKey, torch.Tensor],
    ) -> RoundView:
        """The round as the colluders see it (see ``RoundView``)."""
        dispatched = self._round(task).dispatched
        round_index, version = task.key.round, task.model.version
        public = self._public
        carried = public[1] if public is not None and public[0] == (round_index, version) else {}
        return RoundView(
            torch.stack([pool[k] for k in keys]),
            tuple(k.client for k in keys),
            tuple(sorted(dispatched & self.clients)),
            self._n,
            round_index=round_index,
            model_version=version,
            global_model=model.params,
            aggregation=self._aggregation(round_index, carried),
            selected=tuple(sorted(dispatched)),
            server_state=carried,
        )

    def _aggregation(
        self, round_index: int, carried: Mapping[str, torch.Tensor]
    ) -> AggregationView:
        """The server's rule and bounds (imported here: a client process, which runs no
        colluding attack, need not load the aggregation package)."""
        from phalanx.faults.view import aggregation_view

        config = self._config
        return aggregation_view(
            config.aggregation, config.validation, seed=self._seed, round_index=round_index,
            state=carried,
        )  # fmt: skip

    def _delta(self, model: PublishedModel, tensors: Tensors) -> torch.Tensor | None:
        """Weights minus the global model, flat; None for weights that do not fit the model
        (validation will refuse those; they must not break the attack)."""
        if set(tensors) != set(self._manifest.names):
            return None
        flat = flatten(tensors, self._manifest)
        return flat - model.params if flat.numel() == model.params.numel() else None

    def _round(self, task: TrainTask) -> _Round:
        """State of the task's (round, model version); older rounds are forgotten."""
        key = (task.key.round, task.model.version)
        if key not in self._rounds:
            self._rounds = {k: v for k, v in self._rounds.items() if k[0] >= key[0]}
            self._rounds[key] = _Round()
        return self._rounds[key]


def _keep(deltas: dict[TaskKey, torch.Tensor], key: TaskKey, delta: torch.Tensor | None) -> None:
    if delta is not None:
        deltas[key] = delta


def _order(key: TaskKey) -> tuple[int, int, int]:
    """Canonical order of a round's deltas, so the crafted vector's float sums never depend
    on delivery order."""
    return (key.round, key.client, key.attempt)
