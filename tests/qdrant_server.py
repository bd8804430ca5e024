"""A real Qdrant server for tests: the binary at ``GROUNDWIRE_TEST_QDRANT_BIN`` (default
``../shared/bin/qdrant`` beside the repository), on free loopback ports, with its own
temporary storage and telemetry off; or, for single-node tests, an existing server at
``GROUNDWIRE_TEST_QDRANT_URL``. Tests that need one skip, naming both variables, when there is
neither.

:class:`QdrantCluster` starts peers of one cluster on 127.0.0.1 (the first with ``--uri``, the
others ``--bootstrap`` from it), each with its own ports and storage, and can SIGKILL and
restart a peer with its storage kept, as a crashed node comes back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.redis_server import free_port

BIN_VARIABLE = "GROUNDWIRE_TEST_QDRANT_BIN"
URL_VARIABLE = "GROUNDWIRE_TEST_QDRANT_URL"
GRPC_PORT_VARIABLE = "GROUNDWIRE_TEST_QDRANT_GRPC_PORT"
SKIP_REASON = (
    f"no Qdrant server: set {BIN_VARIABLE} (default ../shared/bin/qdrant) to a qdrant binary, "
    f"or {URL_VARIABLE} to a running server (single-node tests only)"
)
_DEFAULT_BIN = Path(__file__).resolve().parents[1].parent / "shared" / "bin" / "qdrant"


def qdrant_binary() -> Path | None:
    """The Qdrant binary the tests use, or None when it is not there."""
    configured = os.environ.get(BIN_VARIABLE)
    path = Path(configured) if configured else _DEFAULT_BIN
    return path if path.is_file() and os.access(path, os.X_OK) else None


class ExternalQdrant:
    """A server this test session did not start (``GROUNDWIRE_TEST_QDRANT_URL``; its gRPC
    port from ``GROUNDWIRE_TEST_QDRANT_GRPC_PORT``, default 6334). Never stopped by tests."""

    def __init__(self, url: str, grpc_port: int) -> None:
        self.url = url.rstrip("/")
        self.grpc_port = grpc_port


def external_qdrant() -> ExternalQdrant | None:
    """The server ``GROUNDWIRE_TEST_QDRANT_URL`` names, if it does."""
    url = os.environ.get(URL_VARIABLE)
    if not url:
        return None
    return ExternalQdrant(url, int(os.environ.get(GRPC_PORT_VARIABLE, "6334")))


class QdrantServer:
    """One Qdrant process on 127.0.0.1 (REST and gRPC on free ports), stopped on exit.

    ``cluster_args`` makes it a cluster peer (with its own p2p port); :meth:`kill` and
    :meth:`start` again bring it back on the same ports and storage.
    """

    def __init__(self, binary: Path, *, cluster_args: tuple[str, ...] | None = None) -> None:
        self.binary = binary
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.p2p_port = free_port()
        self.cluster_args = cluster_args
        self.dir = Path(tempfile.mkdtemp(prefix="gw-qdrant-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def p2p_uri(self) -> str:
        """The peer-to-peer URI other peers bootstrap from."""
        return f"http://127.0.0.1:{self.p2p_port}"

    @property
    def url(self) -> str:
        """The REST URL, as a deployment would configure it (``GROUNDWIRE_QDRANT_URL``)."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """Start the server and wait until it is ready."""
        env = {
            **os.environ,
            "QDRANT__SERVICE__HOST": "127.0.0.1",
            "QDRANT__SERVICE__HTTP_PORT": str(self.http_port),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
            "QDRANT__STORAGE__STORAGE_PATH": str(self.dir / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.dir / "snapshots"),
            # Otherwise Qdrant reports usage to its makers over the network.
            "QDRANT__TELEMETRY_DISABLED": "true",
        }
        args = [str(self.binary)]
        if self.cluster_args is not None:
            env["QDRANT__CLUSTER__ENABLED"] = "true"
            env["QDRANT__CLUSTER__P2P__PORT"] = str(self.p2p_port)
            args += [*self.cluster_args, "--uri", self.p2p_uri]
        log = (self.dir / "qdrant.log").open("ab")
        self.process = subprocess.Popen(
            args, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        tail = (self.dir / "qdrant.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"qdrant did not start on port {self.http_port}:\n{tail}")

    def kill(self) -> None:
        """SIGKILL the process, as a crash would; its storage stays for :meth:`start`."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> QdrantServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class QdrantCluster:
    """``peers`` Qdrant processes forming one cluster on 127.0.0.1; peer 0 is the first."""

    def __init__(self, binary: Path, peers: int = 3) -> None:
        first = QdrantServer(binary, cluster_args=())
        self.peers = [first] + [
            QdrantServer(binary, cluster_args=("--bootstrap", first.p2p_uri))
            for _ in range(peers - 1)
        ]

    def start(self) -> None:
        """Start the peers one after the other and wait until all of them joined."""
        try:
            for peer in self.peers:
                peer.start()
            self.wait_for_peers(len(self.peers))
        except BaseException:
            self.stop()
            raise

    def wait_for_peers(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until peer 0's view of the cluster holds ``count`` peers."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for peer in self.peers:
                if peer.process is None:
                    continue
                try:
                    with urllib.request.urlopen(f"{peer.url}/cluster", timeout=1) as response:
                        seen = len(json.load(response)["result"]["peers"])
                except (urllib.error.URLError, OSError, KeyError, ValueError):
                    continue
                if seen >= count:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the Qdrant cluster has {seen} peers, not {count}")

    def stop(self) -> None:
        """Stop every peer and remove their storage."""
        for peer in self.peers:
            peer.__exit__()

    def __enter__(self) -> QdrantCluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
