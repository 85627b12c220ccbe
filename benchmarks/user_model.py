"""A user's own model and training function: phalanx against a plain PyTorch loop.

Run from the repository root: ``python -m benchmarks.user_model [--repeats 3]
[--markdown docs/user_model.md]``.

The work: examples/custom_model.py's small CNN and training function on scikit-learn's
8x8 digits split over ``--clients`` clients, ``--per-round`` clients per round, ``--rounds``
rounds, the same ``train(model, data, ctx)`` (SGD with momentum, ``--epochs`` local epochs,
batch 16, lr 0.05), weighted FedAvg and a test-set evaluation after every round.

- ``plain loop``: one process, one thread: one local model that gets the global weights with
  ``load_state_dict`` before each client (a fresh optimiser each time), FedAvg of the
  parameters, evaluation. What a careful user writes without a framework. It trains, round
  by round, the very clients whose updates phalanx accepted (the schedule: read from an
  untimed phalanx run before the measurements), so both sides do the same work. Phalanx
  over-selects (``selection.dispatch_count``) and keeps the first replies, which on its
  virtual clock are the smaller clients': a plain loop drawing its own 10 clients a round
  trained 20% more steps (3,040 against 2,542), which flattered phalanx by that much.
- ``phalanx, N worker(s)``: ``Simulation(..., train=train)`` with ``simulation.workers=N``,
  faults off; ``workers=0`` is the in-process mode. Each row checks that the run accepted
  the schedule's clients (the *same clients* column).
- ``phalanx, 2 workers, 20% faults``: crash/hang/corrupt at 20%; its row counts the updates
  trained and the trained updates the engine then threw away (cancelled, late).
- ``two plain loops at once`` and ``plain loop beside a busy neighbour``, for scale: what
  two cores give two trainers, and what a single trainer loses when the other core runs
  anything at all (a process spinning small torch ops, as a coordinator's bookkeeping does;
  its CPU is not counted). One worker is never alone: the coordinator works beside it.
- ``phalanx, 1 worker, coordinator on the worker's core``, for scale: the one-worker run
  with every process of it on one CPU (``sched_setaffinity``, inherited by the worker), so
  the coordinator's work interrupts the worker instead of running beside it: its *in
  train() CPU s* against the free run's says what work on the other core costs the worker.

Each contender runs in its own subprocess with ``OMP_NUM_THREADS=MKL_NUM_THREADS=1`` and
``torch.set_num_threads(1)`` (workers get one thread each). Each of ``--repeats`` repeats
runs the plain loop between every two phalanx contenders and at both ends; a phalanx run's
*plain / this* is against the mean of the two plain runs beside it, and the table gives the
median of those paired ratios and their range; every other number is the median over the
repeats. *whole-process s* is the parent's wall time around the child (interpreter start,
imports, data, training, exit); *training-only s* is the child's own clock from the first
round to the last, evaluation (one pass over the test set per round, on both sides)
included; phalanx's worker processes are forked before it starts (``WorkerTrainer.prepare``,
which first settles the long-lived heap: one full garbage collection and ``gc.freeze``,
about 0.2 s), as the plain loop builds its model before its own. Both children import
``torch._dynamo`` (what the first ``torch.optim`` optimiser would otherwise import, about 1
s) before their clocks start: phalanx does so when it builds its trainer, the plain loop
explicitly, so training-only time excludes that import for both and whole-process time
includes it for both. *training CPU s* is the CPU time over the same span (phalanx's forks
of its workers included) of every process the contender used (phalanx's workers included):
the work done, whatever else the machine runs. Two workers can beat the plain loop by at
most twice its CPU time over phalanx's, and only on a machine where nothing else wants the
two cores. *in train() CPU s* is the part of it spent inside the user's ``train`` itself
(its thread's CPU time per call, summed over every call in every process through a counter
in shared memory that forked workers inherit); the rest, *outside CPU s*, is what each side
spends around it: for the plain loop ``load_state_dict``, the averaging and the evaluation;
for phalanx also the reloads, the hand-offs, validation and the engine. The same wrapper
times both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SEED = 7


@dataclass(frozen=True)
class Work:
    clients: int = 20
    per_round: int = 10
    rounds: int = 30
    epochs: int = 2


# --- the children (imported lazily: the parent stays light) ------------------------------


def _config(work: Work, workers: int, fault_rate: float) -> Any:
    from phalanx.config import (
        CheckpointConfig,
        DigitsWorkload,
        FaultConfig,
        FaultRule,
        RunConfig,
        SelectionConfig,
        SimulationConfig,
        TrainingConfig,
    )  # fmt: skip

    faults = FaultConfig(enabled=fault_rate > 0, rules=(FaultRule(rate=fault_rate),))
    return RunConfig(
        name="user-model", seed=SEED, rounds=work.rounds,
        workload=DigitsWorkload(num_clients=work.clients),
        training=TrainingConfig(local_epochs=work.epochs, batch_size=16, lr=0.05),
        selection=SelectionConfig(clients_per_round=work.per_round),
        faults=faults, simulation=SimulationConfig(workers=workers),
        checkpoint=CheckpointConfig(every=0),
    )  # fmt: skip


def _cpu_s() -> float:
    """CPU seconds of this process (all its threads) and of its children reaped so far."""
    own, reaped = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime


def timed(train: Any, spent: Any) -> Any:
    """``train`` adding its thread's CPU seconds per call to ``spent`` (a shared
    ``multiprocessing.Value``: forked workers inherit it and add to the same counter)."""

    def timed_train(model: Any, data: Any, ctx: Any) -> Any:
        start = time.thread_time()
        try:
            return train(model, data, ctx)
        finally:
            with spent.get_lock():
                spent.value += time.thread_time() - start

    return timed_train


def _accuracy(model: Any, test: Any) -> float:
    import torch

    with torch.no_grad():
        return float((model(test.x).argmax(1) == test.y).float().mean())


def child_plain(work: Work, schedule: list[list[int]]) -> dict[str, Any]:
    import importlib
    import multiprocessing

    import torch
    from examples.custom_model import cnn
    from examples.custom_model import train as user_train

    from phalanx.client.sdk import TrainContext, total_steps
    from phalanx.core.rng import torch_rng
    from phalanx.simulation import initial_model
    from phalanx.workloads import build_workload

    importlib.import_module("torch._dynamo")  # as phalanx preloads it: outside both clocks
    spent = multiprocessing.Value("d", 0.0)
    train = timed(user_train, spent)
    config = _config(work, 1, 0.0)
    digits = build_workload(config.workload, SEED)
    model = initial_model(cnn, SEED)
    local = initial_model(cnn, SEED)
    torch.manual_seed(SEED)  # dropout draws from the global generator: reproducible runs
    cpu, start = _cpu_s(), time.perf_counter()
    for r, chosen in enumerate(schedule):
        if not chosen:  # a round phalanx discarded: the model stays as it was
            continue
        weights, total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}, 0
        for client in chosen:
            data = digits.clients[client]
            local.load_state_dict(model.state_dict())
            local.train()
            steps = total_steps(len(data), config.training)
            ctx = TrainContext(
                client, r, 1, steps, steps, config.training, torch_rng(SEED, "data", r, client, 1)
            )
            train(local, data, ctx)
            for name, p in local.named_parameters():
                weights[name] += p.detach() * len(data)
            total += len(data)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(weights[name] / total)
        model.eval()
        accuracy = _accuracy(model, digits.test)
    train_s = time.perf_counter() - start
    return {
        "train_s": train_s, "cpu_s": _cpu_s() - cpu, "fn_cpu_s": spent.value,
        "accuracy": accuracy, "trained": -1,
    }  # fmt: skip


def child_phalanx(work: Work, workers: int, fault_rate: float) -> dict[str, Any]:
    import multiprocessing

    from examples.custom_model import cnn
    from examples.custom_model import train as user_train

    from phalanx.engine.heap import settle_long_lived
    from phalanx.simulation import Simulation
    from phalanx.workloads import build_workload

    config = _config(work, workers, fault_rate)
    digits = build_workload(config.workload, SEED)
    spent = multiprocessing.Value("d", 0.0)
    train = timed(user_train, spent)
    with Simulation(
        config, model=cnn, clients=digits.clients, test=digits.test, train=train
    ) as simulation:
        # The heap settles once per process, before phalanx's clock (WorkerTrainer.prepare):
        # settled here first, it is outside the CPU span too (whole-process time has it).
        settle_long_lived()
        cpu = _cpu_s()
        result = simulation.run()  # its workers are reaped when it ends: their CPU counts
    return {
        "train_s": result.train_time_s,
        "cpu_s": _cpu_s() - cpu,
        "fn_cpu_s": spent.value,
        "accuracy": result.history[-1]["metrics"]["accuracy"],
        "trained": result.training.trained,
        "thrown_away": result.training.thrown_away,
        "schedule": [record["accepted"] for record in result.history],
    }


def child_main(name: str, work: Work, schedule: Path | None) -> None:
    import torch

    torch.set_num_threads(1)
    if name.endswith(ONE_CORE):  # this process and every worker it forks share one CPU
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
        name = name.removesuffix(ONE_CORE)
    if name == "plain":
        if schedule is None:
            raise SystemExit("the plain loop needs --schedule (the clients to train)")
        report = child_plain(work, json.loads(schedule.read_text()))
    else:
        workers, _, rate = name.removeprefix("phalanx-").partition("-")
        report = child_phalanx(work, int(workers), float(rate or 0))
    print(json.dumps(report))


# --- the parent ----------------------------------------------------------------------------

SCHEDULE_FROM = "phalanx-0"  # an untimed run of it gives the schedule the plain loop trains
CONTENDERS = {  # name -> label
    "plain": "plain loop (1 thread)",
    "phalanx-0": "phalanx, in-process (workers=0)",
    "phalanx-1": "phalanx, 1 worker",
    "phalanx-2": "phalanx, 2 workers",
    "phalanx-2-0.2": "phalanx, 2 workers, 20% faults",
    "plain-pair": "two plain loops at once (what 2 cores give)",
    "plain-busy": "plain loop beside a busy neighbour",
    "phalanx-1-onecore": "phalanx, 1 worker, coordinator on the worker's core",
}
ONE_CORE = "-onecore"  # a contender run with all its processes on one CPU
PLAIN_RUNS = ("plain-pair", "plain-busy")  # contenders that run the plain loop itself
# The neighbour of ``plain-busy``: small torch ops on one thread, bounded in time.
_BUSY = (
    "import sys, time, torch\n"
    "torch.set_num_threads(1)\n"
    "x, deadline = torch.randn(4810), time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < deadline:\n"
    "    (x - 0.5 * x).norm()\n"
)
# Contenders that do this many times the plain loop's work: their ratio is scaled by it.
WORK_MULTIPLE = {"plain-pair": 2}


@dataclass
class Runs:
    whole: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    fn_cpu: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    thrown: list[int] = field(default_factory=list)
    same_clients: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    paired: list[float] = field(default_factory=list)  # plain / this, against flanking plains


def run_child(
    name: str, work: Work, timeout_s: float, schedule: Path | None = None
) -> tuple[float, dict[str, Any]]:
    """One contender's run in its own process (``plain-pair``: two plain loops started
    together, reported as one: the slower one's time, both CPU times added; ``plain-busy``:
    the plain loop with the ``_BUSY`` neighbour running from before its start to its end)."""
    copies = WORK_MULTIPLE.get(name, 1)
    child = "plain" if name in PLAIN_RUNS else name
    argv = [sys.executable, "-m", "benchmarks.user_model", "--child", child]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in vars(work).items()]
    if schedule is not None:
        argv.append(f"--schedule={schedule}")
    env = {**os.environ, **CHILD_ENV}
    neighbour = (
        subprocess.Popen([sys.executable, "-c", _BUSY, str(timeout_s)], env=env)
        if name == "plain-busy"
        else None
    )
    try:
        return _run_copies(argv, env, copies, timeout_s)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def _run_copies(
    argv: list[str], env: dict[str, str], copies: int, timeout_s: float
) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(copies)
    ]
    reports = [_report(proc, timeout_s) for proc in procs]
    wall = time.perf_counter() - start
    if copies == 1:
        return wall, reports[0]
    combined = dict(reports[0])
    combined["train_s"] = max(r["train_s"] for r in reports)
    for key in ("cpu_s", "fn_cpu_s"):
        combined[key] = sum(r[key] for r in reports)
    return wall, combined


def _report(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        tail = (err.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"exit {proc.returncode}: {tail[:200]}")
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def measure(
    names: list[str], work: Work, repeats: int, timeout_s: float, schedule: Path
) -> dict[str, Runs]:
    """Every contender ``repeats`` times; first, untimed, the schedule (the clients phalanx
    accepts each round) that the plain loop then trains.

    A repeat runs the plain loop between every two phalanx contenders and at both ends
    (plain, A, plain, B, ..., plain), so each phalanx run has a plain run just before and
    just after it: its ratio is against their mean (``Runs.paired``), which cancels a
    machine that drifts slower or faster over a minute. Ratios of medians taken over a whole
    repeat do not: on this VM the same child varies by 15-25% from one minute to the next.
    """
    _, report = run_child(SCHEDULE_FROM, work, timeout_s)
    reference = report["schedule"]
    schedule.write_text(json.dumps(reference))
    runs = {name: Runs() for name in names}
    contenders = [name for name in names if name != "plain"]
    for _ in range(repeats):
        order = ["plain"] if "plain" in names else []
        for name in contenders:
            order += [name, "plain"] if "plain" in names else [name]
        plain_s: list[float | None] = []  # this repeat's plain runs, in order
        mine: dict[str, float | None] = {}
        for name in order:
            train_s = _run_into(runs[name], name, work, timeout_s, schedule, reference)
            if name == "plain":
                plain_s.append(train_s)
            else:
                mine[name] = train_s
        for i, name in enumerate(contenders):
            flank = [s for s in plain_s[i : i + 2] if s is not None]
            own = mine.get(name)
            if flank and own:
                runs[name].paired.append(WORK_MULTIPLE.get(name, 1) * statistics.mean(flank) / own)
    return runs


def _run_into(
    r: Runs, name: str, work: Work, timeout_s: float, schedule: Path, reference: Any
) -> float | None:
    """One run of ``name`` added to ``r``; its training-only seconds (None if it failed)."""
    try:
        wall, report = run_child(name, work, timeout_s, schedule)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        r.errors.append(str(exc))
        return None
    r.whole.append(wall)
    r.train.append(report["train_s"])
    r.cpu.append(report["cpu_s"])
    r.fn_cpu.append(report["fn_cpu_s"])
    r.accuracy.append(report["accuracy"])
    r.trained.append(report["trained"])
    r.thrown.append(report.get("thrown_away", 0))
    r.same_clients.append(report.get("schedule", reference) == reference)
    return float(report["train_s"])


def _median(values: list[float] | list[int]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(runs: dict[str, Runs]) -> tuple[list[str], list[str]]:
    """(markdown table lines, verdict lines)."""
    lines = [
        "| contender | whole-process s | training-only s | plain / this (training) "
        "| ratio range | training CPU s | in train() CPU s | outside CPU s | accuracy "
        "| updates trained | trained, thrown away | same clients |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in runs.items():
        ratio, spread = (1.0, "—") if name == "plain" else (_median(r.paired), _range(r.paired))
        plain = name.startswith("plain")
        trained = _median(r.trained) if not plain else None
        thrown = max(r.thrown) if r.thrown and not plain else None
        label = CONTENDERS[name] + (f" (* {r.errors[0]})" if r.errors else "")
        same = _yes(all(r.same_clients)) if name in SAME_WORK and r.same_clients else "—"
        outside = [cpu - fn for cpu, fn in zip(r.cpu, r.fn_cpu, strict=True)]
        lines.append(
            f"| {label} | {_fmt(_median(r.whole), '.2f')} | {_fmt(_median(r.train), '.3f')} "
            f"| {_fmt(ratio, '.2f')}x | {spread} | {_fmt(_median(r.cpu), '.2f')} "
            f"| {_fmt(_median(r.fn_cpu), '.2f')} | {_fmt(_median(outside), '.2f')} "
            f"| {_fmt(_median(r.accuracy), '.3f')} "
            f"| {_fmt(trained, '.0f')} | {_fmt(thrown, '.0f')} | {same} |"
        )
    return lines, verdicts(runs)


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x" if values else "—"


SAME_WORK = ("phalanx-0", "phalanx-1", "phalanx-2")  # faults change whom a round accepts


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def verdicts(runs: dict[str, Runs]) -> list[str]:
    def ratio(name: str) -> float | None:
        return _median(runs[name].paired) if name in runs else None

    def verdict(ok: bool | None) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A"}[ok]

    two, one = ratio("phalanx-2"), ratio("phalanx-1")
    faulty = runs.get("phalanx-2-0.2")
    thrown = max(faulty.thrown) if faulty and faulty.thrown else None
    same = [ok for name in SAME_WORK if name in runs for ok in runs[name].same_clients]
    return [
        f"- same work: the plain loop trains the clients phalanx accepted, every round: "
        f"{verdict(all(same) if same else None)}",
        f"- 2 workers: plain / phalanx (median of flanked pairs) = {_fmt(two, '.2f')}x, "
        f"target >= 1.6x: "
        f"{verdict(None if two is None else two >= 1.6)}",
        f"- 1 worker: plain / phalanx (median of flanked pairs) = {_fmt(one, '.2f')}x, "
        f"target >= 1.0x (never slower): "
        f"{verdict(None if one is None else one >= 1.0)}",
        f"- 20% faults: trained updates thrown away = {_fmt(thrown, '.0f')}, target 0: "
        f"{verdict(None if thrown is None else thrown == 0)}",
        f"- for scale, not a target: two plain loops at once do twice the work "
        f"{_fmt(ratio('plain-pair'), '.2f')}x as fast as one (the most 2 cores give it here)",
        f"- for scale, not a target: the plain loop beside a busy neighbour runs "
        f"{_fmt(ratio('plain-busy'), '.2f')}x as fast as alone (what work on the other core "
        f"costs a single trainer here)",
        *_one_core_lines(runs),
    ]


def _one_core_lines(runs: dict[str, Runs]) -> list[str]:
    """What the coordinator's work on the other core costs one worker: the worker's time in
    ``train()`` with the coordinator on the other core and on its own, beside the plain
    loop's (the same calls)."""
    own = f"phalanx-1{ONE_CORE}"
    if own not in runs or "plain" not in runs or "phalanx-1" not in runs:
        return []
    plain, free, pinned = (_median(runs[n].fn_cpu) for n in ("plain", "phalanx-1", own))
    return [
        f"- for scale, not a target: in train() CPU, plain loop {_fmt(plain, '.2f')} s; "
        f"1 worker with the coordinator on the other core {_fmt(free, '.2f')} s, on the "
        f"worker's own core {_fmt(pinned, '.2f')} s (the coordinator's CPU then adds to the "
        f"wall time instead)"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for name, default in vars(Work()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", action="append", choices=sorted(CONTENDERS))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--schedule", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Work(args.clients, args.per_round, args.rounds, args.epochs)
    if args.child:
        child_main(args.child, work, args.schedule)
        return
    names = args.only or list(CONTENDERS)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="user-model-") as tmp:
        runs = measure(names, work, args.repeats, args.timeout, Path(tmp) / "schedule.json")
    lines, checks = table(runs)
    where = (
        f"_{work.clients} clients, {work.per_round} per round, {work.rounds} rounds, "
        f"{work.epochs} local epochs; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, medians of {args.repeats} repeats (each phalanx run between "
        f"two plain runs); load average "
        f"(1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after._"
    )
    text = "\n".join([*lines, "", *checks, "", where, ""])
    print(text)
    if args.markdown:
        title = "# A user's own model: phalanx against a plain PyTorch loop"
        how = "`python -m benchmarks.user_model` (see `benchmarks/README.md`)."
        args.markdown.write_text("\n\n".join([title, how, text]))


if __name__ == "__main__":
    main()
