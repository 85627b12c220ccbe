"""Seeded random fault schedules against a real failover group (``Group``), judged by the
history checker.

A schedule is drawn from its seed: a 1- or 3-member etcd and two or three faults, each
fired once the committed pointer reaches a drawn round: SIGKILL of the leader or of a
standby (restarted a moment later, as a supervisor would), SIGSTOP of the leader past its
lease then SIGCONT, the leader cut off from etcd by the chaos proxy then healed, a crash
point inside the commit (``ha.before_txn``, ``ha.after_txn``, ``engine.before_checkpoint``)
armed on a coordinator, and, with 3 members, one or two etcd members killed and restarted
(two: the quorum is lost for a while). A killed coordinator comes back after ``RESTART_S``.
The schedule passes when every coordinator exits 0 (the run finished for all) and the
checker finds one chain.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from phalanx.ha.checker import Verdict
from phalanx.testing.failover.group import Group

RESTART_S = 1.0
KINDS_1 = ("kill_leader", "kill_standby", "pause_leader", "cut_leader", "crash_point")
KINDS_3 = (*KINDS_1, "etcd_member", "etcd_quorum")
CRASH_POINTS = ("ha.before_txn", "ha.after_txn", "engine.before_checkpoint")


@dataclass(frozen=True)
class Fault:
    at_round: int
    kind: str
    hold_s: float  # how long a pause, cut or etcd outage lasts
    detail: str = ""


@dataclass(frozen=True)
class Schedule:
    seed: int
    etcd_members: int
    rounds: int
    faults: tuple[Fault, ...]

    @classmethod
    def draw(cls, seed: int, *, rounds: int = 6, ttl_s: int = 2) -> Schedule:
        rng = random.Random(seed)
        members = rng.choice((1, 3))
        kinds = KINDS_3 if members == 3 else KINDS_1
        faults = []
        for _ in range(rng.randint(2, 3)):
            kind = rng.choice(kinds)
            detail = (
                f"{rng.choice(CRASH_POINTS)}@{rng.randint(1, 2)}" if kind == "crash_point" else ""
            )
            faults.append(
                Fault(rng.randint(0, rounds - 2), kind, ttl_s + rng.uniform(0.5, 2.5), detail)
            )
        return cls(seed, members, rounds, tuple(sorted(faults, key=lambda f: f.at_round)))


@dataclass
class Outcome:
    schedule: Schedule
    completed: bool
    verdict: Verdict
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def one_chain(self) -> bool:
        return self.verdict.ok


class ScheduleRun:
    def __init__(self, schedule: Schedule, workdir: Path, *, deadline_s: float = 240.0) -> None:
        self.schedule = schedule
        self.workdir = workdir
        self.deadline_s = deadline_s
        self.notes: list[str] = []
        self.dead_since: dict[int, float] = {}
        self.expected_dead: set[int] = set()

    def run(self) -> Outcome:
        start = time.monotonic()
        s = self.schedule
        with Group(self.workdir, etcd_members=s.etcd_members, rounds=s.rounds, proxies=True) as g:
            g.start_all()
            pending = list(s.faults)
            completed = False
            while time.monotonic() - start < self.deadline_s:
                pointer = g.pointer()
                if pending and pointer is not None and pointer.finished:
                    self._note(f"run finished before {len(pending)} fault(s) fired")
                    pending.clear()
                if pending and g.committed_round() >= pending[0].at_round and g.leader():
                    self._fire(g, pending.pop(0))
                self._supervise(g)
                if not pending and self._all_done(g):
                    completed = True
                    break
                time.sleep(0.05)
            verdict = g.verdict()
        return Outcome(s, completed, verdict, time.monotonic() - start, self.notes)

    def _note(self, text: str, start: float | None = None) -> None:
        self.notes.append(f"{time.strftime('%H:%M:%S')} {text}")

    def _fire(self, g: Group, fault: Fault) -> None:
        leader = g.leader()
        if leader is None:
            return
        index = leader[0]
        self._note(f"round {g.committed_round()}: {fault.kind} {fault.detail} (leader {index})")
        if fault.kind == "kill_leader":
            g.signal(index, signal.SIGKILL)
        elif fault.kind == "kill_standby":
            g.signal((index + 1) % g.count, signal.SIGKILL)
        elif fault.kind == "pause_leader":
            g.signal(index, signal.SIGSTOP)
            self._hold(g, fault.hold_s)
            g.signal(index, signal.SIGCONT)
        elif fault.kind == "cut_leader":
            g.cut(index)
            self._hold(g, fault.hold_s)
            g.heal(index)
        elif fault.kind == "crash_point":
            victim = (index + 1) % g.count  # armed on a standby: it crashes once it leads
            g.signal(victim, signal.SIGKILL)
            g.processes[victim] = None
            g.start(victim, {"PHALANX_CRASH_AT": fault.detail})
        elif fault.kind in ("etcd_member", "etcd_quorum"):
            victims = [1] if fault.kind == "etcd_member" else [1, 2]
            for member in victims:
                g.etcd.kill(member)
            self._hold(g, fault.hold_s)
            for member in victims:
                g.etcd.restart(member)

    def _hold(self, g: Group, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._supervise(g)
            time.sleep(0.05)

    def _supervise(self, g: Group) -> None:
        """Restart a coordinator killed (by a fault or a crash point) after RESTART_S,
        unless the run is already finished."""
        for index, process in enumerate(g.processes):
            if process is None or process.poll() != -signal.SIGKILL:
                continue
            since = self.dead_since.setdefault(index, time.monotonic())
            pointer = g.pointer()
            if time.monotonic() - since >= RESTART_S and not (pointer and pointer.finished):
                self._note(f"restart coordinator {index}")
                del self.dead_since[index]
                g.start(index)

    def _all_done(self, g: Group) -> bool:
        pointer = g.pointer()
        if pointer is None or not pointer.finished:
            return False
        codes = [p.poll() if p is not None else 0 for p in g.processes]
        if any(code is None for code in codes):
            return False
        return all(code in (0, -signal.SIGKILL) for code in codes) and any(c == 0 for c in codes)
