"""Play one ``ChaosPlan`` against real processes and judge what it left behind.

The coordinator listens on a fixed loopback port the runner picks, so a restarted
coordinator (``phalanx serve --resume DIR``) is reachable at the same address; the clients
dial the in-repo ``ChaosProxy`` in front of it. ``LocalLauncher`` starts and supervises the
processes (a killed client comes back, as under systemd); the runner's tick hook, called
by the launcher every 0.1 s, plays the plan's network steps and process events, and its
exit hook restarts a coordinator the plan killed: with ``--resume`` once a checkpoint is
durable, else from the scenario again (a coordinator killed inside its first checkpoint
write committed nothing, and ``--resume`` rightly refuses an empty directory). Every wait
is bounded: a schedule that runs past ``deadline_s`` is stopped (SIGTERM, then SIGKILL) and
counted as not completed; the launcher reaps every process it started. ``timeline.txt`` in
the schedule's directory says when each fault, exit and restart happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from phalanx.checkpoint import LocalCheckpointStore
from phalanx.checkpoint.crashpoints import ENV_VAR
from phalanx.errors import ConfigError
from phalanx.faults.chaos import ChaosProxy
from phalanx.runtime.grpc.launcher import LaunchPlan, LocalLauncher, Relaunch
from phalanx.testing.chaos.checks import Record, Verdict, check_run, read_history
from phalanx.testing.chaos.netns import set_loopback
from phalanx.testing.chaos.plan import (
    ChaosPlan,
    Event,
    KillClient,
    KillCoordinator,
    Partition,
    PauseClient,
)
from phalanx.types import ClientId

SCENARIO = """\
name = "chaos"
seed = {seed}
rounds = {rounds}

[workload]
name = "seed"
num_clients = {clients}
samples_per_client = 400
hidden = 256

[training]
local_epochs = {epochs}
batch_size = 10

[selection]
clients_per_round = {clients}
over_selection = 1.0
member_wait_s = 30.0

[deadlines]
task_s = 4.0
round_s = 10.0

[quorum]
min_updates = 2

[checkpoint]
every = 1
"""
SERVE_ARGS = ("--quiet", "--no-plots", "--heartbeat-s", "0.25", "--patience-s", "0.8",
              "--pull-wait-s", "1.0")  # fmt: skip
CLIENT_ARGS = ("--backoff-cap-s", "1.0", "--poll-s", "2.0", "--give-up-s", "60")
KILL_GRACE_S = 20.0  # after the deadline's SIGTERM, before the coordinator is SIGKILLed


@dataclass
class Outcome:
    """One schedule's result: the verdict, the exits, and where its files are."""

    plan: ChaosPlan
    verdict: Verdict
    wall_s: float
    exits: list[tuple[int, bool]] = field(default_factory=list)
    timed_out: bool = False
    workdir: Path | None = None


def free_port() -> int:
    """A port free now on loopback (the OS's pick, released at once for the coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChaosRun:
    """One plan, played once in ``workdir`` (run directory, logs, plan JSON kept there)."""

    def __init__(
        self, plan: ChaosPlan, workdir: Path, *, deadline_s: float = 150.0, epochs: int = 20,
        partitions: bool = False,
    ) -> None:  # fmt: skip
        if plan.partitions and not partitions:
            raise ConfigError(
                f"seed {plan.seed}: a plan with partitions runs in a private network namespace "
                "(phalanx.testing.chaos.isolated), never on the host's loopback"
            )
        self.plan = plan
        self.workdir = workdir
        self.deadline_s = deadline_s
        self.epochs = epochs
        self.run_dir = workdir / "run"
        self.log = workdir / "coordinator.log"
        self._network = list(plan.network.steps)
        self._events: list[Event] = list(plan.events)
        self._crash_points = list(plan.crash_points)
        self._paused: list[
            tuple[float, ClientId, Popen[bytes] | None]
        ] = []  # (resume at, client, process)
        self._exits: list[tuple[int, bool]] = []
        self._snapshots: list[list[Record]] = []
        self._heal_at: float | None = None  # when a partition ends
        self._killed_coordinator = False
        self._crash_armed = bool(self._crash_points)
        self._timed_out = False
        self._start = 0.0
        self._anchor: float | None = None  # when the first round was recorded
        self._proxy: ChaosProxy | None = None
        self._timeline: list[str] = []
        self._fresh_args: tuple[str, ...] = ()

    def run(self) -> Outcome:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "plan.json").write_text(self.plan.to_json())
        scenario = self.workdir / "scenario.toml"
        self._fresh_args = (str(scenario), "--out", str(self.run_dir), "--force", *SERVE_ARGS)
        scenario.write_text(SCENARIO.format(
            seed=self.plan.seed % 1000, rounds=self.plan.rounds, clients=self.plan.clients,
            epochs=self.epochs,
        ))  # fmt: skip
        port = free_port()
        launch_dir = self.workdir / "launch"
        launch_dir.mkdir(exist_ok=True)
        started = time.monotonic()
        with ChaosProxy.start_in_thread(("127.0.0.1", port)) as proxy:
            self._proxy = proxy
            launch = LaunchPlan(
                scenario=str(scenario), clients=tuple(range(self.plan.clients)),
                serve_args=self._fresh_args[1:],
                client_args=CLIENT_ARGS, inject_faults=False, listen=f"127.0.0.1:{port}",
                tls=self.plan.tls,
                client_server=proxy.address, coordinator_log=self.log, max_restarts=50,
                restart_delay_s=0.2, restart_delay_cap_s=1.0, ready_timeout_s=90.0, grace_s=10.0,
                coordinator_env={ENV_VAR: self._crash_points.pop(0) if self._crash_points else ""},
            )  # fmt: skip
            launcher = LocalLauncher(launch, workdir=launch_dir)
            self._start = time.monotonic()
            try:
                result = launcher.run(on_tick=self._tick, on_coordinator_exit=self._on_exit)
            finally:
                self._resume_all()
                self._note("launch over")
                (self.workdir / "timeline.txt").write_text("\n".join(self._timeline) + "\n")
        if not self._exits:  # it never listened: the launcher saw its exit, not the hook
            self._exits.append((result.exit_code, False))
        verdict = check_run(
            self.run_dir, rounds=self.plan.rounds, exits=self._exits, snapshots=self._snapshots,
            coordinator_log=self.log,
        )  # fmt: skip
        if self._timed_out:
            verdict.completed = False
            verdict.problems.append(f"stopped at the schedule's deadline ({self.deadline_s:.0f} s)")
        return Outcome(
            self.plan, verdict, time.monotonic() - started, list(self._exits), self._timed_out,
            self.workdir,
        )  # fmt: skip

    # -- hooks, on the launcher's thread --------------------------------------------------

    def _tick(self, launcher: LocalLauncher) -> None:
        now = time.monotonic()
        elapsed = now - self._start
        if elapsed > self.deadline_s:
            self._over_deadline(launcher, elapsed)
            return
        if self._anchor is None and read_history(self.run_dir / "history.jsonl"):
            self._anchor = now
            self._note("first round recorded: the schedule's clock starts")
        if self._anchor is None:
            return
        since = now - self._anchor
        while self._network and self._network[0].at <= since and self._proxy is not None:
            step = self._network.pop(0)
            step.apply(self._proxy)
            self._note(f"network: {step.action.kind}")
        while self._events and self._events[0].at <= since:
            event = self._events.pop(0)
            self._note(f"event: {event.kind}")
            self._act(launcher, event, now)
        if self._heal_at is not None and self._heal_at <= now:
            self._heal_at = None
            set_loopback(True)
        for entry in [p for p in self._paused if p[0] <= now]:
            self._paused.remove(entry)
            _signal(entry[2], signal.SIGCONT)

    def _act(self, launcher: LocalLauncher, event: Event, now: float) -> None:
        match event:
            case KillClient(client=client):
                child = launcher.clients.get(client)
                _signal(child.process if child else None, signal.SIGKILL)
            case PauseClient(client=client, seconds=seconds):
                child = launcher.clients.get(client)
                if child is not None and _signal(child.process, signal.SIGSTOP):
                    self._paused.append((now + seconds, client, child.process))
            case Partition(seconds=seconds):
                set_loopback(False)
                self._heal_at = max(self._heal_at or now, now + seconds)
            case KillCoordinator():
                coordinator = launcher.coordinator
                if coordinator is not None and _signal(coordinator.process, signal.SIGKILL):
                    self._killed_coordinator = True

    def _on_exit(self, code: int) -> Relaunch | None:
        caused = self._killed_coordinator or (self._crash_armed and code == -signal.SIGKILL)
        self._exits.append((code, caused))
        self._snapshots.append(read_history(self.run_dir / "history.jsonl"))
        self._note(f"coordinator exited {code} ({'caused' if caused else 'not caused'})")
        self._killed_coordinator = False
        if code == 0 or not caused or self._timed_out:
            self._resume_all()
            return None
        point = self._crash_points.pop(0) if self._crash_points else ""
        self._crash_armed = bool(point)
        store = LocalCheckpointStore(self.run_dir / "checkpoints")
        if store.root.is_dir() and any(info.valid for info in store.list()):
            args: tuple[str, ...] = ("--resume", str(self.run_dir), *SERVE_ARGS)
        else:
            args = self._fresh_args
        self._note(f"coordinator restarted: {args[0]}")
        return Relaunch(args, env={ENV_VAR: point})

    def _note(self, text: str) -> None:
        self._timeline.append(f"{time.monotonic() - self._start:8.2f} s  {text}")

    def _over_deadline(self, launcher: LocalLauncher, elapsed: float) -> None:
        self._resume_all()
        coordinator = launcher.coordinator.process if launcher.coordinator else None
        if not self._timed_out:
            self._timed_out = True
            launcher.stop(signal.SIGTERM)
        elif elapsed > self.deadline_s + KILL_GRACE_S:
            _signal(coordinator, signal.SIGKILL)

    def _resume_all(self) -> None:
        """SIGCONT every client still paused (before the launcher reaps them), and end a
        partition."""
        if self._heal_at is not None:
            self._heal_at = None
            set_loopback(True)
        for _, _, process in self._paused:
            _signal(process, signal.SIGCONT)
        self._paused.clear()


def _signal(process: Popen[bytes] | None, signum: int) -> bool:
    """Send ``signum`` to a live child; False when there is none (restarting, or gone)."""
    if process is None or process.poll() is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signum)
        return True
    return False
