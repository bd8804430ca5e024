"""A live groundwire stack for the SDK scenarios: the scripted OpenAI-compatible upstream and
a real ``groundwire serve`` (embedded defaults: Qdrant Edge, the local MiniLM; API keys for
one tenant per SDK language), each its own process on a free loopback port.

Run it alone to develop an SDK against it::

    .venv/bin/python -m tests.e2e.live      # prints the GROUNDWIRE_TEST_* variables, then waits
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundwire.server.measure.redis_process import free_port

REPO = Path(__file__).resolve().parents[2]
# One tenant per language, so the scenarios never see each other's documents.
API_KEYS = {
    "python": "sdk-python-key-0123456789",
    "go": "sdk-go-key-0123456789abc",
    "typescript": "sdk-ts-key-0123456789abc",
}
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LiveStack:
    """Where the stack listens."""

    address: str
    upstream_url: str

    def env(self, language: str) -> dict[str, str]:
        """The variables an SDK's scenario reads."""
        return {
            "GROUNDWIRE_TEST_ADDRESS": self.address,
            "GROUNDWIRE_TEST_API_KEY": API_KEYS[language],
            "GROUNDWIRE_TEST_UPSTREAM": self.upstream_url,
        }


def _wait_serving(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"groundwire serve exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"groundwire serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)


def _wait_upstream(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError("the scripted upstream exited")
        try:
            with urllib.request.urlopen(url.removesuffix("/v1") + "/_scripted/requests", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def live_stack(work: Path) -> Iterator[LiveStack]:
    """Start the upstream and the server; stop both on the way out."""
    upstream_port, server_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    address = f"127.0.0.1:{server_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWIRE_")}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GROUNDWIRE_LISTEN": address,
            "GROUNDWIRE_DATA_DIR": str(work / "data"),
            "GROUNDWIRE_METRICS_PORT": "0",
            "GROUNDWIRE_AUTH_MODE": "api_key",
            "GROUNDWIRE_API_KEYS": json.dumps({t: k for t, k in API_KEYS.items()}),
            "GROUNDWIRE_LLM_BASE_URL": upstream_url,
            "GROUNDWIRE_GRACE_PERIOD_S": "2",
            "GROUNDWIRE_LOG_LEVEL": "WARNING",
        }
    )
    upstream_log = (work / "upstream.log").open("wb")
    server_log_path = work / "server.log"
    server_log = server_log_path.open("wb")
    upstream = subprocess.Popen(
        [sys.executable, "-m", "groundwire.server.scripted_llm", "--port", str(upstream_port)],
        cwd=REPO,
        env=env,
        stdout=upstream_log,
        stderr=subprocess.STDOUT,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "groundwire.server.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_upstream(upstream_url, upstream)
        _wait_serving(address, server, server_log_path)
        yield LiveStack(address, upstream_url)
    finally:
        _stop(server)
        _stop(upstream)
        upstream_log.close()
        server_log.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gw-live-") as work, live_stack(Path(work)) as stack:
        for language in API_KEYS:
            print(f"# {language}")
            for key, value in stack.env(language).items():
                print(f"export {key}={value}")
        print("# serving; Ctrl-C or SIGTERM stops the stack", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
