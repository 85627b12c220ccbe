"""The ServerApp: FedAvg over 10 of the 20 SuperNodes per round, the global model evaluated
on the seed's test set after every round (as phalanx does), and a JSON result file with the
training time (first round sent to last round aggregated) and the accuracies."""

from __future__ import annotations

import json
import os
import time

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from seedfl.task import accuracy, load, model_for

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    data = load(str(config["data-path"]))
    model = model_for(data)
    test_x, test_y = torch.from_numpy(data["test_x"]), torch.from_numpy(data["test_y"])
    accuracies: list[float] = []
    start = time.perf_counter()  # reset once every SuperNode is connected

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        value = accuracy(model, test_x, test_y)
        if server_round > 0:  # round 0 is the initial model
            accuracies.append(value)
            progress = {"rounds": server_round, "train_time_s": time.perf_counter() - start}
            write_json(str(config["result-path"]) + ".progress", progress)
        return MetricRecord({"accuracy": value})

    nodes = int(config["min-nodes"])
    strategy = FedAvg(
        fraction_train=float(config["fraction-train"]),
        fraction_evaluate=0.0,
        min_train_nodes=max(1, round(nodes * float(config["fraction-train"]))),
        min_evaluate_nodes=0,
        min_available_nodes=nodes,
    )
    deadline = time.monotonic() + 300  # the clock starts once every SuperNode is connected
    while len(list(grid.get_node_ids())) < nodes and time.monotonic() < deadline:
        time.sleep(0.2)
    start = time.perf_counter()
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(config["num-server-rounds"]),
        timeout=600.0,
        evaluate_fn=evaluate,
    )
    result = {
        "train_time_s": time.perf_counter() - start,
        "rounds": len(accuracies),
        "final_accuracy": accuracies[-1] if accuracies else None,
        "accuracies": accuracies,
        "serverapp_pid": os.getpid(),
    }
    write_json(str(config["result-path"]), result)


def write_json(path: str, document: dict[str, object]) -> None:
    """Atomically: the benchmark polls for this file and must never read half of it."""
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        json.dump(document, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(path + ".tmp", path)
