"""The global models a client fetched, one download per version.

A task names its model by reference (version + sha256); the cache fetches a reference it
does not hold, checks it (the receiver hashes it against the reference), checks that its
tensors are the ones this client's model has, and keeps the newest ``keep`` versions. A
second task on the same version (a retry, the next round after a discarded one) costs no
download.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from phalanx.core.messages import ModelRef
from phalanx.core.models import PublishedModel
from phalanx.core.tensors import Manifest, flatten
from phalanx.errors import ConfigError
from phalanx.runtime.grpc.streams import ModelReceiver

Fetch = Callable[[ModelRef], ModelReceiver]


class ModelCache:
    def __init__(self, manifest: Manifest, fetch: Fetch, *, keep: int = 2) -> None:
        self._manifest = manifest
        self._fetch = fetch
        self._keep = keep
        self._models: OrderedDict[ModelRef, PublishedModel] = OrderedDict()
        self.downloads = 0

    def get(self, ref: ModelRef) -> PublishedModel:
        model = self._models.get(ref)
        if model is not None:
            self._models.move_to_end(ref)
            return model
        tensors = self._fetch(ref).finish()
        self.downloads += 1
        received = Manifest.of(tensors)
        if received != self._manifest:
            raise ConfigError(
                f"the coordinator's model (version {ref.version}) has tensors "
                f"{_describe(received)}; this client's model has {_describe(self._manifest)}: "
                "run the client with the coordinator's scenario or app"
            )
        model = PublishedModel(ref, flatten(tensors, self._manifest), self._manifest)
        self._models[ref] = model
        while len(self._models) > self._keep:
            self._models.popitem(last=False)
        return model


def _describe(manifest: Manifest) -> str:
    shown = [f"{s.name}{list(s.shape)}" for s in manifest.specs[:4]]
    more = f" and {len(manifest.specs) - 4} more" if len(manifest.specs) > 4 else ""
    return ", ".join(shown) + more
