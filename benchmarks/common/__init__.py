"""Helpers shared by several benchmarks: running a measured child process, its numbers."""
