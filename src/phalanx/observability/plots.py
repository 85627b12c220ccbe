"""PNG plots of a run's history: the global model's test metrics, and what became of every
task per round (aggregated in full, clipped, discarded by the aggregator, Byzantine or not,
failed, rejected) with flagged updates and sidelined clients.

Figures are built with matplotlib's object API on an Agg canvas, never through ``pyplot``:
nothing global is touched, no window opens, and plotting is safe from any thread. Each
series is one artist (a filled step outline from ``stairs``, one line), never one patch per
round: a 1,000-round run draws as fast and reads as well as a 50-round one, and drawing
both figures costs a few tens of milliseconds once matplotlib is imported.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch
from matplotlib.ticker import MaxNLocator

from phalanx.core.files import write_atomic
from phalanx.observability.summary import History
from phalanx.types import FailureKind, RejectReason

_FAILURE_COLORS = {"crash": "tab:red", "timeout": "tab:orange", "drop": "tab:brown"}
_REJECTION_COLORS = ("tab:blue", "tab:cyan", "tab:pink", "tab:olive", "tab:gray", "navy")
_FATES = ("aggregated in full", "clipped", "discarded by aggregator")
_FATE_COLORS = {  # honest, then Byzantine
    False: ("tab:green", "yellowgreen", "darkseagreen"),
    True: ("#6a1b9a", "#ab47bc", "#e1bee7"),
}
_MARKERS_UP_TO = 120  # rounds: beyond, markers would merge into a smear
Series = tuple[str, list[float], str]  # (label, value per round, colour)


# --- accuracy ------------------------------------------------------------------------------


def plot_accuracy(history: History, path: Path) -> None:
    """The global model's test accuracy (and backdoor success, if measured) per evaluated
    round, loss on a twin axis; discarded rounds as red x on the round axis."""
    rates = [m for m in ("accuracy", "backdoor_asr") if _series(history, m)[0]]
    plotted = [*rates, *(["loss"] if _series(history, "loss")[0] else [])]
    fig, ax = _figure(_accuracy_title(history, plotted), "accuracy" if rates else "")
    handles: list[Artist] = []
    marker = "o" if len(history) <= _MARKERS_UP_TO else None
    for metric, color in zip(rates, ("tab:blue", "tab:purple"), strict=False):
        rounds, values = _series(history, metric)
        handles += ax.plot(rounds, values, marker=marker, color=color, label=_LABELS[metric])
    rounds, loss = _series(history, "loss")
    if rounds:
        twin = ax.twinx()
        twin.set_ylabel("loss")
        handles += twin.plot(rounds, loss, "--", color="tab:orange", label="loss",
                             marker="." if marker else None)  # fmt: skip
    failed = [r["round"] for r in history if not r["committed"]]
    if failed:  # y in axes coordinates: the marks sit on the x axis whatever the scale
        handles += ax.plot(failed, [0.03] * len(failed), "x", color="red", markersize=8,
                           transform=ax.get_xaxis_transform(), label="discarded round")  # fmt: skip
    _finish(fig, [(ax, handles)], path)


_LABELS = {"accuracy": "accuracy", "backdoor_asr": "backdoor success rate", "loss": "loss"}


def _accuracy_title(history: History, plotted: Sequence[str]) -> str:
    """Says what is drawn: which metrics, and how often they were measured."""
    what = " and ".join(_LABELS[m] for m in plotted) or "no metrics"
    evaluated = len(_series(history, plotted[0])[0]) if plotted else 0
    when = "after each round" if evaluated == len(history) else (
        f"measured after {evaluated} of {len(history)} rounds")  # fmt: skip
    return f"global model on the test set: {what}, {when}"


# --- faults --------------------------------------------------------------------------------


def plot_faults(history: History, path: Path) -> None:
    """Tasks per round stacked by outcome; below, flagged updates and sidelined clients.
    Past ``_BIN_ABOVE`` rounds every series is averaged over bins of consecutive rounds."""
    size = math.ceil(len(history) / _BINS) if len(history) > _BIN_ABOVE else 1
    binned = f" (mean per round over {size}-round bins)" if size > 1 else ""
    watch = _watch_series(history)
    fig, axes = _figure_rows(f"what became of each task, per round{binned}", bool(watch))
    every = _edges(history)
    edges = every[::size] if len(history) % size == 0 else [*every[::size], every[-1]]
    panels: list[tuple[Axes, list[Artist]]] = [
        (axes[0], _stack(axes[0], edges, task_layers(history), size))
    ]
    if watch:
        handles: list[Artist] = []
        for label, values, color in watch:
            handles.append(_steps(axes[1], _bin(values, size), edges, [0.0], fill=False,
                                  color=color, label=label, linewidth=1.5))  # fmt: skip
        axes[1].set_ylabel("clients")
        axes[1].set_ylim(bottom=0)
        panels.append((axes[1], handles))
    mask = _bin([0.0 if r["committed"] else 1.0 for r in history], size)
    for ax in axes:
        if size == 1:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        handle = _discarded_band(ax, edges, mask)
        if handle is not None and ax is axes[0]:
            panels[0][1].append(handle)
    _finish(fig, panels, path)


_BIN_ABOVE = 300  # rounds drawn one step each; beyond, bins of consecutive rounds
_BINS = 150


def _bin(values: Sequence[float], size: int) -> list[float]:
    """Means over consecutive runs of ``size`` values (the last run may be shorter)."""
    if size == 1:
        return list(values)
    chunks = [values[i : i + size] for i in range(0, len(values), size)]
    return [sum(chunk) / len(chunk) for chunk in chunks]


def _stack(ax: Axes, edges: list[float], layers: list[Series], size: int) -> list[Artist]:
    ax.set_ylabel("tasks")
    bottom = [0.0] * (len(edges) - 1)
    handles: list[Artist] = []
    for label, per_round, color in layers:
        heights = _bin(per_round, size)
        top = [b + h for b, h in zip(bottom, heights, strict=True)]
        handles.append(_steps(ax, top, edges, bottom, fill=True, color=color, label=label,
                              linewidth=0))  # fmt: skip
        bottom = top
    return handles


def task_layers(history: History) -> list[Series]:
    """(label, tasks per round, colour) of every outcome that happened at least once: the
    fate of accepted updates (honest, then Byzantine), failures by kind, rejections."""
    layers: list[Series] = []
    fates = [_fates(record) for record in history]
    for byzantine in (False, True):
        for i, fate in enumerate(_FATES):
            heights = [float(f[byzantine, fate]) for f in fates]
            label = f"Byzantine: {fate}" if byzantine else fate
            layers.append((label, heights, _FATE_COLORS[byzantine][i]))
    failures = [k for k in _kinds(history, "failures", FailureKind) if k != FailureKind.REJECTED]
    for kind in failures:
        heights = [float(r["failures"].get(kind, 0)) for r in history]
        layers.append((f"failed: {kind}", heights, _FAILURE_COLORS.get(kind, "tab:gray")))
    for i, reason in enumerate(_kinds(history, "rejections", RejectReason)):
        heights = [float(r["rejections"].get(reason, 0)) for r in history]
        layers.append((f"rejected: {reason}", heights, _REJECTION_COLORS[i % 6]))
    return [layer for layer in layers if any(layer[1])]


def _fates(record: Mapping[str, Any]) -> dict[tuple[bool, str], int]:
    """How many accepted updates of ``record`` met each fate, Byzantine or honest."""
    attacks = {
        (item["client"], item["attempt"])
        for item in record["injected"]
        if str(item["kind"]) == "byzantine"
    }
    dropped = set(record.get("discarded", ()))
    clipped = {int(c) for c in record.get("scaled", {})}
    counts = dict.fromkeys(((b, f) for b in (False, True) for f in _FATES), 0)
    pairs = zip(record["accepted"], record["accepted_attempts"], strict=True)
    for client, attempt in pairs:
        fate = _FATES[2] if client in dropped else _FATES[1] if client in clipped else _FATES[0]
        counts[(client, attempt) in attacks, fate] += 1
    return counts


def _watch_series(history: History) -> list[Series]:
    """Flagged updates, sidelined clients and probes per round, where any occurred."""
    series: list[Series] = [
        ("updates flagged by the aggregator", [float(len(r.get("flagged", ()))) for r in history],
         "tab:red"),
        ("clients sidelined (incl. on probation)", [float(r.get("sidelined", 0)) for r in history],
         "black"),
        ("probes sent to sidelined clients", [float(r["probes"]) for r in history], "tab:gray"),
    ]  # fmt: skip
    return [s for s in series if any(s[1])]


def _discarded_band(ax: Axes, edges: list[float], share: list[float]) -> Artist | None:
    """Discarded rounds as one pale red band artist rising to the share discarded (the full
    panel height for a single round)."""
    if not any(share):
        return None
    band: Artist = ax.stairs(
        share, edges, fill=True, color="red", alpha=0.12, linewidth=0,
        transform=ax.get_xaxis_transform(), label="discarded round",
    )  # fmt: skip
    return band


# --- shared --------------------------------------------------------------------------------


def _steps(
    ax: Axes, values: list[float], edges: list[float], baseline: list[float], **style: Any
) -> Artist:
    """``ax.stairs`` without its walk over every segment of the outline to find the data
    limits (a Python loop, the bulk of building a long run's panel): they are the corners.
    One ``baseline`` value is a flat baseline (an outline, not drawn back along it)."""
    flat: Any = baseline[0] if len(baseline) == 1 else baseline  # the stub says float only
    patch = StepPatch(values, edges, baseline=flat, **style)
    ax.add_artist(patch)
    low = min(*baseline, *values)
    ax.update_datalim([(edges[0], low), (edges[-1], max(*baseline, *values))])
    patch.sticky_edges.y.append(min(baseline))
    ax.autoscale_view()
    return patch


def _kinds(history: History, key: str, order: type[FailureKind | RejectReason]) -> list[str]:
    """Keys of ``key`` present in the history: the enumeration's order, then unknown ones."""
    present = {kind for r in history for kind, n in r[key].items() if n}
    known = [member.value for member in order if member.value in present]
    return known + sorted(present - set(known))


def _series(history: History, metric: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], float(r["metrics"][metric])) for r in history if metric in r["metrics"]]
    return [x for x, _ in points], [y for _, y in points]


def _edges(history: History) -> list[float]:
    """Step edges around each recorded round (rounds are consecutive within a history)."""
    rounds = [float(r["round"]) for r in history]
    return [r - 0.5 for r in rounds] + [rounds[-1] + 0.5] if rounds else [0.0]


def warm_up() -> None:
    """Draw and encode a throwaway two-panel figure. The first drawing in a process loads
    fonts, lays out text and sets up the Agg renderer (more than the drawing itself); the
    plot process does it while the run still trains, so the run's own plots are warm."""
    fig, axes = _figure_rows("warm-up 0.5", True)
    axes[0].plot([0, 1, 2], [0.1, 0.5, 0.9], marker="o", label="accuracy")
    axes[1].add_patch(StepPatch([1.0, 2.0], [0.0, 1.0, 2.0], baseline=0.0, label="task"))
    for ax in axes:
        ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small", frameon=False)
    fig.savefig(io.BytesIO(), format="png", pil_kwargs={"compress_level": 1})


def _figure(title: str, ylabel: str) -> tuple[Figure, Axes]:
    fig, axes = _figure_rows(title, False)
    axes[0].set_ylabel(ylabel)
    return fig, axes[0]


def _figure_rows(title: str, second: bool) -> tuple[Figure, list[Axes]]:
    """One panel, or two sharing the round axis (the second a third of the height). Fixed
    margins instead of a layout engine: the legend sits right of the axes."""
    fig = Figure(figsize=(10, 6.5 if second else 4.5))
    FigureCanvasAgg(fig)
    if second:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (2, 1)})
        axes = [top, bottom]
    else:
        axes = [fig.add_subplot()]
    fig.subplots_adjust(left=0.07, right=0.68, top=0.92, bottom=0.1 if second else 0.12)
    fig.suptitle(title)
    axes[-1].set_xlabel("round")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def _finish(fig: Figure, panels: Sequence[tuple[Axes, Sequence[Artist]]], path: Path) -> None:
    """Legends beside their panel (fixed place: nothing to search), then one atomic write."""
    if not any(handles for _, handles in panels):
        ax = panels[0][0]
        ax.text(0.5, 0.5, "no rounds recorded", ha="center", va="center", transform=ax.transAxes)
    for ax, handles in panels:
        if handles:
            ax.legend(handles=list(handles), loc="upper left", bbox_to_anchor=(1.08, 1.0),
                      fontsize="small", frameon=False)  # fmt: skip
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
