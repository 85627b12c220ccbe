"""phalanx's seed scenario as a Flower App (ServerApp + ClientApp), for the deployment
benchmark (``benchmarks/flower_deployment.py``). Runs only in ``.venv-peers``."""
