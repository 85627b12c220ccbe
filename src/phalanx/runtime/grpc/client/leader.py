"""Which coordinator leads: the run this client serves and the highest fencing epoch seen.

Every coordinator reply carries an envelope (run id, epoch). ``Leadership.check`` judges
each one, for every thread of the client (the session's calls and the heartbeat):

- another run id than the one the client joined first: ``RunMismatchError`` (exit 12); a
  failover keeps the run id, so this is another run, which the client never trains for;
- an epoch below the highest seen: the replier is a deposed leader; its reply is ignored
  (never its task, never its model) and the caller goes on to the next address
  (``DeposedLeaderError``);
- an epoch above the highest seen: remembered. A reply other than a join's from above the
  session's own epoch means a new leadership since the join (``NewLeaderError``): the
  session joins again (same id and credential) before the call is made again.

Tasks carry the epoch of the leader that issued them; one from below the highest epoch
seen is ``outdated``: the agent drops it unpushed (``SupersededError`` when found late).
Requests carry the highest epoch seen (``stamp``), so a coordinator deposed since can tell.
"""

from __future__ import annotations

import logging
import threading

from phalanx.core.messages import PROTOCOL_VERSION, Envelope
from phalanx.errors import RunMismatchError, StaleError
from phalanx.runtime.grpc.client.backoff import RedirectError

log = logging.getLogger("phalanx.client.leader")


class SupersededError(StaleError):
    """A task of an epoch below the highest seen: its leader was deposed, and the new one
    redoes the round; the client neither pushes nor reports it."""


class Leadership:
    """The run id pinned by the first join, the highest epoch seen, and the epoch of the
    current session (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.run_id: str | None = None
        self.epoch = 0
        self.session_epoch = 0

    def stamp(self) -> Envelope:
        """The envelope of a request: this client's protocol, the run, the highest epoch."""
        with self._lock:
            return Envelope(PROTOCOL_VERSION, self.run_id or "", self.epoch)

    def joined(self, envelope: Envelope) -> None:
        """A join's lease, already ``check``-ed: the session's epoch (and the run, pinned)."""
        with self._lock:
            if self.run_id is None:
                self.run_id = envelope.run_id
            self.session_epoch = envelope.epoch

    def check(self, envelope: Envelope, where: str, *, lease: bool = False) -> None:
        """Return if a reply with ``envelope`` from ``where`` may be used; raise otherwise
        (see the module docstring). ``lease``: the reply to a join."""
        with self._lock:
            if self.run_id is not None and envelope.run_id != self.run_id:
                raise RunMismatchError(
                    f"the coordinator at {where} runs {envelope.run_id!r}; this client joined "
                    f"run {self.run_id!r} and serves no other (start it again for the new run)"
                )
            if envelope.epoch < self.epoch:
                raise DeposedLeaderError(where, envelope.epoch, self.epoch)
            if envelope.epoch > self.epoch:
                log.info("epoch %d seen at %s (was %d)", envelope.epoch, where, self.epoch)
                self.epoch = envelope.epoch
            if not lease and envelope.epoch > self.session_epoch:
                raise NewLeaderError(where, envelope.epoch, self.session_epoch)

    def outdated(self, task: Envelope) -> bool:
        """Whether a task of ``task``'s epoch was issued by a leader deposed since."""
        with self._lock:
            return task.epoch < self.epoch

    def stale_session(self) -> bool:
        """Whether the session joined below the highest epoch seen (join again)."""
        with self._lock:
            return self.session_epoch < self.epoch


class DeposedLeaderError(RedirectError):
    """A reply from below the highest epoch seen: try the next address, after a backoff
    (the caller rotates the connection)."""

    def __init__(self, where: str, epoch: int, highest: int) -> None:
        super().__init__(
            f"the coordinator at {where} answered from epoch {epoch}, below epoch {highest} "
            "already seen: a deposed leader; its reply is ignored"
        )


class NewLeaderError(RedirectError):
    """A reply from a leadership newer than the session: join again there, at once."""

    def __init__(self, where: str, epoch: int, session: int) -> None:
        super().__init__(
            f"the coordinator at {where} leads at epoch {epoch}, newer than this session's "
            f"epoch {session}: joining again",
            at_once=True,
        )


__all__ = ["DeposedLeaderError", "Leadership", "NewLeaderError", "SupersededError"]
