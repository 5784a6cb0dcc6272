"""`redis.url`: what each form opens (redis-py's own clients), and one clear ConfigError
naming the key for a malformed one."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from semcache.index.connect import close_client, open_client, parse_redis_url
from semcache.proxy.config import ConfigError, load_settings


@pytest.mark.parametrize(("url", "kind", "nodes"), [
    ("redis://127.0.0.1:6379/0", "single", ()),
    ("rediss://user:secret@cache.example:6380/2", "single", ()),
    ("unix:///run/redis.sock?db=1", "single", ()),
    ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001", "cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001))),
    ("rediss+cluster://:pw@node-a:7000", "cluster", (("node-a", 7000),)),
    ("redis+sentinel://s1:26379,s2:26380,s3/mymaster/3", "sentinel",
     (("s1", 26379), ("s2", 26380), ("s3", 26379))),
])
def test_urls_that_parse(url: str, kind: str, nodes: tuple[tuple[str, int], ...]) -> None:
    target = parse_redis_url(url)
    assert target.kind == kind and target.nodes == nodes
    settings = load_settings(environ={}, overrides={"redis.url": url})
    assert settings.redis.url == url


def test_the_parts_of_a_sentinel_url() -> None:
    target = parse_redis_url("rediss+sentinel://app:p%40ss@s1:26379/cache-main/2")
    assert (target.service, target.db, target.username, target.password, target.tls) == \
        ("cache-main", 2, "app", "p@ss", True)
    assert parse_redis_url("redis://h:7000", cluster=True).kind == "cluster"


@pytest.mark.parametrize(("url", "said"), [
    ("http://127.0.0.1:6379", "expected 'embedded' or a redis://"),
    ("redis+sentinel://s1:26379", "no service name"),
    ("redis+sentinel://s1:26379/", "no service name"),
    ("redis+cluster://a:notaport", "not host:port"),
    ("redis+cluster://a:7000/3", "only database 0"),
    ("redis://a:1,b:2/0", "several hosts"),
    ("redis://:pw@/0", "no host"),
    ("redis://h:6379/x", "database must be a number"),
    ("redis+sentinel://s:26379/m/x", "database must be a number"),
    ("unix://", "no socket path"),
])
def test_malformed_urls_are_one_config_error(url: str, said: str) -> None:
    with pytest.raises(ConfigError, match=r"redis\.url: .*" + said):
        load_settings(environ={}, overrides={"redis.url": url})


def test_conflicting_cluster_setting_and_prefix() -> None:
    env = {"SEMCACHE__REDIS__CLUSTER": "true"}
    with pytest.raises(ConfigError, match=r"redis\.url: a Sentinel URL cannot also be a cluster"):
        load_settings(environ=env, overrides={"redis.url": "redis+sentinel://s:26379/m"})
    with pytest.raises(ConfigError, match=r"redis\.cluster: the embedded Redis"):
        load_settings(environ=env)
    with pytest.raises(ConfigError, match=r"redis\.key_prefix"):
        load_settings(environ={"SEMCACHE__REDIS__KEY_PREFIX": "app{1}:"})


async def test_each_form_opens_redis_pys_own_client() -> None:
    single = open_client("redis://127.0.0.1:1/0", socket_timeout=1, socket_connect_timeout=1)
    cluster = open_client("redis+cluster://127.0.0.1:1", socket_timeout=1, socket_connect_timeout=1)
    sentinel = open_client("redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster", socket_timeout=1,
                           socket_connect_timeout=1)
    try:
        assert type(single) is aioredis.Redis and isinstance(cluster, aioredis.RedisCluster)
        assert type(sentinel.connection_pool).__name__ == "SentinelConnectionPool"
        assert sentinel.connection_pool.service_name == "mymaster"
        assert [s.connection_pool.connection_kwargs["port"]
                for s in sentinel.connection_pool.sentinel_manager.sentinels] == [1, 2]
    finally:
        for client in (single, cluster, sentinel):
            await close_client(client)


async def test_redis_py_internal_errors_count_as_redis_failures() -> None:
    """redis-py leaks an AttributeError when a connection dies under a command (seen in the
    cluster failover test); the store fails open on it, but not on one of its own bugs."""
    from redis.asyncio.connection import Connection

    from semcache.index.connect import is_redis_failure

    try:
        await Connection()._send_packed_command([b"PING"])  # no writer: never connected
    except AttributeError as e:
        assert is_redis_failure(e)
    else:
        raise AssertionError("redis-py no longer fails this way")
    try:
        None.missing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as e:
        assert not is_redis_failure(e)
    assert is_redis_failure(ConnectionRefusedError()) and not is_redis_failure(ValueError())
