"""Seed parity (``python -m benchmarks.seed_parity``): the seed program, the plain-PyTorch
loops and the verdicts, each contender run in its own child process."""
