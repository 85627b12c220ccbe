"""phalanx's benchmarks, each one command from the repository root:
``python -m benchmarks.<name>`` (see benchmarks/README.md).

A top-level module is a benchmark's command. Helpers of one benchmark live in its family
folder (``parity/``, ``aggregators/``, ``byzantine/``); helpers shared by several live in
``common/``. A benchmark with no helpers of its own is one self-contained module.
"""
