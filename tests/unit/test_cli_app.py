"""The CLI's boundary: foreign errors become one line and a documented exit code; --version;
``phalanx list``; progress as log lines off a terminal."""

from __future__ import annotations

import errno
import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from phalanx import __version__
from phalanx.cli import app as app_module
from phalanx.cli.app import app, translate
from phalanx.cli.listing import config_keys
from phalanx.cli.progress import round_progress
from phalanx.config import RunConfig
from phalanx.core.state import ServerState
from phalanx.engine.history import RoundEvent, RoundRecord
from phalanx.errors import ConfigError, StorageError, WorkloadError
from phalanx.types import FailureKind


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENOTDIR, "is a file, not a directory"),
    ],
)
def test_os_errors_are_storage_errors_naming_the_path(code: int, hint: str) -> None:
    error = translate(OSError(code, "strerror text", "/runs/x/summary.json"))
    assert isinstance(error, StorageError) and error.exit_code == 9
    assert "/runs/x/summary.json" in str(error) and hint in str(error)


def test_running_out_of_memory_is_a_workload_error() -> None:
    torch_message = (
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 12800000000000 bytes. Error code 12"
    )
    for raised in (MemoryError(), RuntimeError(torch_message)):
        error = translate(raised)
        assert isinstance(error, WorkloadError) and error.exit_code == 3
        assert str(error).startswith("out of memory")
    assert "12800000000000 bytes" in str(translate(RuntimeError(torch_message)))
    assert translate(RuntimeError("a bug")) is None  # a real bug keeps its traceback


def _main_exit(monkeypatch: pytest.MonkeyPatch, raised: BaseException) -> tuple[int, str]:
    def command(args: list[str]) -> None:
        raise raised

    monkeypatch.setattr(app_module, "build_app", lambda names: command)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(SystemExit) as exit_info:
        app_module.main()
    return int(str(exit_info.value.code)), err.getvalue()


def test_main_prints_one_line_and_exits_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = _main_exit(monkeypatch, OSError(errno.EROFS, "Read-only file system", "/ro/x"))
    assert code == 9 and "/ro/x" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _main_exit(monkeypatch, ConfigError("bad key"))[0] == 2
    assert _main_exit(monkeypatch, KeyboardInterrupt())[0] == 130
    assert _main_exit(monkeypatch, MemoryError())[0] == 3


def test_out_of_memory_from_the_command_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "phalanx", "run", "--quiet", "--out", str(tmp_path / "r"),
               "--set", "workload.hidden=100000000000"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "out of memory" in done.stderr and "Traceback" not in done.stderr


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"phalanx {__version__}"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("scenarios", ["robust", "Byzantine robustness", "digits", "seed"]),
        ("aggregators", ["bulyan", "n >= 4f + 3", "flag_alignment", "nnm", "clipping"]),
        ("attacks", ["alie", "colluding", "backdoor", "poison_fraction", "data poisoning"]),
        ("keys", ["workload.dirichlet_alpha", "float | null", "IID split",
                  "aggregation.pre", "checkpoint.write_quorum"]),
    ],
)  # fmt: skip
def test_list(topic: str, expected: list[str]) -> None:
    result = CliRunner().invoke(app, ["list", topic])
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output


def test_every_config_key_is_listed_with_a_meaning() -> None:
    keys = dict(config_keys())
    assert "rounds" in keys and "faults.byzantine.attack" in keys
    assert "selection.clients_per_round" in keys and "workload" not in keys
    assert "workload.dirichlet_alpha (if name = digits)" in keys
    undocumented = sorted(key for key, field in keys.items() if not field.description)
    assert undocumented == []
    assert len(keys) > 80
    assert RunConfig.model_fields["rounds"].description


def _record(round_: int, committed: bool) -> RoundRecord:
    return RoundRecord(
        round=round_, model_version=round_, committed=committed, accepted=[1, 2, 3],
        events=[RoundEvent(4, 1, FailureKind.CRASH, 1.0)], metrics={"accuracy": 0.625},
    )  # fmt: skip


def test_progress_off_a_terminal_is_one_flushed_line_per_round() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    state = ServerState.__new__(ServerState)  # the hook prints the record, not the state
    with round_progress(console, name="seed", rounds=12, enabled=True) as hook:
        hook(state, _record(0, True))
        assert out.getvalue() == (
            "seed [ 1/12] round 0: acc 0.625  accepted 3  failed 1  committed\n"
        )
        hook(state, _record(1, False))
    assert (
        out.getvalue()
        .splitlines()[1]
        .endswith("round 1: acc 0.625  accepted 3  failed 1  discarded")
    )
    quiet = io.StringIO()
    with round_progress(Console(file=quiet), name="seed", rounds=1, enabled=False) as hook:
        hook(state, _record(0, True))
    assert quiet.getvalue() == ""
