"""The measuring half of ``aggregator_speed.py``: a child process that times one side's
aggregators on request. Two run side by side, one per environment:

- ``--side ours`` with phalanx's interpreter: phalanx's rules (``ours.py``);
- ``--side peers`` with ``.venv-peers/bin/python``: ByzFL's and Flower's (``rules.py``,
  loaded by ``peers.py``). That child never imports phalanx, and phalanx's environment
  never holds the peers or their protobuf, grpcio, rich or typer.

The parent (``driver.py``) talks to both over stdin/stdout, one JSON object per line, and
interleaves their calls, so exactly one contender runs at a time. Requests:

- ``{"op": "case", "n", "d", "seed"}``: build the inputs (``rules.make_inputs``; the same
  numpy generator in both children) and answer their CRC-32, which the parent compares;
- ``{"op": "call", "contender", "rule", "format", "out"?}``: one call, preceded by
  ``gc.collect()`` and any per-call preparation (a fresh copy of an input the peer
  modifies in place), both outside the time; answers wall seconds, CPU seconds (user +
  system, the process's CPU clock), system seconds (``getrusage``) and minor page faults;
  with ``out``, writes the output as a float64 ``.npy`` for the agreement check;
- ``{"op": "quit"}``.

Its environment pins OpenMP/MKL/OpenBLAS to one thread before numpy or torch load, and it
sets ``torch.set_num_threads(1)``: one core per contender. CPU time is the figure the table
compares: on a shared machine the wall clock also counts the time other processes held the
core, which is not the rule's cost; both are recorded.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import resource
import sys
import time
import traceback
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.aggregators.peers import load_byzfl, load_flower
from benchmarks.aggregators.rules import Inputs, Thunk, as_vector, make_inputs, rules

Prepare = dict[tuple[str, str, str], Any]  # (contender, rule, format) -> Inputs -> Thunk


def timed(thunk: Thunk) -> tuple[dict[str, float], object]:
    """One call's wall and CPU seconds and minor page faults (collection first, untimed)."""
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu, start = time.process_time(), time.perf_counter()
    output = thunk()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    system = after.ru_stime - before.ru_stime
    return {
        "wall_s": wall,
        "cpu_s": cpu,  # the process's CPU clock (ns), not rusage's tick-scaled split
        "sys_s": system,
        "faults": after.ru_minflt - before.ru_minflt,
    }, output


def ours_side() -> tuple[Prepare, dict[str, Any]]:
    """phalanx's rules: the aggregator is built once per case (outside the time)."""
    from benchmarks.aggregators.ours import OURS  # imports phalanx: this side only
    from phalanx.aggregation import build_aggregator

    def prepare(label: str, i: Inputs) -> Thunk:
        aggregator = build_aggregator(OURS[label](i))
        return functools.partial(aggregator.aggregate, i.t, i.weights)

    table = {("phalanx", label, "torch"): functools.partial(prepare, label) for label in OURS}
    return table, {"versions": {"phalanx": metadata.version("phalanx")}, "missing": {}}


def peers_side() -> tuple[Prepare, dict[str, Any]]:
    """ByzFL's rules on a numpy array and on a torch tensor; Flower's on its NDArrays."""
    byzfl, flower = load_byzfl(), load_flower()
    table: Prepare = {}
    for rule in rules(byzfl, flower):
        for peer, call, formats in (
            (byzfl, rule.byzfl, ("numpy", "torch")),
            (flower, rule.flower, ("NDArrays",)),
        ):
            if peer.missing is None and call.factory is not None:
                for fmt in formats:
                    table[(peer.name, rule.label, fmt)] = functools.partial(
                        lambda factory, f, i: factory(i, f), call.factory, fmt
                    )
    versions = {p.name: p.version for p in (byzfl, flower)}
    missing = {p.name: p.missing for p in (byzfl, flower) if p.missing}
    return table, {"versions": versions, "missing": missing}


def serve(table: Prepare, hello: dict[str, Any]) -> None:
    """Answer requests until ``quit`` or the end of stdin."""
    reply(hello | {"ready": True, "contenders": [list(key) for key in table]})
    inputs: Inputs | None = None
    cache: dict[tuple[str, str, str], Thunk] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            return
        if request["op"] == "case":
            inputs, cache = None, {}
            gc.collect()
            inputs = make_inputs(request["n"], request["d"], request["seed"])
            reply({"crc": zlib.crc32(inputs.x.data)})
            continue
        key = (request["contender"], request["rule"], request["format"])
        try:
            if inputs is None:
                raise RuntimeError("no case loaded")
            if key[0] == "phalanx":  # built once per case: the aggregator holds no inputs
                thunk = cache[key] if key in cache else cache.setdefault(key, table[key](inputs))
            else:  # a peer's preparation may copy inputs it modifies: fresh every call
                thunk = table[key](inputs)
            stats, output = timed(thunk)
        except Exception as error:  # a contender's own error is a result, not a crash
            print(traceback.format_exc(), file=sys.stderr)
            reply({"error": f"{type(error).__name__}: {str(error)[:160]}"})
            continue
        if request.get("out"):
            np.save(Path(request["out"]), as_vector(output), allow_pickle=False)
        del output
        reply(stats)


def reply(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=("ours", "peers"), required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table, hello = ours_side() if args.side == "ours" else peers_side()
    gc.collect()
    gc.freeze()  # what the imports made is never garbage; collecting before a call stays cheap
    serve(table, hello | {"side": args.side})


if __name__ == "__main__":
    main()
