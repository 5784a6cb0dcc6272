"""Real Redis Cluster and Sentinel deployments on loopback, for the tests and the benchmarks.

`LocalCluster` runs `redis-server --cluster-enabled yes` processes (by default 3 masters, 3
replicas) and joins them with `redis-cli --cluster create`; `LocalSentinel` runs a master,
a replica and three sentinels (`redis-sentinel`, or `redis-server --sentinel` where Debian's
`redis-sentinel` package is not installed). Both use free ports and temporary directories,
short failure-detection timeouts (a failover takes seconds, not the production default of
15-30 s), and can SIGKILL their master to force a failover. Nothing persists: no RDB, no AOF.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis


class TopologyError(Exception):
    """A local deployment did not come up (or did not fail over) in time."""


def binaries_missing() -> str | None:
    """Why local deployments cannot run here (None: they can)."""
    for name in ("redis-server", "redis-cli"):
        if shutil.which(name) is None:
            return f"{name} is not installed (make test installs Debian's redis-server)"
    return None


def sentinel_command(conf: Path) -> list[str]:
    found = shutil.which("redis-sentinel")
    return [found, str(conf)] if found else [str(shutil.which("redis-server")), str(conf), "--sentinel"]


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(check: object, timeout_s: float, what: str, step_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as e:
            last = e
        time.sleep(step_s)
    raise TopologyError(f"{what} not within {timeout_s:.0f} s" + (f" ({last})" if last else ""))


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """Free ports for cluster nodes: each one's bus port (10,000 higher, which Redis derives)
    must be free too, so both stay below 65,536."""
    ports: list[int] = []
    for candidate in random.sample(range(20000, 55000), 4000):
        if _bindable(candidate) and _bindable(candidate + 10000) and \
                not any(abs(candidate - p) == 10000 for p in ports):
            ports.append(candidate)
            if len(ports) == n:
                return ports
    raise TopologyError("no free ports for a cluster")


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2.0, socket_connect_timeout=1.0)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def _server(binary: list[str], port: int, workdir: Path, *extra: str) -> Node:
    workdir.mkdir(parents=True, exist_ok=True)
    args = [*binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log",
            *extra]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return Node(port, proc, workdir)


def _stop(nodes: list[Node]) -> None:
    for node in nodes:
        if node.alive:
            node.proc.terminate()
    for node in nodes:
        try:
            node.proc.wait(5)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()


class LocalCluster:
    """A Redis Cluster of `masters` masters with `replicas` replicas each, on 127.0.0.1."""

    def __init__(self, workdir: Path, *, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[Node] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self, timeout_s: float = 60.0) -> None:
        count = self.masters * (1 + self.replicas)
        binary = [str(shutil.which("redis-server"))]
        for port in cluster_ports(count):
            self.nodes.append(_server(
                binary, port, self.workdir / str(port),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # a replica may always take over, however long since it heard its master
                "--cluster-replica-validity-factor", "0"))
        try:
            for node in self.nodes:
                wait_for(lambda n=node: n.client().ping(), 10, f"redis-server on {node.port}")
            subprocess.run(
                ["redis-cli", "--cluster", "create",
                 *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout_s)
            wait_for(self._healthy, timeout_s, "cluster_state:ok with every replica attached")
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            c = node.client()
            try:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
            finally:
                c.close()
        roles = self.roles()
        return (sum(r == "master" for r in roles.values()) == self.masters
                and sum(r == "slave" for r in roles.values()) == self.masters * self.replicas)

    def roles(self) -> dict[int, str]:
        """{port: 'master' | 'slave'} of the live nodes, as the cluster sees them."""
        for node in self.nodes:
            if not node.alive:
                continue
            c = node.client()
            try:
                raw = c.execute_command("CLUSTER", "NODES")
            finally:
                c.close()
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            roles = {}
            for line in text.splitlines():
                parts = line.split()
                port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                flags = parts[2].split(",")
                if "fail" in flags or "fail?" in flags:
                    continue
                roles[port] = "master" if "master" in flags else "slave"
            return roles
        return {}

    def master_ports(self) -> list[int]:
        return sorted(p for p, r in self.roles().items() if r == "master")

    def kill_master(self, port: int | None = None) -> int:
        """SIGKILL one master (the first, or the one on `port`); returns its port."""
        port = port if port is not None else self.master_ports()[0]
        node = next(n for n in self.nodes if n.port == port)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        return port

    def wait_failed_over(self, timeout_s: float = 30.0) -> None:
        """Until a replica has taken over every slot of the killed master."""
        wait_for(self._healthy_without_dead, timeout_s, "the failover")

    def _healthy_without_dead(self) -> bool:
        live = [n for n in self.nodes if n.alive]
        for node in live:
            c = node.client()
            try:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
            finally:
                c.close()
        alive = {n.port for n in live}
        masters = [p for p, r in self.roles().items() if r == "master"]
        return len(masters) == self.masters and all(p in alive for p in masters)

    def stop(self) -> None:
        _stop(self.nodes)


class LocalSentinel:
    """A master, `replicas` replicas and `sentinels` sentinels watching them as `service`."""

    def __init__(self, workdir: Path, *, replicas: int = 1, sentinels: int = 3,
                 service: str = "mymaster", down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.service = service
        self.down_after_ms = down_after_ms
        self.servers: list[Node] = []
        self.sentinels: list[Node] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self, timeout_s: float = 30.0) -> None:
        ports = free_ports(1 + self.replica_count + self.sentinel_count)
        binary = [str(shutil.which("redis-server"))]
        master = ports[0]
        try:
            self.servers.append(_server(binary, master, self.workdir / str(master)))
            for port in ports[1 : 1 + self.replica_count]:
                self.servers.append(_server(binary, port, self.workdir / str(port),
                                            "--replicaof", "127.0.0.1", str(master)))
            for port in ports[1 + self.replica_count:]:
                workdir = self.workdir / f"sentinel-{port}"
                workdir.mkdir(parents=True)
                conf = workdir / "sentinel.conf"  # sentinels rewrite it: a file of their own
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile sentinel.log\n"
                    f"sentinel monitor {self.service} 127.0.0.1 {master} 2\n"
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.service} 10000\n"
                    f"sentinel parallel-syncs {self.service} 1\n")
                proc = subprocess.Popen(sentinel_command(conf), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.sentinels.append(Node(port, proc, workdir))
            wait_for(self._watching, timeout_s, "sentinels watching the master and replica")
        except BaseException:
            self.stop()
            raise

    def _watching(self) -> bool:
        """Every sentinel knows the replicas and the other sentinels (else no failover)."""
        for node in self.sentinels:
            c = node.client()
            try:
                replicas = cast(list[dict[str, Any]], c.sentinel_slaves(self.service))
                peers = cast(list[dict[str, Any]], c.sentinel_sentinels(self.service))
            finally:
                c.close()
            up = [r for r in replicas if "s_down" not in r.get("flags", "")
                  and r.get("master-link-status") == "ok"]
            if len(up) < self.replica_count or len(peers) < self.sentinel_count - 1:
                return False
        return True

    def master_port(self) -> int:
        c = self.sentinels[0].client()
        try:
            _host, port = cast(tuple[str, int], c.sentinel_get_master_addr_by_name(self.service))
        finally:
            c.close()
        return int(port)

    def kill_master(self) -> int:
        port = self.master_port()
        node = next(n for n in self.servers if n.port == port)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        return port

    def wait_failed_over(self, old_port: int, timeout_s: float = 30.0) -> int:
        """Until the sentinels name a live master other than `old_port`; returns its port."""
        def promoted() -> bool:
            port = self.master_port()
            node = next((n for n in self.servers if n.port == port), None)
            if port == old_port or node is None or not node.alive:
                return False
            c = node.client()
            try:
                return bool(c.info("replication")["role"] == "master")
            finally:
                c.close()
        wait_for(promoted, timeout_s, "the Sentinel failover", step_s=0.1)
        return self.master_port()

    def stop(self) -> None:
        _stop(self.sentinels)
        _stop(self.servers)
        self.sentinels, self.servers = [], []


@contextlib.contextmanager
def running(topology: LocalCluster | LocalSentinel):  # type: ignore[no-untyped-def]
    topology.start()
    try:
        yield topology
    finally:
        topology.stop()
