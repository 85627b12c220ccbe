"""Every random choice draws from a generator derived from (seed, stream, round, client,
attempt), never from global state, so selection, faults and training are independent streams
and a resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit seed that depends on every key and on nothing else."""
    text = "/".join([str(seed), stream, *(str(k) for k in keys)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def numpy_rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, stream, *keys))


def torch_rng(seed: int, stream: str, *keys: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, stream, *keys))
    return generator
