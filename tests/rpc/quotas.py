"""Helpers for the quota tests (single Redis and Redis Cluster): the caller's quotas as
GetCapabilities reports them, and a start well inside a wall-clock minute."""

from __future__ import annotations

import time

from groundwire.v1 import capabilities_pb2
from tests.rpc.conftest import KEY_A, Running, auth


async def quotas_of(running: Running, key: str = KEY_A) -> dict[str, capabilities_pb2.Quota]:
    """The calling tenant's quotas by name."""
    response = await running.capabilities.GetCapabilities(
        capabilities_pb2.GetCapabilitiesRequest(), metadata=auth(key)
    )
    return {q.name: q for q in response.quotas}


def start_well_inside_a_minute() -> None:
    """The per-minute quota windows are the wall clock's: a test that straddled a minute's end
    would see its budget refill halfway, so wait for the next minute when less than 10 s of
    this one are left."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.05)
