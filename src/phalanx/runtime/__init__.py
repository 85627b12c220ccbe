"""Runtimes move tasks to clients and replies back; the round logic stays in the engine."""
