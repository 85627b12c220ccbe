"""The two chunked streams of ``phalanx.v1``, received one message (bytes) at a time.

``UpdateReceiver`` is the coordinator's side of a push: the first message must be the
update's start (caller and header), whose announced size is checked against the limit
before any tensor byte is accepted; then chunks; then ``finish`` checks the digest and
returns the ``ClientUpdate``. ``ModelReceiver`` is a client's side of a download, which must
be the model it asked for and hash to that reference's sha256. Both are plain state
machines fed bytes, so the servicer's async loop and the fuzz harness drive the same code;
every refusal is a ``ProtocolError``.
"""

from __future__ import annotations

import torch

from phalanx.core.messages import ClientUpdate, ModelRef
from phalanx.errors import ProtocolError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import Assembler, WireLimits
from phalanx.runtime.grpc.session import Caller, Chunk, ModelHeader, UpdateHeader


class UpdateReceiver:
    """One PushUpdate stream: ``start`` with its first message, ``add`` each later one,
    ``finish`` when the client closes the stream."""

    def __init__(self, limits: WireLimits) -> None:
        self._limits = limits
        self._header: UpdateHeader | None = None
        self._assembler: Assembler | None = None

    def start(self, data: bytes) -> tuple[Caller, UpdateHeader]:
        """Who pushes and what they announce; the size limit is checked here."""
        part = serde.parse_update_part(data)
        if isinstance(part, Chunk):
            raise ProtocolError(f"a push must start with its header, not chunk {part.seq}")
        caller, header = part
        what = f"update {header.key.round}/{header.key.client}/{header.key.attempt}"
        self._assembler = Assembler(header.specs, header.total_bytes, self._limits, what)
        self._header = header
        return caller, header

    def add(self, data: bytes) -> None:
        part = serde.parse_update_part(data)
        if self._assembler is None:
            raise ProtocolError("a push must start with its header")
        if not isinstance(part, Chunk):
            raise ProtocolError("a push carries one header; a second one arrived")
        self._assembler.add(part.seq, part.data)

    @property
    def unhashed(self) -> int:
        """Bytes received and not hashed yet: what ``hash_ahead`` or ``finish`` will hash."""
        return self._assembler.unhashed if self._assembler is not None else 0

    def hash_ahead(self) -> None:
        """Hash what has arrived so far; may run in another thread while ``add`` goes on,
        one call at a time."""
        if self._assembler is not None:
            self._assembler.hash_ahead()

    def finish(self, sender: int) -> ClientUpdate:
        """The update whose tensors arrived whole and match their digest, from ``sender``
        (the client the coordinator authenticated, never a claim of the message)."""
        if self._header is None or self._assembler is None:
            raise ProtocolError("a push ended before its header")
        header = self._header
        tensors = self._assembler.finish(header.digest)
        return ClientUpdate(
            envelope=header.envelope, key=header.key, base=header.base,
            steps_done=header.steps_done, steps_planned=header.steps_planned,
            num_examples=header.num_examples, tensors=tensors, digest=header.digest,
            metrics=header.metrics, sender=sender,
        )  # fmt: skip


class ModelReceiver:
    """One GetModel stream for ``ref``: ``add`` every message, then ``finish``."""

    def __init__(self, ref: ModelRef, limits: WireLimits) -> None:
        self._ref = ref
        self._limits = limits
        self._assembler: Assembler | None = None

    def add(self, data: bytes) -> None:
        part = serde.parse_model_part(data)
        if isinstance(part, ModelHeader):
            self._start(part)
        elif self._assembler is None:
            raise ProtocolError(
                f"a model download must start with its header, not chunk {part.seq}"
            )
        else:
            self._assembler.add(part.seq, part.data)

    def _start(self, header: ModelHeader) -> None:
        if self._assembler is not None:
            raise ProtocolError("a model download carries one header; a second one arrived")
        if header.ref != self._ref:
            raise ProtocolError(
                f"asked for model version {self._ref.version}, got version {header.ref.version}"
                f" ({header.ref.sha256[:12]})"
            )
        what = f"model version {header.ref.version}"
        self._assembler = Assembler(header.specs, header.total_bytes, self._limits, what)

    def finish(self) -> dict[str, torch.Tensor]:
        """The model's tensors, checked against the reference's sha256."""
        if self._assembler is None:
            raise ProtocolError("a model download ended before its header")
        return self._assembler.finish(self._ref.sha256)
