"""Run the seed tutorial program as a benchmark contender, without keeping its code.

The seed (``../shared/seed/*.txt``, a markdown tutorial with one ```python block) is the
baseline phalanx must beat, but its code is not ours to commit. So it is extracted at run
time into a temporary directory, run from there, and deleted afterwards
(:func:`seed_workspace`).

To time *training only* (not imports, not data generation), the child process does not
call the seed's ``main()``. It runs this module (``python -m benchmarks.parity.seed_program
PATH``), whose :func:`run_extracted_seed` imports the extracted module and builds the same
objects in the same order as its ``main()`` (same seeding, so the same random streams),
then times ``server.train()`` alone. Only the seed itself is written at run time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_MODULE_NAME = "seed_program"
RUNNER = "benchmarks.parity.seed_program"  # this module, as the child runs it


class SeedNotFoundError(RuntimeError):
    """The seed tutorial file, or its python block, could not be found."""


@dataclass(frozen=True)
class SeedWorkspace:
    """Where the seed was extracted to, for the duration of the workspace."""

    module: Path

    def argv(self, python: str) -> list[str]:
        """Command line (run from the repository root) of the seed contender."""
        return [python, "-m", RUNNER, str(self.module)]


def find_seed_file(repo_root: Path) -> Path:
    """Return the seed tutorial file: the first ``*.txt`` (sorted) in ``../shared/seed``."""
    seed_dir = repo_root.parent / "shared" / "seed"
    candidates = sorted(seed_dir.glob("*.txt"))
    if not candidates:
        raise SeedNotFoundError(f"no *.txt seed tutorial under {seed_dir}")
    return candidates[0]


def extract_python_block(markdown: str) -> str:
    """Return the body of the first ```python fenced block in ``markdown``."""
    match = _FENCE.search(markdown)
    if match is None:
        raise SeedNotFoundError("the seed tutorial has no ```python block")
    return match.group(1)


@contextmanager
def seed_workspace(repo_root: Path) -> Iterator[SeedWorkspace]:
    """Extract the seed into a temporary directory, removed on exit."""
    source = extract_python_block(find_seed_file(repo_root).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="phalanx-seed-") as tmp:
        module = Path(tmp) / f"{_MODULE_NAME}.py"
        module.write_text(source, encoding="utf-8")
        yield SeedWorkspace(module=module)


def _import_module(path: Path) -> ModuleType:
    """Import ``path`` under a non-``__main__`` name, so its ``main()`` does not run."""
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def _build_server(seed: Any) -> tuple[Any, Any]:
    """Build the server exactly as the seed's ``main()`` does; return (config, server).

    Same calls in the same order, so every global random stream (torch, numpy, random)
    is consumed as in the original program and the run is the seed's own run.
    """
    import numpy as np
    import torch

    config = seed.FaultConfig()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    clients = []
    for i in range(config.num_clients):
        half = i < config.num_clients // 2
        failure_rate = config.failure_rate if half else config.failure_rate * 0.5
        dataset = seed.FaultDataset(client_id=i, dim=config.input_dim, seed=config.seed)
        clients.append(seed.FaultClient(i, dataset, config, failure_rate))
    test_data = seed.FaultDataset(client_id=999, n=300, seed=999)
    model = seed.FaultModel(config)
    return config, seed.FaultTolerantServer(model, clients, test_data, config)


def run_extracted_seed(module_path: Path) -> dict[str, float | int]:
    """Import the extracted seed, train as its ``main()`` would, time ``server.train()``.

    Logging is disabled first: the seed logs at INFO, and console I/O would be timed.
    """
    import torch

    torch.set_num_threads(1)
    logging.disable(logging.CRITICAL)
    seed = _import_module(module_path)
    config, server = _build_server(seed)
    start = time.perf_counter()
    history = server.train()
    train_s = time.perf_counter() - start
    return {
        "train_s": train_s,
        "accuracy": float(history[-1]["accuracy"]),
        "committed_rounds": len(history),
        "rounds": int(config.num_rounds),
    }


def runner_main(argv: list[str]) -> int:
    """The child's entry point: print one JSON line with the seed's numbers."""
    if len(argv) != 1:
        print(f"usage: python -m {RUNNER} PATH_TO_EXTRACTED_SEED", file=sys.stderr)
        return 2
    print(json.dumps(run_extracted_seed(Path(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(runner_main(sys.argv[1:]))
