"""The launcher and a client that exits for another run (12): fatal to the launch unless the
launcher itself started its coordinator again as a new run (killed before its first commit,
nothing to resume; a chaos schedule found it), when the client restarts to join that run.
Real child processes, exiting with the code under test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from phalanx.errors import RunMismatchError
from phalanx.runtime.grpc.launcher import Child, LaunchPlan, LocalLauncher


def _exited(code: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    process.wait(timeout=30)
    return process


def _launcher(tmp_path: Path, *, coordinator_restarts: int) -> tuple[LocalLauncher, Child]:
    launcher = LocalLauncher(LaunchPlan(scenario=None, clients=(0,)), workdir=tmp_path)
    launcher.coordinator = Child("coordinator", [], None, restarts=coordinator_restarts)
    client = Child("client 0", [], None, process=_exited(RunMismatchError.exit_code))
    launcher.clients[0] = client
    return launcher, client


def test_another_run_stops_the_launch_when_its_coordinator_never_restarted(
    tmp_path: Path,
) -> None:
    launcher, client = _launcher(tmp_path, coordinator_restarts=0)
    launcher._tend(client, 0.0, {})
    assert client.done and launcher._signalled is not None


def test_a_client_left_behind_by_a_new_run_is_restarted(tmp_path: Path) -> None:
    launcher, client = _launcher(tmp_path, coordinator_restarts=1)  # relaunched after it began
    launcher._tend(client, 0.0, {})
    assert not client.done and launcher._signalled is None
    assert client.restarts == 1 and client.process is None  # due again after the delay


def test_a_client_started_after_the_new_run_began_is_not_restarted_for_it(
    tmp_path: Path,
) -> None:
    launcher, client = _launcher(tmp_path, coordinator_restarts=1)
    client.coordinator_starts = 1  # it began with the coordinator's current incarnation
    launcher._tend(client, 0.0, {})
    assert client.done and launcher._signalled is not None
