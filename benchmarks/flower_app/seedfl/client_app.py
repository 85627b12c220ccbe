"""The ClientApp: each SuperNode's partition (``partition-id`` in its node config) is one
phalanx client's data; a train message carries the global model, the reply the trained one."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from seedfl.task import load, model_for, train

app = ClientApp()


@app.train()
def local_training(msg: Message, context: Context) -> Message:
    data = load(str(context.run_config["data-path"]))
    client = int(context.node_config["partition-id"])
    x = torch.from_numpy(data["clients_x"][client])
    y = torch.from_numpy(data["clients_y"][client])
    model = model_for(data)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(msg.content["config"]["server-round"])
    loss = train(
        model,
        x,
        y,
        epochs=int(context.run_config["local-epochs"]),
        batch=int(context.run_config["batch-size"]),
        lr=float(context.run_config["lr"]),
        seed=int(context.run_config["seed"]) * 1_000_003 + server_round * 1_000 + client,
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)}),
        }
    )
    return Message(content=content, reply_to=msg)
