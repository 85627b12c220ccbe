"""The client side of phalanx: what runs where the data is.

- ``sdk``: the training function a user writes (``train(model, data, ctx)``) and its
  ``TrainContext``; loading the global weights into the user's model.
- ``payload``: sealing a trained result into a ``ClientUpdate`` with its digest; checking
  a fetched model against its reference.
- ``partial``: how many steps to take in a task's time-to-live.
- ``faults``: an honest client, and crash / hang / drop / corruption / Byzantine behaviour
  as wrappers around it; ``adversary``: the Byzantine clients' shared attack.

The simulation composes N clients from these; a real client process runs one. Nothing here
imports the engine, aggregation, plots or a transport, so a client node installs without the
``server`` extra (matplotlib, scikit-learn, scipy, fsspec).
"""

from phalanx.client.adversary import Adversary
from phalanx.client.faults import (
    Byzantine,
    Client,
    ClientFault,
    Corrupting,
    Crashing,
    Dropping,
    Hanging,
    HonestClient,
    Observed,
    Reply,
    Trainer,
)
from phalanx.client.partial import Pace, steps_to_do
from phalanx.client.payload import Trained, receive_model, reseal, seal
from phalanx.client.sdk import TrainContext, UserTrainFn, run_user_training, total_steps

__all__ = [
    "Adversary",
    "Byzantine",
    "Client",
    "ClientFault",
    "Corrupting",
    "Crashing",
    "Dropping",
    "Hanging",
    "HonestClient",
    "Observed",
    "Pace",
    "Reply",
    "TrainContext",
    "Trained",
    "Trainer",
    "UserTrainFn",
    "receive_model",
    "reseal",
    "run_user_training",
    "seal",
    "steps_to_do",
    "total_steps",
]
