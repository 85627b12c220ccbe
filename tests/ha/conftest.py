"""Fixtures for the failover tests: a real etcd on loopback ports, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.ha.etcd import Etcd
from phalanx.ha.etcd_server import EtcdCluster


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "etcd", 1) as cluster:
        yield cluster


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "etcd3", 3) as cluster:
        yield cluster


def client(cluster: EtcdCluster) -> Etcd:
    return Etcd(cluster.endpoints, timeout_s=1.0)
