"""PNG plots of a run's history: accuracy per round, and updates and faults per round.

Figures are built with matplotlib's object API on an Agg canvas, never through ``pyplot``:
nothing global is touched, no window opens, and plotting is safe from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from phalanx.observability.summary import History
from phalanx.types import FailureKind, RejectReason

_FAILURE_COLORS = {"crash": "tab:red", "timeout": "tab:orange", "drop": "tab:purple"}
_REJECTION_COLORS = ("tab:blue", "tab:cyan", "tab:brown", "tab:pink", "tab:olive", "tab:gray")


def plot_accuracy(history: History, path: Path) -> None:
    """Accuracy per round, loss on a twin axis if reported; discarded rounds as red x."""
    fig, ax = _figure("accuracy per round", "accuracy")
    handles: list[Artist] = []
    rounds, accuracy = _series(history, "accuracy")
    if rounds:
        handles += ax.plot(rounds, accuracy, marker="o", color="tab:blue", label="accuracy")
    rounds, loss = _series(history, "loss")
    if rounds:
        twin = ax.twinx()
        twin.set_ylabel("loss")
        handles += twin.plot(rounds, loss, "--", marker=".", color="tab:orange", label="loss")
    failed = [r["round"] for r in history if not r["committed"]]
    if failed:  # y in axes coordinates: the marks sit on the x axis whatever the scale
        handles += ax.plot(
            failed,
            [0.03] * len(failed),
            "x",
            color="red",
            markersize=10,
            transform=ax.get_xaxis_transform(),
            label="discarded round",
        )
    _finish(fig, ax, handles, path)


def plot_faults(history: History, path: Path) -> None:
    """Stacked bars per round: accepted updates, failures by kind, rejections by reason."""
    fig, ax = _figure("updates and faults per round", "tasks")
    rounds = [r["round"] for r in history]
    bottom = [0] * len(history)
    handles: list[Artist | BarContainer] = []
    for label, heights, color in _layers(history):
        handles.append(ax.bar(rounds, heights, bottom=bottom, color=color, label=label))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    failed = [r["round"] for r in history if not r["committed"]]
    for i, round_ in enumerate(failed):
        span = ax.axvspan(round_ - 0.5, round_ + 0.5, color="red", alpha=0.12, zorder=0)
        if i == 0:
            span.set_label("discarded round")
            handles.append(span)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(fig, ax, handles, path)


def _layers(history: History) -> list[tuple[str, list[int], str]]:
    """(label, height per round, colour) for each bar segment that is non-zero somewhere."""
    if not history:
        return []
    accepted = [len(r["accepted"]) for r in history]
    layers = [("accepted", accepted, "tab:green")]
    failures = [k for k in _kinds(history, "failures", FailureKind) if k != FailureKind.REJECTED]
    for kind in failures:
        heights = [int(r["failures"].get(kind, 0)) for r in history]
        layers.append((kind, heights, _FAILURE_COLORS.get(kind, "tab:gray")))
    for i, reason in enumerate(_kinds(history, "rejections", RejectReason)):
        heights = [int(r["rejections"].get(reason, 0)) for r in history]
        color = _REJECTION_COLORS[i % len(_REJECTION_COLORS)]
        layers.append((f"rejected: {reason}", heights, color))
    return layers


def _kinds(history: History, key: str, order: type[FailureKind | RejectReason]) -> list[str]:
    """Keys of ``key`` present in the history: the enumeration's order, then unknown ones."""
    present = {kind for r in history for kind, n in r[key].items() if n}
    known = [member.value for member in order if member.value in present]
    return known + sorted(present - set(known))


def _series(history: History, metric: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], float(r["metrics"][metric])) for r in history if metric in r["metrics"]]
    return [x for x, _ in points], [y for _, y in points]


def _figure(title: str, ylabel: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _finish(fig: Figure, ax: Axes, handles: Sequence[Artist | BarContainer], path: Path) -> None:
    if handles:
        ax.legend(handles=list(handles), loc="best")
    else:
        ax.text(0.5, 0.5, "no rounds recorded", ha="center", va="center", transform=ax.transAxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
