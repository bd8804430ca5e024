"""The container's health check command (``python -m groundwire.server.healthcheck``), run as
the image and the compose file run it: a separate process against a real server."""

from __future__ import annotations

import asyncio
import sys

from tests.redis_server import free_port
from tests.rpc.conftest import ServerFactory


async def healthcheck(*args: str) -> tuple[int, str]:
    """Run the command; its exit code and what it wrote to stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "groundwire.server.healthcheck",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_serving_then_draining_then_gone(make_server: ServerFactory) -> None:
    running = await make_server(dense=None, cache=None)
    address = f"127.0.0.1:{running.server.port}"
    assert await healthcheck(address) == (0, "")
    assert (await healthcheck(address, "--service", "groundwire.v1.GenerationService"))[0] == 0
    code, said = await healthcheck(address, "--service", "no.such.Service")
    assert code == 1 and "no.such.Service is not SERVING" in said

    # Draining: health turns NOT_SERVING before the port closes (what takes a replica out).
    running.server.state.draining = True
    await running.server.health.enter_graceful_shutdown()
    assert (await healthcheck(address))[0] == 1
    await running.server.stop(grace_s=0)

    code, said = await healthcheck(f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert code == 1 and "server is not SERVING" in said
