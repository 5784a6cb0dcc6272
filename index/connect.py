"""Opening Redis from `redis.url`: one server, a Redis Cluster, or a master behind Sentinel.

    redis://[user:password@]host:port[/db]         one server (also rediss:// for TLS)
    unix://[user:password@]/path/to/socket[?db=N]  one server on a Unix socket
    redis+cluster://[user:password@]host:port[,host:port...]
                                                   a Redis Cluster, by any of its nodes
                                                   (rediss+cluster:// for TLS; or a
                                                   redis:// URL with `redis.cluster = true`)
    redis+sentinel://[user:password@]host:26379[,host:26379...]/service[/db]
                                                   the master Sentinel names `service`
                                                   (rediss+sentinel:// for TLS to it)

redis-py's own clients do the work: `RedisCluster` follows the slot map (MOVED, ASK, and a
refresh after a master fails over), Sentinel's connection pool asks the sentinels for the
master on every new connection, so a promoted replica is found after a failover. Either
way the store sees the same commands as on one server (index/keys.py keeps every
transaction and script on one slot).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

PLAIN_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
"""What a Redis call raises when Redis is unavailable: redis-py's errors (a cluster whose
nodes are all unreachable, or a slot left uncovered mid-failover, raise a
RedisClusterException, which is no RedisError), and OSError from a socket below redis-py."""




def is_redis_failure(error: BaseException) -> bool:
    """Whether `error` means Redis is unavailable: one of REDIS_ERRORS, or any other error
    raised inside redis-py or asyncio's transports. redis-py leaks such errors when a
    connection or the cluster's slot map changes under a command (AttributeError, TypeError,
    KeyError, uvloop's RuntimeError on a closed transport: redis-py issues #4287 and #3835;
    seen here when a master was killed under load, tests/cluster/test_failover.py). The same
    errors raised from semcache's own code are bugs and are not swallowed. The cluster and
    Sentinel tests assert that the store saw no failure at all in normal operation, so a
    misuse of redis-py does not hide behind this."""
    if isinstance(error, REDIS_ERRORS):
        return True
    if not isinstance(error, Exception):
        return False
    tb, last = error.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    where = last.tb_frame.f_code.co_filename if last is not None else ""
    return any(f"{os.sep}{package}{os.sep}" in where for package in ("redis", "asyncio"))


class RedisURLError(ValueError):
    """`redis.url` names no Redis this module can open (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """What a `redis.url` names."""

    kind: str
    """`single`, `cluster` or `sentinel`."""
    url: str
    """For `single`: the URL as redis-py reads it."""
    nodes: tuple[tuple[str, int], ...] = ()
    """Cluster start-up nodes, or the sentinels."""
    service: str = ""
    """The Sentinel service (master) name."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def _hosts(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = part.strip(), str(default_port)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisURLError(f"not host:port in {url!r}: {part!r}")
        nodes.append((host, int(port)))
    return tuple(nodes)


def parse_redis_url(url: str, *, cluster: bool = False) -> RedisTarget:
    """Read a `redis.url` (see the module's docstring); RedisURLError if it is malformed."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (*PLAIN_SCHEMES, *CLUSTER_SCHEMES, *SENTINEL_SCHEMES):
        raise RedisURLError(
            f"expected 'embedded' or a redis://, rediss://, unix://, redis+cluster:// or "
            f"redis+sentinel:// URL, got {url!r}")
    if scheme == "unix":
        if cluster:
            raise RedisURLError("a unix:// socket cannot be a cluster (set redis.cluster = false)")
        if not urlsplit(url).path:
            raise RedisURLError(f"no socket path in {url!r}")
        return RedisTarget(kind="single", url=url)
    # The netloc may list several hosts, which urlsplit does not read: split it by hand.
    netloc, _, path = rest.partition("/")
    path, _, _query = path.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    if not hosts:
        raise RedisURLError(f"no host in {url!r}")
    tls = scheme.startswith("rediss")
    if scheme in SENTINEL_SCHEMES:
        if cluster:
            raise RedisURLError("a Sentinel URL cannot also be a cluster (set redis.cluster = false)")
        service, _, db = path.partition("/")
        if not service:
            raise RedisURLError(f"no service name in {url!r} (redis+sentinel://host:26379/mymaster)")
        if db and not db.isdigit():
            raise RedisURLError(f"database must be a number in {url!r}")
        return RedisTarget(kind="sentinel", url=url, nodes=_hosts(hosts, 26379, url),
                           service=unquote(service), db=int(db or 0), username=username,
                           password=password, tls=tls)
    nodes = _hosts(hosts, 6379, url)
    if scheme in CLUSTER_SCHEMES or cluster:
        if path.strip("/") not in ("", "0"):
            raise RedisURLError(f"a cluster has only database 0, got {url!r}")
        return RedisTarget(kind="cluster", url=url, nodes=nodes, username=username,
                           password=password, tls=tls)
    if len(nodes) > 1:
        raise RedisURLError(f"several hosts need redis+cluster:// or redis+sentinel://: {url!r}")
    if path and not path.isdigit():
        raise RedisURLError(f"database must be a number in {url!r}")
    return RedisTarget(kind="single", url=url)


def open_client(url: str, *, cluster: bool = False, socket_timeout: float,
                socket_connect_timeout: float, max_connections: int = 512) -> Any:
    """A redis.asyncio client for `url` (Redis, or RedisCluster); opens no connection yet."""
    target = parse_redis_url(url, cluster=cluster)
    common: dict[str, Any] = {"socket_timeout": socket_timeout,
                              "socket_connect_timeout": socket_connect_timeout}
    if target.kind == "single":
        return aioredis.Redis.from_url(url, max_connections=max_connections, **common)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        return aioredis.RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            ssl=target.tls, max_connections=max_connections, **auth, **common)
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=dict(common), **common)
    return sentinel.master_for(target.service, db=target.db, ssl=target.tls,
                               max_connections=max_connections, **auth)


async def close_client(client: Any) -> None:
    """Close a client from `open_client`, and a Sentinel's own connections with it."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()
