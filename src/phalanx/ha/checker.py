"""The history checker, in the manner of Jepsen: from every coordinator's ``commits.jsonl``
and the final committed pointer, prove that what the group committed is one chain.

Observations of a committed round come from ``commit`` lines (the leader that committed
it) and from ``takeover`` lines (the pointer a new leader read: it attests a round even
when its committer died between the transaction and its log line). The checker finds a
violation when:

- a round is committed twice (by two ``commit`` lines), or observed with two models;
- a round's base (the model it started from) is not the model of the round before it, so
  the commits do not link into one chain (round 0's model is the initial one);
- epochs decrease along the chain, or a takeover reads a pointer of a later epoch than
  its own;
- a committed round is lost: the chain has a gap below the final pointer's round, or a
  round observed committed is not on the final chain;
- the final pointer is not the last round of the run, or disagrees with the chain.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phalanx.ha.commitlog import FILE, read_log
from phalanx.ha.pointer import Pointer


@dataclass(frozen=True)
class Link:
    round: int
    model_digest: str
    base_digest: str | None  # None: unknown (observed through a takeover only)
    epoch: int
    source: str


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    rounds: int = 0
    epochs: list[int] = field(default_factory=list)
    refused: int = 0
    uncertain: int = 0
    takeovers: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


def check(entries: list[dict[str, Any]], final: Pointer | None, *, rounds: int) -> Verdict:
    """The verdict on ``entries`` (every coordinator's log lines) and the final pointer."""
    verdict = Verdict()
    links: dict[int, list[Link]] = defaultdict(list)
    for entry in entries:
        kind = entry["kind"]
        if kind == "commit":
            links[entry["round"]].append(_link(entry, entry["epoch"], entry["base_digest"]))
        elif kind == "takeover":
            verdict.takeovers += 1
            if entry["pointer_epoch"] > entry["epoch"]:
                verdict.violations.append(
                    f"epoch {entry['epoch']} took over from a pointer of later epoch "
                    f"{entry['pointer_epoch']}"
                )
            if entry["round"] > 0:
                base = entry.get("base_digest") or None
                links[entry["round"]].append(_link(entry, entry["pointer_epoch"], base))
        elif kind == "refused":
            verdict.refused += 1
        elif kind == "uncertain":
            verdict.uncertain += 1
    if final is not None and final.round > 0:
        links[final.round].append(
            Link(final.round, final.model_digest, final.base_digest, final.epoch, "final pointer")
        )
    chain = _one_per_round(links, verdict)
    _linked(chain, entries, verdict)
    _complete(chain, final, rounds, verdict)
    verdict.rounds = max(chain, default=0)
    verdict.epochs = sorted({link.epoch for link in chain.values()})
    return verdict


def _link(entry: dict[str, Any], epoch: int, base: str | None) -> Link:
    return Link(entry["round"], entry["model_digest"], base, epoch, entry["coordinator"])


def _one_per_round(links: dict[int, list[Link]], verdict: Verdict) -> dict[int, Link]:
    chain: dict[int, Link] = {}
    for round_, seen in sorted(links.items()):
        commits = [link for link in seen if link.source != "final pointer"]
        digests = {link.model_digest for link in seen}
        if len(digests) > 1:
            verdict.violations.append(f"round {round_} observed with {len(digests)} models")
        committers = {(link.epoch, link.source) for link in commits if link.base_digest}
        by_epoch = {epoch for epoch, _ in committers}
        if len(by_epoch) > 1:
            verdict.violations.append(f"round {round_} committed at epochs {sorted(by_epoch)}")
        chain[round_] = next((link for link in seen if link.base_digest), seen[0])
    return chain


def _linked(chain: dict[int, Link], entries: list[dict[str, Any]], verdict: Verdict) -> None:
    initial = {e["model_digest"] for e in entries if e["kind"] == "takeover" and e["round"] == 0}
    if len(initial) > 1:
        verdict.violations.append(f"{len(initial)} different initial models")
    previous_epoch = 0
    for round_, link in sorted(chain.items()):
        before = chain.get(round_ - 1)
        expected = before.model_digest if before else (next(iter(initial), None))
        if link.base_digest is not None and expected is not None and link.base_digest != expected:
            verdict.violations.append(
                f"round {round_} (epoch {link.epoch}) started from {link.base_digest[:12]}, "
                f"not from round {round_ - 1}'s model {expected[:12]}"
            )
        if link.epoch < previous_epoch:
            verdict.violations.append(
                f"round {round_} at epoch {link.epoch} follows epoch {previous_epoch}"
            )
        previous_epoch = max(previous_epoch, link.epoch)


def _complete(chain: dict[int, Link], final: Pointer | None, rounds: int, verdict: Verdict) -> None:
    if final is None:
        verdict.violations.append("no committed pointer at the end")
        return
    if not final.finished or final.round != rounds:
        verdict.violations.append(
            f"the final pointer is round {final.round} (finished={final.finished}); the run "
            f"has {rounds} rounds"
        )
    missing = [r for r in range(1, final.round + 1) if r not in chain]
    if missing:
        verdict.violations.append(f"committed rounds lost (no observation): {missing}")
    beyond = [r for r in chain if r > final.round]
    if beyond:
        verdict.violations.append(f"rounds observed committed beyond the final pointer: {beyond}")


def read_logs(directories: list[Path]) -> list[dict[str, Any]]:
    """Every coordinator's log lines, in one list."""
    return [entry for directory in directories for entry in read_log(directory / FILE)]
