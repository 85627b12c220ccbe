"""``phalanx client`` as a real process against a scripted coordinator (the real servicer
on a loopback port): two tasks then FINISHED, exit 0; an injected crash kills the process
mid-task (SIGKILL, nothing pushed); another protocol version exits 10 with one line naming
both versions; a refused credential exits 11; a coordinator of another run (the next of
its ``--server`` list, after the first died) exits 12; SIGTERM says goodbye and exits 143. Every
process is waited for with a timeout and killed if it outlives it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.config import build_config
from phalanx.core.messages import ModelRef
from phalanx.runtime.grpc.client import builtin_shard
from tests import client_app
from tests.fake_coordinator import TOKEN, FakeCoordinator, Served, task

ROOT = Path(__file__).parents[2]
ME = 2
SETS = ("workload.num_clients=4", "selection.clients_per_round=2", "quorum.min_updates=1")
WAIT_S = 60.0


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served(FakeCoordinator())
    server.start()
    try:
        yield server
    finally:
        server.close()


def publish(served: Served, version: int = 0) -> ModelRef:
    """The seed scenario's model (what the client builds from the same scenario)."""
    work = builtin_shard(build_config({}, list(SETS)), ME, byzantine=False)
    params = {n: p.detach() + 0.01 * version for n, p in work.template.named_parameters()}
    return served.fake.publish(version, params)


def start(
    served: Served, tmp_path: Path, *extra: str, token: str = TOKEN, server: str = ""
) -> subprocess.Popen[str]:
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n")
    sets = [arg for item in SETS for arg in ("--set", item)]
    command = [
        sys.executable, "-m", "phalanx", "client", "--server", server or served.target,
        "--id", str(ME),
        "--token-file", str(token_file), "--scenario", "seed", *sets, "--give-up-s", "20",
        "--poll-s", "5", "--backoff-seed", "1", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=10)
        raise AssertionError(f"the client did not end in {WAIT_S} s: {out}{err}") from None
    return process.returncode, out, err


def test_two_tasks_then_finished_exits_zero(served: Served, tmp_path: Path) -> None:
    fake = served.fake
    v0, v1 = publish(served, 0), publish(served, 1)
    fake.tasks.extend([task(0, ME, v0, batch=32), task(1, ME, v1, batch=32)])
    fake.finish = True

    code, out, err = finish(start(served, tmp_path))

    assert code == 0, err
    assert "the run finished; 2 tasks, 2 updates pushed, 0 refused" in out
    assert [u.key.round for u in fake.updates] == [0, 1]
    assert [u.base for u in fake.updates] == [v0, v1] and fake.downloads == [v0, v1]
    assert all(u.num_examples == 200 and u.steps_done == 7 for u in fake.updates)
    assert fake.leaves == ["the run finished"]


SCHEDULED_CRASH = f'faults.schedule=[{{round=0, client={ME}, kind="crash"}}]'


@pytest.mark.parametrize(
    "flags",
    [("--fault", "crash@0"), ("--inject-faults", "--set", SCHEDULED_CRASH)],
    ids=["fault-flag", "scenario-plan"],
)
def test_a_crash_fault_kills_the_process_mid_task(
    served: Served, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    fake = served.fake
    v0 = publish(served)
    fake.tasks.append(task(0, ME, v0, batch=32))

    code, _, err = finish(start(served, tmp_path, *flags))

    assert code == -signal.SIGKILL, err
    assert "injected crash" in err
    assert [t.key.round for t in fake.handed] == [0] and fake.downloads == [v0]
    assert fake.updates == [] and fake.reports == [] and fake.leaves == []


def test_another_protocol_version_exits_10_naming_both(served: Served, tmp_path: Path) -> None:
    served.fake.protocol = 7

    code, _, err = finish(start(served, tmp_path))

    assert code == 10
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "version 7" in lines[0] and "version 1" in lines[0], err


def test_a_refused_credential_exits_11(served: Served, tmp_path: Path) -> None:
    code, _, err = finish(start(served, tmp_path, token="not-the-token"))

    assert code == 11
    assert "credential not accepted" in err and served.fake.joins == []


def test_a_coordinator_of_another_run_exits_12(served: Served, tmp_path: Path) -> None:
    with Served(FakeCoordinator(run_id="another-run")) as other:
        process = start(served, tmp_path, server=f"{served.target},{other.target}")
        deadline = time.monotonic() + WAIT_S
        while not served.fake.joins and process.poll() is None:
            assert time.monotonic() < deadline, "the client never joined"
            time.sleep(0.05)
        served.stop()  # the first coordinator dies; the next address runs another run
        code, _, err = finish(process)

    assert code == 12, err
    assert "runs 'another-run'; this client joined run 'fake-run'" in err
    assert other.fake.handed == []


def test_sigterm_says_goodbye_and_exits_143(served: Served, tmp_path: Path) -> None:
    process = start(served, tmp_path)
    deadline = time.monotonic() + WAIT_S
    while not served.fake.heartbeats:  # joined: now long-polling for work that never comes
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)

    code, _, err = finish(process)

    assert code == 143, err
    assert served.fake.leaves == ["stopped by a signal"]


def test_a_user_app_trains_its_own_function(served: Served, tmp_path: Path) -> None:
    fake = served.fake
    ref = fake.publish(0, {n: p.detach() for n, p in client_app.model().named_parameters()})
    fake.tasks.append(task(0, ME, ref, batch=4))
    fake.finish = True

    app = ("--app", "tests.client_app:APP", "--set", "workload.num_clients=4")
    code, _, err = finish(start(served, tmp_path, *app))

    assert code == 0, err
    (update,) = fake.updates
    assert (update.num_examples, update.steps_done) == (12, 3) and "loss" in update.metrics
