"""``phalanx serve`` as a real process on a loopback ephemeral port, driven by scripted
gRPC clients: a run completes and commits (checkpoints, history, summary) with clients that
join, pull, fetch the model and push; a client process SIGKILLed mid-task has its task
failed within the heartbeat patience, not at the task's deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.types import FailureKind
from tests.grpc_clients import Answer, ScriptedClient

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def serve(out: Path, *options: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "phalanx", "serve", "seed", "--listen", "127.0.0.1:0",
        "--port-file", str(out.parent / "port"), "--out", str(out), "--allow-any-client",
        "--quiet", "--no-plots", "--heartbeat-s", "0.5", "--patience-s", "1.5",
        "--pull-wait-s", "1.0", *options,
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture
def reaped() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; killed and reaped whatever happened."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)  # reaps it and closes its pipe


def await_port(process: subprocess.Popen[str], port_file: Path) -> str:
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if port_file.exists():
            return f"127.0.0.1:{int(port_file.read_text())}"
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {process.communicate()[0]}")
        time.sleep(0.05)
    raise AssertionError("serve never wrote its port file")


def records(out: Path) -> list[dict[str, object]]:
    path = out / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def settings(*pairs: str) -> list[str]:
    return [option for pair in pairs for option in ("--set", pair)]


def test_serve_runs_a_scenario_to_the_end_with_scripted_clients(
    tmp_path: Path, reaped: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "run"
    process = serve(out, *settings(
        "rounds=3", "workload.num_clients=6", "selection.clients_per_round=4",
        "quorum.min_updates=3", "checkpoint.every=1", "selection.member_wait_s=30",
    ))  # fmt: skip
    reaped.append(process)
    target = await_port(process, tmp_path / "port")
    clients = [ScriptedClient(target, c, script=lambda key: Answer(after_s=0.05)) for c in range(6)]

    async def run_all() -> None:
        await asyncio.wait_for(asyncio.gather(*(c.run() for c in clients)), 90)

    asyncio.run(run_all())
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    history = records(out)
    assert [r["round"] for r in history] == [0, 1, 2]
    assert all(r["committed"] for r in history) and history[-1]["model_version"] == 3
    assert (
        sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("round"))[-1]
        == "round-00000003"
    )
    assert json.loads((out / "summary.json").read_text())["rounds_committed"] == 3
    assert all(c.log.finished for c in clients)
    pushed = sum(len(c.log.pushed) for c in clients)
    assert (
        pushed == sum(len(r["accepted"]) for r in history) + sum(r["cancelled"] for r in history)
        or pushed >= 9
    )
    assert all(c.log.models_fetched <= 3 for c in clients)  # once per model version at most
    assert "listening on 127.0.0.1:" in output


def test_a_client_killed_mid_task_fails_within_the_patience(
    tmp_path: Path, reaped: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "run"
    process = serve(out, *settings(
        "rounds=1", "workload.num_clients=3", "selection.clients_per_round=3",
        "selection.over_selection=1.0", "quorum.min_updates=1", "deadlines.task_s=60",
        "checkpoint.every=1", "selection.member_wait_s=60",
    ))  # fmt: skip
    reaped.append(process)
    target = await_port(process, tmp_path / "port")
    victim = subprocess.Popen(
        [sys.executable, "-m", "tests.grpc_clients", "--target", target, "--id", "2",
         "--after-s", "600"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    reaped.append(victim)
    assert victim.stdout is not None
    lines = [victim.stdout.readline() for _ in range(2)]  # bounded by the test's timeout
    assert lines[0].strip() == "joined" and lines[1].startswith("task 0"), lines

    async def others_then_kill() -> float:
        helpers = [
            ScriptedClient(target, c, script=lambda key: Answer(after_s=0.05)) for c in (0, 1)
        ]
        for helper in helpers:
            await helper.join()
            helper.start()
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(h.done() for h in helpers)), 60)
        return killed

    killed = asyncio.run(others_then_kill())
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    (record,) = records(out)
    (crash,) = [e for e in record["events"] if e["client"] == 2]  # type: ignore[union-attr]
    assert crash["kind"] == FailureKind.CRASH.value and "no sign of life" in crash["detail"]
    silence = float(crash["detail"].split("for ")[1].split(" s")[0])
    assert silence <= 1.5 + 0.3 + 0.5  # patience + one sweep + a loaded machine's slack
    assert record["committed"] and 2 not in record["accepted"]
    assert time.monotonic() - killed < 30  # nowhere near the 60 s task deadline


def test_serve_stops_on_sigterm_keeping_what_committed_and_resumes(
    tmp_path: Path, reaped: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "run"
    pairs = settings(
        "rounds=4", "workload.num_clients=4", "selection.clients_per_round=3",
        "quorum.min_updates=2", "checkpoint.every=1", "selection.member_wait_s=30",
    )  # fmt: skip
    first = serve(out, *pairs)
    reaped.append(first)
    target = await_port(first, tmp_path / "port")

    async def until_two_rounds(target: str) -> None:
        slow = lambda key: Answer(after_s=0.3)  # noqa: E731
        clients = [ScriptedClient(target, c, script=slow) for c in range(4)]
        runs = [asyncio.get_running_loop().create_task(c.run()) for c in clients]
        for _ in range(600):
            if len(records(out)) >= 2:
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        await asyncio.wait(runs, timeout=30)  # the server went away: their calls fail

    asyncio.run(until_two_rounds(target))
    output = first.communicate(timeout=60)[0]
    assert first.returncode == 143 and "Traceback" not in output, output
    assert f"phalanx serve --resume {out}" in output
    kept = records(out)
    assert len(kept) >= 2 and all(r["committed"] for r in kept)
    (tmp_path / "port").unlink()
    command = [
        sys.executable, "-m", "phalanx", "serve", "--resume", str(out), "--listen",
        "127.0.0.1:0", "--port-file", str(tmp_path / "port"), "--allow-any-client",
        "--quiet", "--no-plots",
    ]  # fmt: skip
    second = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    reaped.append(second)
    target = await_port(second, tmp_path / "port")

    async def to_the_end() -> None:
        clients = [ScriptedClient(target, c) for c in range(4)]
        await asyncio.wait_for(asyncio.gather(*(c.run() for c in clients)), 90)

    asyncio.run(to_the_end())
    output = second.communicate(timeout=60)[0]
    assert second.returncode == 0, output
    history = records(out)
    assert [r["round"] for r in history] == [0, 1, 2, 3]  # each round committed once
    assert [r["model_version"] for r in history] == [1, 2, 3, 4]
