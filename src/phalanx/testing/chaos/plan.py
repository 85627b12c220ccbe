"""``ChaosPlan``: one seeded random schedule of faults for a deployment on loopback.

A plan is data (strict pydantic, JSON both ways), drawn from a seed: the same seed draws the
same plan, so a failing schedule is replayed with ``--seed`` or from its JSON file. It mixes
three kinds of fault, each on its own clock:

- ``network``: proxy faults (blackhole, delay, truncate, reset, flip bytes, bandwidth,
  refuse) on windows of time, each window healed before the next;
- ``events``: process faults: SIGKILL of a client,
  SIGSTOP of a client for a while then SIGCONT, SIGKILL of the coordinator;
- with ``partitions``, network partitions: the loopback
  interface of a private network namespace taken down then up (packets silently dropped,
  connects time out: a real partition, below the proxy), see ``isolated``;
- ``crash_points``: a ``PHALANX_CRASH_AT`` value per coordinator incarnation (first one,
  then each restart in turn), so the coordinator dies *inside* a checkpoint write at a
  chosen step: timers cannot aim at a write that takes milliseconds.

A plan that flips bytes runs over TLS (``transport="auto"``), as a deployment on a network
that corrupts bytes must: TLS records are authenticated, so a flipped byte ends the
connection (a transport error the client retries) instead of reaching gRPC's HTTP/2 parser
or the coordinator's handlers as a different, well-formed request (a refused credential, a
message that does not parse: refusals a client rightly never retries). A plaintext channel
cannot tell a corrupted request from a wrong one; ``transport="plaintext"`` keeps that
model for replaying it (docs/chaos.md, "Bit flips and TLS").

Network steps and events are timed from the first recorded round, so they land while
rounds are in flight rather than while the processes import torch (5 s on a quiet machine,
up to 30 s on a loaded one); joins are still hit, after every client and coordinator
restart.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from phalanx.checkpoint.crashpoints import CHECKPOINT_POINTS, ENGINE_POINTS
from phalanx.config import Strict
from phalanx.errors import ConfigError
from phalanx.faults.chaos import ChaosSchedule, Step

NETWORK_KINDS = ("blackhole", "delay", "truncate", "reset_after", "flip", "bandwidth", "reset",
                 "refuse")  # fmt: skip
"""Every kind the proxy's schedules know (``phalanx.faults.chaos.schedule.KINDS``)."""


class KillClient(Strict):
    """SIGKILL client ``client`` (the launcher restarts it, as a supervisor would)."""

    kind: Literal["kill_client"] = "kill_client"
    at: float = Field(ge=0)
    client: int = Field(ge=0)


class PauseClient(Strict):
    """SIGSTOP client ``client`` for ``seconds``, then SIGCONT: a frozen VM, a GC pause."""

    kind: Literal["pause_client"] = "pause_client"
    at: float = Field(ge=0)
    client: int = Field(ge=0)
    seconds: float = Field(gt=0)


class KillCoordinator(Strict):
    """SIGKILL the coordinator (restarted with ``phalanx serve --resume`` on the same port)."""

    kind: Literal["kill_coordinator"] = "kill_coordinator"
    at: float = Field(ge=0)


class Partition(Strict):
    """Take the namespace's loopback down for ``seconds``: everyone is cut off from everyone,
    by the kernel, with no RST (only in a private network namespace, see ``isolated``)."""

    kind: Literal["partition"] = "partition"
    at: float = Field(ge=0)
    seconds: float = Field(gt=0)


Event = Annotated[
    KillClient | PauseClient | KillCoordinator | Partition, Field(discriminator="kind")
]


class ChaosPlan(Strict):
    """One schedule: the scenario's size and the faults, each list in time order, and the
    transport (``auto``: TLS when a network step flips bytes, else plaintext)."""

    seed: int
    clients: int = Field(ge=2)
    rounds: int = Field(ge=1)
    network: ChaosSchedule
    events: tuple[Event, ...] = ()
    crash_points: tuple[str, ...] = ()
    transport: Literal["auto", "tls", "plaintext"] = "auto"

    @property
    def flips(self) -> bool:
        return any(step.action.kind == "flip" for step in self.network.steps)

    @property
    def tls(self) -> bool:
        """Whether clients reach the coordinator over (mutual) TLS through the proxy."""
        return self.transport == "tls" or (self.transport == "auto" and self.flips)

    @property
    def coordinator_deaths(self) -> int:
        """The most times this plan can make the coordinator die."""
        kills = sum(isinstance(e, KillCoordinator) for e in self.events)
        return kills + len(self.crash_points)

    @property
    def partitions(self) -> bool:
        """Whether the plan cuts the network below the proxy (needs its own namespace)."""
        return any(isinstance(e, Partition) for e in self.events)

    @classmethod
    def from_json(cls, text: str) -> ChaosPlan:
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise ConfigError(f"invalid chaos plan: {error}") from error

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def describe(self) -> str:
        """One line per fault, for a report that names what a failing seed did."""
        over = "TLS" if self.tls else "plaintext"
        lines = [f"seed {self.seed}: {self.clients} clients, {self.rounds} rounds, {over}"]
        lines += [f"  net  {s.at:6.2f} s  {_step_text(s)}" for s in self.network.steps]
        lines += [f"  proc {e.at:6.2f} s  {_event_text(e)}" for e in self.events]
        lines += [f"  coordinator crash point #{i}: {p}" for i, p in enumerate(self.crash_points)]
        return "\n".join(lines)


def draw_plan(
    seed: int, *, rounds: int = 6, active_s: float = 5.0, partitions: bool = False
) -> ChaosPlan:
    """A random plan for ``seed``: 4 to 6 clients; 2 to 5 network fault windows over about
    ``active_s`` seconds; 1 to 4 process events over ``active_s`` seconds; the coordinator
    killed at most twice (by a timer or at a crash point), so a run stays short. With
    ``partitions``, one or two partitions of 0.5 to 3 s over the same window as the
    process events."""
    rng = random.Random(seed)
    clients = rng.randint(4, 6)
    network = _draw_network(rng, seed, horizon=active_s)
    events: list[Event] = []
    for _ in range(rng.randint(1, 4)):
        at, client = rng.uniform(0.0, active_s), rng.randrange(clients)
        match rng.choice(("kill", "kill", "pause", "pause", "coordinator")):
            case "kill":
                events.append(KillClient(at=at, client=client))
            case "pause":
                events.append(PauseClient(at=at, client=client, seconds=rng.uniform(0.3, 3.0)))
            case _:
                events.append(KillCoordinator(at=at))
    if partitions:
        for _ in range(rng.randint(1, 2)):
            events.append(Partition(at=rng.uniform(0.0, active_s), seconds=rng.uniform(0.5, 3.0)))
    events = sorted(events, key=lambda e: e.at)
    kills = [e for e in events if isinstance(e, KillCoordinator)]
    if len(kills) > 1:  # one timed coordinator kill at most; crash points add the rest
        events = [e for e in events if not isinstance(e, KillCoordinator) or e is kills[0]]
    crash_points: list[str] = []
    if rng.random() < 0.5:
        point = rng.choice((*CHECKPOINT_POINTS, *ENGINE_POINTS))
        crash_points.append(f"{point}@{rng.randint(1, rounds)}")
    return ChaosPlan(
        seed=seed, clients=clients, rounds=rounds, network=network, events=tuple(events),
        crash_points=tuple(crash_points),
    )  # fmt: skip


def _draw_network(rng: random.Random, seed: int, *, horizon: float) -> ChaosSchedule:
    """Fault windows one after the other, each healed at its end: a fault of 0.2 to 2.5 s
    (long enough to outlast the heartbeat patience sometimes), then 0.3 to 2 s clean."""
    steps: list[Step] = []
    at = rng.uniform(0.0, 1.0)

    for _ in range(rng.randint(2, 5)):
        length = rng.uniform(0.2, 2.5)
        one = ChaosSchedule.draw(
            rng.randrange(2**31), duration=length, steps=1, kinds=(rng.choice(NETWORK_KINDS),)
        )
        steps += [s.model_copy(update={"at": at + s.at}) for s in one.steps]
        at += length + rng.uniform(0.3, 2.0)
        if at >= horizon:
            break
    return ChaosSchedule(seed=seed, steps=tuple(steps))


def _step_text(step: Step) -> str:
    fields = step.action.model_dump(exclude={"kind"})
    shown = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
    )
    way = f" ({step.direction.value})" if step.direction is not None else ""
    return f"{step.action.kind}{way}{f': {shown}' if shown else ''}"


def _event_text(event: Event) -> str:
    match event:
        case KillClient(client=client):
            return f"SIGKILL client {client}"
        case PauseClient(client=client, seconds=seconds):
            return f"SIGSTOP client {client} for {seconds:.2f} s"
        case Partition(seconds=seconds):
            return f"partition (loopback down) for {seconds:.2f} s"
        case _:
            return "SIGKILL coordinator"
