"""The deployment benchmark (``python -m benchmarks.flower_deployment``): process trees
watched for peak RSS, the seed workload exported for Flower, and the two contenders."""
