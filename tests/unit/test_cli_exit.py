"""How ``phalanx`` starts and ends: a command imports only what it needs, and a process
whose outputs are durable ends without the interpreter's teardown, yet with its exit code,
its atexit callbacks and everything it printed."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from phalanx.cli import exiting
from phalanx.cli.app import COMMANDS, requested


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_an_invocation_builds_only_the_command_it_names() -> None:
    assert requested(["run", "--quiet", "serve"]) == ["run"]
    assert requested(["--version", "report", "x"]) == ["report"]
    assert requested(["--help"]) == list(COMMANDS)
    assert requested(["rnu"]) == list(COMMANDS)  # typer lists them and suggests one
    assert requested([]) == list(COMMANDS)


def test_phalanx_run_parses_its_options_before_importing_torch_and_never_grpc() -> None:
    """Building ``phalanx run`` imports neither torch (the command imports it once its
    plot helper runs) nor the gRPC stack (only the gRPC commands need it)."""
    done = _python(
        "import sys\n"
        "from phalanx.cli.app import build_app, requested\n"
        "build_app(requested(['run', '--quiet']))\n"
        "print(sorted(m for m in ('torch', 'grpc', 'cryptography', 'google.protobuf', "
        "'prometheus_client') if m in sys.modules))\n"
        "build_app()\n"
        "print('grpc' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "True"]


def test_leave_without_durable_outputs_is_an_ordinary_exit() -> None:
    exiting.forget()
    with pytest.raises(SystemExit) as info:
        exiting.leave(3)
    assert info.value.code == 3


def test_leave_waits_for_no_running_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exiting, "_JOIN_S", 0.05)
    release = threading.Event()
    busy = threading.Thread(target=release.wait, args=(10.0,))
    busy.start()
    exiting.outputs_durable()
    try:
        with pytest.raises(SystemExit) as info:  # the interpreter's exit will wait for it
            exiting.leave(0)
        assert info.value.code == 0
    finally:
        exiting.forget()
        release.set()
        busy.join(5.0)


@pytest.mark.parametrize(("code", "status"), [(0, 0), (130, 130), (None, 0), ("bye", 1)])
def test_durable_outputs_end_at_once_with_output_and_atexit(
    tmp_path: Path, code: object, status: int
) -> None:
    marker = tmp_path / "atexit-ran"
    done = _python(
        "import atexit, pathlib, sys\n"
        "from phalanx.cli import exiting\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "sys.stdout.write('buffered, not flushed')\n"
        "exiting.outputs_durable()\n"
        f"exiting.leave({code!r})\n"
        "print('not reached')\n"
    )
    assert done.returncode == status, done.stderr
    assert done.stdout == "buffered, not flushed"
    assert marker.read_text() == "yes"
    assert done.stderr == ("bye\n" if code == "bye" else "")


def test_a_finished_run_ends_through_os_exit(tmp_path: Path) -> None:
    """The whole process: ``phalanx run`` declares its outputs durable, so the teardown is
    skipped (an object that only the teardown frees is never freed); outputs intact."""
    out = tmp_path / "run"
    done = _python(
        "import os, sys\n"
        "class Probe:\n"
        "    def __del__(self, write=os.write):\n"
        "        write(2, b'teardown ran')\n"
        "sys.modules['__probe__'] = Probe()  # freed by the interpreter's teardown only\n"
        "from phalanx.cli.app import main\n"
        f"sys.argv = ['phalanx', 'run', '--quiet', '--no-plots', '--out', {str(out)!r},\n"
        "            '--set', 'rounds=2']\n"
        "main()\n"
    )
    assert done.returncode == 0, done.stderr
    assert "outputs in" in done.stdout and "teardown ran" not in done.stderr
    assert {"summary.json", "history.jsonl", "config.json"} <= {p.name for p in out.iterdir()}
