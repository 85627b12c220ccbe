"""The benchmarks' process plumbing: the deployment benchmark's tree watcher and reaper, the
aggregator benchmark's bounded child protocol, and the workload it exports for Flower."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.aggregators.driver import Bench, ChildTimeoutError, Contender, Worker
from benchmarks.deployment.procs import Group, Watcher, tail
from benchmarks.deployment.workload import export, scenario
from phalanx.simulation import initial_model
from phalanx.workloads import build_workload

# A child that starts a grandchild holding ~64 MiB, prints the grandchild's pid, then waits.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_watcher_follows_the_tree_and_group_reaps_it(tmp_path: Path) -> None:
    group = Group(tmp_path, dict(os.environ))
    watcher = Watcher(interval_s=0.05)
    try:
        parent = group.start("tree", [sys.executable, "-c", TREE])
        watcher.roots.add(parent.pid)
        watcher.start()
        deadline = time.monotonic() + 30
        grandchild = None
        while time.monotonic() < deadline:
            text = (tmp_path / "tree.log").read_text().strip()
            if text:
                grandchild = int(text)
                peak = watcher.peak_mib(grandchild)
                if peak is not None and peak >= 64:
                    break
            time.sleep(0.05)
        assert grandchild is not None
        assert (watcher.peak_mib(grandchild) or 0) >= 64  # its VmHWM, found through the tree
        assert watcher.peak_mib(parent.pid) is not None
    finally:
        group.stop(grace_s=5)
        watcher.stop()
    assert parent.returncode is not None
    deadline = time.monotonic() + 5  # SIGKILLed; an orphan is reaped by init, not by us
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_tail_drops_panel_borders(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("Usage: x\n╭─ Error ───╮\n│ No such option: --runtime │\n╰───────────╯\n")
    assert tail(log, 2) == "Error / No such option: --runtime"


def test_worker_that_does_not_answer_is_killed_in_time(tmp_path: Path) -> None:
    hello_then_hang = "import time; print('{\"ready\": true}', flush=True); time.sleep(60)"
    worker = Worker([sys.executable, "-c", hello_then_hang], dict(os.environ), tmp_path, 10)
    assert worker.hello == {"ready": True}
    start = time.monotonic()
    with pytest.raises(ChildTimeoutError, match="no answer within"):
        worker.ask({"op": "case"}, timeout_s=0.5)
    assert time.monotonic() - start < 5
    assert worker.process.poll() is not None


def test_exported_workload_is_the_scenarios_and_loads_without_pickle(tmp_path: Path) -> None:
    config, overrides = scenario("seed", rounds=2)
    assert config.rounds == 2 and not config.faults.enabled
    assert "selection.over_selection=1.0" in overrides
    path = tmp_path / "seed.npz"
    export(config, path)
    with np.load(path, allow_pickle=False) as data:
        workload = build_workload(config.workload, config.seed)
        assert data["clients_x"].shape == (20, 200, 32)
        np.testing.assert_array_equal(data["clients_y"][7], workload.clients[7].y.numpy())
        np.testing.assert_array_equal(data["test_x"], workload.test.x.numpy())
        init = initial_model(workload.make_model, config.seed).state_dict()
        for name, tensor in init.items():
            assert torch.equal(torch.from_numpy(data[f"init/{name}"]), tensor)


FAKE_CHILD = """
import json, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "case":
        print(json.dumps({"crc": 1}), flush=True)
    elif request["contender"] == "slow":
        time.sleep(60)
    else:
        print(json.dumps({"wall_s": 0.0, "cpu_s": 0.0, "sys_s": 0.0, "faults": 0}), flush=True)
"""


def test_a_call_past_the_timeout_fails_alone_and_the_child_comes_back(tmp_path: Path) -> None:
    worker = Worker([sys.executable, "-c", FAKE_CHILD], dict(os.environ), tmp_path, 1.0)
    bench = Bench(worker, None, {}, argparse.Namespace(seed=0), tmp_path)
    try:
        bench.load_case(10, 100)
        first = worker.process.pid
        answer = bench.call(Contender("slow", "numpy", worker=worker), "median")
        assert answer == {"error": "no answer within 1 s (killed)"}
        assert worker.process.pid != first  # restarted, with the case loaded again
        assert bench.call(Contender("fast", "numpy", worker=worker), "median")["faults"] == 0
    finally:
        worker.close()
    assert worker.process.poll() is not None
