"""Ways an update goes bad. A client that corrupts its own update (noise, NaN, scaling)
computes a matching checksum and reports success; a bit flip happens after the checksum,
in transit."""

from __future__ import annotations

import torch

from phalanx.types import Corruption


def corrupt_tensors(
    tensors: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    corruption: Corruption,
    *,
    generator: torch.Generator,
    noise_std: float,
    scale: float,
) -> dict[str, torch.Tensor]:
    """A damaged copy of ``tensors``. ``reference`` is the global model the client received:
    scaling acts on the update (weights minus reference), as a model-replacement attack."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if corruption is Corruption.NOISE:
            out[name] = torch.randn(tensor.shape, generator=generator) * noise_std
        elif corruption is Corruption.NAN:
            damaged = tensor.clone()
            damaged.view(-1)[torch.randint(tensor.numel(), (1,), generator=generator)] = float(
                "nan"
            )
            out[name] = damaged
        elif corruption is Corruption.SCALE:
            out[name] = reference[name] + scale * (tensor - reference[name])
        else:
            out[name] = tensor.clone()
    return out


def flip_bits(
    tensors: dict[str, torch.Tensor], *, generator: torch.Generator, count: int = 8
) -> dict[str, torch.Tensor]:
    """Flip ``count`` random bits across the payload, as a faulty link would."""
    out = {name: tensor.clone() for name, tensor in tensors.items()}
    names = sorted(out)
    for _ in range(count):
        name = names[int(torch.randint(len(names), (1,), generator=generator))]
        raw = out[name].view(-1).view(torch.int32)
        index = int(torch.randint(raw.numel(), (1,), generator=generator))
        bit = int(torch.randint(31, (1,), generator=generator))
        raw[index] ^= 1 << bit
    return out
