"""A local deployment in one command: a coordinator and N client processes on loopback.

``phalanx launch`` (and ``phalanx run --runtime grpc``) is what an operator would do by
hand with ``phalanx credentials issue``, ``phalanx serve`` and one ``phalanx client`` per
id, done by one supervisor so a scenario runs over real processes and real sockets:

- a credential per client, issued into a private directory (0700) that is removed at the
  end; with TLS, a local CA, a server certificate and a client certificate per id (mutual
  TLS);
- the coordinator (``phalanx serve``) on an ephemeral loopback port, its progress, summary
  and plots on this terminal, the port read from the file it writes;
- one ``phalanx client`` per id, one torch thread each, playing the scenario's fault plan
  for real (``--inject-faults``: an injected crash kills the process);
- a supervisor loop that restarts a client whose process died (as systemd or Kubernetes
  would: a crashed node comes back and joins again), with a capped, doubling delay and a
  cap on restarts per client; a client that exits for a reason a restart cannot fix (a bad
  flag, another protocol version, a refused credential) stops the launch. A client that
  exits for another run (12) is restarted only when this launcher started its coordinator
  again as a new run (killed before its first commit, so there was nothing to resume).

The children die with the launcher (``PR_SET_PDEATHSIG``), a Ctrl-C or SIGTERM is passed to
the coordinator (which stops as ``phalanx run`` does: what committed is kept, the resume
command printed), and every wait is bounded; the launcher exits with the coordinator's code.

The chaos runner (``phalanx.testing.chaos``) drives the same supervisor with a few more
knobs: a fixed listen address and a different address for the clients (a fault-injecting
proxy in between), a hook called on every supervision tick (to kill or stop processes on
schedule), and a hook that may restart a dead coordinator (``phalanx serve --resume``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from phalanx.core.processes import ONE_THREAD_ENV, kill_me_with_parent
from phalanx.errors import ConfigError, PhalanxError, RunMismatchError
from phalanx.runtime.grpc.certs import make_local_pki
from phalanx.runtime.grpc.credentials import issue_credentials, token_files
from phalanx.types import ClientId

log = logging.getLogger("phalanx.runtime.grpc.launcher")
FATAL_CLIENT_EXITS = {
    2: "a bad flag or scenario",
    10: "another protocol version",
    11: "refused",
    12: "a coordinator of another run",
}
POLL_S = 0.1


@dataclass(frozen=True)
class LaunchPlan:
    """What to start. ``serve_args`` go to ``phalanx serve`` as given (``--out``, ``--force``,
    ``--resume``, ``--quiet``, ``--no-plots``, ...); ``client_args`` to every client. A
    resumed run has no scenario for the coordinator (its directory holds the configuration)
    and gives its clients the directory's config.json as ``client_scenario``."""

    scenario: str | None
    clients: Sequence[ClientId]
    client_scenario: str | None = None  # what clients load (default: ``scenario``)
    overrides: Sequence[str] = ()
    serve_args: Sequence[str] = ()
    client_args: Sequence[str] = ()
    tls: bool = False
    inject_faults: bool = True
    max_restarts: int = 20
    restart_delay_s: float = 0.2
    restart_delay_cap_s: float = 2.0
    ready_timeout_s: float = 120.0
    grace_s: float = 15.0
    listen: str = "127.0.0.1:0"  # the coordinator's address (port 0: any free one)
    client_server: str | None = None  # what clients dial (default: the coordinator itself)
    coordinator_env: Mapping[str, str] = field(default_factory=dict)
    coordinator_log: Path | None = None  # its output (default: this terminal)

    def __post_init__(self) -> None:
        if not self.clients:
            raise ConfigError("a launch needs at least one client")
        if self.max_restarts < 0 or self.ready_timeout_s <= 0 or self.grace_s <= 0:
            raise ConfigError("restarts must be >= 0 and the launch's waits positive")


@dataclass
class Child:
    """One supervised process: its role, how often it was restarted, when it may next be."""

    name: str
    argv: list[str]
    log_path: Path | None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    due_at: float = 0.0  # monotonic time of the next (re)start
    done: bool = False
    stopped: bool = False  # terminated by the launcher at the end (not a failure)
    coordinator_starts: int = 0  # the coordinator's restarts when this process started


@dataclass(frozen=True)
class Relaunch:
    """How to start the coordinator again after it died: ``serve_args`` replace the plan's
    scenario, overrides and serve args (typically ``--resume DIR`` and the deployment
    flags); listen address, credentials and TLS stay; ``env`` is added to its environment."""

    serve_args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


Tick = Callable[["LocalLauncher"], None]
"""Called on every supervision tick (every ``POLL_S``), from the launcher's thread."""
OnCoordinatorExit = Callable[[int], Relaunch | None]
"""Told the dead coordinator's exit code (negative: the signal); a ``Relaunch`` restarts it."""


@dataclass
class LaunchResult:
    exit_code: int
    restarts: dict[str, int] = field(default_factory=dict)
    client_exits: dict[str, int] = field(default_factory=dict)
    coordinator_exits: list[int] = field(default_factory=list)  # earlier incarnations' codes


def phalanx_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "phalanx", *args]


class LocalLauncher:
    def __init__(self, plan: LaunchPlan, *, workdir: Path | None = None) -> None:
        self.plan = plan
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="phalanx-launch-"))
        self.workdir.chmod(0o700)
        self.coordinator: Child | None = None
        self.clients: dict[ClientId, Child] = {}
        self._signalled: int | None = None
        self._serve_argv: Callable[[Sequence[str]], list[str]] = lambda _args: []
        self._coordinator_exits: list[int] = []

    # -- the whole launch ------------------------------------------------------------

    def run(
        self, on_ready: Callable[[int], None] | None = None, *, on_tick: Tick | None = None,
        on_coordinator_exit: OnCoordinatorExit | None = None,
    ) -> LaunchResult:  # fmt: skip
        env = _child_env()
        try:
            serve_argv, client_base = self._prepare()
            self.coordinator = Child("coordinator", serve_argv, self.plan.coordinator_log)
            self._start(self.coordinator, {**env, **self.plan.coordinator_env}, quiet=False)
            port = self._wait_for_port()
            if port is None:
                return self._result()
            if on_ready is not None:
                on_ready(port)
            server = self.plan.client_server or f"127.0.0.1:{port}"
            for client in self.plan.clients:
                argv = client_base(client, server)
                self.clients[client] = Child(
                    f"client {client}", argv, self.workdir / f"client-{client}.log"
                )
                self._start(self.clients[client], env, quiet=True)
            self._supervise(env, on_tick, on_coordinator_exit)
            return self._result()
        finally:
            self._reap_all()
            if self._own_workdir:
                self._keep_failed_logs()
                shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self, signum: int) -> None:
        """Pass a stop signal to the coordinator; it ends the run and the clients follow."""
        self._signalled = signum
        process = self.coordinator.process if self.coordinator else None
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    # -- preparing ---------------------------------------------------------------------

    def _prepare(self) -> tuple[list[str], Callable[[ClientId, str], list[str]]]:
        plan = self.plan
        secrets = self.workdir / "secrets"
        secrets.mkdir(mode=0o700)
        book = secrets / "credentials.json"
        tokens = token_files(secrets, issue_credentials(book, plan.clients))
        token_of = dict(zip(sorted(plan.clients), tokens, strict=True))
        serve_scenario = [plan.scenario] if plan.scenario else []
        for_clients = plan.client_scenario or plan.scenario
        client_scenario = ["--scenario", for_clients] if for_clients else []
        sets = [arg for key in plan.overrides for arg in ("--set", key)]
        tls_serve: list[str] = []
        tls_client: Callable[[ClientId], list[str]] = lambda _client: []  # noqa: E731
        if plan.tls:
            pki = secrets / "pki"
            make_local_pki(pki, hosts=["localhost", "127.0.0.1"], clients=plan.clients)
            tls_serve = [
                "--tls-cert",
                str(pki / "server.pem"),
                "--tls-key",
                str(pki / "server.key"),
            ]
            tls_serve += ["--tls-client-ca", str(pki / "ca.pem")]

            def tls_client(client: ClientId) -> list[str]:
                return [
                    "--tls-ca", str(pki / "ca.pem"),
                    "--tls-cert", str(pki / f"client-{client}.pem"),
                    "--tls-key", str(pki / f"client-{client}.key"),
                    "--tls-server-name", "localhost",
                ]  # fmt: skip

        port_file = self.workdir / "port"

        def serve_argv(args: Sequence[str]) -> list[str]:
            return phalanx_argv(
                "serve", "--listen", plan.listen, "--port-file", str(port_file),
                "--credentials", str(book), *tls_serve, *args,
            )  # fmt: skip

        self._serve_argv = serve_argv
        faults = ["--inject-faults"] if plan.inject_faults else []

        def client_argv(client: ClientId, server: str) -> list[str]:
            return phalanx_argv(
                "client", "--server", server, "--id", str(client),
                "--token-file", str(token_of[client]), *client_scenario, *sets, *faults,
                *tls_client(client), "--threads", "1", *plan.client_args,
            )  # fmt: skip

        return serve_argv([*serve_scenario, *sets, *plan.serve_args]), client_argv

    # -- processes -----------------------------------------------------------------------

    def _start(self, child: Child, env: dict[str, str], *, quiet: bool) -> None:
        """Start (or restart) ``child``: a client's output goes to its log file, the
        coordinator's to this terminal. Clients get a session of their own, so a terminal's
        Ctrl-C reaches the coordinator alone (the clients hear FINISHED from it)."""
        log_fd = None
        if child.log_path is not None:
            log_fd = os.open(child.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            child.process = subprocess.Popen(
                child.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                preexec_fn=kill_me_with_parent,  # the launcher runs no threads: fork is safe
                start_new_session=quiet,
            )
        except OSError as exc:
            raise PhalanxError(f"cannot start {child.name}: {exc}") from None
        finally:
            if log_fd is not None:
                os.close(log_fd)
        if child is not self.coordinator and self.coordinator is not None:
            child.coordinator_starts = self.coordinator.restarts

    def _wait_for_port(self) -> int | None:
        """The coordinator's bound port once it writes it; None if it exited first."""
        if self.coordinator is None or self.coordinator.process is None:
            raise PhalanxError("the coordinator was never started")
        port_file = self.workdir / "port"
        deadline = time.monotonic() + self.plan.ready_timeout_s
        while time.monotonic() < deadline:
            if self.coordinator.process.poll() is not None:
                return None
            with contextlib.suppress(OSError, ValueError):
                return int(port_file.read_text().strip())
            time.sleep(POLL_S)
        raise PhalanxError(
            f"the coordinator did not listen within {self.plan.ready_timeout_s:.0f} s"
        )

    def _supervise(
        self, env: dict[str, str], on_tick: Tick | None, on_exit: OnCoordinatorExit | None
    ) -> None:
        """Until the coordinator exits (for good): restart clients whose process died, and
        the coordinator when ``on_exit`` asks for it."""
        coordinator = self.coordinator
        if coordinator is None or coordinator.process is None:
            return
        while True:
            code = coordinator.process.poll()
            if code is not None:
                relaunch = on_exit(code) if on_exit is not None else None
                if relaunch is None or self._signalled is not None:
                    return
                self._coordinator_exits.append(code)
                coordinator.argv = self._serve_argv(relaunch.serve_args)
                coordinator.restarts += 1
                log.info("coordinator exited %s; restarting it", _exit_text(code))
                self._start(coordinator, {**env, **relaunch.env}, quiet=False)
            if on_tick is not None:
                on_tick(self)
            now = time.monotonic()
            for child in self.clients.values():
                self._tend(child, now, env)
            time.sleep(POLL_S)

    def _tend(self, child: Child, now: float, env: dict[str, str]) -> None:
        process = child.process
        if child.done or process is None:
            if not child.done and now >= child.due_at:
                self._start(child, env, quiet=True)
            return
        code = process.poll()
        if code is None:
            return
        if code == 0:
            child.done = True
        elif code in FATAL_CLIENT_EXITS and not self._left_behind_by_a_new_run(child, code):
            child.done = True
            log.error(
                "%s exited %d (%s): stopping the launch", child.name, code, FATAL_CLIENT_EXITS[code]
            )
            self.stop(signal.SIGTERM)
        elif child.restarts >= self.plan.max_restarts:
            child.done = True
            log.error(
                "%s exited %d; not restarted again (%d restarts)", child.name, code, child.restarts
            )
        else:
            delay = min(
                self.plan.restart_delay_s * 2**child.restarts, self.plan.restart_delay_cap_s
            )
            child.restarts += 1
            child.process, child.due_at = None, now + delay
            why = " (its coordinator began a new run)" if code == RunMismatchError.exit_code else ""
            log.info(
                "%s exited %s%s; restarting in %.1f s", child.name, _exit_text(code), why, delay
            )

    def _left_behind_by_a_new_run(self, child: Child, code: int) -> bool:
        """A client that exits for another run (12) after this launcher started its
        coordinator again as a new run (killed before its first commit, nothing to resume):
        the client is bound to the old run's id, and starting it again joins the new run.
        Before any restart of the coordinator, 12 stays fatal: no run of this launch changed."""
        coordinator = self.coordinator
        restarted = coordinator is not None and coordinator.restarts > child.coordinator_starts
        return code == RunMismatchError.exit_code and restarted

    def _reap_all(self) -> None:
        """The coordinator first (bounded), then the clients: FINISHED lets them leave within
        the grace; what is left is terminated, then killed."""
        children = [c for c in (self.coordinator, *self.clients.values()) if c is not None]
        deadline = time.monotonic() + self.plan.grace_s
        for child in children:
            process = child.process
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(deadline - time.monotonic(), 0.01))
        for child in children:
            process = child.process
            if process is not None and process.poll() is None:
                child.stopped = True
                process.terminate()
                try:
                    process.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5.0)

    def _result(self) -> LaunchResult:
        coordinator = self.coordinator.process if self.coordinator else None
        code = coordinator.poll() if coordinator is not None else None
        if code is None:  # never started, or would not die
            code = 128 + (self._signalled or signal.SIGTERM)
        elif code < 0:  # killed by a signal: the shell's convention
            code = 128 - code
        return LaunchResult(
            exit_code=code,
            coordinator_exits=list(self._coordinator_exits),
            restarts={c.name: c.restarts for c in self.clients.values() if c.restarts},
            client_exits={
                c.name: c.process.returncode
                for c in self.clients.values()
                if c.process is not None and c.process.returncode not in (None, 0) and not c.stopped
            },
        )

    def _keep_failed_logs(self) -> None:
        """A client that ended badly: its log's last lines on stderr before the directory
        goes."""
        for child in self.clients.values():
            process = child.process
            if child.stopped or process is None or process.returncode in (None, 0, -signal.SIGKILL):
                continue
            if child.log_path is not None and child.log_path.exists():
                tail = child.log_path.read_text(errors="replace").splitlines()[-5:]
                log.error(
                    "%s exited %d; its last lines:\n%s",
                    child.name,
                    process.returncode,
                    "\n".join(tail),
                )


def _exit_text(code: int) -> str:
    return f"by signal {-code}" if code < 0 else f"with code {code}"


def _child_env() -> dict[str, str]:
    """One thread for every numerical library in every child (torch is pinned by flag)."""
    return {"PYTHONUNBUFFERED": "1", **os.environ, **ONE_THREAD_ENV}
