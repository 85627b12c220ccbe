"""Shared test set-up: one torch thread, as every phalanx process pins it."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
