"""InlinePool: training in this process under a SIGALRM hang guard (simulation.workers = 0)."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from phalanx.errors import ConfigError, RuntimeBackendError
from phalanx.runtime.inprocess.inline import InlinePool
from phalanx.runtime.inprocess.workers import WorkerJob

pytestmark = pytest.mark.timeout(20)

Params = dict[str, torch.Tensor]


def add_client(
    client_id: int, params: Params, meta: dict[str, Any]
) -> tuple[Params, dict[str, float]]:
    return {name: t + client_id for name, t in params.items()}, {"pid": float(os.getpid())}


def jobs(n: int) -> list[WorkerJob]:
    return [WorkerJob(10 + c, c, {"w": torch.tensor([1.0, 2.0])}, {}) for c in range(n)]


def test_jobs_run_here_and_come_back_in_order() -> None:
    todo = jobs(3)
    outcomes = InlinePool(add_client).run(todo)
    assert [o.job_id for o in outcomes] == [10, 11, 12]
    for out, job in zip(outcomes, todo, strict=True):
        assert out.error is None and out.tensors is not None
        assert torch.equal(out.tensors["w"], job.params["w"] + job.client_id)
        assert out.metrics == {"pid": float(os.getpid())}


def test_a_hang_is_interrupted_even_past_a_broad_except() -> None:
    def stubborn(
        client_id: int, params: Params, meta: dict[str, Any]
    ) -> tuple[Params, dict[str, float]]:
        if client_id == 1:
            try:
                time.sleep(30)
            except Exception:  # the guard is not an Exception: this does not swallow it
                return params, {}
        return add_client(client_id, params, meta)

    start = time.monotonic()
    outcomes = InlinePool(stubborn, hang_guard_s=0.3).run(jobs(3))
    assert time.monotonic() - start < 5.0
    assert outcomes[1].error == "hang: no reply within 0.3 s; attempt interrupted"
    assert outcomes[0].error is None and outcomes[2].error is None
    assert time.sleep(0.5) is None  # the alarm is disarmed afterwards


def test_a_raising_function_is_an_error_outcome() -> None:
    def raises(client_id: int, params: Params, meta: dict[str, Any]) -> Any:
        raise ValueError("bad client")

    (out,) = InlinePool(raises).run(jobs(1))
    assert out.tensors is None and out.error == "error: ValueError: bad client"


def test_the_callers_global_generators_are_left_as_they_were() -> None:
    def reseeds(
        client_id: int, params: Params, meta: dict[str, Any]
    ) -> tuple[Params, dict[str, float]]:
        torch.manual_seed(client_id)
        np.random.seed(client_id)
        random.seed(client_id)
        return params, {}

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    expected = (torch.rand(2), np.random.rand(), random.random())
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    InlinePool(reseeds).run(jobs(2))
    got = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_a_forgotten_job_never_runs_and_other_threads_are_refused() -> None:
    ran: list[int] = []

    def records(
        client_id: int, params: Params, meta: dict[str, Any]
    ) -> tuple[Params, dict[str, float]]:
        ran.append(client_id)
        return params, {}

    pool = InlinePool(records)
    todo = jobs(2)
    pool.submit(todo)
    pool.forget(todo[0].job_id)
    with pytest.raises(RuntimeBackendError, match="not in this pool"):
        pool.result(todo[0].job_id)
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            pool.result(todo[1].job_id)
        except RuntimeBackendError as exc:
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(5)
    assert ran == [] and "main thread" in str(errors[0])
    with pytest.raises(ConfigError, match="hang_guard_s > 0"):
        InlinePool(records, hang_guard_s=0.0)
