"""The parent's half of ``aggregator_speed.py``: two measuring children (``child.py``), one
in phalanx's environment and one in the peers' (``.venv-peers``), driven side by side.

Per (n, d) both children build the same inputs from the same seed (the parent compares
their CRC-32). Per rule, every contender first makes one warm-up call, whose output is the
one compared with ours (max |ours - peer|, and how many coordinates differ beyond a
tolerance); then the contenders are timed in interleaved rounds, one call at a time across
both children, and each reports the median of its rounds. ByzFL is timed on a numpy array
and on a torch tensor in the first round; the faster format goes on alone.

A peer call is skipped, with the reason, when its time predicted from the same call on the
last smaller case exceeds ``--max-call-s``, or its memory (from its algorithm: ByzFL's NNM
builds an n x (n - f) x d array) exceeds ``--max-bytes``. A slow call gets fewer rounds,
``min(repeats, floor(budget / warm-up time))``; one that alone outlasts the budget is timed
once, by its warm-up call. Every wait on a child is bounded; a child that does not answer
in time is killed (its whole session), the call is reported as failed, and the child is
restarted with the current inputs for the calls after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.aggregators.peers import Loaded
from benchmarks.aggregators.rules import AGREE, PeerCall, Rule, count_differing, rules
from benchmarks.aggregators.rules import max_abs_difference as max_diff


class ChildTimeoutError(Exception):
    """A measuring child did not answer in time; it has been killed."""


class Worker:
    """One measuring child: a JSON request per line in, a JSON answer per line out."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float):
        self.argv, self.env, self.cwd, self.timeout_s = argv, env, cwd, timeout_s
        self.start()

    def start(self) -> None:
        """(Re)start the child and read its greeting."""
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, bufsize=0, start_new_session=True,
        )  # fmt: skip
        self.buffer = b""
        self.hello = self.read(self.timeout_s)

    def ask(self, request: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        stdin = self.process.stdin
        if stdin is None:
            raise RuntimeError("child has no stdin")
        stdin.write((json.dumps(request) + "\n").encode())
        return self.read(timeout_s or self.timeout_s, request)

    def read(self, timeout_s: float, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """The next answer line, waiting at most ``timeout_s``; kills the child otherwise."""
        stdout = self.process.stdout
        if stdout is None:
            raise RuntimeError("child has no stdout")
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                if not selector.select(max(deadline - time.monotonic(), 0)):
                    self.close(force=True)
                    raise ChildTimeoutError(f"no answer within {timeout_s:.0f} s to {request}")
                chunk = os.read(stdout.fileno(), 1 << 16)
                if not chunk:
                    self.close(force=True)
                    raise SystemExit(f"measuring child {self.argv[0]} exited on {request}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def close(self, *, force: bool = False) -> None:
        """Ask it to quit; kill its session if it does not within 10 s (or at once)."""
        if not force and self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, SystemExit):
                if self.process.stdin is not None:
                    self.process.stdin.write(b'{"op": "quit"}\n')
                    self.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@dataclass
class Contender:
    """One (library, format) on one rule and size: its worker, its runs, or why it has none."""

    peer: str
    fmt: str
    worker: Worker | None = None  # None: skipped or failed
    note: str = ""
    warm: dict[str, float] | None = None
    runs: list[dict[str, float]] = field(default_factory=list)
    allowed: int = 0
    difference: float | None = None
    differing: int | None = None  # coordinates where the outputs differ beyond AGREE

    def median(self, what: str) -> float | None:
        return statistics.median(r[what] for r in self.runs) if self.runs else None

    def record(self) -> dict[str, Any]:
        faults = self.median("faults")
        return {
            "format": self.fmt,
            "median_s": self.median("cpu_s"),  # the figure compared: CPU seconds
            "median_wall_s": self.median("wall_s"),
            "median_sys_s": self.median("sys_s"),
            "faults": None if faults is None else int(faults),
            "runs": [compact(r) for r in self.runs],  # [wall s, CPU s, system s, faults]
            "warm": compact(self.warm) if self.warm else None,
            "max_abs_diff": self.difference,
            "coords_differing": self.differing,
            "note": self.note,
        }


def compact(call: dict[str, float]) -> list[float]:
    """One call's numbers as [wall s, CPU s, system s, faults], 4 significant digits."""
    return [float(f"{call[k]:.4g}") for k in ("wall_s", "cpu_s", "sys_s", "faults")]


@dataclass
class History:
    """The last measured warm-up time of each (peer, format, rule), for predictions."""

    seen: dict[tuple[str, str, str], tuple[float, int, int, int]] = field(default_factory=dict)

    def predict(
        self, key: tuple[str, str, str], call: PeerCall, n: int, d: int, f: int
    ) -> float | None:
        if key not in self.seen:
            return None
        seconds, n0, d0, f0 = self.seen[key]
        return seconds * call.cost(n, d, f) / call.cost(n0, d0, f0)

    def note(self, key: tuple[str, str, str], seconds: float, n: int, d: int, f: int) -> None:
        self.seen[key] = (seconds, n, d, f)


@dataclass
class Bench:
    """The two children, the run's options and what it has learnt so far."""

    ours: Worker
    peers: Worker | None  # None: the peers' environment is missing (``missing`` says why)
    missing: dict[str, str]
    args: Any
    scratch: Path
    history: History = field(default_factory=History)
    case: tuple[int, int] = (0, 0)  # the (n, d) both children hold

    def contenders(
        self, peer: str, call: PeerCall, formats: tuple[str, ...], rule: str, n: int, d: int, f: int
    ) -> list[Contender]:
        """The peer's contenders for this case, each runnable or skipped with its reason."""
        if peer in self.missing or self.peers is None:
            return [Contender(peer, "", note=self.missing.get(peer, "not installed"))]
        if call.factory is None:
            return [Contender(peer, "", note=call.note)]
        out = []
        for fmt in formats:
            c = Contender(peer, fmt, note=call.note)
            predicted = self.history.predict((peer, fmt, rule), call, n, d, f)
            needs = call.memory(n, d, f)
            if predicted is not None and predicted > self.args.max_call_s:
                c.note = f"skipped: predicted {predicted:.0f} s > {self.args.max_call_s:.0f} s"
            elif needs > self.args.max_bytes:
                limit = self.args.max_bytes / 2**30
                c.note = f"skipped: needs ~{needs / 2**30:.1f} GiB > {limit:.0f} GiB"
            else:
                c.worker = self.peers
            out.append(c)
        return out

    def call(self, c: Contender, rule: str, out: Path | None = None) -> dict[str, Any]:
        """One call; a call that outlasts the child's timeout becomes an error answer, and
        the child is restarted (with the current case) for the contenders after it."""
        worker = c.worker
        if worker is None:
            raise RuntimeError("no worker")
        request = {"op": "call", "contender": c.peer, "rule": rule, "format": c.fmt}
        try:
            return worker.ask(request | ({"out": str(out)} if out else {}))
        except ChildTimeoutError:
            worker.start()
            worker.ask({"op": "case", "n": self.case[0], "d": self.case[1], "seed": self.args.seed})
            return {"error": f"no answer within {worker.timeout_s:.0f} s (killed)"}

    def warm_up(
        self, c: Contender, rule: str, reference: np.ndarray[Any, Any] | None
    ) -> np.ndarray[Any, Any] | None:
        """The first call, not among the timed rounds: its output goes to the agreement
        check, its time sets the number of rounds. A failure becomes the contender's note."""
        if c.worker is None:
            return None
        path = self.scratch / "output.npy"
        answer = self.call(c, rule, path)
        if "error" in answer:
            c.worker, c.note = None, f"failed: {answer['error']}"
            return None
        c.warm = answer
        c.allowed = min(self.args.repeats, int(self.args.budget_s // max(answer["wall_s"], 1e-9)))
        if c.allowed == 0:  # one call outlasts the budget: warm-up effects are noise, keep it
            c.runs.append(answer)
            c.note = (c.note + "; " if c.note else "") + "timed once (the first call)"
        vector: np.ndarray[Any, Any] = np.load(path, allow_pickle=False)
        path.unlink()
        if reference is not None:
            c.difference = max_diff(reference, vector)
            tolerance = AGREE * max(1.0, float(np.max(np.abs(reference))))
            c.differing = count_differing(reference, vector, tolerance)
        return vector

    def rounds(self, contenders: list[Contender], rule: str) -> None:
        """Interleaved timed rounds; after the first, only ByzFL's faster format continues."""
        for round_index in range(self.args.repeats):
            for c in contenders:
                if c.worker is not None and len(c.runs) < c.allowed:
                    answer = self.call(c, rule)
                    if "error" in answer:  # keep the rounds it had
                        failed = f"failed: {answer['error']}"
                        c.allowed, c.note = len(c.runs), f"{c.note}; {failed}" if c.note else failed
                    else:
                        c.runs.append(answer)
            if round_index == 0:
                timed_byzfl = [c for c in contenders if c.peer == "ByzFL" and c.runs]
                for c in sorted(timed_byzfl, key=lambda c: c.runs[0]["cpu_s"])[1:]:
                    c.allowed = len(c.runs)
                    c.note = (c.note + "; " if c.note else "") + "slower format: timed once"

    def measure(self, rule: Rule, n: int, d: int, f: int) -> dict[str, Any]:
        """Warm-ups (and the agreement check against ours), then the timed rounds."""
        ours = Contender("phalanx", "torch", worker=self.ours)
        contenders = [
            ours,
            *self.contenders("ByzFL", rule.byzfl, ("numpy", "torch"), rule.label, n, d, f),
            *self.contenders("Flower", rule.flower, ("NDArrays",), rule.label, n, d, f),
        ]
        reference = self.warm_up(ours, rule.label, None)
        for c in contenders[1:]:
            self.warm_up(c, rule.label, reference)
            if c.warm is not None:
                self.history.note((c.peer, c.fmt, rule.label), c.warm["wall_s"], n, d, f)
        self.rounds(contenders, rule.label)
        return {
            "rule": rule.label,
            "n": n,
            "d": d,
            "f": f,
            "scale": None if reference is None else float(np.max(np.abs(reference))),
            "contenders": [{"peer": c.peer, **c.record()} for c in contenders],
        }

    def load_case(self, n: int, d: int) -> None:
        """Both children build the (n, d) inputs; they must be the same bytes."""
        self.case = (n, d)
        request = {"op": "case", "n": n, "d": d, "seed": self.args.seed}
        crcs = {w.ask(request)["crc"] for w in (self.ours, self.peers) if w is not None}
        if len(crcs) != 1:
            raise SystemExit(f"the two children built different inputs for n={n}, d={d}")


def metadata_rules() -> list[Rule]:
    """The rules' parameters, costs and notes, without the peers' modules (never called)."""
    return rules(Loaded("ByzFL", None, {}), Loaded("Flower", None, {}))
