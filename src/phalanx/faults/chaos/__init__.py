"""A fault-injecting TCP proxy and seeded schedules of network faults, for chaos tests of
the networked deployment (clients and coordinator as real processes on loopback)."""

from phalanx.faults.chaos.control import ProxyStats, Traffic
from phalanx.faults.chaos.faults import (
    Bandwidth,
    Blackhole,
    Delay,
    Direction,
    Fault,
    Flip,
    ResetAfter,
    Truncate,
)
from phalanx.faults.chaos.proxy import ChaosProxy
from phalanx.faults.chaos.schedule import ChaosSchedule, Heal, Refuse, Reset, Step

__all__ = [
    "Bandwidth",
    "Blackhole",
    "ChaosProxy",
    "ChaosSchedule",
    "Delay",
    "Direction",
    "Fault",
    "Flip",
    "Heal",
    "ProxyStats",
    "Refuse",
    "Reset",
    "ResetAfter",
    "Step",
    "Traffic",
    "Truncate",
]
