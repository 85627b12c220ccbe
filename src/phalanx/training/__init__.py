"""Local training of simulated clients: many clients at once when they share a model."""

from phalanx.training.batched import BatchedSGD, ClientBatch

__all__ = ["BatchedSGD", "ClientBatch"]
