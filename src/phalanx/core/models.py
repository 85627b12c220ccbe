"""The models a runtime may be asked for: a task names its model by reference only.

The engine publishes each round's global model here (``publish``) and dispatches tasks that
carry the returned ``ModelRef``; a runtime resolves a reference with ``get`` (the simulation,
to train) or ``payload`` (a server, to answer a client's fetch with bytes encoded once per
version). The book is bounded: it keeps the newest ``keep`` versions (the current one and
the one before, by default, for replies still in flight across a commit), so its memory
never grows with the rounds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from phalanx.core.codec import encode_model
from phalanx.core.messages import ModelRef
from phalanx.core.tensors import Manifest, payload_digest, unflatten
from phalanx.errors import ProtocolError


@dataclass(frozen=True)
class PublishedModel:
    ref: ModelRef
    params: torch.Tensor  # flat float32; never mutated once published
    manifest: Manifest

    def tensors(self) -> dict[str, torch.Tensor]:
        """The model's tensors by name: views of ``params``, no copy."""
        return unflatten(self.params, self.manifest)


class ModelBook:
    """Published global models by reference; safe to read from other threads."""

    def __init__(self, manifest: Manifest, *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"a model book keeps at least one version; got keep={keep}")
        self._manifest = manifest
        self._keep = keep
        self._models: dict[ModelRef, PublishedModel] = {}  # oldest first
        self._payloads: dict[ModelRef, bytes] = {}
        self._lock = threading.Lock()

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def publish(self, version: int, params: torch.Tensor) -> ModelRef:
        """Make ``params`` the model of ``version`` and return its reference. Publishing the
        very same tensor again (a discarded round keeps its model) costs no hashing."""
        with self._lock:
            for model in self._models.values():
                if model.ref.version == version and model.params is params:
                    return model.ref
        digest = payload_digest(unflatten(params, self._manifest))
        ref = ModelRef(version, digest)
        with self._lock:
            self._models.pop(ref, None)
            self._models[ref] = PublishedModel(ref, params, self._manifest)
            while len(self._models) > self._keep:
                oldest = next(iter(self._models))
                del self._models[oldest]
                self._payloads.pop(oldest, None)
        return ref

    def get(self, ref: ModelRef) -> PublishedModel:
        with self._lock:
            model = self._models.get(ref)
            if model is None:
                held = sorted(r.version for r in self._models)
                raise ProtocolError(
                    f"model version {ref.version} ({ref.sha256[:12]}) is not held; "
                    f"versions held: {held}"
                )
            return model

    def payload(self, ref: ModelRef) -> bytes:
        """The model's tensors as codec bytes, encoded once per version."""
        model = self.get(ref)
        with self._lock:
            cached = self._payloads.get(ref)
        if cached is None:
            cached = encode_model(ref, model.tensors())
            with self._lock:
                if ref in self._models:
                    self._payloads[ref] = cached
        return cached
