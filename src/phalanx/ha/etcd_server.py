"""Start and stop a real etcd cluster on loopback ports: for tests, the failover benchmark
and a one-machine demonstration.

Each member runs Debian's ``etcd`` (3.4) with its own temporary data directory, on ports
the OS picked free a moment before (a port taken in between fails the start, which is
retried with fresh ports). Raft timings are shortened (50 ms heartbeats, 500 ms election
timeout) so a 3-member cluster elects and re-elects in well under a second; writes are
still fsynced (no durability shortcut). Members stop by PID: SIGKILL, or SIGSTOP/SIGCONT
to pause one; ``restart`` brings a killed member back on its data directory and ports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from phalanx.core.processes import kill_me_with_parent
from phalanx.errors import ConfigError, RuntimeBackendError

log = logging.getLogger("phalanx.ha.etcd_server")
HOST = "127.0.0.1"
START_TRIES = 3


def etcd_binary() -> str:
    """The ``etcd`` executable on PATH (``make etcd`` installs Debian's etcd-server)."""
    found = shutil.which("etcd")
    if found is None:
        raise ConfigError("etcd is not installed: `make etcd` (apt-get install etcd-server)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


class EtcdCluster:
    """``size`` etcd members under ``workdir``; a context manager that stops them all."""

    def __init__(self, workdir: Path, size: int = 1, *, start_timeout_s: float = 20.0) -> None:
        if size < 1:
            raise ConfigError(f"an etcd cluster needs at least 1 member; got {size}")
        self.workdir = workdir
        self.size = size
        self.start_timeout_s = start_timeout_s
        self.members: list[Member] = []

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def url(self, prefix: str = "phalanx") -> str:
        """The ``--ha`` URL naming every member."""
        return f"etcd://{','.join(self.endpoints)}/{prefix}"

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start every member and wait until each answers healthy (fresh ports per try)."""
        for attempt in range(1, START_TRIES + 1):
            self._plan(attempt)
            for member in self.members:
                self._spawn(member)
            if self.wait_healthy(self.start_timeout_s):
                return
            self.close()
            log.warning("etcd did not come up (try %d); retrying on fresh ports", attempt)
        raise RuntimeBackendError(
            f"etcd did not start in {START_TRIES} tries (logs: {self.workdir})"
        )

    def _plan(self, attempt: int) -> None:
        base = self.workdir / f"etcd-{attempt}"
        self.members = [
            Member(f"m{i}", free_port(), free_port(), base / f"m{i}", log_path=base / f"m{i}.log")
            for i in range(self.size)
        ]

    def _spawn(self, member: Member) -> None:
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            etcd_binary(), "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", f"http://{member.endpoint}",
            "--advertise-client-urls", f"http://{member.endpoint}",
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"phalanx-{os.getpid()}-{id(self)}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--snapshot-count", "10000", "--logger", "zap", "--log-outputs", "stderr",
            "--log-level", "warn",
        ]  # fmt: skip
        member.log_path.parent.mkdir(parents=True, exist_ok=True)
        with member.log_path.open("ab") as sink:
            member.process = subprocess.Popen(
                argv, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL,
                preexec_fn=kill_me_with_parent,
            )  # fmt: skip

    def healthy(self, member: Member, timeout_s: float = 0.5) -> bool:
        """Whether ``member`` answers /health with a leader in its cluster."""
        url = f"http://{member.endpoint}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as reply:
                return bool(json.loads(reply.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout_s: float, members: list[Member] | None = None) -> bool:
        end = time.monotonic() + timeout_s
        wanted = members if members is not None else self.members
        while time.monotonic() < end:
            if any(m.process is not None and m.process.poll() is not None for m in wanted):
                return False
            if all(self.healthy(m) for m in wanted):
                return True
            time.sleep(0.05)
        return False

    def kill(self, index: int) -> None:
        """SIGKILL one member (its data directory stays for ``restart``)."""
        process = self.members[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def pause(self, index: int, on: bool = True) -> None:
        """SIGSTOP (``on``) or SIGCONT one member."""
        process = self.members[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def restart(self, index: int) -> None:
        """Start a killed member again on its own data directory and ports."""
        self.kill(index)
        self._spawn(self.members[index])

    def close(self) -> None:
        for index in range(len(self.members)):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.pause(index, on=False)
                self.kill(index)
