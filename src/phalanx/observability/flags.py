"""What the aggregator's flags cost honest clients: the false-flag rate of a run.

A robust aggregator flags updates it finds suspicious, and with ``health_feedback`` a
flagged client's round counts as a failure, so flags can sideline it. On heterogeneous data
honest clients draw flags too; this module measures how many, and how many rounds they were
kept out for it, from the history alone. Byzantine clients are those the history shows
sending an attack (``injected`` items of kind ``byzantine``); every other client asked is
honest (in a run without attacks, all of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

History = Sequence[Mapping[str, Any]]


def flag_outcomes(history: History) -> dict[str, Any]:
    """The ``flags`` entry of ``summary.json``:

    * ``honest_flagged`` / ``byzantine_flagged``: flags on honest / Byzantine updates (a
      client once per committed round);
    * ``honest_aggregated``: honest updates accepted in committed rounds, and
      ``honest_flag_rate`` = ``honest_flagged / honest_aggregated`` (null with none): the
      false-flag rate;
    * ``honest_sidelined``: times a flag took an honest client out of the healthy pool;
    * ``honest_rounds_lost``: rounds an honest client so sidelined was not asked, from the
      round after the flag until it is asked again (or the run ends) -- exact when every
      healthy client is asked each round, an upper bound when selection samples;
      ``honest_rounds_lost_share`` divides it by the honest client-rounds of the run
      (honest clients x rounds; null with none).
    """
    byzantine = {
        int(item["client"])
        for record in history
        for item in record["injected"]
        if str(item["kind"]) == "byzantine"
    }
    asked = {int(c) for r in history for c in (*r.get("dispatched", ()), *r["accepted"])}
    honest_clients = asked - byzantine
    flagged = {"honest": 0, "byzantine": 0}
    aggregated = 0
    for record in history:
        if record["committed"]:
            aggregated += sum(1 for c in record["accepted"] if c not in byzantine)
            for client in record.get("flagged", ()):
                flagged["byzantine" if client in byzantine else "honest"] += 1
    sidelined, lost = _honest_sidelined(history, byzantine)
    client_rounds = len(honest_clients) * len(history)
    return {
        "honest_flagged": flagged["honest"],
        "byzantine_flagged": flagged["byzantine"],
        "honest_aggregated": aggregated,
        "honest_flag_rate": flagged["honest"] / aggregated if aggregated else None,
        "honest_sidelined": sidelined,
        "honest_rounds_lost": lost,
        "honest_rounds_lost_share": lost / client_rounds if client_rounds else None,
    }


def _honest_sidelined(history: History, byzantine: set[int]) -> tuple[int, int]:
    """(flag sidelinings of honest clients, rounds they were then not asked)."""
    sidelined = lost = 0
    for at, record in enumerate(history):
        for client in record.get("flag_sidelined", ()):
            if client in byzantine:
                continue
            sidelined += 1
            for later in history[at + 1 :]:
                if client in later.get("dispatched", ()):
                    break
                lost += 1
    return sidelined, lost
