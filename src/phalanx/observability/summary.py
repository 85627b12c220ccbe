"""One run's history folded into the numbers a person asks about first.

``summarize`` reads a history (one ``RoundRecord.to_json()`` dict per round) and returns
the content of ``summary.json``:

========================  ==================================================================
key                       meaning
========================  ==================================================================
``rounds``                rounds recorded
``rounds_committed``      rounds whose aggregate became the new model
``rounds_failed``         rounds discarded by the commit gate
``failed_rounds``         ``[{"round": r, "reasons": [...]}]`` for each discarded round
``final_model_version``   model version after the last round (0 for an empty history)
``final_accuracy``        accuracy of the last round that reports one; ``null`` if none
``best_accuracy``         highest accuracy of any round; ``null`` if none
``faults_injected``       ``{fault kind: n}`` the fault plan fired (crash, hang, ...)
``faults_detected``       ``{failure kind: n}`` the engine observed (crash, timeout, ...)
``rejections``            ``{reject reason: n}`` why validation refused updates
``retries``               tasks re-dispatched to the same client
``replacements``          tasks re-dispatched to another client
``probes``                tasks sent to sidelined clients to test their health
``cancelled``             over-selected tasks cancelled once no longer needed
``partial_updates``       accepted updates with a work fraction below 1
``updates_accepted``      updates that passed validation, discarded rounds included
``corrupt_injected``      corrupt faults injected
``corrupt_aggregated``    corrupt updates accepted in a committed round: they reached the model
``aggregator_discarded``  ``{client: n}`` committed rounds where the robust aggregator gave the
                          client's accepted update no say (Krum, Bulyan, ...)
``aggregator_scaled``     ``{client: n}`` committed rounds where its update was clipped down
``aggregator_flagged``    ``{client: n}`` committed rounds where the aggregator flagged it as
                          suspicious (fed to the health monitor with health_feedback)
``byzantine``             ``{"clients", "updates_sent", "aggregated", "discarded", "scaled"}``:
                          Byzantine updates injected, and how many of those that reached a
                          committed round's aggregation were given a full say, none, or a
                          clipped one; ``honest_discarded`` counts honest updates given none
``flags``                 what the aggregator's flags cost honest clients: flags on honest
                          and Byzantine updates, the false-flag rate, honest clients a flag
                          sidelined and the rounds they lost (``observability.flags``)
``wall_time_s``           wall-clock seconds of the whole run
``train_time_s``          wall-clock seconds spent in rounds
``sim_time_s``            simulated seconds, last round's end minus first round's start
========================  ==================================================================

Keys of ``extra`` (scenario name, seed, aggregator, ...) are merged in at the top level.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from phalanx.observability.flags import flag_outcomes
from phalanx.types import FaultKind

History = Sequence[Mapping[str, Any]]


def summarize(
    history: History,
    *,
    wall_time_s: float,
    train_time_s: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fold ``history`` into the ``summary.json`` dict described in the module docstring."""
    accuracies = [r["metrics"]["accuracy"] for r in history if "accuracy" in r["metrics"]]
    corrupt = [item for r in history for item in r["injected"] if _is_corrupt(item)]
    summary: dict[str, Any] = {
        "rounds": len(history),
        "rounds_committed": sum(1 for r in history if r["committed"]),
        "rounds_failed": sum(1 for r in history if not r["committed"]),
        "failed_rounds": [
            {"round": r["round"], "reasons": list(r["reasons"])}
            for r in history
            if not r["committed"]
        ],
        "final_model_version": history[-1]["model_version"] if history else 0,
        "final_accuracy": accuracies[-1] if accuracies else None,
        "best_accuracy": max(accuracies) if accuracies else None,
        "faults_injected": _sum_counts(history, "injected_counts"),
        "faults_detected": _sum_counts(history, "failures"),
        "rejections": _sum_counts(history, "rejections"),
        "retries": sum(r["retries"] for r in history),
        "replacements": sum(r["replacements"] for r in history),
        "probes": sum(r["probes"] for r in history),
        "cancelled": sum(r["cancelled"] for r in history),
        "partial_updates": sum(r["partial"] for r in history),
        "updates_accepted": sum(len(r["accepted"]) for r in history),
        "corrupt_injected": len(corrupt),
        "corrupt_aggregated": sum(_corrupt_aggregated(r) for r in history),
        "aggregator_discarded": _per_client(history, "discarded"),
        "aggregator_scaled": _per_client(history, "scaled"),
        "aggregator_flagged": _per_client(history, "flagged"),
        "byzantine": _byzantine(history),
        "flags": flag_outcomes(history),
        "wall_time_s": wall_time_s,
        "train_time_s": train_time_s,
        "sim_time_s": history[-1]["ended_at"] - history[0]["started_at"] if history else 0.0,
    }
    summary.update(extra or {})
    return summary


def _is_corrupt(item: Mapping[str, Any]) -> bool:
    return str(item["kind"]) == FaultKind.CORRUPT.value


def _sum_counts(history: History, key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for record in history:
        total.update(record[key])
    return dict(sorted(total.items()))


def _corrupt_aggregated(record: Mapping[str, Any]) -> int:
    """Corrupt faults of ``record`` whose (client, attempt) update entered the model."""
    if not record["committed"]:
        return 0
    entered = set(zip(record["accepted"], record["accepted_attempts"], strict=True))
    return sum(
        1
        for item in record["injected"]
        if _is_corrupt(item) and (item["client"], item["attempt"]) in entered
    )


def _per_client(history: History, key: str) -> dict[str, int]:
    total: Counter[int] = Counter()
    for record in history:
        if record["committed"]:
            total.update(int(client) for client in record.get(key, ()))
    return {str(client): n for client, n in sorted(total.items())}


def _byzantine(history: History) -> dict[str, Any]:
    """What became of the Byzantine clients' updates, from the fault log of each round."""
    sent = aggregated = discarded = scaled = honest_discarded = 0
    clients: set[int] = set()
    for record in history:
        attacks = {
            (item["client"], item["attempt"])
            for item in record["injected"]
            if str(item["kind"]) == "byzantine"
        }
        clients.update(client for client, _ in attacks)
        sent += len(attacks)
        if not record["committed"]:
            continue
        dropped = set(record.get("discarded", ()))
        clipped = {int(c) for c in record.get("scaled", {})}
        for client, attempt in zip(record["accepted"], record["accepted_attempts"], strict=True):
            if (client, attempt) not in attacks:
                honest_discarded += client in dropped
            elif client in dropped:
                discarded += 1
            elif client in clipped:
                scaled += 1
            else:
                aggregated += 1
    return {
        "clients": sorted(clients),
        "updates_sent": sent,
        "aggregated": aggregated,
        "discarded": discarded,
        "scaled": scaled,
        "honest_discarded": honest_discarded,
    }


def render_summary(summary: Mapping[str, Any]) -> Table:
    """A two-column table of the summary's headline numbers, for the terminal."""
    table = Table(title="phalanx run summary")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for label, value in _rows(summary):
        table.add_row(label, value)
    return table


def _rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("rounds committed", f"{s['rounds_committed']} of {s['rounds']}"),
        ("rounds failed", _failed(s)),
        ("final accuracy", _accuracy(s["final_accuracy"])),
        ("best accuracy", _accuracy(s["best_accuracy"])),
        ("faults injected", _counts(s["faults_injected"])),
        ("faults detected", _counts(s["faults_detected"])),
        ("rejections", _counts(s["rejections"])),
        ("retries", str(s["retries"])),
        ("replacements", str(s["replacements"])),
        ("corrupt aggregated", f"{s['corrupt_aggregated']} of {s['corrupt_injected']}"),
        *_byzantine_rows(s),
        ("wall time", f"{s['wall_time_s']:.2f} s"),
        ("train time", f"{s['train_time_s']:.2f} s"),
    ]


def _byzantine_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    b = s.get("byzantine") or {}
    if b.get("updates_sent"):
        rows.append((
            "byzantine updates",
            f"{b['updates_sent']} sent by clients {b['clients']}: {b['aggregated']} aggregated "
            f"in full, {b['scaled']} clipped, {b['discarded']} discarded, "
            f"{b['updates_sent'] - b['aggregated'] - b['scaled'] - b['discarded']} never "
            "aggregated",
        ))  # fmt: skip
    if s.get("aggregator_discarded") or s.get("aggregator_scaled"):
        rows.append((
            "aggregator",
            f"discarded {sum(s['aggregator_discarded'].values())} updates, clipped "
            f"{sum(s['aggregator_scaled'].values())}, flagged "
            f"{sum(s.get('aggregator_flagged', {}).values())}",
        ))  # fmt: skip
    return rows


def _failed(s: Mapping[str, Any]) -> str:
    rounds = ", ".join(str(item["round"]) for item in s["failed_rounds"])
    return f"{s['rounds_failed']} (rounds {rounds})" if rounds else str(s["rounds_failed"])


def _accuracy(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) if counts else "none"
