"""Waiting for a `groundwire serve` child process to answer health checks."""

from __future__ import annotations

import asyncio
import subprocess

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


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
