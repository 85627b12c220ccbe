"""``phalanx launch``: a coordinator and client processes on loopback, supervised.

Real processes and sockets: an injected crash kills a client process (SIGKILL of itself),
the launcher restarts it, it joins again, and the run still commits every round.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

SCENARIO = """
name = "launch-test"
seed = 3
rounds = 3

[workload]
name = "seed"
num_clients = 4
samples_per_client = 40

[training]
local_epochs = 1
batch_size = 20

[selection]
clients_per_round = 4
over_selection = 1.0
member_wait_s = 60.0

[deadlines]
task_s = 20.0
round_s = 60.0

[quorum]
min_updates = 3  # a round opens once 3 of the 4 clients are live

[checkpoint]
every = 1

[[faults.schedule]]
round = 1
client = 1
kind = "crash"

[[faults.schedule]]
round = 2
client = 1
kind = "crash"
"""


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "phalanx", "launch", str(scenario), "--no-plots", "--quiet",
         "--out", str(tmp_path / "run"), *args],
        capture_output=True, text=True, timeout=220, env=env, check=False,
    )  # fmt: skip


def test_a_crashed_client_process_is_restarted_and_the_run_commits(tmp_path: Path) -> None:
    done = _launch(tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds_committed"] == 3
    # client 1 crashes in rounds 1 and 2 (every attempt) whenever it is live and asked (a
    # slow start can leave it out of one of them): each crash is a restart
    assert re.search(r"client restarts: [1-9] \(1 clients\)", done.stdout), done.stdout[-2000:]
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [r["round"] for r in history] == [0, 1, 2]


def test_mutual_tls_and_credentials_end_to_end(tmp_path: Path) -> None:
    done = _launch(tmp_path, "--tls", "--no-faults")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds_committed"] == 3
    assert "client restarts" not in done.stdout
