"""The client package: an honest client and each fault as a wrapper around it.

Tiny literal cases: a 3-float model at 10, an honest client that adds its delta. Every
reply is checked the way the engine will see it (digest, echoed model, steps).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from phalanx.client import (
    Adversary,
    Byzantine,
    ClientFault,
    Corrupting,
    Crashing,
    Dropping,
    Hanging,
    HonestClient,
    Observed,
    Trained,
    receive_model,
    steps_to_do,
    total_steps,
)
from phalanx.config import TrainingConfig, build_config
from phalanx.core.codec import decode_as, encode
from phalanx.core.messages import (
    ClientUpdate,
    Envelope,
    PartialWork,
    TaskConfig,
    TaskKey,
    TrainTask,
)
from phalanx.core.models import ModelBook, PublishedModel
from phalanx.core.tensors import Manifest, payload_digest
from phalanx.errors import ProtocolError
from phalanx.types import Corruption, FailureKind

MANIFEST = Manifest.of({"w": torch.zeros(3)})
BOOK = ModelBook(MANIFEST)
REF = BOOK.publish(4, torch.full((3,), 10.0))
MODEL = BOOK.get(REF)
DELTA = torch.tensor([1.0, -2.0, 0.5])


def task(client: int = 1) -> TrainTask:
    return TrainTask(Envelope(run_id="r"), TaskKey(2, client, 1), REF, TaskConfig(1, 8, 0.1, 30.0))


def honest(client: int = 1, calls: list[int] | None = None) -> HonestClient:
    def trainer(t: TrainTask, model: PublishedModel) -> Trained:
        if calls is not None:
            calls.append(t.key.client)
        return Trained({"w": model.params + DELTA * (t.key.client + 1)}, 12, 3, 4, {"loss": 1.0})

    return HonestClient(client, trainer)


def test_an_honest_client_seals_what_it_trained() -> None:
    update = honest().train(task(), MODEL)
    assert isinstance(update, ClientUpdate)
    assert update.base == REF and update.key == task().key and update.envelope.run_id == "r"
    assert (update.steps_done, update.steps_planned, update.num_examples) == (3, 4, 12)
    assert update.digest == payload_digest(update.tensors)
    assert update.sender is None  # the transport fills it in
    assert torch.equal(update.tensors["w"], MODEL.params + 2 * DELTA)


@pytest.mark.parametrize(
    ("wrapper", "kind"),
    [(Crashing, FailureKind.CRASH), (Hanging, FailureKind.TIMEOUT), (Dropping, FailureKind.DROP)],
)
def test_crash_hang_and_drop_reply_with_a_fault_and_train_nothing(
    wrapper: type[Crashing | Hanging | Dropping], kind: FailureKind
) -> None:
    calls: list[int] = []
    reply = wrapper(honest(calls=calls)).train(task(), MODEL)
    assert isinstance(reply, ClientFault) and reply.kind is kind and not calls


@pytest.mark.parametrize("corruption", [Corruption.NOISE, Corruption.NAN, Corruption.SCALE])
def test_self_inflicted_corruption_is_sealed_with_a_matching_digest(corruption: Corruption) -> None:
    client = Corrupting(honest(), corruption, torch.Generator().manual_seed(0), 1.0, -10.0)
    update = client.train(task(), MODEL)
    assert isinstance(update, ClientUpdate)
    assert update.digest == payload_digest(update.tensors)
    sent = update.tensors["w"]
    if corruption is Corruption.SCALE:
        assert torch.allclose(sent - MODEL.params, -10.0 * 2 * DELTA)
    elif corruption is Corruption.NAN:
        assert int(sent.isnan().sum()) == 1
    else:
        assert not torch.allclose(sent, MODEL.params + 2 * DELTA)


def test_a_bit_flip_happens_after_sealing_so_the_digest_betrays_it() -> None:
    client = Corrupting(honest(), Corruption.BITFLIP, torch.Generator().manual_seed(0))
    update = client.train(task(), MODEL)
    assert isinstance(update, ClientUpdate)
    assert update.digest == payload_digest({"w": MODEL.params + 2 * DELTA})
    assert update.digest != payload_digest(update.tensors)


def adversary(attack: str, byzantine: str, params: str = "{}") -> Adversary:
    config = build_config(
        {"workload": {"num_clients": 4}, "selection": {"clients_per_round": 4},
         "quorum": {"min_updates": 1}},
        [f"faults.byzantine.attack={attack}", f"faults.byzantine.clients={byzantine}",
         f"faults.byzantine.params={params}"],
    )  # fmt: skip
    found = Adversary.of(config, MANIFEST, 4)
    assert found is not None
    return found


def test_a_byzantine_client_sends_the_attack_sealed() -> None:
    bad = Byzantine(honest(3), adversary("sign_flip", "[3]"), lambda: [])
    update = bad.train(task(3), MODEL)
    assert isinstance(update, ClientUpdate)
    assert torch.allclose(update.tensors["w"] - MODEL.params, -4 * DELTA)
    assert update.digest == payload_digest(update.tensors)


def test_colluders_see_the_honest_updates_through_the_adversary() -> None:
    """IPM with epsilon 1 sends minus the mean of the honest deltas it saw (clients 0, 1)."""
    adv = adversary("ipm", "[3]", "{epsilon=1.0}")
    for client in (0, 1, 3):
        adv.dispatched(task(client))
    for client in (0, 1):
        Observed(honest(client), adv).train(task(client), MODEL)
    update = Byzantine(honest(3), adv, lambda: []).train(task(3), MODEL)
    assert isinstance(update, ClientUpdate)
    assert torch.allclose(update.tensors["w"] - MODEL.params, -1.5 * DELTA)


def test_wrappers_compose_and_a_fault_inside_wins() -> None:
    rng = torch.Generator().manual_seed(0)
    reply = Corrupting(Crashing(honest()), Corruption.NOISE, rng).train(task(), MODEL)
    assert isinstance(reply, ClientFault) and reply.kind is FailureKind.CRASH


class Pace:
    """1 s of transfers, then 0.5 s a step."""

    def duration(self, steps: int) -> float:
        return 1.0 + 0.5 * steps

    def steps_within(self, budget: float) -> int:
        return max(0, int((budget - 1.0) // 0.5))


def test_partial_work_does_what_fits_in_the_ttl_if_it_is_worth_sending() -> None:
    on = PartialWork(enabled=True, min_fraction=0.5)
    assert steps_to_do(10, 6.0, Pace(), on) == 10  # fits whole: 1 + 5 = 6 s
    assert steps_to_do(10, 4.0, Pace(), on) == 6  # 6 steps fit in 4 s
    assert steps_to_do(10, 3.0, Pace(), on) == 10  # 4 < 5: not worth it, try it all
    assert steps_to_do(10, 4.0, Pace(), PartialWork(enabled=False)) == 10


def test_total_steps_counts_whole_batches_capped_by_a_budget() -> None:
    config = TrainingConfig(local_epochs=3, batch_size=32)
    assert total_steps(65, config) == 9
    assert total_steps(65, config, max_steps=5) == 5


def test_a_fetched_model_is_checked_against_the_tasks_reference() -> None:
    tensors = receive_model(BOOK.payload(REF), REF)
    assert torch.equal(tensors["w"], MODEL.params)
    other = BOOK.publish(5, torch.zeros(3))
    with pytest.raises(ProtocolError, match="the task names 5"):
        receive_model(BOOK.payload(REF), other)


def test_an_update_crosses_the_wire_intact() -> None:
    update = honest().train(task(), MODEL)
    assert isinstance(update, ClientUpdate)
    decoded = decode_as(encode(update), ClientUpdate)
    assert decoded.digest == payload_digest(decoded.tensors) == update.digest


BLOCKER = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"matplotlib", "sklearn", "scipy", "fsspec"}:
            raise ImportError(f"{name} is not installed on a client node")
        return None

sys.meta_path.insert(0, Block())
"""


def test_a_client_node_needs_no_server_dependencies() -> None:
    """``import phalanx.client`` and a client's whole job (train, seal, encode), with
    matplotlib, scikit-learn, scipy and fsspec made unimportable."""
    job = textwrap.dedent(
        """
        import torch
        import phalanx
        from phalanx.client import HonestClient, Trained, TrainContext
        from phalanx.core.codec import encode
        from phalanx.core.messages import Envelope, TaskConfig, TaskKey, TrainTask
        from phalanx.core.models import ModelBook
        from phalanx.core.tensors import Manifest
        assert phalanx.TrainContext is TrainContext
        book = ModelBook(Manifest.of({"w": torch.zeros(2)}))
        ref = book.publish(0, torch.zeros(2))
        task = TrainTask(Envelope(), TaskKey(0, 0, 1), ref, TaskConfig(1, 1, 0.1, 1.0))
        client = HonestClient(0, lambda t, m: Trained({"w": m.params + 1}, 1, 1, 1, {}))
        print(len(encode(client.train(task, book.get(ref)))) > 0)
        """
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER + job], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
