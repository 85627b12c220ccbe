"""Load the peer libraries the aggregator benchmark compares against, or say why not.

Imported only by the peers' measuring child, which runs in ``.venv-peers``
(``make bench-peers``), never in phalanx's environment:

- **Flower** is installed with its declared dependencies (pip resolves them from
  ``requirements-peers.txt``: protobuf < 7, grpcio, rich < 15, typer < 0.21, ...), which is
  why it has an environment of its own; it imports normally.
- **ByzFL** goes in with ``--no-deps`` (``requirements-peers-nodeps.txt``): it declares
  torchvision, and the only torchvision for torch 2.13.0 here is a CUDA build whose import
  fails next to the CPU torch. Its package ``__init__`` imports its whole framework
  (``byzfl.fed_framework`` imports torchvision at the top), so even ``import
  byzfl.aggregators.aggregators`` would fail: importing a submodule runs its parent
  package's ``__init__`` first. The two modules we need import only numpy, torch, scipy and
  ``byzfl.utils``. So ``byzfl`` is registered in ``sys.modules`` as the package module built
  from ByzFL's own import spec, with its search path but with its ``__init__`` never
  executed; the submodules are then imported by the ordinary machinery from the installed,
  unmodified files.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

INSTALL_HINT = "install the peers with `make bench-peers`"


@dataclass(frozen=True)
class Loaded:
    """A peer's modules by short name, its version, or why it is unavailable."""

    name: str
    version: str | None
    modules: dict[str, ModuleType]
    missing: str | None = None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def load_byzfl() -> Loaded:
    """``aggregators`` and ``preaggregators`` from ByzFL, without running its ``__init__``."""
    version = _version("byzfl")
    spec = importlib.util.find_spec("byzfl")  # locates the package; executes nothing
    if version is None or spec is None or not spec.submodule_search_locations:
        return Loaded("ByzFL", None, {}, f"ByzFL is not installed; {INSTALL_HINT}")
    if "byzfl" not in sys.modules:
        sys.modules["byzfl"] = importlib.util.module_from_spec(spec)
    try:
        modules = {
            "aggregators": importlib.import_module("byzfl.aggregators.aggregators"),
            "preaggregators": importlib.import_module("byzfl.aggregators.preaggregators"),
        }
    except ImportError as error:
        return Loaded("ByzFL", version, {}, f"ByzFL {version} does not import: {error}")
    return Loaded("ByzFL", version, modules)


def load_flower() -> Loaded:
    """Flower's NDArrays aggregation functions and its fixed-clipping helper."""
    version = _version("flwr")
    if version is None:
        return Loaded("Flower", None, {}, f"Flower is not installed; {INSTALL_HINT}")
    try:
        modules = {"aggregate": importlib.import_module("flwr.server.strategy.aggregate")}
        modules["dp"] = _first_module(
            "flwr.supercore.differential_privacy",  # 1.2x and later
            "flwr.common.differential_privacy",  # earlier releases
        )
    except ImportError as error:
        return Loaded(
            "Flower", version, {}, f"Flower {version} does not import: {error}; {INSTALL_HINT}"
        )
    return Loaded("Flower", version, modules)


def _first_module(*names: str) -> ModuleType:
    """The first of ``names`` that imports (Flower moved its DP helpers between releases)."""
    for name in names[:-1]:
        with contextlib.suppress(ModuleNotFoundError):
            return importlib.import_module(name)
    return importlib.import_module(names[-1])
