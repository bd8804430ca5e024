"""Redis Cluster, for real: the retrieval cache, the answer cache and the quotas on a 3-master
cluster (``GROUNDWIRE_REDIS_CLUSTER=true``, the URL of one node), through the stubs.

- Entries hit on the cluster, and an ingest still orphans a tenant's entries (the version key
  and the entries share the tenant's hash tag, so one ``MGET`` reads both).
- Tenants land on different slots; no command crossed slots or was redirected (the nodes'
  own error statistics stay empty).
- Two servers on one index share one quota budget through the cluster.
- A node SIGKILLed under concurrent Retrieve and Generate calls fails no call: its keys are
  misses and its quotas count in-process, then the whole cluster refuses keys (CLUSTERDOWN,
  once the node is marked failing) and the breaker skips Redis; after the restart the cache
  serves hits again.

Sparse-only servers (``dense=None``; this module's ``embedder`` fixture is None, so no model
loads); the scripted upstream answers. Timings are logged (``tests.redis_cluster``), asserted
only as generous bounds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from qdrant_client import AsyncQdrantClient

from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.testing.scripted_llm import ScriptedLLM
from groundwire.v1 import documents_pb2, generation_pb2, retrieval_pb2
from tests.redis_cluster import RedisClusterNodes
from tests.rpc.conftest import KEY_A, KEY_B, Running, ServerFactory, auth
from tests.rpc.corpus import corpus
from tests.rpc.generation import Stream, collect
from tests.rpc.quotas import quotas_of, start_well_inside_a_minute

log = logging.getLogger("tests.redis_cluster")

# tenant-a and tenant-b hash to slots 10903 and 6900 (one node), tenant-c to 2773 (another).
KEY_C = "key-tenant-c-0123456789"
KEYS = {"tenant-a": KEY_A, "tenant-b": KEY_B, "tenant-c": KEY_C}
QUERIES = ["magma crust", "sourdough flour", "sunlight plants", "moon tides", "window loss"]


@pytest.fixture
def embedder() -> None:
    """No model: ``make_server(dense=None)`` servers never embed."""
    return None


async def on_cluster(
    make_server: ServerFactory, cluster: RedisClusterNodes, **overrides: Any
) -> Running:
    """A sparse-only server whose Redis is the cluster, reached through one node's URL."""
    settings: dict[str, Any] = {"dense": None, "embedder": "none", "api_keys": KEYS}
    return await make_server(redis_url=cluster.url, redis_cluster=True, **{**settings, **overrides})


async def retrieve(
    running: Running, key: str = KEY_A, query: str = "magma crust"
) -> retrieval_pb2.RetrieveResponse:
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query=query, top_k=2), metadata=auth(key), timeout=30
    )
    await running.settle()  # the entry is written in the background
    return response  # type: ignore[no-any-return]


async def generate(running: Running, key: str = KEY_A, query: str = "magma crust") -> Stream:
    request = generation_pb2.GenerateRequest(
        query=query, retrieval=retrieval_pb2.RetrieveRequest(top_k=2)
    )
    stream = await collect(running.generation.Generate(request, metadata=auth(key), timeout=30))
    await running.settle()
    return stream


def counted(name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def refusals(cluster: RedisClusterNodes) -> dict[str, int]:
    """The nodes' error replies since the stats were reset that say a command went to the
    wrong slot or node, or found the cluster down. (Others are expected: ``ERR`` to the
    ``CLIENT SETINFO`` with which redis-py greets each new connection, unknown to Redis 7.0;
    ``NOSCRIPT`` to the first ``EVALSHA`` of a quota script, which then loads it.)"""
    codes = {"CROSSSLOT", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"}
    return {code: n for code, n in cluster.error_replies().items() if code in codes}


def hash_tag(key: str) -> str:
    """The part of ``key`` the cluster hashes: between the first ``{`` and the next ``}``."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


async def test_both_caches_hit_on_the_cluster_and_ingest_still_orphans_a_tenants_entries(
    make_server: ServerFactory, redis_cluster: RedisClusterNodes, llm: ScriptedLLM
) -> None:
    running = await on_cluster(make_server, redis_cluster, llm_base_url=llm.base_url)
    for key in (KEY_A, KEY_C):
        await running.ingest(corpus(), key=key)
    redis_cluster.reset_stats()
    failures = counted("groundwire_redis_failures_total")

    for key in (KEY_A, KEY_C):
        assert not (await retrieve(running, key)).cache_hit
        assert (await retrieve(running, key)).cache_hit
        first, again = await generate(running, key), await generate(running, key)
        assert first.error is None and not first.start.cache_hit
        assert again.start.route == generation_pb2.ROUTE_CACHE and again.start.cache_hit
    assert len(llm.requests) == 2

    # tenant-a's ingest bumps its index version: its entries are orphaned, tenant-c's are not.
    await running.ingest(
        [documents_pb2.Document(doc_id="new", title="Tools", text="Magma and garden tools.")]
    )
    assert not (await retrieve(running, KEY_A)).cache_hit
    assert not (await generate(running, KEY_A)).start.cache_hit
    assert (await retrieve(running, KEY_C)).cache_hit
    assert (await generate(running, KEY_C)).start.cache_hit

    # Every operation succeeded, and no node refused or redirected a command: no CROSSSLOT
    # (each MGET reads one tenant's keys), no MOVED (the client's slot map is right).
    assert counted("groundwire_redis_failures_total") == failures
    assert refusals(redis_cluster) == {}
    namespace = running.server.components.namespace
    keys = redis_cluster.all_keys()
    assert keys and all(key.startswith(f"{namespace}:") for key in keys)
    slots: dict[str, set[int]] = {}
    for key in keys:
        slots.setdefault(hash_tag(key), set()).add(redis_cluster.keyslot(key))
    assert set(slots) == {"tenant-a", "tenant-c"}
    # All of a tenant's keys (version, retrievals, answers) in one slot; tenants apart.
    assert all(len(tenant_slots) == 1 for tenant_slots in slots.values())
    assert slots["tenant-a"] != slots["tenant-c"]
    assert redis_cluster.owner(*slots["tenant-a"]) != redis_cluster.owner(*slots["tenant-c"])
    kinds = {key.removeprefix(f"{namespace}:").split(":", 1)[0] for key in keys}
    assert kinds == {"idxver", "ret", "ans"}


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
async def test_two_servers_on_one_index_share_a_quota_budget_on_the_cluster(
    make_server: ServerFactory, redis_cluster: RedisClusterNodes
) -> None:
    """Two replicas of one deployment (two stores over one in-process collection, told the one
    URL, so one namespace) draw on one budget held by the cluster."""
    client = AsyncQdrantClient(location=":memory:")
    url = "http://qdrant.cluster-test:6333"
    servers = [
        await on_cluster(
            make_server,
            redis_cluster,
            store=QdrantVectorStore(client, "chunks", url=url),
            quota_requests_per_minute=4,
        )
        for _ in range(2)
    ]
    first, second = servers
    assert first.server.components.namespace == second.server.components.namespace
    redis_cluster.reset_stats()
    start_well_inside_a_minute()
    for running in (first, second, first, second):
        await retrieve(running)
    for running in (first, second):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await retrieve(running)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = (await quotas_of(second))["requests_per_minute"]  # an MGET of the counters
    assert (quota.remaining, quota.shared) == (0, True)
    # Another tenant, on another node, has its own budget.
    for running in (first, second):
        await retrieve(running, KEY_C)
    assert (await quotas_of(first, KEY_C))["requests_per_minute"].remaining == 2
    counters = [key for key in redis_cluster.all_keys() if ":quota:" in key]
    assert {hash_tag(key) for key in counters} == {"tenant-a", "tenant-c"}
    assert refusals(redis_cluster) == {}


# The kill test: a timeout above redis-py's 0.25 s CLUSTERDOWN sleep, so CLUSTERDOWN itself
# (not our deadline) must open the breaker; a short reset so the probe runs often.
TIMEOUT_S = 1.0
THRESHOLD = 3
RESET_S = 0.3


@dataclass
class Load:
    """Callers issuing Retrieve and Generate calls back to back, for two tenants on two
    nodes, until stopped; each call is kept with its tenant, start, length and outcome."""

    running: Running
    calls: list[tuple[str, float, float, bool, str | None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def caller(self, number: int) -> None:
        loop = asyncio.get_running_loop()
        tenant = ("tenant-a", "tenant-c")[number % 2]
        sent = number
        while not self.stop.is_set():
            sent += 1
            query = QUERIES[sent % len(QUERIES)]
            started = loop.time()
            try:
                if number % 4 < 2:
                    response = await self.running.retrieval.Retrieve(
                        retrieval_pb2.RetrieveRequest(query=query, top_k=1 + sent % 2),
                        metadata=auth(KEYS[tenant]),
                        timeout=30,
                    )
                    hit, error = response.cache_hit, None
                else:
                    request = generation_pb2.GenerateRequest(
                        query=query, retrieval=retrieval_pb2.RetrieveRequest(top_k=2)
                    )
                    stream = await collect(
                        self.running.generation.Generate(
                            request, metadata=auth(KEYS[tenant]), timeout=30
                        )
                    )
                    hit = bool(stream.frames) and stream.start.cache_hit
                    error = stream.error.code().name if stream.error is not None else None
            except grpc.aio.AioRpcError as exc:
                hit, error = False, exc.code().name
            self.calls.append((tenant, started, loop.time() - started, hit, error))

    def since(self, moment: float, tenant: str | None = None) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[1] >= moment and tenant in (None, c[0])]

    async def first_hit(self, tenant: str, after: float, timeout_s: float = 20.0) -> float:
        """When the first call for ``tenant`` started after ``after`` that the cache served."""
        for _ in range(int(timeout_s / 0.05)):
            hits = [c[1] for c in self.since(after, tenant) if c[3]]
            if hits:
                return min(hits)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no cache hit for {tenant} within {timeout_s} s")


async def test_a_node_killed_under_load_fails_no_call_and_hits_return_after_its_restart(
    make_server: ServerFactory, redis_cluster: RedisClusterNodes, llm: ScriptedLLM
) -> None:
    running = await on_cluster(
        make_server,
        redis_cluster,
        llm_base_url=llm.base_url,
        redis_timeout_s=TIMEOUT_S,
        redis_breaker_failures=THRESHOLD,
        redis_breaker_reset_s=RESET_S,
        quota_requests_per_minute=10**6,
        quota_llm_tokens_per_minute=10**9,
    )
    for key in (KEY_A, KEY_C):
        await running.ingest(corpus(), key=key)
    victim = redis_cluster.owner(redis_cluster.keyslot("{tenant-a}"))
    survivors = [i for i in range(len(redis_cluster.ports)) if i != victim]
    assert redis_cluster.owner(redis_cluster.keyslot("{tenant-c}")) in survivors
    link = running.server.components.redis
    assert link is not None

    load = Load(running)
    loop = asyncio.get_running_loop()
    callers = [asyncio.create_task(load.caller(n)) for n in range(8)]
    try:
        await asyncio.sleep(0.7)
        assert any(c[3] for c in load.calls)  # healthy: the cache serves

        await asyncio.to_thread(redis_cluster.kill, victim)
        killed_at = loop.time()
        # Until the survivors mark the node failing, only its slots are lost; then the
        # cluster refuses every key (cluster-require-full-coverage, Redis's default).
        while not all(redis_cluster.cluster_state(i) == "fail" for i in survivors):
            assert loop.time() - killed_at < 20, "the survivors never marked the node failing"
            await asyncio.sleep(0.05)
        down_at = loop.time()
        skipped = counted("groundwire_redis_skipped_total")
        quota_skipped = counted("groundwire_redis_skipped_total", operation="quota.admit")
        probes_ok = counted("groundwire_redis_probes_total", result="ok")
        probes_failed = counted("groundwire_redis_probes_total", result="failed")
        await asyncio.sleep(8 * RESET_S)
        assert counted("groundwire_redis_skipped_total") > skipped  # the breaker opened
        # ... and the quotas counted in-process meanwhile (the calls were still admitted).
        assert counted("groundwire_redis_skipped_total", operation="quota.admit") > quota_skipped
        # The probe asks the cluster's state, not a node's PING: it never closed the breaker
        # for callers to pay for CLUSTERDOWN again while the cluster was down.
        assert counted("groundwire_redis_probes_total", result="ok") == probes_ok
        assert counted("groundwire_redis_probes_total", result="failed") > probes_failed
        assert not link.available

        await asyncio.to_thread(redis_cluster.restart, victim)
        restarted_at = loop.time()
        await asyncio.to_thread(redis_cluster.wait_until_ok)
        whole_at = loop.time()
        hits_at = await load.first_hit("tenant-a", after=whole_at)
    finally:
        load.stop.set()
        await asyncio.gather(*callers)

    errors = [c for c in load.calls if c[4] is not None]
    assert errors == []
    for tenant in ("tenant-a", "tenant-c"):
        assert load.since(down_at, tenant)  # both tenants' calls went on meanwhile
    assert max(c[2] for c in load.calls) < 10 * TIMEOUT_S
    assert link.available
    log.info(
        "redis cluster node kill: %s",
        {
            "calls": len(load.calls),
            "failed_calls": len(errors),
            "node_marked_failing_s": round(down_at - killed_at, 2),
            # tenant-c's node lives: its hits go on until the cluster goes down as a whole.
            "tenant_c_hits_before_fail": sum(
                c[3] for c in load.since(killed_at, "tenant-c") if c[1] < down_at
            ),
            "cluster_ok_after_restart_s": round(whole_at - restarted_at, 2),
            "first_hit_after_cluster_ok_s": round(hits_at - whole_at, 2),
            "longest_call_s": round(max(c[2] for c in load.calls), 3),
        },
    )
