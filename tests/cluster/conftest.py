"""Real Redis Cluster (3 masters, 3 replicas) and Sentinel (a master, a replica, 3 sentinels)
deployments on loopback ports, from Debian's redis-server (loadtest/redis_topologies.py).

The shared ones live for the session and are emptied before each test; a test that kills a
master takes a deployment of its own (`fresh_cluster`, `fresh_sentinel`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from semcache.loadtest.redis_topologies import LocalCluster, LocalSentinel, binaries_missing

MISSING = binaries_missing()


def _skip_without_redis() -> None:
    if MISSING:
        pytest.skip(MISSING)


def _flush(ports: list[int]) -> None:
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    _skip_without_redis()
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    _flush(redis_cluster.master_ports())
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    _skip_without_redis()
    sentinel = LocalSentinel(tmp_path_factory.mktemp("sentinel"))
    sentinel.start()
    yield sentinel
    sentinel.stop()


@pytest.fixture
def sentinel_url(redis_sentinel: LocalSentinel) -> str:
    _flush([redis_sentinel.master_port()])
    return redis_sentinel.url


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    _skip_without_redis()
    cluster = LocalCluster(tmp_path / "cluster")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    _skip_without_redis()
    sentinel = LocalSentinel(tmp_path / "sentinel")
    sentinel.start()
    yield sentinel
    sentinel.stop()
