"""Fashion-MNIST workload on tiny IDX files written to a temporary directory (the real
files are read only by the last test, which skips where they are not installed): decoding,
scaling, every malformed-file error, stratified subsets and determinism."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from phalanx.config import FashionMnistWorkload, build_config
from phalanx.core.rng import numpy_rng
from phalanx.errors import WorkloadError
from phalanx.workloads import WORKLOADS, build_workload
from phalanx.workloads.fashion_mnist import FILES, load, read_idx, stratified_subset

REAL = Path("/usr/share/datasets/fashion-mnist")
TRAIN_PER_CLASS, TEST_PER_CLASS = 12, 3


def idx_bytes(values: np.ndarray, *, magic: int | None = None, shape: Iterable[int] = ()) -> bytes:
    """An IDX file of unsigned bytes; ``magic`` and ``shape`` override the true header."""
    dims = tuple(shape) or values.shape
    code = 0x0800 | values.ndim if magic is None else magic
    header = code.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + values.astype(np.uint8).tobytes()


def write(path: Path, content: bytes) -> None:
    path.write_bytes(gzip.compress(content))


def images_for(labels: np.ndarray) -> np.ndarray:
    """Image ``i`` is filled with ``labels[i] * 25 + i % 5``: label and position readable."""
    fill = labels * 25 + np.arange(len(labels)) % 5
    return np.broadcast_to(fill[:, None, None], (len(labels), 28, 28)).astype(np.uint8)


def make_dataset(root: Path, train_per_class: int = TRAIN_PER_CLASS) -> Path:
    """Four valid IDX files: ``train_per_class`` / 3 examples of each class, classes mixed."""
    root.mkdir(parents=True, exist_ok=True)
    for part, per_class in (("train", train_per_class), ("test", TEST_PER_CLASS)):
        labels = np.tile(np.arange(10), per_class)
        write(root / FILES[f"{part}_images"], idx_bytes(images_for(labels)))
        write(root / FILES[f"{part}_labels"], idx_bytes(labels))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "fmnist")


def config(path: Path, **changes: object) -> FashionMnistWorkload:
    fields: dict[str, object] = {"num_clients": 3, "min_samples": 1, "path": str(path)}
    return FashionMnistWorkload.model_validate({**fields, **changes})


# --- decoding ----------------------------------------------------------------------------


def test_pixels_are_scaled_flattened_float32_with_matching_labels(dataset: Path) -> None:
    workload = build_workload(config(dataset, dirichlet_alpha=None), 0)
    test = workload.test

    assert test.x.dtype == torch.float32 and test.x.shape == (30, 784)
    assert torch.equal(test.y, torch.tensor(np.tile(np.arange(10), 3)))
    expected = (test.y * 25 + torch.arange(30) % 5).float() / 255
    assert torch.equal(test.x[:, 0], expected) and torch.equal(test.x[:, 783], expected)
    assert workload.image_shape == (28, 28) and workload.num_classes == 10


def test_model_maps_784_pixels_to_10_logits(dataset: Path) -> None:
    workload = build_workload(config(dataset, hidden=16), 0)
    model = workload.make_model()

    assert model(workload.test.x).shape == (30, 10)
    assert [tuple(p.shape) for p in model.parameters()] == [(16, 784), (16,), (10, 16), (10,)]


def test_clients_partition_the_whole_training_set(dataset: Path) -> None:
    workload = build_workload(config(dataset, dirichlet_alpha=0.5), 1)

    assert len(workload.clients) == 3
    assert sum(len(c) for c in workload.clients) == 120
    labels = torch.cat([c.y for c in workload.clients])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 12))


def test_decoded_arrays_are_cached_and_read_only(dataset: Path) -> None:
    first, second = load(str(dataset)), load(str(dataset))

    assert first is second
    assert not first[0].images.flags.writeable and not first[1].labels.flags.writeable


# --- missing and malformed files ---------------------------------------------------------


def test_missing_file_names_the_path_and_the_package(dataset: Path) -> None:
    (dataset / FILES["test_labels"]).unlink()

    with pytest.raises(WorkloadError) as caught:
        build_workload(config(dataset), 0)
    message = str(caught.value)
    assert str(dataset / FILES["test_labels"]) in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "workload.path" in message


def test_missing_directory_is_a_workload_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="does not exist"):
        build_workload(config(tmp_path / "nowhere"), 0)


def test_not_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(idx_bytes(np.zeros(3)))

    with pytest.raises(WorkloadError, match=f"{re.escape(str(path))} is not readable gzip"):
        read_idx(path, 1)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28))))[:-12])

    with pytest.raises(WorkloadError, match=f"{re.escape(str(path))} is not readable gzip"):
        read_idx(path, 3)


@pytest.mark.parametrize(
    ("content", "ndim", "match"),
    [
        (idx_bytes(np.zeros(3), magic=0x0D01), 1, r"magic 0x00000d01, expected 0x00000801"),
        (idx_bytes(np.zeros(3)), 3, r"magic 0x00000801, expected 0x00000803"),
        (idx_bytes(np.zeros(3), shape=[4]), 1, r"shape \(4,\) \(12 bytes\), file has 11"),
        (idx_bytes(np.zeros(3), shape=[2]), 1, r"shape \(2,\) \(10 bytes\), file has 11"),
        (b"\x00\x00\x08\x01", 1, r"4 bytes, shorter than an IDX header \(8\)"),
    ],
    ids=["wrong-type", "wrong-ndim", "too-few-bytes", "too-many-bytes", "no-header"],
)
def test_malformed_idx_says_what_is_wrong(
    tmp_path: Path, content: bytes, ndim: int, match: str
) -> None:
    path = tmp_path / "bad.gz"
    write(path, content)

    with pytest.raises(WorkloadError, match=match):
        read_idx(path, ndim)


def test_images_that_are_not_28_by_28_are_refused(dataset: Path) -> None:
    write(dataset / FILES["test_images"], idx_bytes(np.zeros((30, 27, 29))))

    with pytest.raises(WorkloadError, match=r"t10k-images.*\(27, 29\), expected 28 x 28"):
        build_workload(config(dataset), 0)


def test_image_and_label_counts_must_agree(dataset: Path) -> None:
    write(dataset / FILES["train_labels"], idx_bytes(np.zeros(119)))

    with pytest.raises(WorkloadError, match=r"has 120 images but .* has 119 labels"):
        build_workload(config(dataset), 0)


def test_labels_outside_0_to_9_are_refused(dataset: Path) -> None:
    write(dataset / FILES["test_labels"], idx_bytes(np.full(30, 10)))

    with pytest.raises(WorkloadError, match=r"label 10 outside 0\.\.9"):
        build_workload(config(dataset), 0)


# --- subsets and determinism -------------------------------------------------------------


def test_subsets_are_stratified(dataset: Path) -> None:
    workload = build_workload(config(dataset, train_examples=50, test_examples=20), 0)
    train = torch.cat([c.y for c in workload.clients])

    assert torch.equal(torch.bincount(train), torch.full((10,), 5))
    assert torch.equal(torch.bincount(workload.test.y), torch.full((10,), 2))


def test_uneven_subset_gives_the_remainder_to_the_largest_fractions() -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    chosen = stratified_subset(labels, 5, numpy_rng(0, "test"))

    assert np.bincount(labels[chosen], minlength=3).tolist() == [3, 2, 0]
    assert chosen.tolist() == sorted(set(chosen.tolist()))


def test_subset_larger_than_the_data_is_an_error(dataset: Path) -> None:
    with pytest.raises(WorkloadError, match="test_examples=31 exceeds the 30 examples"):
        build_workload(config(dataset, test_examples=31), 0)


def test_same_seed_same_data_other_seed_other_subset(dataset: Path) -> None:
    cfg = config(dataset, train_examples=40, test_examples=10)
    first, again, other = (build_workload(cfg, seed) for seed in (5, 5, 6))

    for a, b in zip([*first.clients, first.test], [*again.clients, again.test], strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(first.test.x, other.test.x)


def test_registered_and_reachable_from_toml_config(dataset: Path) -> None:
    run = build_config(
        {"workload": {"name": "fashion_mnist", "path": str(dataset)}},
        [
            "workload.num_clients=4",
            "workload.min_samples=1",
            "selection.clients_per_round=4",
            "quorum.min_updates=2",
        ],
    )

    assert "fashion_mnist" in WORKLOADS
    assert len(build_workload(run.workload, 0).clients) == 4


# --- the installed data set --------------------------------------------------------------


@pytest.mark.skipif(
    not all((REAL / name).is_file() for name in FILES.values()),
    reason="dataset-fashion-mnist is not installed",
)
def test_real_files_have_the_official_split() -> None:
    train, test = load(str(REAL))

    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    workload = build_workload(
        FashionMnistWorkload(num_clients=4, train_examples=400, test_examples=100), 0
    )
    assert workload.test.x.shape == (100, 784) and float(workload.test.x.max()) <= 1.0
