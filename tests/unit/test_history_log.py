"""history.jsonl as the per-round log: appended, cut back to the checkpoint on resume, a torn
last line dropped, the checkpoint's own last record restored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from phalanx.coordinator import HistoryLog, MemoryHistory
from phalanx.errors import StorageError


def record(round_: int) -> dict[str, object]:
    return {"round": round_, "committed": True}


def write(path: Path, text: str) -> None:
    path.write_text(text)


def rounds(path: Path) -> list[int]:
    return [json.loads(line)["round"] for line in path.read_text().splitlines()]


def test_appends_are_lines_in_round_order(tmp_path: Path) -> None:
    log = HistoryLog(tmp_path / "history.jsonl")
    log.start(0, None)
    for r in range(3):
        log.append(record(r))
    log.close()
    assert rounds(tmp_path / "history.jsonl") == [0, 1, 2]
    assert HistoryLog(tmp_path / "history.jsonl").records() == [record(r) for r in range(3)]


def test_resume_cuts_the_rounds_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    write(path, "".join(json.dumps(record(r)) + "\n" for r in range(6)))
    log = HistoryLog(path)
    log.start(4, record(3))
    log.append(record(4))
    log.close()
    assert rounds(path) == [0, 1, 2, 3, 4]


def test_a_torn_last_line_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.jsonl"
    write(path, json.dumps(record(0)) + "\n" + json.dumps(record(1)) + "\n" + '{"round": 2, "co')
    log = HistoryLog(path)
    log.start(2, record(1))
    log.append(record(2))
    log.close()
    assert rounds(path) == [0, 1, 2]
    assert "torn" in caplog.text


def test_the_checkpoints_own_record_is_restored_when_the_crash_beat_the_append(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.jsonl"
    write(path, json.dumps(record(0)) + "\n")  # round 1's checkpoint was written, its line not
    log = HistoryLog(path)
    log.start(2, record(1))
    log.close()
    assert rounds(path) == [0, 1]


def test_damage_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    write(path, "garbage\n" + json.dumps(record(1)) + "\n")
    with pytest.raises(StorageError, match=r"history\.jsonl:1: damaged"):
        HistoryLog(path).start(2, record(1))


def test_a_fresh_start_empties_the_log(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    write(path, json.dumps(record(0)) + "\n")
    log = HistoryLog(path)
    log.start(0, None)
    log.close()
    assert path.read_text() == ""


def test_memory_history_keeps_records_in_order() -> None:
    history = MemoryHistory()
    history.start(0, None)
    history.append(record(0))
    history.append(record(1))
    assert history.records() == [record(0), record(1)]


class Journal:
    """A History and a store that write what happens to one list, in order."""

    location = "journal"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, next_round: int, last_record: object) -> None:
        self.calls.append("start")

    def append(self, record: dict[str, object]) -> None:
        self.calls.append(f"append {record['round']}")

    def sync(self) -> None:
        self.calls.append("sync")

    def records(self) -> list[dict[str, object]]:
        return []

    def close(self) -> None:
        self.calls.append("close")

    def save(self, state: object) -> str:
        self.calls.append(f"save {getattr(state, 'round')}")  # noqa: B009
        return ""


def test_the_log_is_synced_before_each_checkpoint_not_every_round() -> None:
    """Lines after the newest checkpoint are cut on resume, so only the lines a checkpoint
    vouches for must be durable, and they are synced before that checkpoint exists."""
    from types import SimpleNamespace
    from typing import Any, cast

    from phalanx.coordinator import CheckpointCommit
    from phalanx.coordinator.store_calls import StoreCalls

    journal = Journal()
    commit = CheckpointCommit(
        cast(Any, journal), cast(Any, journal), every=2, last_round=3, calls=StoreCalls(5.0)
    )
    for round_ in (1, 2, 3):
        state = SimpleNamespace(round=round_, last_record={"round": round_ - 1})
        asyncio.run(commit.commit(cast(Any, state)))
    assert journal.calls == [
        "append 0",
        "sync", "save 2", "append 1",
        "sync", "save 3", "append 2",
    ]  # fmt: skip
