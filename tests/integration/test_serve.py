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
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.cli.status import fetch_status
from phalanx.core.messages import Envelope
from phalanx.errors import AuthError
from phalanx.runtime.grpc.certs import MadeFiles, make_local_pki
from phalanx.runtime.grpc.credentials import Scrypt, issue_credentials
from phalanx.runtime.grpc.session import StatusQuery
from phalanx.runtime.grpc.tls import channel_credentials
from phalanx.types import FailureKind
from tests.grpc_clients import Answer, ScriptedClient
from tests.timing import bound_s, load_per_cpu

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def serve(
    out: Path, *options: str, access: tuple[str, ...] = ("--allow-any-client",)
) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "phalanx", "serve", "seed", "--listen", "127.0.0.1:0",
        "--port-file", str(out.parent / "port"), "--out", str(out), *access,
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


def secured(tmp_path: Path, clients: range) -> tuple[tuple[str, ...], dict[int, str], MadeFiles]:
    """A credential book, an operator token and a local PKI with client certificates: the
    options that make ``phalanx serve`` use them (mutual TLS), the clients' tokens, the PKI."""
    tokens = issue_credentials(tmp_path / "book.json", clients, kdf=Scrypt(n=2**4))
    (tmp_path / "operator.token").write_text("operator-secret\n")
    pki = make_local_pki(tmp_path / "pki", hosts=["127.0.0.1"], clients=clients)
    access = (
        "--credentials", str(tmp_path / "book.json"),
        "--operator-token-file", str(tmp_path / "operator.token"),
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca), "--metrics-port", "0",
    )  # fmt: skip
    return access, tokens, pki


def test_a_secured_serve_runs_a_scenario_to_the_end_with_scripted_clients(
    tmp_path: Path, reaped: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "run"
    access, tokens, pki = secured(tmp_path, range(6))
    process = serve(out, *settings(
        "rounds=3", "workload.num_clients=6", "selection.clients_per_round=4",
        "quorum.min_updates=3", "checkpoint.every=1", "selection.member_wait_s=30",
    ), access=access)  # fmt: skip
    reaped.append(process)
    target = await_port(process, tmp_path / "port")
    tls = {c: channel_credentials(pki.ca, *pki.clients[c]) for c in range(6)}
    clients = [
        ScriptedClient(target, c, credential=tokens[c], tls=tls[c],
                       script=lambda key: Answer(after_s=0.05))
        for c in range(6)
    ]  # fmt: skip
    impostor = ScriptedClient(target, 1, credential=tokens[0], tls=tls[1])

    async def run_all() -> None:
        with pytest.raises(AuthError, match="client 1: credential not accepted"):
            await impostor.join()
        await impostor.stop()
        await asyncio.wait_for(asyncio.gather(*(c.run() for c in clients)), 90)

    asyncio.run(run_all())
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    history = records(out)
    assert [r["round"] for r in history] == [0, 1, 2]
    assert all(r["committed"] for r in history) and history[-1]["model_version"] == 3
    saved = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("round"))
    assert saved[-1] == "round-00000003"
    assert json.loads((out / "summary.json").read_text())["rounds_committed"] == 3
    assert all(c.log.finished for c in clients)
    pushed = {(k.round, k.client) for c in clients for k in c.log.pushed}
    accepted = {(r["round"], a) for r in history for a in r["accepted"]}  # type: ignore[union-attr]
    assert accepted <= pushed
    assert all(c.log.models_fetched <= 3 for c in clients)  # once per model version at most
    assert "listening on 127.0.0.1:" in output and "metrics on http://127.0.0.1:" in output


def test_status_and_metrics_while_serving(
    tmp_path: Path, reaped: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "run"
    access, tokens, pki = secured(tmp_path, range(3))
    process = serve(out, *settings(
        "rounds=1", "workload.num_clients=3", "selection.clients_per_round=3",
        "quorum.min_updates=3", "selection.member_wait_s=60",
    ), access=access)  # fmt: skip
    reaped.append(process)
    target = await_port(process, tmp_path / "port")
    assert process.stdout is not None
    metrics_port = None
    for _ in range(200):  # the metrics line follows the port file
        line = process.stdout.readline()
        if "metrics on http://" in line:
            metrics_port = int(line.rsplit(":", 1)[1].split("/")[0])
            break
    assert metrics_port is not None
    tls = channel_credentials(pki.ca, *pki.clients[0])
    with pytest.raises(AuthError, match="operator: credential not accepted"):
        fetch_status(target, StatusQuery(Envelope(), "guess"), credentials=tls)

    async def one_joins_then_status() -> None:
        client = ScriptedClient(target, 0, credential=tokens[0], tls=tls)
        await client.join()
        client.start()
        status = fetch_status(target, StatusQuery(Envelope(), "operator-secret"), credentials=tls)
        assert [(m.client, m.live) for m in status.members] == [(0, True)]
        assert status.round_in_flight == 0 and status.rounds_committed == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert "phalanx_members_live 1.0" in r.read().decode()
        await client.stop(leave=True)

    asyncio.run(one_joins_then_status())
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143


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

    load = load_per_cpu()
    killed = asyncio.run(others_then_kill())
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    (record,) = records(out)
    (crash,) = [e for e in record["events"] if e["client"] == 2]  # type: ignore[union-attr]
    assert crash["kind"] == FailureKind.CRASH.value and "no sign of life" in crash["detail"]
    silence = float(crash["detail"].split("for ")[1].split(" s")[0])
    # patience + one sweep, and 0.5 s of slack on a quiet machine; on a loaded one the sweep
    # wakes late by more, so the slack grows with the load per CPU (tests/timing.py)
    assert 1.5 <= silence <= 1.5 + 0.3 + bound_s(0.5, load), crash
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
