"""Leader election on an etcd lease: who leads, at which fencing epoch, until when.

A candidate grants itself a lease of ``ttl_s`` and, in one transaction, creates the leader
key (``/PREFIX/leader``) bound to that lease if the key does not exist; the value is the
candidate's advertised client address (the hint a standby gives clients). The key's
create-revision is the leader's **fencing epoch**: etcd's revisions only grow, so every
later leader has a higher one, and a commit conditioned on it (``ha.commit``) is refused
once the key is gone or someone else's.

The leader renews its lease every ``ttl_s / 4`` and demotes itself when it has not renewed
within ``ttl_s - margin_s`` of the last renewal it *sent* (etcd's own expiry counts from
when it received it, later), so it stops acting before etcd can hand the key to another.
Demotion is a local decision; safety does not rest on it: fencing does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from phalanx.errors import ConfigError
from phalanx.ha.etcd import Etcd, EtcdUnavailableError, Target, compare, delete_op, put_op, range_op

log = logging.getLogger("phalanx.ha.election")
WATCHDOG_S = 0.05  # how often the lease deadline is looked at


@dataclass(frozen=True)
class Leader:
    address: str
    epoch: int


@dataclass(frozen=True)
class HaSettings:
    """``ttl_s``: the lease (whole seconds, as etcd takes it); ``margin_s``: how long before
    the lease ends an unrenewed leader demotes itself (None: a quarter of the TTL);
    ``poll_s``: how often a standby looks at the leader key; ``call_timeout_s``: one etcd
    request's limit per member."""

    target: Target
    advertise: str
    ttl_s: int = 2
    margin_s: float | None = None
    poll_s: float = 0.1
    call_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.ttl_s < 1:
            raise ConfigError(f"--ha-ttl must be at least 1 s (etcd leases); got {self.ttl_s}")
        if not 0 <= self.margin < self.ttl_s:
            raise ConfigError(f"the lease margin must be in [0, TTL); got {self.margin}")

    @property
    def margin(self) -> float:
        return self.ttl_s / 4 if self.margin_s is None else self.margin_s

    @property
    def timeout(self) -> float:
        return self.call_timeout_s if self.call_timeout_s is not None else self.ttl_s / 4


class Elector:
    """Blocking election calls against etcd (run them on a thread from async code)."""

    def __init__(self, etcd: Etcd, settings: HaSettings) -> None:
        self.etcd = etcd
        self.settings = settings
        self.key = settings.target.key("leader")

    def leader(self) -> Leader | None:
        kv = self.etcd.get(self.key)
        return None if kv is None else Leader(kv.value.decode(), kv.create_revision)

    def try_acquire(self) -> Term | None:
        """Lead now if nobody does: the new term, or None (someone leads)."""
        sent = time.monotonic()
        lease = self.etcd.grant(self.settings.ttl_s)
        result = self.etcd.txn(
            [compare(self.key, "CREATE", 0)],
            [put_op(self.key, self.settings.advertise.encode(), lease)],
            [range_op(self.key)],
        )
        if not result.succeeded:
            with contextlib.suppress(EtcdUnavailableError):
                self.etcd.revoke(lease)
            return None
        return Term(self, result.revision, lease, sent + self.settings.ttl_s)

    def resign(self, term: Term) -> None:
        """Give the key up at once (a clean stop: a standby need not wait out the TTL)."""
        self.etcd.txn([compare(self.key, "CREATE", term.epoch)], [delete_op(self.key)])
        self.etcd.revoke(term.lease)


class Term:
    """One leadership: its epoch, its lease, and ``lost`` once it ended (see the module
    docstring). ``keep`` runs the renewals and the deadline watchdog until then."""

    def __init__(self, elector: Elector, epoch: int, lease: int, deadline: float) -> None:
        self.elector = elector
        self.epoch = epoch
        self.lease = lease
        self.deadline = deadline  # monotonic time the lease surely still holds until
        self.lost = asyncio.Event()
        self.why = ""

    def lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.why = why
            log.warning("leadership at epoch %d lost: %s", self.epoch, why)
            self.lost.set()

    @property
    def leading(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self.demote_at

    @property
    def demote_at(self) -> float:
        return self.deadline - self.elector.settings.margin

    async def keep(self) -> None:
        """Renew until the term is lost; cancel to stop."""
        watchdog = asyncio.create_task(self._watch())
        try:
            await self._renew_forever()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _renew_forever(self) -> None:
        every = self.elector.settings.ttl_s / 4
        while not self.lost.is_set():
            sent = time.monotonic()
            try:
                ttl = await asyncio.to_thread(self.elector.etcd.keepalive, self.lease)
            except EtcdUnavailableError as exc:
                log.warning("lease renewal at epoch %d failed: %s", self.epoch, exc)
            else:
                if ttl <= 0:
                    self.lose("the lease expired in etcd (renewed too late)")
                    return
                self.deadline = max(self.deadline, sent + ttl)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), max(0.0, sent + every - time.monotonic()))

    async def _watch(self) -> None:
        while not self.lost.is_set():
            if time.monotonic() >= self.demote_at:
                self.lose(
                    f"no lease renewal within TTL {self.elector.settings.ttl_s} s minus margin "
                    f"{self.elector.settings.margin:g} s"
                )
                return
            await asyncio.sleep(WATCHDOG_S)
