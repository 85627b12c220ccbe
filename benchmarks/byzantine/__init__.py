"""Accuracy under Byzantine attack (``python -m benchmarks.byzantine_accuracy``): the grid
of cells and the report."""
