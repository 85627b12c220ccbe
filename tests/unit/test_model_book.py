"""The model book: a task's model by reference, bounded to the versions still in play."""

from __future__ import annotations

import pytest
import torch

from phalanx.core.models import ModelBook
from phalanx.core.tensors import Manifest, payload_digest, unflatten
from phalanx.errors import ProtocolError

MANIFEST = Manifest.of({"w": torch.zeros(3)})


def test_a_reference_names_version_and_bytes() -> None:
    book = ModelBook(MANIFEST)
    params = torch.tensor([1.0, 2.0, 3.0])
    ref = book.publish(0, params)
    assert ref.version == 0
    assert ref.sha256 == payload_digest(unflatten(params, MANIFEST))
    assert book.get(ref).params is params
    assert book.publish(0, params) == ref  # a discarded round republishes the same model


def test_only_the_newest_versions_are_kept() -> None:
    book = ModelBook(MANIFEST, keep=2)
    refs = [book.publish(v, torch.full((3,), float(v))) for v in range(3)]
    assert [book.get(r).ref for r in refs[1:]] == refs[1:]
    with pytest.raises(ProtocolError, match=r"version 0 .* not held; versions held: \[1, 2\]"):
        book.get(refs[0])


def test_same_version_other_bytes_is_another_model() -> None:
    book = ModelBook(MANIFEST)
    a = book.publish(1, torch.zeros(3))
    b = book.publish(1, torch.ones(3))
    assert a.version == b.version and a != b
    assert torch.equal(book.get(b).params, torch.ones(3))
