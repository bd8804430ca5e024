"""Connections to a Qdrant deployment: which node each call goes to, and what a failure costs.

A deployment is reached through node URLs, not one address, so one dead node is not a single
point of failure:

- **writes go home**: upserts, deletes and collection changes go to the write URLs (the home
  region's peers), the first that answers;
- **reads go near**: searches go to the read URLs, nearest first, and fall back to the home
  nodes last. A read URL in another region is a peer of the same cluster there; what it
  returns may lag the home region's writes by the replication delay (Qdrant acknowledges a
  write once ``write_consistency_factor`` replicas applied it; the others catch up), so a
  search right after an ingest can miss the newest chunks. Reads the ingest itself depends on
  (``scroll`` before a write, collection metadata) stay home and see their own writes.

A call that fails because a node is unreachable (gRPC UNAVAILABLE, a refused or dropped
connection, an HTTP 502/503/504) is retried on the next node when that is safe: reads and our
idempotent writes (upserts carry stable point ids, deletes by id or filter) always; other calls
(creating a collection) only when the request never left (the connection was refused), since
a request lost in flight may have been applied. Retries are bounded twice: by ``retries`` and
by the call's own timeout, which covers every attempt, so a retry never makes a call slower
than its timeout. A node that failed is tried last for ``cooldown_s``, so an outage costs one
failed attempt per node and not one per call.

The gRPC channels get keepalive and short reconnect backoff options: gRPC's defaults (no
keepalive, backoff growing to two minutes) kept a restarted node unused for 10-15 s.

Vendor text never reaches our callers: failures become VectorStoreUnavailableError with our
words, and qdrant-client's text (internal host:port, gRPC's debug_error_string) goes to the
log through :class:`VendorErrorLog`.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import grpc
import httpx
from qdrant_client import AsyncQdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from groundwire.clients.errors import VectorStoreUnavailableError
from groundwire.clients.vector_store.identity import qdrant_identity
from groundwire.clients.vendor_log import VendorErrorLog

T = TypeVar("T")

DEFAULT_GRPC_PORT = 6334
# An HTTP status a proxy or a restarting node answers with: the request did not run there.
_UNAVAILABLE_HTTP = frozenset({502, 503, 504})
# What a remote failure looks like from qdrant-client: HTTP status errors, transport errors
# (wrapped or raw), gRPC status errors.
_VENDOR_ERRORS: tuple[type[BaseException], ...] = (
    UnexpectedResponse,
    ResponseHandlingException,
    httpx.HTTPError,
    grpc.RpcError,
    ConnectionError,
)
# gRPC's words for a call that failed before a connection existed (the request never left).
_NOT_CONNECTED = ("failed to connect", "connection refused", "connect failed")

# One client call on one node: the client, and the whole seconds Qdrant may spend on it (the
# server-side timeout; over gRPC qdrant-client also makes it the call's deadline).
NodeCall = Callable[[AsyncQdrantClient, int], Awaitable[T]]


@dataclass(frozen=True)
class Timeouts:
    """Bounds per kind of call, in seconds, each covering every attempt of one call."""

    search_s: float = 5.0
    write_s: float = 15.0
    index_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("search_s", "write_s", "index_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")

    @classmethod
    def uniform(cls, timeout_s: float) -> Timeouts:
        """One bound for every kind of call."""
        return cls(timeout_s, timeout_s, timeout_s)


class Kind(Enum):
    """Which timeout a call has."""

    SEARCH = "search"
    WRITE = "write"
    INDEX = "index"


@dataclass(frozen=True)
class CallPolicy:
    """Where a call goes, how long it may take, and whether it may run twice."""

    kind: Kind
    near: bool  # read URLs first (reads that may lag the home region's writes)
    idempotent: bool  # safe to send again after a failure in flight


SEARCH = CallPolicy(Kind.SEARCH, near=True, idempotent=True)
READ_HOME = CallPolicy(Kind.SEARCH, near=False, idempotent=True)
WRITE = CallPolicy(Kind.WRITE, near=False, idempotent=True)
INDEX = CallPolicy(Kind.INDEX, near=False, idempotent=True)
SCHEMA_CHANGE = CallPolicy(Kind.INDEX, near=False, idempotent=False)

# The store's operations by name. An operation not listed is treated as a schema change:
# home, the longest timeout, no retry after a request that may have arrived.
POLICIES: dict[str, CallPolicy] = {
    "search": SEARCH,
    "count": SEARCH,
    "scroll": READ_HOME,
    "collection_exists": READ_HOME,
    "get_collection": READ_HOME,
    "get_aliases": READ_HOME,
    "get_collection_aliases": READ_HOME,
    "get_collections": READ_HOME,
    "info": READ_HOME,
    "cluster_status": READ_HOME,
    "collection_cluster_info": READ_HOME,
    "upsert": WRITE,
    "delete": WRITE,
    "delete_points": WRITE,
    "delete_documents": WRITE,
    "create_payload_index": INDEX,
}


def policy_for(op: str) -> CallPolicy:
    """The policy of the store operation ``op`` (a schema change when unknown)."""
    return POLICIES.get(op, SCHEMA_CHANGE)


@dataclass(frozen=True)
class QdrantNode:
    """One node: its REST URL (as ``GROUNDWIRE_QDRANT_URL`` names it) and its gRPC port."""

    url: str
    grpc_port: int = DEFAULT_GRPC_PORT


@dataclass(frozen=True)
class QdrantNodes:
    """Where a deployment is and how to talk to it.

    ``write`` are the home nodes (peers of one cluster, any order of preference); ``read``
    the nodes searches try first, nearest first (empty: read home). ``prefer_grpc=False``
    talks REST only. ``retries`` bounds the attempts after the first.
    """

    write: tuple[QdrantNode, ...]
    read: tuple[QdrantNode, ...] = ()
    api_key: str | None = None
    prefer_grpc: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 2
    cooldown_s: float = 2.0
    keepalive_s: float = 10.0
    reconnect_backoff_max_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.write:
            raise ValueError("at least one write URL is required")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries must be between 0 and 10, not {self.retries}")

    @classmethod
    def of(
        cls,
        urls: Sequence[str],
        *,
        read_urls: Sequence[str] = (),
        grpc_port: int = DEFAULT_GRPC_PORT,
        **options: Any,
    ) -> QdrantNodes:
        """Nodes from URL lists sharing one gRPC port (each node on a host of its own)."""
        return cls(
            write=tuple(QdrantNode(u, grpc_port) for u in urls),
            read=tuple(QdrantNode(u, grpc_port) for u in read_urls),
            **options,
        )

    def grpc_options(self) -> dict[str, int]:
        """Channel options: keepalive pings find a dead connection while it is idle, and a
        short reconnect backoff uses a node again within about a second of its return."""
        backoff_ms = int(self.reconnect_backoff_max_s * 1000)
        return {
            "grpc.keepalive_time_ms": int(self.keepalive_s * 1000),
            "grpc.keepalive_timeout_ms": int(self.keepalive_s * 500),
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.http2.max_pings_without_data": 0,
            "grpc.initial_reconnect_backoff_ms": min(100, backoff_ms),
            "grpc.max_reconnect_backoff_ms": backoff_ms,
            # gRPC takes this as the connect timeout, not a backoff: long enough for a TLS
            # handshake to another region.
            "grpc.min_reconnect_backoff_ms": 5000,
        }


@dataclass
class NodeStats:
    """What one node was asked and how often it failed (for tests and the operator)."""

    attempts: int = 0
    failures: int = 0


class _Failure(Enum):
    REFUSED = "refused"  # the node could not be reached: the request never left
    LOST = "lost"  # unreachable mid-call: the request may have been applied
    FINAL = "final"  # the node answered with an error: another node would answer the same


class QdrantConnection:
    """One qdrant-client client per node, and the failover that runs calls on them."""

    def __init__(
        self,
        nodes: QdrantNodes,
        *,
        clients: dict[QdrantNode, AsyncQdrantClient] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clients`` hands in ready clients per node (e.g. qdrant-client's local mode);
        nodes without one get a client built from ``nodes``."""
        self.nodes = nodes
        self._clock = clock
        self._vendor_log = VendorErrorLog("vector_store")
        self._clients: dict[QdrantNode, AsyncQdrantClient] = dict(clients or {})
        for node in (*nodes.write, *nodes.read):
            if node not in self._clients:
                self._clients[node] = self._client(node)
        self._down_until: dict[QdrantNode, float] = {}
        self.stats: dict[str, NodeStats] = {n.url: NodeStats() for n in self._clients}
        self.failovers = 0  # attempts made on another node after a failure

    @classmethod
    def of_client(
        cls, client: AsyncQdrantClient, *, url: str | None = None, timeout_s: float = 5.0
    ) -> QdrantConnection:
        """A connection over one client handed in (one node, one timeout for every call)."""
        node = QdrantNode(url or "in-process")
        nodes = QdrantNodes(write=(node,), timeouts=Timeouts.uniform(timeout_s))
        return cls(nodes, clients={node: client})

    @property
    def home(self) -> AsyncQdrantClient:
        """The first write node's client."""
        return self._clients[self.nodes.write[0]]

    def identity(self, collection: str) -> str:
        """The store's identity: the write URLs normalised and sorted, so every replica of a
        deployment that lists the same home nodes (in any order) names the same index. One URL
        gives the same identity as before lists existed."""
        urls = sorted({qdrant_identity(n.url, "").removesuffix("/") for n in self.nodes.write})
        if len(urls) == 1:
            return f"{urls[0]}/{collection}"
        return "qdrant:" + ",".join(u.removeprefix("qdrant:") for u in urls) + f"/{collection}"

    def timeout_of(self, policy: CallPolicy) -> float:
        """The bound of a call with ``policy``, every attempt included."""
        timeouts = self.nodes.timeouts
        return {Kind.SEARCH: timeouts.search_s, Kind.WRITE: timeouts.write_s}.get(
            policy.kind, timeouts.index_s
        )

    async def run(
        self,
        op: str,
        call: NodeCall[T] | Awaitable[T],
        policy: CallPolicy | None = None,
    ) -> T:
        """Run ``call`` on the nodes ``policy`` (default: :func:`policy_for` ``op``) names,
        failing over on an unreachable node, within the policy's timeout.

        ``call`` gets the node's client and the seconds left; an awaitable already made on
        :attr:`home` runs once, there.
        """
        policy = policy or policy_for(op)
        budget = self.timeout_of(policy)
        try:
            async with asyncio.timeout(budget):
                if inspect.isawaitable(call):
                    return await self._once(op, self.nodes.write[0], call)
                return await self._failover(op, call, policy, self._clock() + budget)
        except TimeoutError as exc:
            ours = f"vector store unavailable: {op} timed out after {budget} s"
            self._vendor_log(op, f"{op}: timed out after {budget} s", ours=ours)
            raise VectorStoreUnavailableError(ours) from exc

    async def close(self) -> None:
        """Close every client."""
        errors = 0
        for node, client in self._clients.items():
            try:
                await client.close()
            except _VENDOR_ERRORS as exc:
                errors += 1
                self._vendor_log("close", f"{node.url}: {vendor_text(exc)}", ours="")
        if errors:
            raise VectorStoreUnavailableError("vector store unavailable: close failed")

    # -- internals -------------------------------------------------------------------------

    def _client(self, node: QdrantNode) -> AsyncQdrantClient:
        timeouts = self.nodes.timeouts
        longest = max(timeouts.search_s, timeouts.write_s, timeouts.index_s)
        return AsyncQdrantClient(
            url=node.url,
            grpc_port=node.grpc_port,
            prefer_grpc=self.nodes.prefer_grpc,
            api_key=self.nodes.api_key,
            # The REST side's HTTP timeout is fixed per client: the longest call's, ours
            # (asyncio) bounds each call by its kind.
            timeout=max(1, math.ceil(longest)),
            grpc_options=self.nodes.grpc_options(),
            # The check only warns, from a thread, once per client (so once per node); the
            # store checks the server version where its behaviour depends on it.
            check_compatibility=False,
        )

    def _order(self, policy: CallPolicy) -> list[QdrantNode]:
        """Nodes in the order to try: preference order, nodes that failed recently last."""
        preferred = [*self.nodes.read, *self.nodes.write] if policy.near else [*self.nodes.write]
        unique = list(dict.fromkeys(preferred))
        now = self._clock()
        return sorted(unique, key=lambda n: self._down_until.get(n, 0.0) > now)

    async def _failover(self, op: str, call: NodeCall[T], policy: CallPolicy, deadline: float) -> T:
        order = self._order(policy)
        attempts = 1 + self.nodes.retries
        last: BaseException | None = None
        for attempt in range(attempts):
            node = order[attempt % len(order)]
            if attempt and attempt % len(order) == 0:
                # Every node failed once: give a restarting node a moment, within the budget.
                await asyncio.sleep(min(0.1 * 2 ** (attempt // len(order)), 1.0))
            left = deadline - self._clock()
            client = self._clients[node]
            self.stats[node.url].attempts += 1
            try:
                result = await call(client, max(1, math.ceil(left)))
            except _VENDOR_ERRORS as exc:
                last = exc
                failure = _classify(exc)
                self.stats[node.url].failures += 1
                if failure is _Failure.FINAL:
                    break
                self._down_until[node] = self._clock() + self.nodes.cooldown_s
                if failure is _Failure.LOST and not policy.idempotent:
                    break
                if attempt + 1 < attempts:
                    self.failovers += 1
                    self._vendor_log(f"{op}@{node.url}", f"{vendor_text(exc)}", ours="retried")
                continue
            self._down_until.pop(node, None)
            return result
        assert last is not None
        ours = f"vector store unavailable: {op} failed"
        self._vendor_log(op, vendor_text(last), ours=ours)
        raise VectorStoreUnavailableError(ours) from last

    async def _once(self, op: str, node: QdrantNode, call: Awaitable[T]) -> T:
        self.stats[node.url].attempts += 1
        try:
            return await call
        except _VENDOR_ERRORS as exc:
            self.stats[node.url].failures += 1
            ours = f"vector store unavailable: {op} failed"
            self._vendor_log(op, vendor_text(exc), ours=ours)
            raise VectorStoreUnavailableError(ours) from exc


def _classify(exc: BaseException) -> _Failure:
    """Whether ``exc`` says the node was unreachable, and if so whether the request left."""
    if isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None)
        if callable(code) and code() is grpc.StatusCode.UNAVAILABLE:
            text = (details() if callable(details) else "") or ""
            return _Failure.REFUSED if _not_connected(text) else _Failure.LOST
        return _Failure.FINAL
    if isinstance(exc, ResponseHandlingException):
        # qdrant-client wraps the transport error of a REST call.
        source = exc.source if isinstance(exc.source, BaseException) else None
        return _classify(source) if source is not None else _Failure.LOST
    if isinstance(exc, UnexpectedResponse):
        return _Failure.LOST if exc.status_code in _UNAVAILABLE_HTTP else _Failure.FINAL
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError)):
        return _Failure.REFUSED
    if isinstance(exc, (httpx.TransportError, ConnectionError)):
        return _Failure.LOST
    return _Failure.FINAL


def _not_connected(details: str) -> bool:
    lowered = details.lower()
    return any(words in lowered for words in _NOT_CONNECTED)


def vendor_text(exc: BaseException) -> str:
    """The vendor's description of ``exc`` for the log (gRPC errors keep theirs apart)."""
    if isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None)
        if callable(code) and callable(details):
            return f"{type(exc).__name__} {code()}: {details()}"
    return f"{type(exc).__name__}: {exc}"
