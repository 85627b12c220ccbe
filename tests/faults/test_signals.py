"""Signals to a real coordinator process: the first SIGINT/SIGTERM stops within a second,
writes the outputs of what committed and says how to resume; a second SIGINT exits at once
and leaves a directory that resumes to the uninterrupted model. Worker processes die with
their coordinator, SIGKILL included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from phalanx.checkpoint import LocalCheckpointStore
from tests.faults.kill_driver import scenario
from tests.timing import bound_s, load_per_cpu

ROOT = Path(__file__).parents[2]
# The target is 1 s; 5 s on a quiet machine (the stop writes plots), stretched by the load per
# CPU on a loaded one, where the exit (matplotlib, two PNGs) waits its turn for the CPU.
STOP_BOUND_S = 5.0


def start(out: Path, *extra: str, rounds: int = 1000) -> subprocess.Popen[str]:
    sets = [arg for override in scenario(rounds) for arg in ("--set", override)]
    command = [sys.executable, "-m", "phalanx", "run", "--out", str(out), "--quiet", *sets]
    return subprocess.Popen(
        [*command, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def await_rounds(process: subprocess.Popen[str], out: Path, rounds: int) -> None:
    deadline = time.monotonic() + 60
    history = out / "history.jsonl"
    while not history.exists() or len(history.read_bytes().splitlines()) < rounds:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"run ended or stalled: {process.communicate()[0]}")
        time.sleep(0.005)


def stop(process: subprocess.Popen[str], sig: int, times: int = 1) -> tuple[float, str]:
    sent = time.monotonic()
    for _ in range(times):
        process.send_signal(sig)
        time.sleep(0.01)
    output, _ = process.communicate(timeout=60)
    return time.monotonic() - sent, output


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_stops_within_a_second_and_writes_the_outputs(
    tmp_path: Path, sig: int, code: int
) -> None:
    out = tmp_path / "run"
    process = start(out)
    await_rounds(process, out, 5)
    load = load_per_cpu()
    seconds, output = stop(process, sig)
    assert process.returncode == code, output
    assert seconds < bound_s(STOP_BOUND_S, load), output
    assert f"phalanx run --resume {out}" in output and "Traceback" not in output
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "history.jsonl").read_text().splitlines()
    assert summary["rounds"] == len(lines) >= 5
    assert (out / "accuracy.png").exists() and (out / "faults.png").exists()


def test_a_second_sigint_exits_at_once_and_the_run_resumes_exactly(tmp_path: Path) -> None:
    out, reference = tmp_path / "run", tmp_path / "reference"
    process = start(out, "--no-plots", rounds=120)
    await_rounds(process, out, 5)
    _, output = stop(process, signal.SIGINT, times=2)
    assert process.returncode == 130 and "Traceback" not in output, output
    resume = [sys.executable, "-m", "phalanx", "run", "--resume", str(out), "--quiet"]
    done = subprocess.run(
        [*resume, "--no-plots"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    whole = start(reference, "--no-plots", rounds=120)
    whole.communicate(timeout=120)
    assert whole.returncode == 0
    ours = LocalCheckpointStore(out / "checkpoints").latest_valid()
    theirs = LocalCheckpointStore(reference / "checkpoints").latest_valid()
    assert ours is not None and theirs is not None and torch.equal(ours.params, theirs.params)
    strip = lambda d: [  # noqa: E731
        {k: v for k, v in json.loads(x).items() if k != "wall_s"}
        for x in (d / "history.jsonl").read_text().splitlines()
    ]
    assert strip(out) == strip(reference)


API_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from phalanx.config import build_config
    from phalanx.coordinator import RunInterrupted
    from phalanx.scenarios import scenario_path
    from phalanx.simulation import Simulation
    import tomllib
    config = build_config(tomllib.loads(scenario_path("seed").read_text()), sys.argv[2:])
    try:
        Simulation(config).run(run_dir=Path(sys.argv[1]))
    except KeyboardInterrupt as stop:
        assert isinstance(stop, RunInterrupted)
        print("interrupted after round", stop.result.state.round, len(stop.result.history))
    """
)


def test_the_python_api_raises_keyboard_interrupt_after_cleanup(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-c", API_RUN, str(out), *scenario(1000)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    await_rounds(process, out, 5)
    load = load_per_cpu()
    seconds, output = stop(process, signal.SIGINT)
    assert process.returncode == 0 and seconds < bound_s(STOP_BOUND_S, load), output
    _, _, round_, records = output.split()[-4:]
    assert int(round_) == int(records) >= 5


WORKERS = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from phalanx.runtime.inprocess.workers import WorkerJob, WorkerPool

    def train(client, params, meta):
        Path(sys.argv[1], str(os.getpid())).write_text("")
        time.sleep(600)
        return params, {}

    pool = WorkerPool(train, workers=2, hang_guard_s=600)
    pool.run([WorkerJob(i, i, {}, {}) for i in range(2)])
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_workers_die_with_a_sigkilled_coordinator(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", WORKERS, str(tmp_path)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = [int(p.name) for p in tmp_path.iterdir()]
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(alive(pid) for pid in workers)
