"""A client's session with the coordinator: join, and every later call made as that session.

``join`` sends the protocol version, the credential and the declared examples; the lease
that comes back names the session and the heartbeat interval. A coordinator that speaks
another protocol version is a ``VersionMismatchError`` naming both (exit code 10), a refused
credential an ``AuthError`` (exit code 11): neither is retried.

``call`` makes one call as the current session. Transport failures are retried with
backoff (``Retrying``) until ``give_up_s`` passes. A coordinator that restarted has lost
every session, and says so with ``AuthError`` on the next call: the session joins again and
repeats the call, once. It joins again only with evidence of a restart since its last join
(a call that succeeded, or a reconnection after a transport failure), so a coordinator that
keeps refusing a fresh session ends the client (``AuthError``) instead of making it loop on
joins.
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
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease

log = logging.getLogger("phalanx.client.session")
T = TypeVar("T")


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
        self._served = False  # a call succeeded since the last join
        self._resets = 0  # the connection's resets at the last join
        self.joins = 0

    @property
    def lease(self) -> Lease:
        with self._lock:
            if self._lease is None:
                raise RuntimeError("the session has not joined yet")
            return self._lease

    @property
    def caller(self) -> Caller:
        lease = self.lease
        return Caller(lease.envelope, lease.client, lease.session)

    def join(self) -> Lease:
        me = self.identity
        request = JoinRequest(Envelope(), me.client, me.credential, me.num_examples)
        lease = self.retrying.call(
            lambda: self.calls.join(request), what="join", deadline_s=self.give_up_s
        )
        if lease.client != me.client:
            raise ProtocolError(
                f"the coordinator knows this client as {lease.client}, not as {me.client}"
            )
        with self._lock:
            self._lease, self._served = lease, False
            self._resets = self.calls.connection.resets
            self.joins += 1
        log.info("client %s joined as session %s", me.client, lease.session)
        return lease

    def call(self, what: str, fn: Callable[[Caller], T], *, deadline_s: float | None = None) -> T:
        """``fn(caller)``, transport failures retried, a lost session joined again once."""
        limit = self.give_up_s if deadline_s is None else deadline_s
        try:
            return self._attempt(what, fn, limit)
        except AuthError as exc:
            if isinstance(exc, PermissionDeniedError) or not self._may_rejoin():
                raise
            log.warning(
                "%s: the coordinator no longer knows this session (%s); joining again", what, exc
            )
            self.join()
            return self._attempt(what, fn, limit)

    def _may_rejoin(self) -> bool:
        with self._lock:
            return self._served or self.calls.connection.resets > self._resets

    def _attempt(self, what: str, fn: Callable[[Caller], T], deadline_s: float) -> T:
        result = self.retrying.call(lambda: fn(self.caller), what=what, deadline_s=deadline_s)
        with self._lock:
            self._served = True
        return result
