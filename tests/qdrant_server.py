"""A real Qdrant server for tests: the binary at ``GROUNDWIRE_TEST_QDRANT_BIN`` (default
``../shared/bin/qdrant`` beside the repository), on free loopback ports, with its own
temporary storage and telemetry off. Tests that need it skip, naming the variable, when the
binary is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.redis_server import free_port

BIN_VARIABLE = "GROUNDWIRE_TEST_QDRANT_BIN"
_DEFAULT_BIN = Path(__file__).resolve().parents[1].parent / "shared" / "bin" / "qdrant"


def qdrant_binary() -> Path | None:
    """The Qdrant binary the tests use, or None when it is not there."""
    configured = os.environ.get(BIN_VARIABLE)
    path = Path(configured) if configured else _DEFAULT_BIN
    return path if path.is_file() and os.access(path, os.X_OK) else None


class QdrantServer:
    """One Qdrant process on 127.0.0.1 (REST and gRPC on free ports), stopped on exit."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-qdrant-"))
        self.process: subprocess.Popen[bytes] | None = None

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
        log = (self.dir / "qdrant.log").open("wb")
        self.process = subprocess.Popen(
            [str(self.binary)], cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT
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
