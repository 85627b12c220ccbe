"""The bytes of one checkpoint: encoding a ``ServerState`` and verifying it on the way back.

Kept apart from any filesystem so every store (local, replicated) writes and checks exactly
the same three files. A checkpoint directory ``round-00000042/`` holds::

    params.safetensors   tensor "params", the flat float32 model, and "state/<key>" for
                         each aggregator state tensor (ServerState.tensors)
    state.json           ServerState.metadata_json(), keys sorted (constant size: the
                         run's history is a log beside the checkpoints, not in the state)
    MANIFEST.json        {"format": 1, "round": 42, "files": {name: sha256}, "sizes": {name: n}}

Decoding checks each payload's size and sha256 against the manifest before parsing it, and
parses only with safetensors and json: bytes from disk are never unpickled. Every problem is
raised as ``CheckpointError`` naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import safetensors.torch
import torch
from safetensors import SafetensorError

from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError

FORMAT_VERSION = 1
PARAMS_FILE = "params.safetensors"
STATE_TENSOR_PREFIX = "state/"  # aggregator state tensors beside "params"
# What an aggregator may carry between rounds: flat vectors of these dtypes (a per-client
# table keeps client ids as int64 and scores as float64 beside float32 model-sized vectors).
STATE_DTYPES = (torch.float32, torch.float64, torch.int64)
STATE_FILE = "state.json"
MANIFEST_FILE = "MANIFEST.json"
PAYLOAD_FILES = (PARAMS_FILE, STATE_FILE)

_V = TypeVar("_V")
_DIR_NAME = re.compile(r"round-(\d{8,})")


def dir_name(round_: int) -> str:
    """Zero-padded so that names sort in round order for a human listing the root."""
    return f"round-{round_:08d}"


def parse_dir_name(name: str) -> int | None:
    """The round a checkpoint directory is named for, or None for anything else (temp dirs)."""
    match = _DIR_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def problem(where: str, name: str, reason: str) -> CheckpointError:
    """One message shape for every defect, so operators can grep which file went bad."""
    return CheckpointError(f"{where}/{name}: {reason}")


@dataclass(frozen=True)
class CheckpointManifest:
    """The parsed MANIFEST.json: what each payload file must hash to and how long it is."""

    round: int
    digests: dict[str, str]
    sizes: dict[str, int]


def encode(state: ServerState) -> dict[str, bytes]:
    """All three files of a checkpoint of ``state``, keyed by file name."""
    params = state.params.detach()
    if params.dtype != torch.float32 or params.dim() != 1:
        raise CheckpointError(
            f"params must be a flat float32 vector; got {params.dtype} of shape "
            f"{tuple(params.shape)}"
        )
    try:
        meta = json.dumps(state.metadata_json(), sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"server state is not JSON-serialisable: {exc}") from exc
    named = {"params": params.cpu().contiguous()}
    for key, tensor in state.tensors.items():
        named[STATE_TENSOR_PREFIX + key] = _state_tensor(key, tensor)
    tensors: bytes = safetensors.torch.save(named)
    payload = {PARAMS_FILE: tensors, STATE_FILE: meta}
    manifest = {
        "format": FORMAT_VERSION,
        "round": state.round,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in payload.items()},
        "sizes": {name: len(data) for name, data in payload.items()},
    }
    return {**payload, MANIFEST_FILE: json.dumps(manifest, sort_keys=True, indent=2).encode()}


def parse_manifest(raw: bytes, *, where: str) -> CheckpointManifest:
    """Parse and shape-check MANIFEST.json; the manifest is the root of trust for the rest."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise problem(where, MANIFEST_FILE, f"bad json ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise problem(where, MANIFEST_FILE, f"unsupported format {found!r}")
    digests = _table(data.get("files"), str)
    sizes = _table(data.get("sizes"), int)
    round_ = data.get("round")
    if type(round_) is not int or digests is None or sizes is None:
        raise problem(where, MANIFEST_FILE, "missing or malformed round, files or sizes")
    return CheckpointManifest(round_, digests, sizes)


def _table(value: object, kind: type[_V]) -> dict[str, _V] | None:
    """``value`` if it maps exactly the payload file names to ``kind`` (bool is no int)."""
    if not isinstance(value, dict) or sorted(value) != sorted(PAYLOAD_FILES):
        return None
    if not all(type(item) is kind for item in value.values()):
        return None
    return {str(name): item for name, item in value.items()}


def verify(name: str, data: bytes, manifest: CheckpointManifest, *, where: str) -> None:
    """Size first (it names truncation plainly), then sha256, before anything parses ``data``."""
    expected = manifest.sizes[name]
    if len(data) < expected:
        raise problem(where, name, f"truncated ({len(data)} of {expected} bytes)")
    if len(data) != expected:
        raise problem(where, name, f"size mismatch ({len(data)} bytes, expected {expected})")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.digests[name]:
        raise problem(
            where, name, f"digest mismatch (sha256 {digest}, expected {manifest.digests[name]})"
        )


def decode(
    manifest: CheckpointManifest, payload: Mapping[str, bytes], *, where: str
) -> ServerState:
    """Rebuild the state from verified payload bytes and cross-check it against the manifest."""
    params, extra_tensors = _decode_params(payload[PARAMS_FILE], where=where)
    try:
        meta = json.loads(payload[STATE_FILE].decode("utf-8"))
        state = ServerState.from_metadata(meta, params, extra_tensors)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise problem(where, STATE_FILE, f"bad json ({exc})") from exc
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise problem(where, STATE_FILE, f"bad server state ({exc!r})") from exc
    if state.round != manifest.round:
        raise problem(where, STATE_FILE, f"round {state.round} != manifest round {manifest.round}")
    if params.numel() != state.manifest.dim:
        raise problem(
            where, PARAMS_FILE, f"{params.numel()} values, model manifest dim {state.manifest.dim}"
        )
    return state


def read_verified(read: Callable[[str], bytes], *, where: str, round_: int) -> ServerState:
    """Load one checkpoint through ``read(file_name)``: manifest first, then every payload
    checked against it before parsing. ``round_`` is the round the checkpoint's name claims,
    which the manifest must agree with (a renamed or misplaced directory is a defect)."""
    manifest = parse_manifest(read(MANIFEST_FILE), where=where)
    if manifest.round != round_:
        raise problem(where, MANIFEST_FILE, f"round {manifest.round} != directory {round_}")
    payload = {name: read(name) for name in PAYLOAD_FILES}
    for name, data in payload.items():
        verify(name, data, manifest, where=where)
    return decode(manifest, payload, where=where)


def _state_tensor(key: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype not in STATE_DTYPES or tensor.dim() != 1:
        raise CheckpointError(
            f"aggregator state {key!r} must be a flat float32, float64 or int64 vector; "
            f"got {tensor.dtype} of shape {tuple(tensor.shape)}"
        )
    return tensor.detach().cpu().contiguous()


def _decode_params(raw: bytes, *, where: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The flat float32 model and any aggregator state tensors, parsed by safetensors
    (never torch.load)."""
    try:
        tensors: dict[str, torch.Tensor] = safetensors.torch.load(raw)
    except SafetensorError as exc:
        raise problem(where, PARAMS_FILE, f"bad safetensors ({exc})") from exc
    params = tensors.pop("params", None)
    strays = sorted(k for k in tensors if not k.startswith(STATE_TENSOR_PREFIX))
    if params is None or strays:
        raise problem(
            where, PARAMS_FILE, f"expected tensor 'params' and 'state/*'; got {sorted(tensors)}"
        )
    for name, tensor in [("params", params), *tensors.items()]:
        allowed = (torch.float32,) if name == "params" else STATE_DTYPES
        if tensor.dtype not in allowed or tensor.dim() != 1:
            raise problem(where, PARAMS_FILE, f"{name} is {tensor.dtype} {tuple(tensor.shape)}")
    state = {k.removeprefix(STATE_TENSOR_PREFIX): v for k, v in tensors.items()}
    return params, state
