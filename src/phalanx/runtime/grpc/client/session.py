"""A client's session with the coordinator: join, and every later call made as that session.

``join`` sends the protocol version, the credential and the declared examples; the lease
that comes back names the session and the heartbeat interval. A coordinator that speaks
another protocol version is a ``VersionMismatchError`` naming both (exit code 10), a refused
credential an ``AuthError`` (exit code 11): neither is retried.

``call`` makes one call as the current session. Transport failures are retried with
backoff (``Retrying``) until ``give_up_s`` passes. A coordinator that restarted has lost
every session, and says so with ``AuthError`` on the next call: the session joins again and
repeats the call, once. It joins again at most once without a call succeeding in between
(the coordinator may die right after a join, before any call was served: the chaos runs
found clients that ended there), so a coordinator that keeps refusing the session ends the
client (``AuthError``) instead of making it loop on joins.
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
        self._unserved_rejoins = 0  # joins again since a call last succeeded
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
            self._lease = lease
            self.joins += 1
        log.info("client %s joined as session %s", me.client, lease.session)
        return lease

    def call(self, what: str, fn: Callable[[Caller], T], *, deadline_s: float | None = None) -> T:
        """``fn(caller)``, transport failures retried, a lost session joined again once."""
        limit = self.give_up_s if deadline_s is None else deadline_s
        try:
            return self._attempt(what, fn, limit)
        except AuthError as exc:
            with self._lock:
                if isinstance(exc, PermissionDeniedError) or self._unserved_rejoins >= 1:
                    raise
                self._unserved_rejoins += 1
            log.warning(
                "%s: the coordinator no longer knows this session (%s); joining again", what, exc
            )
            self.join()
            return self._attempt(what, fn, limit)

    def _attempt(self, what: str, fn: Callable[[Caller], T], deadline_s: float) -> T:
        result = self.retrying.call(lambda: fn(self.caller), what=what, deadline_s=deadline_s)
        with self._lock:
            self._unserved_rejoins = 0
        return result
