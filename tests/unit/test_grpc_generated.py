"""The committed protobuf modules are what grpcio-tools makes of the committed .proto
(regenerated into a temporary directory and compared byte for byte)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import phalanx

SRC = Path(phalanx.__file__).resolve().parent.parent
PROTO = Path("phalanx/runtime/grpc/proto/phalanx_v1.proto")
GENERATED = ("phalanx_v1_pb2.py", "phalanx_v1_pb2.pyi", "phalanx_v1_pb2_grpc.py")


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None,
    reason="grpcio-tools is not installed (it is a dev dependency: pip install -e '.[dev]')",
)
def test_the_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    from grpc_tools import protoc  # a dev dependency only

    out = str(tmp_path)
    args = ["protoc", f"-I{SRC}", f"--python_out={out}", f"--pyi_out={out}"]
    assert protoc.main([*args, f"--grpc_python_out={out}", str(SRC / PROTO)]) == 0
    for name in GENERATED:
        fresh = (tmp_path / PROTO.parent / name).read_text()
        committed = (SRC / PROTO.parent / name).read_text()
        assert fresh == committed, f"{name} is stale: run `make proto` and commit the result"
