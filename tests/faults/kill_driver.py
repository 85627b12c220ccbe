"""Kill a real coordinator process again and again, resume it each time, and compare the
outcome with a run that was never interrupted.

Shared by ``tests/faults/test_sigkill_resume.py`` (20 kills) and
``benchmarks/kill_resume.py`` (100 or more). It lives with the tests because it is test
machinery: the benchmark imports it from here, not the other way round.

Three kinds of kill, drawn by a seeded generator:

- *training*: SIGKILL a random number of rounds, then a random fraction of a round, after
  the process wrote its first checkpoint, i.e. once it is surely training. Timing from
  process start would not do: interpreter and torch start-up (about 1.5 s here) varies by
  more than a round lasts (about 12 ms), and a resumed process starts training sooner than a
  fresh one, so start-relative instants either miss training or race through the run in a
  few kills. Whole rounds are counted in checkpoints, not seconds: a delay in seconds,
  planned on the reference run, covers more rounds when the machine runs faster than it did
  then (a load that eased), and the last kills found the run finished.
- *start-up*: a random delay after start, before the first round can end: a death while
  importing, reading the config or loading the checkpoint.
- *crash point*: ``PHALANX_CRASH_AT=point@N`` makes the process SIGKILL itself at a chosen
  step of a checkpoint write, which no timer can aim at.

Start-up delays and the part of a round a training kill waits are fractions of a timeline
measured on the reference run of the same session, so the plan fits a fast machine and a
loaded one alike; how many rounds the training kills use up is the seeded plan's alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from phalanx.checkpoint import LocalCheckpointStore
from phalanx.checkpoint.crashpoints import CHECKPOINT_POINTS, ENGINE_POINTS, ENV_VAR
from phalanx.checkpoint.format import parse_dir_name
from phalanx.core.state import ServerState

CRASH_POINTS = (*CHECKPOINT_POINTS, *ENGINE_POINTS)
HISTORY_KEYS = ("round", "committed", "model_version", "accepted", "accepted_attempts", "metrics")
KILLED = -signal.SIGKILL  # Popen.returncode of a process that died of SIGKILL
REFUSED = (2, 5)  # a directory without this run's checkpoint (5), or without/with a run (2)
POLL_S = 0.002

KillKind = Literal["training", "start-up", "crash point"]


def scenario(rounds: int) -> list[str]:
    """The seed workload, small: a round takes about 12 ms, so a run is mostly rounds and
    checkpoint writes (one per round); 40% of tasks fail and quorum is 5 of 6, so some
    rounds are discarded and resume must redo the right ones."""
    return [
        "seed=42",  # explicit: a resume names the configuration it asks for, seed included
        f"rounds={rounds}",
        "workload.num_clients=12",
        "selection.clients_per_round=6",
        "quorum.min_updates=5",
        "checkpoint.every=1",
        "checkpoint.keep=2",
        "faults.rules=[{rate=0.4}]",
    ]


class KillDriverError(Exception):
    """A coordinator process did something other than finish or die of SIGKILL."""


@dataclass(frozen=True)
class Timeline:
    """The reference run: start-up until its first checkpoint, then the rest of it."""

    startup_s: float
    training_s: float
    rounds: int


@dataclass(frozen=True)
class Kill:
    """One planned death; ``delay_s`` counts from start (start-up) or from the process's
    checkpoint ``rounds_in`` rounds after its first one (training)."""

    kind: KillKind
    delay_s: float = 0.0
    crash_at: str | None = None
    rounds_in: int = 0


@dataclass(frozen=True)
class Attempt:
    kill: Kill | None  # None: a plain resume, left to finish
    resume: bool
    returncode: int
    round_after: int  # the newest checkpoint directory's round once the process is gone
    refused: int | None = None  # exit code of a refused first try (then it ran with --force)
    exact: bool | None = None  # exit 0: whether the directory's model is the reference's

    @property
    def landed(self) -> bool:
        return self.kill is not None and self.returncode == KILLED


@dataclass(frozen=True)
class KillReport:
    attempts: list[Attempt]
    reference: ServerState
    final: ServerState
    wall_s: float
    reference_history: list[dict[str, Any]]
    final_history: list[dict[str, Any]]

    @property
    def kills(self) -> list[Attempt]:
        return [a for a in self.attempts if a.kill is not None]

    @property
    def landed(self) -> int:
        return sum(a.landed for a in self.attempts)

    def landed_by(self, kind: KillKind) -> int:
        return sum(a.landed for a in self.kills if a.kill and a.kill.kind == kind)

    @property
    def wrong_exits(self) -> int:
        """Processes that exited 0 with a model other than the uninterrupted run's."""
        return sum(a.exact is False for a in self.attempts)

    @property
    def refusals(self) -> int:
        return sum(a.refused is not None for a in self.attempts)

    @property
    def resumes(self) -> int:
        return sum(a.resume for a in self.attempts)

    @property
    def identical_params(self) -> bool:
        return torch.equal(self.final.params, self.reference.params)

    @property
    def identical_history(self) -> bool:
        return committed_history(self.final_history) == committed_history(self.reference_history)

    @property
    def identical_records(self) -> bool:
        """Stronger: every field of every round record but its wall-clock duration."""
        return _without_wall(self.final_history) == _without_wall(self.reference_history)


def committed_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What resume must reproduce, round by round (wall-clock fields excluded)."""
    return [{key: record[key] for key in HISTORY_KEYS} for record in history]


def _without_wall(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "wall_s"} for record in history]


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-round log, as the coordinator left it."""
    path = run_dir / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def newest_round(run_dir: Path) -> int:
    """The newest checkpoint directory's round by name alone (-1: none), unverified."""
    root = run_dir / "checkpoints"
    names = [parse_dir_name(p.name) for p in root.iterdir()] if root.is_dir() else []
    return max((r for r in names if r is not None), default=-1)


def latest(run_dir: Path) -> ServerState:
    state = LocalCheckpointStore(run_dir / "checkpoints").latest_valid()
    if state is None:
        raise KillDriverError(f"{run_dir}: no checkpoint at all")
    return state


class KillResumeDriver:
    """Runs ``python -m phalanx run`` in ``workdir``: a reference, then the killed run."""

    def __init__(self, workdir: Path, *, rounds: int, seed: int = 1234, timeout_s: float = 60.0):
        self.workdir = workdir
        self.rounds = rounds
        self.overrides = scenario(rounds)
        self.rng = random.Random(seed)
        self.timeout_s = timeout_s  # for any one process
        self._runs = 0
        self._log = workdir / "logs" / "none.log"

    def run(
        self,
        kills: int,
        *,
        cover: float = 0.7,
        max_final_resumes: int = 5,
        reuse_seed: int | None = None,
    ) -> KillReport:
        """``kills`` kills, then plain resumes until the run finishes; compare with the
        reference. The training kills together are planned to cover about ``cover`` of the
        rounds, so that the last kills still find rounds to interrupt. ``reuse_seed``: the
        run directory first holds a finished, longer run of that seed (which ``--out``
        must refuse, and ``--force`` clear)."""
        start = time.perf_counter()
        reference, timeline = self._reference()
        run_dir = self.workdir / "killed"
        if reuse_seed is not None:
            self._earlier_run(run_dir, reuse_seed)
        plan = self.plan(kills, timeline, cover=cover)
        attempts = [
            self._attempt(run_dir, kill, resume=i > 0, expected=reference)
            for i, kill in enumerate(plan)
        ]
        for _ in range(max_final_resumes):
            attempts.append(self._attempt(run_dir, None, resume=bool(attempts), expected=reference))
            if attempts[-1].returncode == 0:
                break
        else:
            raise KillDriverError(f"run not finished after {max_final_resumes} plain resumes")
        return KillReport(
            attempts, reference, latest(run_dir), time.perf_counter() - start,
            read_history(self.workdir / "reference"), read_history(run_dir),
        )  # fmt: skip

    def _earlier_run(self, run_dir: Path, seed: int) -> None:
        """A finished run of another seed, 20 rounds longer, left in ``run_dir``."""
        longer = [*self.overrides, f"seed={seed}", f"rounds={self.rounds + 20}"]
        process = self._start(run_dir, ["--out", str(run_dir)], crash_at=None, overrides=longer)
        self._wait(process, self.timeout_s)
        self._check(process.returncode, allowed=(0,))

    def plan(self, kills: int, timeline: Timeline, *, cover: float) -> list[Kill]:
        """Every third kill at a crash point (the points in a shuffled cycle, hit 1 to 3);
        every seventh in start-up; the others a random number of rounds and a random part of
        a round into training."""
        kinds = [_kind(i) for i in range(kills)]
        round_s = timeline.training_s / max(timeline.rounds, 1)
        per_kill = cover * self.rounds / max(kinds.count("training"), 1)  # in rounds
        span = max(2 * (per_kill - 1), 2)  # rounds; a kill costs a round to get going
        points = self.rng.sample(CRASH_POINTS, len(CRASH_POINTS))
        plan = []
        for i, kind in enumerate(kinds):
            if kind == "crash point":
                point = points[(i // 3) % len(points)]
                plan.append(Kill(kind, crash_at=f"{point}@{self.rng.randint(1, 3)}"))
            elif kind == "start-up":
                plan.append(Kill(kind, self.rng.uniform(0.3, 0.95) * timeline.startup_s))
            else:
                whole, part = divmod(self.rng.uniform(0.0, span), 1.0)
                plan.append(Kill(kind, part * round_s, rounds_in=int(whole)))
        return plan

    def _reference(self) -> tuple[ServerState, Timeline]:
        """An uninterrupted run, watched for the moment its first checkpoint appears."""
        run_dir = self.workdir / "reference"
        start = time.perf_counter()
        process = self._start(run_dir, ["--out", str(run_dir)], crash_at=None)
        self._await_checkpoint(process, run_dir, -1)
        first = time.perf_counter() - start
        self._wait(process, self.timeout_s)
        self._check(process.returncode, allowed=(0,))
        end = time.perf_counter() - start
        return latest(run_dir), Timeline(first, end - first, self.rounds)

    def _attempt(
        self, run_dir: Path, kill: Kill | None, *, resume: bool, expected: ServerState
    ) -> Attempt:
        """What a supervisor does: ``--resume`` (``--out`` the first time); if that is
        refused (no checkpoint of this run yet, or the directory holds another run), start
        over with ``--out --force``. The kill is aimed at whichever process runs."""
        where = ["--resume", str(run_dir)] if resume else ["--out", str(run_dir)]
        returncode = self._process(run_dir, where, kill)
        refused = None
        if returncode in REFUSED:
            refused = returncode
            self._check_refusal(returncode)
            returncode = self._process(run_dir, ["--out", str(run_dir), "--force"], kill)
        self._check(returncode, allowed=(0, KILLED) if kill else (0,))
        exact = None
        if returncode == 0:  # a kill that came too late: the run must be the right one
            exact = torch.equal(latest(run_dir).params, expected.params)
        return Attempt(kill, resume, returncode, newest_round(run_dir), refused, exact)

    def _process(self, run_dir: Path, where: list[str], kill: Kill | None) -> int:
        forced = "--force" in where
        before = -1 if forced else newest_round(run_dir)
        process = self._start(run_dir, where, crash_at=kill.crash_at if kill else None)
        if kill is not None and kill.kind != "crash point":
            self._timed_kill(process, run_dir, kill, before=before)
        self._wait(process, self.timeout_s)
        return process.returncode

    def _check_refusal(self, returncode: int) -> None:
        """A refusal must be one of the two documented ones, never a traceback."""
        text = " ".join(self._log.read_text(errors="replace").split())  # unwrapped
        expected = (
            "no valid checkpoint", "no config.json", "already holds a run",
            "would change the trajectory",
        )  # fmt: skip
        if "Traceback" in text or not any(phrase in text for phrase in expected):
            raise KillDriverError(f"unexpected refusal {returncode} (see {self._log}):\n{text}")

    def _await_checkpoint(
        self, process: subprocess.Popen[bytes], run_dir: Path, after: int
    ) -> bool:
        """Wait until the run has a checkpoint newer than round ``after``; False if the
        process ended first (a finished run that had nothing left to do)."""
        deadline = time.perf_counter() + self.timeout_s
        while newest_round(run_dir) <= after:
            if process.poll() is not None:
                return False
            if time.perf_counter() > deadline:
                self._kill(process)
                raise KillDriverError(f"no checkpoint within {self.timeout_s} s")
            time.sleep(POLL_S)
        return True

    def _timed_kill(
        self, process: subprocess.Popen[bytes], run_dir: Path, kill: Kill, *, before: int
    ) -> None:
        """A start-up kill counts its delay from start, a training kill from the process's
        checkpoint ``rounds_in`` rounds after its first; either does nothing if the process
        finishes first. A start-up kill comes at the latest when the process writes its first
        checkpoint: its delay was planned on the reference's start-up, and a start that runs
        faster than that one (a resume, a load that eased) would otherwise get tens of rounds
        (12 ms each) into training, or to the run's end, before the kill."""
        if kill.kind == "start-up":
            end = time.perf_counter() + max(kill.delay_s, 0.0)
            while time.perf_counter() < end and newest_round(run_dir) <= before:
                if process.poll() is not None:
                    return
                time.sleep(POLL_S)
            self._kill(process)
            return
        after = before + kill.rounds_in
        if kill.kind == "training" and not self._await_checkpoint(process, run_dir, after):
            return
        try:
            process.wait(timeout=max(kill.delay_s, 0.0))
        except subprocess.TimeoutExpired:
            self._kill(process)

    def _wait(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raise KillDriverError(f"run exceeded {timeout_s} s (see {self._log})") from None

    def _start(
        self,
        run_dir: Path,
        where: list[str],
        *,
        crash_at: str | None,
        overrides: list[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """One coordinator in its own session, so a kill takes anything it spawned too.
        A resume gets the same ``--set`` overrides as a new run: they name the configuration
        asked for, and a directory that holds another run's refuses them."""
        env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        if crash_at:
            env[ENV_VAR] = crash_at
        sets = [arg for override in overrides or self.overrides for arg in ("--set", override)]
        command = [sys.executable, "-m", "phalanx", "run", *where, "--quiet", "--no-plots", *sets]
        self._runs += 1
        self._log = self.workdir / "logs" / f"{self._runs:04d}.log"
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log, "wb") as log:
            return subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):  # it finished just before the kill
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=self.timeout_s)

    def _check(self, returncode: int, *, allowed: tuple[int, ...]) -> None:
        if returncode not in allowed:
            tail = self._log.read_text(errors="replace")[-3000:]
            raise KillDriverError(f"exit code {returncode} (see {self._log}):\n{tail}")


def _kind(i: int) -> KillKind:
    if i % 3 == 2:
        return "crash point"
    return "start-up" if i % 7 == 3 else "training"
