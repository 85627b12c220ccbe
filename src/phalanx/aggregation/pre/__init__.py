"""Pre-aggregation steps: transforms of the stack that compose in front of any rule."""
