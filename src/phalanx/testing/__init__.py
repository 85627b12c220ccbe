"""Test doubles for phalanx's seams, usable from a user's own tests.

``ScriptedRuntime`` is an in-memory twin of a runtime: a script says, per (round, client,
attempt), whether a task replies, fails or stays silent, and after how long on a virtual
clock. It produces updates without any training, so an engine round on it costs only the
engine's own work. Its ``membership`` follows scripted joins and leaves.
"""

from __future__ import annotations

from phalanx.testing.twin import Reply, ScriptedMembership, ScriptedRuntime

__all__ = ["Reply", "ScriptedMembership", "ScriptedRuntime"]
