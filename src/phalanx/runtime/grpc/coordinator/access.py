"""Who may call: the credential check at join (``Authenticator``), the session every later
call must carry (``Sessions``), and an optional per-client limiter (``Limiter``).

The coordinator defines the protocols; the credential book (hashed credentials per client
id) and the rate and size limiter are supplied by whoever deploys it. A session is a random
token issued at join: it binds every later call to the client that joined, so a client acts
only as itself, and a rejoin (after a restart of either side) replaces it. Under mutual
TLS the servicer has already refused a call whose claimed client id is not its client
certificate's (``handlers.check_peer``), before any of these checks run.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Protocol

from phalanx.errors import AuthError
from phalanx.runtime.grpc.credentials import NOT_ACCEPTED
from phalanx.runtime.grpc.session import Caller
from phalanx.types import ClientId

log = logging.getLogger("phalanx.runtime.grpc.coordinator")


class Authenticator(Protocol):
    def verify(self, client: ClientId, credential: str) -> None:
        """Return if ``credential`` is ``client``'s; raise ``AuthError`` otherwise."""
        ...


class Limiter(Protocol):
    def charge(self, client: ClientId, nbytes: int) -> None:
        """Count a call of ``client`` moving ``nbytes``; raise ``BusyError`` (or
        ``SizeLimitError``) to refuse it. Called at join, pull, model download and push
        admission; never for heartbeats or leaves, which must always get through."""
        ...


class AnyCredential:
    """Accepts every client id with any credential: only for a coordinator whose port
    nobody else can reach (a test, a loopback deployment that opted in)."""

    def __init__(self) -> None:
        log.warning("every client id is accepted with any credential (no credential book)")

    def verify(self, client: ClientId, credential: str) -> None:
        if client < 0:
            raise AuthError(f"client id {client} is negative")


class OperatorToken:
    """Who may ask for ``Status``: the holder of ``token``, or anyone when it is None (a
    coordinator whose port only its operator can reach)."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    def check(self, credential: str) -> None:
        if self._token is not None and not hmac.compare_digest(
            self._token.encode(), credential.encode()
        ):
            raise AuthError(f"operator: {NOT_ACCEPTED}")


class Sessions:
    """The session of each joined client; a call naming another is refused."""

    def __init__(self) -> None:
        self._by_client: dict[ClientId, str] = {}

    def issue(self, client: ClientId) -> str:
        token = secrets.token_urlsafe(18)
        self._by_client[client] = token
        return token

    def check(self, caller: Caller) -> None:
        held = self._by_client.get(caller.client, "")
        # bytes: compare_digest refuses non-ASCII text, and a session is whatever was sent
        if not (held and hmac.compare_digest(held.encode(), caller.session.encode())):
            raise AuthError(f"client {caller.client}: {NOT_ACCEPTED}")

    def revoke(self, client: ClientId) -> None:
        self._by_client.pop(client, None)

    def __contains__(self, client: object) -> bool:
        return client in self._by_client
