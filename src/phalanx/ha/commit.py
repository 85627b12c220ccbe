"""``FencedCommit``: the commit step of a coordinator in an HA group.

1. the history log's earlier lines are synced, as in ``CheckpointCommit``;
2. the checkpoint of the round goes to this epoch's stores under the write quorum (every
   round: a successor must be able to load whatever the pointer names);
3. ONE etcd transaction: if the leader key's create-revision is still this term's epoch
   AND the committed pointer is still exactly the one this term last read or wrote (so its
   round is the previous round), put the new pointer; otherwise change nothing.
4. only then the commit log line, the history record, and (in ``RunLifecycle``) observers.

A deposed leader, or one that was paused past its lease, fails condition 3: its round is
not committed, it says so in its log (``refused``), and the term ends (``LeadershipLostError``).
When etcd does not answer the transaction the outcome is unknown: the pointer is read back
while the lease still holds; if that fails too the term ends (``uncertain``) and the next
leader's ``takeover`` line records what the pointer says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from phalanx.checkpoint import CheckpointStore
from phalanx.checkpoint.crashpoints import crash_point
from phalanx.checkpoint.format import dir_name
from phalanx.coordinator.history_log import History
from phalanx.coordinator.store_calls import StoreCalls
from phalanx.core.state import ServerState
from phalanx.errors import RuntimeBackendError
from phalanx.ha.commitlog import CommitLog
from phalanx.ha.election import Term
from phalanx.ha.etcd import EtcdUnavailableError, compare, put_op, range_op
from phalanx.ha.pointer import Pointer, model_digest
from phalanx.ha.points import fault_point

log = logging.getLogger("phalanx.ha.commit")


class LeadershipLostError(RuntimeBackendError):
    """This coordinator no longer leads: it commits nothing more and stands by."""


class FencedCommit:
    def __init__(
        self, *, term: Term, store: CheckpointStore, history: History, commits: CommitLog,
        calls: StoreCalls, previous: Pointer | None, base: Pointer, last_round: int,
    ) -> None:  # fmt: skip
        """``previous``: the pointer as read at takeover (None: nothing committed yet);
        ``base``: a template carrying the run's fixed fields (run id, stores, config)."""
        self.term = term
        self.store = store
        self.history = history
        self.commits = commits
        self.calls = calls
        self.previous = previous
        self.base = base
        self.key = term.elector.settings.target.key("committed")
        self.last_round = last_round
        self.base_digest = previous.model_digest if previous else base.base_digest

    async def commit(self, state: ServerState) -> None:
        self.history.sync()
        self._check_leading(state.round)
        crash_point("engine.before_checkpoint")
        store = self.store
        await self.calls.run(
            lambda: store.save(state),
            what=f"checkpoint save of round {state.round} to {store.location}",
        )
        self._check_leading(state.round)
        pointer = self._pointer(state)
        outcome = await asyncio.to_thread(self._transact, pointer)
        if outcome != "committed":
            self.term.lose(f"commit of round {pointer.round} {outcome}")
            raise LeadershipLostError(
                f"commit of round {pointer.round} at epoch {self.term.epoch}: {outcome}"
            )
        self.previous, self.base_digest = pointer, pointer.model_digest
        if state.last_record is not None:
            self.history.append(state.last_record)

    def _check_leading(self, round_: int) -> None:
        if not self.term.leading:
            why = self.term.why or "the lease is about to end unrenewed"
            self.term.lose(why)
            raise LeadershipLostError(
                f"round {round_} not committed at epoch {self.term.epoch}: {why}"
            )

    def _pointer(self, state: ServerState) -> Pointer:
        return self.base.model_copy(
            update={
                "round": state.round, "model_version": state.model_version,
                "model_digest": model_digest(state.params), "base_digest": self.base_digest,
                "epoch": self.term.epoch, "checkpoint": dir_name(state.round),
                "finished": state.round >= self.last_round,
            }
        )  # fmt: skip

    def _transact(self, pointer: Pointer) -> str:
        """The fenced transaction, on a thread: "committed", "refused" or "uncertain". The
        outcome is logged here, so that it is on record even when the term ended (and the
        task awaiting this was cancelled) while the transaction was in flight."""
        etcd = self.term.elector.etcd
        expected = (
            compare(self.key, "VALUE", self.previous.encode())
            if self.previous is not None
            else compare(self.key, "CREATE", 0)
        )
        fault_point("ha.before_txn")
        leader_epoch = 0
        try:
            result = etcd.txn(
                [compare(self.term.elector.key, "CREATE", self.term.epoch), expected],
                [put_op(self.key, pointer.encode())],
                [range_op(self.term.elector.key)],
            )
        except EtcdUnavailableError as exc:
            log.warning("commit of round %d: etcd did not answer (%s)", pointer.round, exc)
            outcome = self._read_back(pointer)
        else:
            fault_point("ha.after_txn")
            outcome = "committed" if result.succeeded else "refused"
            leader_epoch = 0 if result.succeeded else _range_epoch(result.responses)
        self._record(pointer, outcome, leader_epoch)
        return outcome

    def _read_back(self, pointer: Pointer) -> str:
        """etcd did not answer: read the pointer back while the lease holds (bounded)."""
        for _ in range(20):
            if not self.term.leading:
                break
            try:
                found = self.term.elector.etcd.get(self.key)
            except EtcdUnavailableError:
                continue
            if found is not None and found.value == pointer.encode():
                return "committed"
            return "refused"
        return "uncertain"

    def _record(self, pointer: Pointer, outcome: str, leader_epoch: int) -> None:
        if outcome == "refused":
            held = f"epoch {leader_epoch}" if leader_epoch else "nobody"
            log.error(
                "commit of round %d at epoch %d REFUSED by fencing (the leader key is now held "
                "by %s): nothing committed, standing by", pointer.round, self.term.epoch, held,
            )  # fmt: skip
        elif outcome == "uncertain":
            log.error(
                "commit of round %d at epoch %d: outcome unknown (etcd unreachable); "
                "standing by", pointer.round, self.term.epoch,
            )  # fmt: skip
        extra = {"leader_epoch": leader_epoch} if outcome == "refused" else {}
        self.commits.write(
            "commit" if outcome == "committed" else outcome, epoch=self.term.epoch,
            round=pointer.round, model_digest=pointer.model_digest,
            base_digest=pointer.base_digest, model_version=pointer.model_version, **extra,
        )  # fmt: skip


def _range_epoch(responses: list[dict[str, Any]]) -> int:
    """The leader key's create-revision from a refused transaction's range response."""
    for response in responses:
        kvs = response.get("response_range", {}).get("kvs") or []
        if kvs:
            return int(kvs[0].get("create_revision", 0))
    return 0
