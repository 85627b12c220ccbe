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
leader has no sessions). A refused JOIN is a refused credential (``AuthError``, exit 11);
a call refused as an unknown session after a join succeeded means the coordinator restarted
(or another leads, or the same one leads again): the session joins again and repeats the
call, however often that happens at the same address (the chaos runs restarted one
coordinator twice within one call). Those joins are bounded: the first goes at once, later
ones after the backoff, all within the call's deadline, and at most ``MAX_REJOINS`` without
a call succeeding in between; past that ``SessionChurnError`` (exit 6), never exit 11.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from phalanx.core.messages import Envelope
from phalanx.errors import AuthError, PermissionDeniedError, ProtocolError, RuntimeBackendError
from phalanx.runtime.grpc.client.backoff import RedirectError, Retrying
from phalanx.runtime.grpc.client.calls import CoordinatorCalls
from phalanx.runtime.grpc.client.leader import Leadership
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease

log = logging.getLogger("phalanx.client.session")
T = TypeVar("T")
MAX_REJOINS = 8  # joins again after a lost session, at most, without a call succeeding


class SessionLostError(RedirectError):
    """The coordinator no longer knows the session (it restarted, or a leadership began
    since the join): join again, then repeat the call (retried by ``Retrying``)."""


class SessionChurnError(RuntimeBackendError):
    """The coordinator lost the session ``MAX_REJOINS`` times without serving a call in
    between: not a refused credential (the joins were accepted), so exit 6, not 11."""


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
        self._joining = False  # a join is in flight (the heartbeat waits for it)
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
        with self._lock:
            self._joining = True
        try:
            lease = self.calls.join(request)  # AuthError here: the credential is refused
        finally:
            with self._lock:
                self._joining = False
        if lease.client != me.client:
            raise ProtocolError(
                f"the coordinator knows this client as {lease.client}, not as {me.client}"
            )
        self.leadership.joined(lease.envelope)
        with self._lock:
            self._lease = lease
            self._lost = False
            self.joins += 1
        log.info(
            "client %s joined %s as session %s (epoch %d)",
            me.client, where, lease.session, lease.envelope.epoch,
        )  # fmt: skip
        return lease

    @property
    def joining(self) -> bool:
        """Whether a join is in flight (a heartbeat of the old session would be refused)."""
        with self._lock:
            return self._joining

    def call(self, what: str, fn: Callable[[Caller], T], *, deadline_s: float | None = None) -> T:
        """``fn(caller)``, retried as the module docstring says, the session joined again
        when the coordinator lost it."""
        limit = self.give_up_s if deadline_s is None else deadline_s
        result = self.retrying.call(lambda: self._once(fn), what=what, deadline_s=limit)
        with self._lock:
            self._unserved_rejoins = 0
        return result

    def _once(self, fn: Callable[[Caller], T]) -> T:
        with self._lock:
            rejoin = self._lost or self._lease is None
        if rejoin or self.leadership.stale_session():
            self._join_once()
        try:
            return fn(self.caller)
        except PermissionDeniedError:
            raise  # a certificate that does not name this client: joining again cannot help
        except AuthError as exc:
            raise self._lost_session(exc) from None

    def _lost_session(self, exc: AuthError) -> Exception:
        """What a call refused as an unknown session raises: ``SessionLostError`` (join
        again: at once the first time, after the backoff later), or ``SessionChurnError``
        past ``MAX_REJOINS`` joins again without a call succeeding."""
        with self._lock:
            if self._unserved_rejoins >= MAX_REJOINS:
                return SessionChurnError(
                    f"the coordinator at {self.calls.connection.target} lost this client's "
                    f"session {self._unserved_rejoins + 1} times without serving a call "
                    f"in between ({exc}); giving up"
                )
            self._unserved_rejoins += 1
            self._lost = True
            first = self._unserved_rejoins == 1
        return SessionLostError(
            f"the coordinator no longer knows this session ({exc}); joining again",
            at_once=first,
        )


def answering(caller: Caller, task: Envelope) -> Caller:
    """``caller`` for a push or failure report: the answered task's envelope (its epoch)."""
    return Caller(task, caller.client, caller.session)
