"""A `groundwire serve` child process: started with its log in a file, waited for until it
answers health checks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def start_serve(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``groundwire serve`` with exactly ``env``, its output in ``log_path``: a file, not a
    pipe, since nobody reads a pipe while the server runs, and a full one (64 KiB of JSON lines
    from several workers) would block the server's writes, its drain with them."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "groundwire.server.cli", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def wait_serving(
    address: str, process: subprocess.Popen[bytes], *, attempts: int = 600
) -> None:
    """Poll the server's overall health every 0.1 s until it is SERVING; fail if the process
    exits first or ``attempts`` polls pass."""
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(attempts):
            assert process.poll() is None, "server exited during start-up"
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server never became SERVING")
