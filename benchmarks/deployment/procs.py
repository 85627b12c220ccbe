"""Process trees for the deployment benchmark: start each program in its own session, watch
every process of a tree for its peak RSS, and reap everything, every wait bounded.

psutil is not available, so the watcher reads ``/proc``: each process's parent from
``/proc/PID/stat`` (to follow the tree as it grows) and its peak resident set, ``VmHWM``,
from ``/proc/PID/status``. VmHWM is the kernel's own high-water mark, so a peak between two
polls is not missed; only a process that lives less than one poll interval can be.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports the kernel says are free now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    """Until something accepts on 127.0.0.1:``port``; raises if ``process`` dies first or
    ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode} before listening"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout_s:.0f} s")


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command may contain spaces and ')'


def _hwm_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return ""


@dataclass
class Watcher:
    """Polls the trees under ``roots`` and keeps each process's largest VmHWM and command."""

    interval_s: float = 0.25
    roots: set[int] = field(default_factory=set)
    peak_kib: dict[int, int] = field(default_factory=dict)
    command: dict[int, str] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        parents = {pid: _parent(pid) for pid in pids}
        members = set(self.roots)
        grew = True
        while grew:  # close the set under "child of a member"
            new = {pid for pid, ppid in parents.items() if ppid in members and pid not in members}
            members |= new
            grew = bool(new)
        for pid in members:
            hwm = _hwm_kib(pid)
            if hwm is None:
                continue
            self.peak_kib[pid] = max(hwm, self.peak_kib.get(pid, 0))
            if pid not in self.command:
                self.command[pid] = _cmdline(pid)
                self.parent[pid] = parents.get(pid) or 0

    def peak_mib(self, pid: int) -> float | None:
        return self.peak_kib[pid] / 1024 if pid in self.peak_kib else None

    def matching(self, text: str) -> list[int]:
        """Processes seen whose command line contains ``text``."""
        return [pid for pid, command in self.command.items() if text in command]


@dataclass
class Group:
    """Programs started in their own sessions (a kill reaches their children too)."""

    logs: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _files: list[IO[bytes]] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        self._files.append(log)
        process = subprocess.Popen(
            list(argv), cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every session, wait ``grace_s`` in all, then SIGKILL what is left; reap."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(deadline - time.monotonic(), 0.01))
        for process in self.processes:  # the session too: children that outlived the leader
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        for log in self._files:
            log.close()


BOX = str.maketrans("", "", "│╭╮╰╯─┃┏┓┗┛━")  # rich's panel borders, around CLI errors


def tail(path: Path, lines: int = 5) -> str:
    """The last non-blank lines of a log on one line, panel borders dropped: an error message."""
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").translate(BOX)
        kept = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
        return " / ".join(kept[-lines:])
    return ""
