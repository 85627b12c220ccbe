"""The README is true: its Python example and every ``phalanx`` command in its shell blocks
run as printed (shortened with extra ``--set``), and its tables of exit codes, summary keys
and history keys match what the code defines and writes."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phalanx import errors
from phalanx.cli.app import app
from phalanx.engine.history import OMITTED_WHEN_UNSET, RoundRecord
from phalanx.observability.summary import summarize

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text()
# Appended to each run so the whole README runs in seconds; the last --set of a key wins.
SHORT_RUN = ["--set", "rounds=2", "--set", "checkpoint.every=1"]
SHORT_RESUME = ["--set", "rounds=3"]


def test_readme_python_example_runs(capsys: object) -> None:
    blocks = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
    assert blocks, "README has a python example"
    exec(compile(blocks[0], str(README), "exec"), {"__name__": "readme"})


def shell_commands() -> list[list[str]]:
    """Every ``phalanx`` command line of README's bash blocks, in order, as argv after
    ``phalanx`` (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0].endswith("/phalanx"):
                commands.append(argv[1:])
    return commands


def _shortened(argv: list[str]) -> list[str]:
    if argv[:1] != ["run"]:
        return argv
    return [*argv, *(SHORT_RESUME if "--resume" in argv else SHORT_RUN)]


@pytest.mark.slow
@pytest.mark.timeout(600)  # about ten processes, each importing torch
def test_readme_shell_commands_run(tmp_path: Path) -> None:
    """In order, in one fresh directory: later commands use what earlier ones wrote."""
    commands = shell_commands()
    assert len(commands) >= 8 and any("robust" in argv for argv in commands)
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", "phalanx", *_shortened(argv)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"phalanx {shlex.join(argv)}:\n{done.stderr}"
        assert "Traceback" not in done.stderr


def _table_after(marker: str) -> dict[str, str]:
    """The rows of the markdown table that follows ``marker``: backticked keys of the first
    column, each mapped to its row."""
    rows = TEXT[TEXT.index(marker) :].split("\n\n", 2)[1].splitlines()[2:]
    keys = {}
    for row in rows:
        first = row.split("|")[1]
        keys.update({key: row for key in re.findall(r"`([^`]+)`", first)})
    return keys


def test_summary_keys_are_documented(tmp_path: Path) -> None:
    """Against what ``phalanx run`` writes: ``summarize``'s keys plus those the command adds
    (scenario, seed, the simulation's training counts)."""
    tiny = ["--set", "rounds=1", "--set", "workload.num_clients=6", "--set",
            "workload.samples_per_client=20", "--set", "selection.clients_per_round=4", "--set",
            "quorum.min_updates=2", "--quiet", "--no-plots"]  # fmt: skip
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path), *tiny])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(_table_after("`summary.json` keys:")) == set(summary)
    assert set(summarize([], wall_time_s=0.0, train_time_s=0.0)) < set(summary)


def test_history_keys_are_documented() -> None:
    record = RoundRecord(round=0, model_version=0).to_json()  # keys left out while unset too
    assert set(_table_after("`history.jsonl` keys")) == set(record) | set(OMITTED_WHEN_UNSET)


def test_exit_codes_are_documented() -> None:
    rows = TEXT[TEXT.index("Exit codes (") :].split("\n\n", 2)[1].splitlines()[2:]
    documented = {int(row.split("|")[1]): row.split("|")[2].strip(" `") for row in rows}
    defined = {
        cls.exit_code: cls.__name__
        for cls in vars(errors).values()
        if inspect.isclass(cls)
        and issubclass(cls, errors.PhalanxError)
        and "exit_code" in vars(cls)  # a subclass that inherits its parent's code is not a row
    }
    assert documented == {0: "", **defined, 130: "", 143: ""}
