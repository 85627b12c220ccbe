"""Fashion-MNIST (Xiao et al., 2017): 70,000 28x28 greyscale images of clothing in 10
classes, read from the gzipped IDX files Debian's ``dataset-fashion-mnist`` installs.

Nothing is downloaded: a run must not depend on the network, and a packaged file is the same
bytes on every machine. The official train/test split is kept (the test set stays whole on
the server); ``train_examples`` / ``test_examples`` take a class-stratified subset, so a
short run still sees every class in its usual proportion. The training part is split across
clients with the digits workload's partition (IID or label-Dirichlet).

IDX is a big-endian header (magic ``0x0000TTNN``: type ``TT``, ``NN`` dimensions, then one
uint32 size per dimension) followed by the raw values. Every file is checked against what
Fashion-MNIST must be (unsigned bytes, N x 28 x 28 images, N labels in 0..9, sizes that
match the bytes), so a truncated or foreign file is an error naming it, not a wrong model.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from phalanx.config import FashionMnistWorkload
from phalanx.core.rng import numpy_rng
from phalanx.errors import WorkloadError
from phalanx.workloads.base import Workload, client_data
from phalanx.workloads.digits import partition
from phalanx.workloads.models import mlp

Indices = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]

IMAGE_SHAPE = (28, 28)
FEATURES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
CLASSES = 10
UBYTE = 0x08  # IDX type code of unsigned bytes, the only type Fashion-MNIST uses
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, "
    "or point workload.path at a directory holding the four IDX .gz files"
)


class Split(NamedTuple):
    """One part of the official split: uint8 images (n x 28 x 28) and int64 labels (n)."""

    images: Bytes
    labels: Indices


def read_idx(path: Path, ndim: int) -> Bytes:
    """The unsigned-byte array of a gzipped IDX file with ``ndim`` dimensions."""
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except FileNotFoundError:
        raise WorkloadError(f"Fashion-MNIST file {path} does not exist; {HINT}") from None
    except (OSError, EOFError, zlib.error) as error:
        raise WorkloadError(f"Fashion-MNIST file {path} is not readable gzip: {error}") from None
    magic, header = int.from_bytes(raw[:4], "big"), 4 + 4 * ndim
    if magic != (UBYTE << 8 | ndim):
        raise WorkloadError(
            f"{path}: IDX magic {magic:#010x}, expected {UBYTE << 8 | ndim:#010x} "
            f"(unsigned bytes, {ndim} dimensions)"
        )
    if len(raw) < header:
        raise WorkloadError(f"{path}: {len(raw)} bytes, shorter than an IDX header ({header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise WorkloadError(
            f"{path}: header says shape {shape} ({expected} bytes), file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(root: Path, part: str) -> Split:
    """Images and labels of ``part`` ("train" or "test"), checked against each other."""
    images_path, labels_path = root / FILES[f"{part}_images"], root / FILES[f"{part}_labels"]
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise WorkloadError(f"{images_path}: images are {images.shape[1:]}, expected 28 x 28")
    if images.shape[0] != labels.shape[0]:
        raise WorkloadError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= CLASSES:
        raise WorkloadError(f"{labels_path}: label {int(labels.max())} outside 0..{CLASSES - 1}")
    return Split(images, labels.astype(np.int64))


@functools.cache
def load(path: str) -> tuple[Split, Split]:
    """(train, test) from the IDX files under ``path``; decoded once per process (about
    55 MB of bytes) and returned read-only, as every caller shares them."""
    root = Path(path).expanduser()
    train, test = read_split(root, "train"), read_split(root, "test")
    for array in (*train, *test):
        array.flags.writeable = False
    return train, test


def stratified_subset(labels: Indices, count: int, rng: np.random.Generator) -> Indices:
    """Sorted positions of ``count`` examples, each class taking its share of ``labels``
    (largest remainder, ties to the lower class), drawn without replacement."""
    classes, sizes = np.unique(labels, return_counts=True)
    exact = count * sizes / len(labels)
    quotas = np.floor(exact).astype(np.int64)
    extra = count - int(quotas.sum())
    quotas[np.argsort(-(exact - quotas), kind="stable")[:extra]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:quota]
        for label, quota in zip(classes, quotas, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def subset(split: Split, count: int | None, rng: np.random.Generator, key: str) -> Split:
    """``split`` whole (``count`` None) or a stratified subset of ``count`` examples."""
    available = len(split.labels)
    if count is None or count == available:
        return split
    if count > available:
        raise WorkloadError(f"workload.{key}={count} exceeds the {available} examples available")
    chosen = stratified_subset(split.labels, count, rng)
    return Split(split.images[chosen], split.labels[chosen])


def pixels(images: Bytes) -> npt.NDArray[np.float32]:
    """Flattened 784-value rows scaled to [0, 1]."""
    return images.reshape(len(images), FEATURES).astype(np.float32) / np.float32(255)


def build_fashion_mnist(config: FashionMnistWorkload, seed: int) -> Workload:
    """Subsets from streams "workload.fashion_mnist.train" / ".test", then the training
    part partitioned across clients (the digits partition and its stream)."""
    full_train, full_test = load(config.path)
    train = subset(
        full_train,
        config.train_examples,
        numpy_rng(seed, "workload.fashion_mnist.train"),
        "train_examples",
    )
    test = subset(
        full_test,
        config.test_examples,
        numpy_rng(seed, "workload.fashion_mnist.test"),
        "test_examples",
    )
    parts = partition(
        train.labels,
        num_clients=config.num_clients,
        alpha=config.dirichlet_alpha,
        min_samples=config.min_samples,
        seed=seed,
    )
    x = pixels(train.images)
    # A whole split's labels are the cached read-only array, which torch will not wrap.
    test_labels = np.array(test.labels)
    return Workload(
        name=config.name,
        clients=tuple(client_data(x[p], train.labels[p]) for p in parts),
        test=client_data(pixels(test.images), test_labels),
        make_model=functools.partial(mlp, FEATURES, config.hidden, CLASSES),
        num_classes=CLASSES,
        image_shape=IMAGE_SHAPE,
    )
