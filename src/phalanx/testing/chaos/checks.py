"""What a chaos schedule must leave behind, checked from the run directory and the logs.

- the run completed: the last coordinator exited 0 and every configured round is in the
  history, committed or discarded, and the summary agrees;
- committed rounds form one chain: each round once, in order, the model version after each
  record equal to the commits so far; every checkpoint in the run directory verifies (read
  through the checkpoint package) and sits on that chain: its round, its model version and
  the record it carries agree with the history;
- nothing was lost across a coordinator death: each record the history held when a
  coordinator died is still there, unchanged, at the end;
- no corrupted payload was aggregated (the summary's ``corrupt_aggregated`` is 0);
- the coordinator never crashed: every exit but the last was one the schedule caused, the
  last was 0, and no coordinator log holds a traceback or an INTERNAL status.

Three records that grpcio itself logs with a traceback, after handling the condition, are
counted apart (``grpc_logged``), not as crashes, each only in its exact shape:

- ``ExecuteBatchError raised in core by servicer method``: grpcio's aio server could not
  send a handler's reply or status because the peer had already gone (a client whose call
  deadline passed, a connection cut; grpc/grpc#32551 made this a log line). Its last
  exception is the ``ExecuteBatchError``; an exception it was raised while handling must be
  a phalanx error (a refusal being sent as its status), never anything else;
- ``Invalid encoding on``: a header name that is not UTF-8, which grpcio decodes as latin-1
  and carries on (grpcio frames only);
- ``Exception not handled by _handle_exceptions in servicer method`` with a bare
  ``CancelledError`` in grpcio's ``_schedule_rpc_coro``: a call still open when the server
  stopped and its grace ran out, cancelled by grpcio (grpcio frames only).

Any other traceback is a crash.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phalanx.checkpoint import LocalCheckpointStore
from phalanx.errors import CheckpointError

Record = dict[str, Any]
CRASH_MARKERS = ("StatusCode.INTERNAL", "INTERNAL:")
TRACEBACK = "Traceback (most recent call last)"
SEND_FAILED = "ERROR grpc._cython.cygrpc: ExecuteBatchError raised in core by servicer method"
GRPC_ONLY = {  # record header -> the one exception its traceback may end in
    "ERROR grpc._cython.cygrpc: Invalid encoding on": "UnicodeDecodeError",
    "ERROR grpc._cython.cygrpc: Exception not handled by _handle_exceptions in servicer method":
        "asyncio.exceptions.CancelledError",
}  # fmt: skip
LOG_RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
GRPC_FRAME = re.compile(r'^\s*File "src/python/grpcio/grpc/')
SUMMARY_KEYS = ("rounds", "rounds_committed", "final_model_version")
SAME = ("round", "committed", "model_version", "accepted")  # what identifies a record


@dataclass
class Verdict:
    """The counts a schedule is judged by; ``problems`` says each one in words."""

    completed: bool = False
    lost: int = 0  # committed records that vanished or changed, or gaps in the chain
    doubled: int = 0  # rounds recorded more than once
    off_chain: int = 0  # checkpoints that fail to verify or disagree with the history
    corrupt: int = 0  # corrupted updates aggregated
    crashes: int = 0  # coordinator exits the schedule did not cause, tracebacks, INTERNAL
    grpc_logged: int = 0  # grpcio's own handled-and-logged records (see the module doc)
    committed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        bad = self.lost + self.doubled + self.off_chain + self.corrupt + self.crashes
        return self.completed and bad == 0


def read_history(path: Path) -> list[Record]:
    """The complete lines of ``history.jsonl`` (a torn last line is not a record yet)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def check_run(
    run_dir: Path, *, rounds: int, exits: list[tuple[int, bool]], snapshots: list[list[Record]],
    coordinator_log: Path | None,
) -> Verdict:  # fmt: skip
    """Judge one schedule. ``exits``: each coordinator incarnation's exit code and whether
    the schedule caused it; ``snapshots``: the history as it was at each coordinator death."""
    verdict = Verdict()
    history = read_history(run_dir / "history.jsonl")
    _check_chain(history, verdict)
    _check_snapshots(history, snapshots, verdict)
    _check_checkpoints(run_dir / "checkpoints", history, verdict)
    _check_exits(exits, coordinator_log, verdict)
    _check_completion(run_dir, history, rounds, exits, verdict)
    return verdict


def _same(a: Record, b: Record) -> bool:
    return all(a.get(key) == b.get(key) for key in SAME)


def _check_chain(history: list[Record], verdict: Verdict) -> None:
    counts = Counter(int(r["round"]) for r in history)
    for round_, n in sorted(counts.items()):
        if n > 1:
            verdict.doubled += n - 1
            verdict.problems.append(f"round {round_} recorded {n} times")
    if counts:
        missing = sorted(set(range(max(counts) + 1)) - set(counts))
        verdict.lost += len(missing)
        if missing:
            verdict.problems.append(f"rounds missing from the history: {missing}")
    if [int(r["round"]) for r in history] != sorted(counts):
        verdict.problems.append("history rounds out of order")
        verdict.lost += 1
    version = 0
    for record in history:
        version += bool(record["committed"])
        if record.get("model_version") != version:
            verdict.off_chain += 1
            verdict.problems.append(
                f"round {record['round']}: model version {record.get('model_version')} after "
                f"{version} commits"
            )
    verdict.committed = version


def _check_snapshots(
    history: list[Record], snapshots: list[list[Record]], verdict: Verdict
) -> None:
    final = {int(r["round"]): r for r in history}
    seen: set[int] = set()
    for snapshot in snapshots:
        for record in snapshot:
            round_ = int(record["round"])
            if round_ in seen:
                continue
            seen.add(round_)
            kept = final.get(round_)
            if kept is None or not _same(kept, record):
                verdict.lost += 1
                verdict.problems.append(
                    f"round {round_}, recorded before a coordinator death, is "
                    f"{'gone' if kept is None else 'different'} at the end"
                )


def _check_checkpoints(root: Path, history: list[Record], verdict: Verdict) -> None:
    """Every checkpoint verifies and is on the chain (read only: no lock, no repair)."""
    if not root.is_dir():
        return
    store = LocalCheckpointStore(root)
    by_round = {int(r["round"]): r for r in history}
    digests = set()
    for info in store.list():
        where = f"checkpoint round {info.round}"
        if not info.valid:
            verdict.off_chain += 1
            verdict.problems.append(f"{where} does not verify: {info.problem}")
            continue
        try:
            state = store.load(info.ref)
        except CheckpointError as error:  # changed under us: report it, never crash
            verdict.off_chain += 1
            verdict.problems.append(f"{where}: {error}")
            continue
        digests.add(state.config_digest)
        commits = sum(bool(r["committed"]) for r in history if int(r["round"]) < state.round)
        carried = state.last_record or {}
        logged = by_round.get(state.round - 1)
        if state.model_version != commits or logged is None or not _same(carried, logged):
            verdict.off_chain += 1
            verdict.problems.append(
                f"{where} is off the chain: model version {state.model_version} (history: "
                f"{commits} commits before it), its record "
                f"{ {k: carried.get(k) for k in SAME} } vs the history's "
                f"{None if logged is None else {k: logged.get(k) for k in SAME}}"
            )
    if len(digests) > 1:
        verdict.off_chain += 1
        verdict.problems.append(f"checkpoints of {len(digests)} configurations in one run")


def _check_exits(
    exits: list[tuple[int, bool]], coordinator_log: Path | None, verdict: Verdict
) -> None:
    for incarnation, (code, caused) in enumerate(exits):
        if code != 0 and not caused:
            verdict.crashes += 1
            verdict.problems.append(f"coordinator incarnation {incarnation} exited {code} unasked")
    if coordinator_log is not None and coordinator_log.exists():
        text = coordinator_log.read_text(errors="replace")
        crashes, verdict.grpc_logged = log_crashes(text)
        verdict.crashes += len(crashes)
        verdict.problems += crashes


def log_crashes(text: str) -> tuple[list[str], int]:
    """What in a coordinator log counts as a crash (one line each), and how many records
    grpcio logged after handling the condition itself (``GRPC_HANDLED``)."""
    lines = text.splitlines()
    crashes = []
    for marker in CRASH_MARKERS:
        hit = next((x for x in lines if marker in x), None)
        if hit is not None:
            crashes.append(f"coordinator log holds {marker!r}: {hit.strip()[:200]}")
    handled = 0
    for record in _records(text):
        if not any(TRACEBACK in x for x in record):
            continue
        if _grpc_handled(record):
            handled += 1
        else:
            crashes.append(f"coordinator log holds a traceback: {record[0].strip()[:200]}")
    return crashes, handled


def _records(text: str) -> list[list[str]]:
    """The log cut into records: a ``LEVEL name:`` line and the lines after it that are not
    one (a traceback, console lines); what comes before the first record is one too."""
    records: list[list[str]] = [[]]
    for line in text.splitlines():
        if LOG_RECORD.match(line):
            records.append([line])
        else:
            records[-1].append(line)
    return [r for r in records if r]


def _grpc_handled(record: list[str]) -> bool:
    """One of the grpcio records the module doc names, in its exact shape."""
    frames = [x for x in record if x.lstrip().startswith("File ")]
    raised = _exceptions(record)
    if record[0].startswith(SEND_FAILED):
        return (
            bool(raised)
            and raised[-1].startswith("grpc._cython.cygrpc.ExecuteBatchError:")
            and all(x.startswith("phalanx.errors.") for x in raised[:-1])
        )
    for header, last in GRPC_ONLY.items():
        if record[0].startswith(header):
            return (
                bool(raised)
                and all(x.split(":")[0] == last for x in raised)
                and bool(frames)
                and all(GRPC_FRAME.match(x) for x in frames)
            )
    return False


def _exceptions(record: list[str]) -> list[str]:
    """The ``Class: message`` line ending each traceback of a record, in order."""
    ends = []
    for i, line in enumerate(record):
        if TRACEBACK not in line:
            continue
        rest = record[i + 1 :]
        end = next((x for x in rest if x and not x.startswith((" ", "\t"))), None)
        if end is not None:
            ends.append(end)
    return ends


def _check_completion(
    run_dir: Path, history: list[Record], rounds: int, exits: list[tuple[int, bool]],
    verdict: Verdict,
) -> None:  # fmt: skip
    summary_path = run_dir / "summary.json"
    summary: Record = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    verdict.corrupt = int(summary.get("corrupt_aggregated", 0))
    if verdict.corrupt:
        verdict.problems.append(f"{verdict.corrupt} corrupted updates aggregated")
    last_code = exits[-1][0] if exits else None
    agrees = (
        summary.get("rounds") == rounds
        and summary.get("rounds_committed") == verdict.committed
        and summary.get("final_model_version") == verdict.committed
    )
    verdict.completed = last_code == 0 and len(history) == rounds and agrees
    if not verdict.completed:
        verdict.problems.append(
            f"run not completed: last coordinator exit {last_code}, {len(history)} of {rounds} "
            f"rounds recorded, summary { {k: summary.get(k) for k in SUMMARY_KEYS} }"
        )
