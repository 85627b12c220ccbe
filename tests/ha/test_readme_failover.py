"""README's three-coordinator deployment runs as printed (ports, paths and the run's length
changed): etcd, three ``phalanx serve --ha``, six ``phalanx client --server A,B,C``; the
leader is SIGKILLed mid-run as the README suggests, the two others finish the run and exit
0, and what they committed is one chain."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phalanx.ha.checker import check, read_logs
from phalanx.ha.etcd import Etcd, EtcdUnavailableError
from phalanx.ha.etcd_server import free_port
from phalanx.ha.pointer import Pointer

README = Path(__file__).resolve().parents[2] / "README.md"
ROUNDS = 12  # enough that a quiet machine is still mid-run when the leader is killed
BLOCK = re.search(r"<!-- failover-demo.*?```sh\n(.*?)```", README.read_text(), re.S)


def script(tmp_path: Path) -> tuple[str, dict[str, int]]:
    assert BLOCK is not None, "README lost its failover-demo block"
    ports = {name: free_port() for name in ("2379", "2380", "50061", "50062", "50063")}
    text = BLOCK.group(1)
    for old, new in ports.items():
        text = text.replace(old, str(new))
    text = text.replace("/tmp/phalanx-ha", str(tmp_path / "ha"))
    text = text.replace(".venv/bin/phalanx", f"{sys.executable} -m phalanx")
    text = text.replace("phalanx serve seed", f"phalanx serve seed --set rounds={ROUNDS}")
    return text, ports


def pid_listening_on(port: int) -> int | None:
    wanted = f"127.0.0.1:{port}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"--listen" in argv and wanted in argv:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_readme_failover_deployment(tmp_path: Path) -> None:
    text, ports = script(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shell = subprocess.Popen(["bash", "-c", text], cwd=tmp_path, env=env, start_new_session=True)
    etcd = Etcd([f"127.0.0.1:{ports['2379']}"], timeout_s=1.0)
    try:
        leader = None
        end = time.monotonic() + 240
        while leader is None and time.monotonic() < end:
            time.sleep(0.2)
            try:
                pointer, key = etcd.get("/demo/committed"), etcd.get("/demo/leader")
            except EtcdUnavailableError:
                continue
            if pointer is not None and key is not None and Pointer.decode(pointer.value).round >= 1:
                leader = int(key.value.decode().rpartition(":")[2])
        assert leader is not None, "no round committed in time"
        pid = pid_listening_on(leader)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        final = None  # the last pointer read before the script stops etcd
        end = time.monotonic() + 300
        while shell.poll() is None and time.monotonic() < end:
            with contextlib.suppress(EtcdUnavailableError):
                found = etcd.get("/demo/committed")
                final = Pointer.decode(found.value) if found is not None else final
            time.sleep(0.2)
        assert shell.poll() is not None, "the README script did not end"
        survivors = [ports[f"5006{n}"] for n in (1, 2, 3) if ports[f"5006{n}"] != leader]
        for port in survivors:
            log = (tmp_path / "runs" / f"ha-{port}.log").read_text()
            assert f"the group's run is finished: round {ROUNDS}" in log, log[-2000:]
        verdict = check(read_logs(sorted((tmp_path / "runs").glob("ha-*"))), final, rounds=ROUNDS)
        assert verdict.ok and len(verdict.epochs) >= 2, verdict
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(30)
