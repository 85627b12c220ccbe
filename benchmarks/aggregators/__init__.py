"""Aggregator speed (``python -m benchmarks.aggregator_speed``): the rules matched across
phalanx, ByzFL and Flower, the measuring child, the peers' loading and the report."""
