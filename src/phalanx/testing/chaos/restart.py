"""The coordinator SIGKILLed mid-round and restarted: how soon its clients are back, and how
soon the next round commits.

``RestartRun`` starts a coordinator on a fixed loopback port and N client processes dialling
it directly (no proxy: only the restart is measured), and SIGKILLs the coordinator once the
run has recorded each of ``kill_after`` rounds, part way into the next one (a seeded
fraction, 0.3 to 0.7, of the last round's length, so the round in flight has clients
training); ``phalanx serve --resume`` then starts on the same port. Kills are measured one
at a time: the next is timed only from a round recorded after every client joined the new
incarnation (or after the bound passed without them), so a kill never lands while the
clients are still coming back from the one before; a kill whose time comes after the last
round was recorded is not made (the run is over, nothing is in flight). For every kill it
reports, from the times a ``RunWatch`` saw lines appear, up to the next kill:

- ``listen_s``: SIGKILL to the new incarnation listening (process start, imports, state);
- ``back_s``: listening to each client's join with the new incarnation (the bound to meet:
  the clients' backoff cap + 1 s);
- ``commit_s``: listening to the next committed round in the history.

After the run the run directory is checked as every chaos schedule is (``check_run``): the
run completed and every round committed before a kill is still there, once.
"""

from __future__ import annotations

import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from phalanx.errors import ConfigError
from phalanx.runtime.grpc.launcher import LaunchPlan, LocalLauncher, Relaunch
from phalanx.testing.chaos.checks import Record, Verdict, check_run, read_history
from phalanx.testing.chaos.runner import SCENARIO, free_port
from phalanx.testing.chaos.watch import Line, RunWatch

SERVE_ARGS = ("--quiet", "--no-plots", "--heartbeat-s", "0.5", "--patience-s", "2.0",
              "--pull-wait-s", "1.0")  # fmt: skip
"""Issue 11's deployment settings (0.5 s heartbeats, a 2 s patience), not the chaos runs'
0.25 s: a heartbeat's deadline is its interval, and under load a 0.25 s deadline passing on a
channel still connecting makes the heartbeat thread reset the channel its agent is joining
on (docs/coordinator_restart.md)."""
LISTENING = re.compile(r"^listening on \S+:\d+$")  # printed once the server has started
JOINED = re.compile(r"client (\d+) joined")


@dataclass(frozen=True)
class Kill:
    """One SIGKILL and what came after it (seconds; None: never seen)."""

    round: int  # the round in flight
    listen_s: float | None
    back_s: dict[int, float]  # client -> listening to its join again
    commit_s: float | None
    observed_s: float | None = None  # listening to the end of what was watched (next kill, end)

    def all_back_s(self, clients: int) -> float | None:
        """Listening to the last client back; None unless every client came back."""
        return max(self.back_s.values()) if len(self.back_s) == clients else None


@dataclass
class RestartOutcome:
    kills: list[Kill]
    verdict: Verdict
    wall_s: float


@dataclass
class _Pending:
    round: int
    killed_at: float
    log_offset: int | None = None  # where the next incarnation's lines start, once it exited


@dataclass
class RestartRun:
    """One launch, killed after each round in ``kill_after`` (rounds counted from 0)."""

    workdir: Path
    clients: int = 4
    rounds: int = 12
    kill_after: tuple[int, ...] = (1, 4, 7)
    backoff_cap_s: float = 1.0
    settle_slack_s: float = 1.0  # the bound on a client's return: its backoff cap + this
    epochs: int = 20
    seed: int = 0
    deadline_s: float = 300.0
    client_args: tuple[str, ...] = ()  # more flags for every client (``--verbose``)
    _pending: list[_Pending] = field(default_factory=list)
    _exits: list[tuple[int, bool]] = field(default_factory=list)
    _snapshots: list[list[Record]] = field(default_factory=list)
    _kill_at: float | None = None
    _start: float = 0.0
    _ended_at: float | None = None  # the last incarnation's exit (the run's end), once seen

    def __post_init__(self) -> None:
        if not all(1 <= k < self.rounds - 1 for k in self.kill_after):
            raise ConfigError(
                f"kill_after {self.kill_after}: each round must be 1 to rounds - 2 "
                f"({self.rounds - 2}): the kill is timed by the round before it, and a round "
                "must follow the one killed"
            )

    def run(self) -> RestartOutcome:
        self.workdir.mkdir(parents=True, exist_ok=True)
        run_dir, log = self.workdir / "run", self.workdir / "coordinator.log"
        scenario = self.workdir / "scenario.toml"
        scenario.write_text(SCENARIO.format(
            seed=self.seed, rounds=self.rounds, clients=self.clients, epochs=self.epochs
        ))  # fmt: skip
        self._rng = random.Random(self.seed)
        self._todo = sorted(self.kill_after)
        self._run_dir = run_dir
        launch = LaunchPlan(
            scenario=str(scenario), clients=tuple(range(self.clients)),
            serve_args=("--out", str(run_dir), "--force", *SERVE_ARGS), inject_faults=False,
            client_args=("--backoff-cap-s", str(self.backoff_cap_s), "--poll-s", "2.0",
                         *self.client_args),
            listen=f"127.0.0.1:{free_port()}", coordinator_log=log, max_restarts=10,
            ready_timeout_s=90.0, grace_s=10.0,
        )  # fmt: skip
        (self.workdir / "launch").mkdir(exist_ok=True)
        launcher = LocalLauncher(launch, workdir=self.workdir / "launch")
        self._start = time.monotonic()
        with RunWatch(log, run_dir / "history.jsonl") as watch:
            self._watch = watch
            launcher.run(on_tick=self._tick, on_coordinator_exit=self._on_exit)
        if not self._exits:
            self._exits.append((-1, False))
        verdict = check_run(run_dir, rounds=self.rounds, exits=self._exits,
                            snapshots=self._snapshots, coordinator_log=log)  # fmt: skip
        # each kill is watched up to the next one; the last up to the run's end, not the
        # clients' farewell and reaping after it (a client not back by then never could be)
        ends = [p.killed_at for p in self._pending[1:]] + [self._ended_at or time.monotonic()]
        kills = [self._measure(p, until) for p, until in zip(self._pending, ends, strict=True)]
        self._write_timed(self.workdir / "coordinator.timed.log")
        return RestartOutcome(kills, verdict, time.monotonic() - self._start)

    def _tick(self, launcher: LocalLauncher) -> None:
        now = time.monotonic()
        if now - self._start > self.deadline_s:
            launcher.stop(signal.SIGTERM)
            return
        coordinator = launcher.coordinator
        process = coordinator.process if coordinator is not None else None
        if process is None or process.poll() is not None:
            return
        recorded = self._watch.recorded()
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            if len(recorded) < self.rounds:  # else the run is over: nothing is in flight
                process.send_signal(signal.SIGKILL)
                self._pending.append(_Pending(len(recorded), time.monotonic()))
            return
        if not self._todo or self._kill_at is not None:
            return
        settled = self._settled_at(now)
        if settled is None:
            return
        after = next((r for r in sorted(recorded)
                      if r >= self._todo[0] and recorded[r][0] >= settled), None)  # fmt: skip
        if after is None:
            return
        self._todo.pop(0)
        if after > self.rounds - 2:
            return  # no round follows it to be killed in
        previous = recorded.get(after - 1, (self._start, False))[0]
        length = recorded[after][0] - previous
        self._kill_at = recorded[after][0] + self._rng.uniform(0.3, 0.7) * length

    def _settled_at(self, now: float) -> float | None:
        """When the last kill's clients were all back (or the bound on their return had
        passed): rounds recorded after it may time the next kill. None: not yet."""
        if not self._pending:
            return self._start
        offset = self._pending[-1].log_offset
        if offset is None:
            return None  # the killed incarnation's exit is not seen yet
        lines = self._watch.log_after(offset)
        listening = next((line.at for line in lines if LISTENING.search(line.text)), None)
        if listening is None:
            return None
        joined = _joins(lines, listening)
        if len(joined) == self.clients:
            return listening + max(joined.values())
        bound = self.backoff_cap_s + self.settle_slack_s
        return listening + bound if now - listening >= bound else None

    def _on_exit(self, code: int) -> Relaunch | None:
        caused = bool(self._pending) and code == -signal.SIGKILL and not self._exits_for_all()
        self._exits.append((code, caused))
        if not caused:
            self._ended_at = time.monotonic()
        self._snapshots.append(read_history(self._run_dir / "history.jsonl"))
        if not caused:
            return None
        self._watch.poll()  # every line the dead incarnation wrote, before the next starts
        self._pending[-1].log_offset = self._watch.log_size()
        return Relaunch(("--resume", str(self._run_dir), *SERVE_ARGS))

    def _exits_for_all(self) -> bool:
        """True when every kill already has its exit (this exit was not asked for)."""
        return sum(caused for _, caused in self._exits) >= len(self._pending)

    def _write_timed(self, path: Path) -> None:
        """The coordinator's log with the watcher's clock (seconds since the launch) and the
        kills in it: what a slow return is read from."""
        marks = [(p.killed_at, f"--- SIGKILL (round {p.round} in flight)") for p in self._pending]
        lines = [(line.at, line.text) for line in self._watch.log_after(0)]
        path.write_text("".join(f"{at - self._start:9.3f}  {text}\n" for at, text in
                                sorted(lines + marks, key=lambda x: x[0])))  # fmt: skip

    def _measure(self, pending: _Pending, until: float) -> Kill:
        """What followed ``pending``, up to ``until`` (the next kill, or the run's end)."""
        lines = [line for line in self._watch.log_after(pending.log_offset or 0)
                 if line.at < until]  # fmt: skip
        listening = next((line.at for line in lines if LISTENING.search(line.text)), None)
        if listening is None:
            return Kill(pending.round, None, {}, None)
        commits = [at for r, (at, ok) in self._watch.recorded().items()
                   if ok and r >= pending.round and listening <= at < until]  # fmt: skip
        commit = min(commits) - listening if commits else None
        return Kill(pending.round, listening - pending.killed_at, _joins(lines, listening),
                    commit, observed_s=until - listening)  # fmt: skip


def _joins(lines: list[Line], listening: float) -> dict[int, float]:
    """Client -> seconds from ``listening`` to its first join line after it."""
    back: dict[int, float] = {}
    for line in lines:
        match = JOINED.search(line.text)
        if match and line.at >= listening:
            back.setdefault(int(match.group(1)), line.at - listening)
    return back
