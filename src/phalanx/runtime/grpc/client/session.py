"""A client's session with the coordinator: join, and every later call made as that session.

``join`` sends the protocol version, the credential, the declared examples and the highest
epoch seen; the lease that comes back names the session and the heartbeat interval. A
coordinator that speaks another protocol version is a ``VersionMismatchError`` naming both
(exit code 10), a refused credential an ``AuthError`` (exit code 11), a coordinator of
another run a ``RunMismatchError`` (exit code 12): none is retried.

``call`` makes one call as the current session. Transport failures, ``BusyError`` and
redirects (a standby's ``NotLeaderError``, a deposed leader's reply) are retried with
backoff (``Retrying``) until the call's deadline passes, at the address the connection moved
to. Before each try the session joins again (same id and credential) if it must: the
coordinator refused the session, or a leadership newer than the session's was seen (a new
leader has no sessions). A coordinator that restarted, or a new leader, says so with
``AuthError`` on the next call: the session joins again and repeats the call. It joins again
at most once without a call succeeding in between at the same address (the coordinator may
die right after a join, before any call was served: the chaos runs found clients that ended
there), so a coordinator that keeps refusing the session it just issued ends the client
(``AuthError``) instead of making it loop on joins.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from phalanx.core.messages import Envelope
from phalanx.errors import AuthError, PermissionDeniedError, ProtocolError
from phalanx.runtime.grpc.client.backoff import Retrying
from phalanx.runtime.grpc.client.calls import CoordinatorCalls
from phalanx.runtime.grpc.client.leader import Leadership
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease

log = logging.getLogger("phalanx.client.session")
T = TypeVar("T")
MAX_REJOINS = 8  # joins again within one call, at most (each at another coordinator)


@dataclass(frozen=True)
class Identity:
    client: int
    credential: str
    num_examples: int


class Session:
    def __init__(
        self,
        calls: CoordinatorCalls,
        identity: Identity,
        retrying: Retrying,
        *,
        give_up_s: float,
    ) -> None:
        self.calls = calls
        self.identity = identity
        self.retrying = retrying
        self.give_up_s = give_up_s
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._joined_at = ""  # the address that issued the session
        self._lost = False  # the coordinator refused the session: join before the next try
        self._unserved_rejoins = 0  # joins again since a call last succeeded
        self.joins = 0

    @property
    def leadership(self) -> Leadership:
        return self.calls.leadership

    @property
    def lease(self) -> Lease:
        with self._lock:
            if self._lease is None:
                raise RuntimeError("the session has not joined yet")
            return self._lease

    @property
    def caller(self) -> Caller:
        """Who this client is, with the highest epoch seen on its envelope."""
        lease = self.lease
        return Caller(self.leadership.stamp(), lease.client, lease.session)

    def join(self) -> Lease:
        return self.retrying.call(self._join_once, what="join", deadline_s=self.give_up_s)

    def _join_once(self) -> Lease:
        me = self.identity
        stamp = self.leadership.stamp()
        request = JoinRequest(stamp, me.client, me.credential, me.num_examples)
        where = self.calls.connection.target
        lease = self.calls.join(request)
        if lease.client != me.client:
            raise ProtocolError(
                f"the coordinator knows this client as {lease.client}, not as {me.client}"
            )
        self.leadership.joined(lease.envelope)
        with self._lock:
            self._lease = lease
            self._joined_at = where
            self._lost = False
            self.joins += 1
        log.info(
            "client %s joined %s as session %s (epoch %d)",
            me.client, where, lease.session, lease.envelope.epoch,
        )  # fmt: skip
        return lease

    def call(self, what: str, fn: Callable[[Caller], T], *, deadline_s: float | None = None) -> T:
        """``fn(caller)``, retried as the module docstring says, the session joined again
        when the coordinator lost it."""
        limit = self.give_up_s if deadline_s is None else deadline_s
        while True:
            try:
                result = self.retrying.call(lambda: self._once(fn), what=what, deadline_s=limit)
            except AuthError as exc:
                if isinstance(exc, PermissionDeniedError) or not self._may_rejoin():
                    raise
                log.warning(
                    "%s: the coordinator no longer knows this session (%s); joining again",
                    what, exc,
                )  # fmt: skip
                continue
            with self._lock:
                self._unserved_rejoins = 0
            return result

    def _once(self, fn: Callable[[Caller], T]) -> T:
        with self._lock:
            rejoin = self._lost or self._lease is None
        if rejoin or self.leadership.stale_session():
            self._join_once()
        return fn(self.caller)

    def _may_rejoin(self) -> bool:
        """Whether to join again after a refused session: not if the coordinator that
        refused it issued it since the last call that succeeded (it would only refuse
        again), nor past ``MAX_REJOINS``."""
        with self._lock:
            same = self.calls.connection.target == self._joined_at
            if (self._unserved_rejoins >= 1 and same) or self._unserved_rejoins >= MAX_REJOINS:
                return False
            self._unserved_rejoins += 1
            self._lost = True
            return True


def answering(caller: Caller, task: Envelope) -> Caller:
    """``caller`` for a push or failure report: the answered task's envelope (its epoch)."""
    return Caller(task, caller.client, caller.session)
