# One virtual environment, made with pip from constraints.txt (torch pinned to the local wheel).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install etcd run test lint typecheck proto fuzz bench bench-peers bench-aggregators bench-flower bench-byzantine fashion-mnist-data clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  # a fresh runs/seed*/ each time: a finished run is never overwritten
	$(BIN)/phalanx run

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/ruff check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

# The etcd server the failover tests start (Debian's etcd-server; CI runs as root). Nothing
# happens where etcd is already on PATH.
etcd:
	@command -v etcd >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; }

test: lint typecheck etcd
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# Regenerate phalanx.v1's Python modules from the .proto (committed; a test checks they match).
PROTO := src/phalanx/runtime/grpc/proto/phalanx_v1.proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src --grpc_python_out=src $(PROTO)

# Everything the coordinator decodes, generated and byte-mutated (about 20 min for 1,000,000).
fuzz: $(STAMP)
	$(BIN)/python -m benchmarks.fuzz_wire --messages 1000000

bench: $(STAMP)
	$(BIN)/python -m benchmarks.seed_parity --repeats 3 --markdown docs/seed_parity.md --json docs/seed_parity.json
	$(BIN)/python -m benchmarks.fault_accuracy --seeds 42 7 123
	$(BIN)/python -m benchmarks.aggregator_speed  # times ours alone unless bench-peers ran

# ByzFL and Flower, for the benchmarks that compare against them, in their own environment
# (.venv-peers), never in ours: Flower 1.42 requires protobuf < 7 and older rich, typer and
# packaging than phalanx's gRPC runtime and CLI use. The benchmarks run each peer in a child
# process with $(PEERS)/bin/python. torch and numpy take constraints.txt's pins (torch from
# the local wheel); pip resolves the rest from benchmarks/requirements-peers.txt against the
# peers' declared requirements; only ByzFL goes in with --no-deps (its torchvision: see
# benchmarks/requirements-peers-nodeps.txt). Neither `install` nor CI ever builds it.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

$(PEERS_STAMP): constraints.txt benchmarks/requirements-peers.txt benchmarks/requirements-peers-nodeps.txt
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	grep -E '^(torch|numpy)==' constraints.txt > $(PEERS)/constraints.txt
	$(PEERS)/bin/python -m pip install --quiet -c $(PEERS)/constraints.txt torch numpy \
	  -r benchmarks/requirements-peers.txt
	$(PEERS)/bin/python -m pip install --quiet --no-deps -r benchmarks/requirements-peers-nodeps.txt
	touch $(PEERS_STAMP)

bench-peers: $(PEERS_STAMP)

bench-aggregators: $(STAMP) bench-peers
	$(BIN)/python -m benchmarks.aggregator_speed

# The seed scenario over loopback: phalanx's gRPC launcher against Flower's SuperLink and
# 20 SuperNodes (docs/flower_deployment.md).
bench-flower: $(STAMP) bench-peers
	$(BIN)/python -m benchmarks.flower_deployment

# Fashion-MNIST's IDX files, from Debian (never downloaded at run time); tests never need them.
fashion-mnist-data:
	test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  { $$(command -v sudo) apt-get update -q && $$(command -v sudo) apt-get install -y -q dataset-fashion-mnist; }

# Accuracy under attack (about 30 min for digits, 15 for Fashion-MNIST on 2 cores).
bench-byzantine: $(STAMP) fashion-mnist-data
	$(BIN)/python -m benchmarks.byzantine_accuracy
	$(BIN)/python -m benchmarks.byzantine_accuracy --dataset fashion_mnist --fractions 0.2 \
	  --set workload.train_examples=3000 --set workload.test_examples=2000 \
	  --set workload.hidden=64 --set rounds=40 --set training.local_epochs=1

clean:
	rm -rf $(VENV) $(PEERS) runs .pytest_cache .mypy_cache .ruff_cache
