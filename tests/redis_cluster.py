"""A real Redis Cluster for tests: three masters (Debian's ``redis-server`` with
``--cluster-enabled yes``) on free loopback ports, joined by ``redis-cli --cluster create``.

No replicas: what the tests are about is a client that loses a node, and a replica would only
change how long the node's slots stay unserved (a failover after the node timeout instead of
until the restart). Each node keeps its cluster config file (``nodes.conf``, its id, epoch and
slots) in a directory of its own, so a killed node restarted on its port rejoins with its
slots, empty (nothing is persisted), as a cache node restarted by its supervisor would.

Cluster mode announces each node's port to clients and listens on port + 10000 for the
cluster bus, so every node gets a port whose bus port is free too. ``node_timeout_ms`` is
short (default 1 s) so that a killed node is marked failing within the length of a test.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.redis_server import free_port

BUS_OFFSET = 10_000  # Redis Cluster's bus listens on the client port + 10000
CREATE_OPTIONS = ("--cluster-replicas", "0", "--cluster-yes")  # masters only, no prompt


def cluster_binaries() -> tuple[str, str] | None:
    """``(redis-server, redis-cli)``, or None when either is not installed."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


def free_cluster_port(taken: frozenset[int] = frozenset()) -> int:
    """A loopback port that is free and whose cluster bus port (+10000) is free too, neither
    of them among the ``taken`` ports (the other nodes' and their buses')."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET > 65_535 or {port, port + BUS_OFFSET} & taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) on 127.0.0.1")


class RedisClusterNodes:
    """Three (``size``) cluster masters; :meth:`kill` one to test failure, :meth:`restart` it
    on the same port to test recovery."""

    def __init__(self, size: int = 3, node_timeout_ms: int = 1000) -> None:
        binaries = cluster_binaries()
        if binaries is None:
            raise RuntimeError("redis-server and redis-cli are needed for a Redis Cluster")
        self.server_binary, self.cli_binary = binaries
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        for _ in range(size):
            taken = frozenset(self.ports) | {port + BUS_OFFSET for port in self.ports}
            self.ports.append(free_cluster_port(taken))
        self.dir = Path(tempfile.mkdtemp(prefix="gw-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """One node's URL, as a deployment configures it (``GROUNDWIRE_REDIS_URL``): the
        client learns the others from it."""
        return self.node_url(0)

    def node_url(self, index: int) -> str:
        """``redis://127.0.0.1:<port>`` of node ``index`` (cluster mode has only db 0)."""
        return f"redis://127.0.0.1:{self.ports[index]}"

    def admin(self, index: int) -> redis.Redis:
        """A plain (non-cluster) client to one node, for the test's own checks."""
        return redis.Redis(host="127.0.0.1", port=self.ports[index], socket_timeout=2)

    def start(self) -> None:
        """Start every node, join them into one cluster and wait until it serves."""
        for index in range(len(self.ports)):
            self._start_node(index)
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        created = subprocess.run(
            [self.cli_binary, "--cluster", "create", *addresses, *CREATE_OPTIONS],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            output = (created.stdout + created.stderr).decode(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")
        self.wait_until_ok()

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (its slots go unserved until :meth:`restart`)."""
        process = self.processes.pop(index, None)
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self, index: int) -> None:
        """Start node ``index`` again on its port; it rejoins from its config file."""
        self._start_node(index)

    def running(self, index: int) -> bool:
        """Whether node ``index``'s process is up."""
        return index in self.processes

    def cluster_state(self, index: int) -> str:
        """What node ``index`` says in ``CLUSTER INFO``: ``ok`` or ``fail``."""
        with self.admin(index) as client:
            info = client.cluster("INFO")  # redis-py parses it into a dict
        return str(info.get("cluster_state", "unknown"))

    def wait_until_ok(self, timeout_s: float = 30.0) -> float:
        """Wait until every node says ``cluster_state:ok``; the seconds it took."""
        started = time.monotonic()
        while True:
            try:
                if all(self.cluster_state(i) == "ok" for i in range(len(self.ports))):
                    return time.monotonic() - started
            except redis.RedisError:
                pass
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"no cluster_state:ok on every node within {timeout_s} s")
            time.sleep(0.05)

    def keyslot(self, key: str) -> int:
        """The slot the cluster puts ``key`` in (``CLUSTER KEYSLOT``, asked of a live node)."""
        with self.admin(self._live()) as client:
            return int(client.cluster("KEYSLOT", key))

    def owner(self, slot: int) -> int:
        """The index of the node that serves ``slot`` (``CLUSTER SLOTS``)."""
        with self.admin(self._live()) as client:
            ranges = client.cluster("SLOTS")
        for start, end, (_host, port, *_), *_replicas in ranges:
            if start <= slot <= end:
                return self.ports.index(int(port))
        raise LookupError(f"no node serves slot {slot}")

    def all_keys(self) -> list[str]:
        """Every key on every live node."""
        found: list[str] = []
        for index in self.processes:
            with self.admin(index) as client:
                found += [key.decode() for key in client.scan_iter(count=1000)]
        return found

    def error_replies(self) -> dict[str, int]:
        """Error replies the live nodes sent since :meth:`reset_stats`, by error code
        (``CROSSSLOT``, ``MOVED``, ``CLUSTERDOWN`` ...), summed over the nodes."""
        counts: dict[str, int] = {}
        for index in self.processes:
            with self.admin(index) as client:
                for name, stat in client.info("errorstats").items():
                    code = name.removeprefix("errorstat_")
                    counts[code] = counts.get(code, 0) + int(stat["count"])
        return counts

    def reset_stats(self) -> None:
        """``CONFIG RESETSTAT`` on every live node."""
        for index in self.processes:
            with self.admin(index) as client:
                client.config_resetstat()

    def flush(self) -> None:
        """Empty every node (each holds only its own slots' keys)."""
        for index in range(len(self.ports)):
            with self.admin(index) as client:
                client.flushall()

    def stop(self) -> None:
        """Kill every node."""
        for index in list(self.processes):
            self.kill(index)

    def __enter__(self) -> RedisClusterNodes:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _live(self) -> int:
        return next(iter(sorted(self.processes)))

    def _start_node(self, index: int) -> None:
        port = self.ports[index]
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        process = subprocess.Popen(
            [
                self.server_binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes[index] = process
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with self.admin(index) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server (cluster node) did not start on port {port}")
