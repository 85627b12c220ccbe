"""``Group``: a real failover group on one machine, for tests and the failover benchmark.

An etcd cluster (``ha.etcd_server``), ``coordinators`` processes of ``phalanx serve --ha``
on fixed loopback ports (each advertising its own), one client driver process
(``testing.failover.driver``) following the leader, and the means to hurt them: SIGKILL,
SIGSTOP/SIGCONT, a restart, and for each coordinator an optional ``ChaosProxy`` between
it and etcd (``cut``/``heal``). Every wait is bounded; ``close`` kills and reaps all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from phalanx.core.processes import ONE_THREAD_ENV, kill_me_with_parent
from phalanx.faults.chaos import ChaosProxy
from phalanx.faults.chaos.faults import Blackhole
from phalanx.ha.checker import Verdict, check, read_logs
from phalanx.ha.etcd import Etcd, EtcdUnavailableError
from phalanx.ha.etcd_server import EtcdCluster, free_port
from phalanx.ha.pointer import Pointer


def group_settings(rounds: int, store: Path, clients_per_round: int) -> list[str]:
    pairs = [
        f"rounds={rounds}", f'checkpoint.stores=["{store}"]',
        f"selection.clients_per_round={clients_per_round}", "selection.over_selection=1.0",
        "selection.member_wait_s=20", "quorum.min_updates=2", "deadlines.task_s=4",
        "deadlines.round_s=8", "retry.base_delay_s=0.1", "retry.max_delay_s=0.5",
    ]  # fmt: skip
    return [part for pair in pairs for part in ("--set", pair)]


class Group:
    def __init__(
        self, workdir: Path, *, coordinators: int = 3, etcd_members: int = 1, rounds: int = 6,
        ttl_s: int = 2, clients: int = 4, proxies: bool = False, prefix: str = "group",
        answer_delay_s: float = 0.0,
    ) -> None:  # fmt: skip
        self.workdir = workdir
        self.count = coordinators
        self.rounds = rounds
        self.ttl_s = ttl_s
        self.clients = clients
        self.prefix = prefix
        self.etcd = EtcdCluster(workdir / "etcd", etcd_members)
        self.ports = [free_port() for _ in range(coordinators)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * coordinators
        self.driver: subprocess.Popen[bytes] | None = None
        self.use_proxies = proxies
        self.proxies: list[ChaosProxy] = []
        self._stack = contextlib.ExitStack()
        self.starts = [0] * coordinators
        self.answer_delay_s = answer_delay_s

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def __enter__(self) -> Group:
        self.etcd.start()
        if self.use_proxies:
            for member in range(self.count):
                target = self.etcd.members[member % len(self.etcd.members)]
                proxy = ChaosProxy.start_in_thread(("127.0.0.1", target.client_port))
                self.proxies.append(self._stack.enter_context(proxy))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def client_etcd(self) -> Etcd:
        return Etcd(self.etcd.endpoints, timeout_s=1.0)

    def etcd_url(self, index: int) -> str:
        if self.proxies:
            return f"etcd://{self.proxies[index].address}/{self.prefix}"
        return self.etcd.url(self.prefix)

    def directory(self, index: int) -> Path:
        return self.workdir / f"c{index}"

    def log_path(self, index: int) -> Path:
        return self.workdir / f"c{index}.log"

    def start(self, index: int, env: Mapping[str, str] | None = None) -> None:
        """(Re)start coordinator ``index`` (a fresh run directory each start)."""
        self.starts[index] += 1
        out = self.directory(index) / f"start-{self.starts[index]}"
        argv = [
            sys.executable, "-m", "phalanx", "serve", "seed", "--listen", self.addresses[index],
            "--ha", self.etcd_url(index), "--ha-ttl", str(self.ttl_s), "--out", str(out),
            "--allow-any-client", "--quiet", "--no-plots", "--heartbeat-s", "0.5",
            "--patience-s", "1.5", "--pull-wait-s", "1.0",
            *group_settings(self.rounds, self.workdir / "store", min(self.clients, 4)),
        ]  # fmt: skip
        full_env = {**os.environ, **ONE_THREAD_ENV, **(env or {})}
        with self.log_path(index).open("ab") as sink:
            self.processes[index] = subprocess.Popen(
                argv, stdout=sink, stderr=sink, env=full_env, preexec_fn=kill_me_with_parent
            )

    def start_all(self, env: Mapping[int, Mapping[str, str]] | None = None) -> None:
        for index in range(self.count):
            self.start(index, (env or {}).get(index))
        self.start_driver()

    def start_driver(self) -> None:
        argv = [
            sys.executable, "-m", "phalanx.testing.failover.driver", "--targets",
            ",".join(self.addresses), "--clients", str(self.clients), "--deadline-s", "3600",
            "--delay-s", str(self.answer_delay_s),
        ]  # fmt: skip
        with (self.workdir / "driver.log").open("ab") as sink:
            self.driver = subprocess.Popen(
                argv, stdout=sink, stderr=sink, env={**os.environ, **ONE_THREAD_ENV},
                preexec_fn=kill_me_with_parent,
            )  # fmt: skip

    # -- what etcd says -------------------------------------------------------------------

    def pointer(self) -> Pointer | None:
        try:
            kv = self.client_etcd().get(f"/{self.prefix}/committed")
        except EtcdUnavailableError:
            return None
        return None if kv is None else Pointer.decode(kv.value)

    def leader(self) -> tuple[int, int] | None:
        """(coordinator index, epoch) of the current leader, if any."""
        try:
            kv = self.client_etcd().get(f"/{self.prefix}/leader")
        except EtcdUnavailableError:
            return None
        if kv is None:
            return None
        address = kv.value.decode()
        return (
            (self.addresses.index(address), kv.create_revision)
            if address in self.addresses
            else None
        )

    def listening(self, index: int) -> bool:
        """Whether coordinator ``index``'s current process has opened its port."""
        process = self.processes[index]
        if process is None or process.poll() is not None:
            return False
        return self.log_path(index).read_bytes().count(b" (plaintext)") >= self.starts[index]

    def committed_round(self) -> int:
        pointer = self.pointer()
        return pointer.round if pointer is not None else 0

    def wait_for(self, what: str, condition: Callable[[], bool], timeout_s: float) -> float:
        """Seconds until ``condition`` held; AssertionError naming ``what`` past the timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if condition():
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    # -- faults ---------------------------------------------------------------------------

    def signal(self, index: int, signum: int) -> None:
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signum)
            if signum == signal.SIGKILL:
                process.wait(10)

    def cut(self, index: int) -> None:
        """Blackhole coordinator ``index``'s traffic to etcd (both ways)."""
        self.proxies[index].set_fault(Blackhole())

    def heal(self, index: int) -> None:
        self.proxies[index].heal()

    # -- the end --------------------------------------------------------------------------

    def wait_exits(self, timeout_s: float) -> list[int | None]:
        end = time.monotonic() + timeout_s
        for process in self.processes:
            if process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, end - time.monotonic()))
        return [p.poll() if p is not None else None for p in self.processes]

    def verdict(self) -> Verdict:
        return check(
            read_logs(sorted(self.workdir.glob("c*/start-*"))), self.pointer(), rounds=self.rounds
        )

    def close(self) -> None:
        for process in [*self.processes, self.driver]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGCONT)
                    process.kill()
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
        self._stack.close()
        self.etcd.close()
