"""Fault injection as data: a plan of what fails when, and the corruptions it applies."""

from phalanx.faults.corrupt import corrupt_tensors, flip_bits
from phalanx.faults.plan import FaultDecision, FaultPlan

__all__ = ["FaultDecision", "FaultPlan", "corrupt_tensors", "flip_bits"]
