"""All configuration, as one typed object read from ``GROUNDWIRE_*`` environment variables.

This is the only module that reads the environment. Settings are validated at start; a bad
value stops the process with a message naming the variable and the reason.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

ENV_PREFIX = "GROUNDWIRE_"
_HASH_PREFIX = "sha256:"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class AuthMode(StrEnum):
    """How a call's tenant is established."""

    OFF = "off"  # every call is tenant "default"
    API_KEY = "api_key"  # `authorization: Bearer <key>` or `x-api-key`, mapped to a tenant
    MESH_HEADER = "mesh_header"  # a header set by a trusted mesh proxy names the tenant


class VectorStoreKind(StrEnum):
    """Which vector store implementation to use."""

    EDGE = "edge"  # Qdrant Edge, in-process, on disk (embedded default)
    QDRANT = "qdrant"  # a Qdrant server or cluster through qdrant-client


class EventLoop(StrEnum):
    """The event loop ``serve`` runs on (``GROUNDWIRE_EVENT_LOOP``)."""

    UVLOOP = "uvloop"  # libuv through uvloop: less CPU per stream (the default)
    ASYNCIO = "asyncio"  # the standard library's own loop


class EmbedderKind(StrEnum):
    """Which dense embedder to use."""

    # all-MiniLM-L6-v2 on CPU, offline. `local`: int8 ONNX on onnxruntime (the `local` extra,
    # no torch); `local-torch`: fp32 through sentence-transformers (the `torch` extra). Two
    # kinds, not a backend knob: their vectors differ, so each has its own embedder id.
    LOCAL = "local"
    LOCAL_TORCH = "local-torch"
    OPENAI = "openai"  # any OpenAI-compatible /v1/embeddings endpoint
    NONE = "none"  # no dense embedder: sparse (BM25) retrieval only


class ServiceRole(StrEnum):
    """A part of the contract a process serves (``GROUNDWIRE_SERVICES``); CapabilitiesService,
    health and reflection are always served."""

    RETRIEVAL = "retrieval"  # RetrievalService and DocumentService
    GENERATION = "generation"  # GenerationService


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask, bounded by a cgroup v2 CPU quota
    (a container limited to 2 CPUs on a 64-core node gets 2 workers, not 64)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit visible: the affinity mask is the bound
    return cores


class TracesExporter(StrEnum):
    """Where spans go."""

    OFF = "off"
    CONSOLE = "console"
    OTLP = "otlp"


class QuotaOverride(BaseModel):
    """One tenant's limits in ``GROUNDWIRE_QUOTA_OVERRIDES``. A key that is present replaces
    the default (null: unlimited for this tenant); a key left out keeps the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(None, ge=1)
    llm_tokens_per_minute: int | None = Field(None, ge=1)
    spend_micros_per_day: int | None = Field(None, ge=1)


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex>``."""
    return _HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


class Settings(BaseSettings):
    """Every knob of the server. Field ``x`` is read from ``GROUNDWIRE_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- serving ---
    listen: str = Field("127.0.0.1:50051", description="host:port the gRPC server binds.")
    grace_period_s: float = Field(15.0, ge=0, le=600, description="Drain time on SIGTERM.")
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    keepalive_time_s: float = Field(30.0, gt=0, description="Server keepalive ping interval.")
    keepalive_timeout_s: float = Field(10.0, gt=0, description="Keepalive ping ack timeout.")
    min_client_ping_interval_s: float = Field(10.0, gt=0)
    # grpc's own cap on every call, health checks included, refused with a bare
    # RESOURCE_EXHAUSTED (no reason, no RetryInfo): kept only as an opt-in backstop behind the
    # in-flight bounds below, so it must sit above them (else probes fail under load).
    max_concurrent_rpcs: int | None = Field(None, ge=1, description="None: unbounded.")
    # --- overload (see README "Overload") ---
    # Measured (Go load generator, one worker, 64-token answers at 200 tokens/s each, a busy
    # 2-core machine): TTFT overhead p50 +5 ms at 16 streams, +65 ms at 32, +180-430 ms at
    # 64, throughput flat at ~5,500 tokens/s. The +20 ms budget thus holds to ~3,500 streamed
    # tokens/s per worker; at a typical 50 tokens/s per stream that is ~64 streams. Scale it
    # by your models' pace and by the CPU per stream your build measures (`groundwire bench`).
    max_inflight_streams: int | None = Field(
        64,
        ge=1,
        description="Generate streams one process (worker) serves at once; past it a call gets "
        "RESOURCE_EXHAUSTED (OVERLOADED) with RetryInfo at once. Default: where one worker's "
        "TTFT overhead passed +20 ms, measured at 50 tokens/s per stream. Unset: unbounded.",
    )
    # Retrieve's query embedding costs 8-16 ms of CPU (ONNX, torch): 64 calls in flight are
    # about half a second to a second of work, past which another replica answers sooner.
    max_inflight_unary: int | None = Field(
        64,
        ge=1,
        description="Other calls (Retrieve, ingest, delete, capabilities) one process handles "
        "at once, counted apart from streams; health and reflection are never counted. "
        "Unset: unbounded.",
    )
    overload_retry_after_s: float = Field(
        0.2,
        ge=0,
        le=60,
        description="The RetryInfo delay (and grpc-retry-pushback-ms) of an overload refusal: "
        "short, since the retry goes to another replica.",
    )
    # Measured (groundwire bench, 1,000 Go callers honouring RetryInfo, 2 workers on a 2-core
    # machine shared with the load generator and the upstream): time to a refusal p50/p99
    # 541 ms / 4.5 s with no shedding, 235 ms / 1.9 s at 0.1 s, 238 ms / 1.6 s at 0.025 s.
    # Off by default: a worker that owns the Edge store lags past 0.1 s during a reindex build
    # or a large ingest, and with no other replica to retry on (one machine, `make run`) its
    # queries would be refused (the online reindex test saw it). Set it behind a mesh.
    shed_lag_s: float | None = Field(
        None,
        gt=0,
        le=10,
        description="While this process's event loop runs later than this, calls (not health "
        "or reflection) are refused as OVERLOADED under any in-flight count, so the loop "
        "catches up and refusals stay fast. Unset: refuse by count only.",
    )
    loop_lag_interval_s: float = Field(
        0.05,
        gt=0,
        le=1,
        description="How often the event-loop lag monitor wakes (its cost: one timer per "
        "interval; its resolution: one interval).",
    )
    # Half: the loop was late for at least half the time the model was given. A smaller share
    # turns the ordinary lateness of a busy loop (a few ms per wake, added up over the
    # budget) into refusals of calls whose upstream really did hang, and they would then miss
    # their fallback.
    lag_blame_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="An upstream timeout during which this process's loop lagged at least this "
        "share of the timeout's budget is ours, not the model's: no breaker failure, no "
        "fallback, the call ends OVERLOADED.",
    )
    # Past this age (gRPC adds +-10% jitter) a connection gets GOAWAY: its calls in flight go
    # on for up to the grace below, and the client reconnects, re-resolving DNS. Clients that
    # balance over a headless Service thus reach the replicas an autoscaler added. 0: a
    # connection lives until either side closes it.
    max_connection_age_s: float = Field(300.0, ge=0)
    max_connection_age_grace_s: float = Field(600.0, ge=0, description="For calls in flight.")
    # uvloop: less CPU per stream than asyncio's own loop (the figures are in
    # groundwire.server.event_loop). asyncio: the standard library's, to rule the loop out.
    event_loop: EventLoop = Field(
        EventLoop.UVLOOP, description="The event loop `serve` runs on: uvloop or asyncio."
    )
    # --- workers and roles (see README "Workers and roles") ---
    workers: int = Field(
        default_factory=usable_cores,
        ge=1,
        le=512,
        description="Worker processes sharing the port (one event loop each); default: the "
        "usable cores. 1: one process, no supervisor.",
    )
    services: Annotated[frozenset[ServiceRole], NoDecode] = Field(
        frozenset(ServiceRole),
        description="Comma-separated roles this process serves: retrieval (RetrievalService, "
        "DocumentService), generation (GenerationService) or all.",
    )
    retrieval_url: str | None = Field(
        None,
        description="host:port or unix:path of the retrieval deployment a generation-only "
        "process calls (the caller's credentials are forwarded).",
    )
    retrieval_api_key: str | None = Field(
        None,
        repr=False,
        description="API key for the start-up GetCapabilities call to GROUNDWIRE_RETRIEVAL_URL "
        "(when that deployment authenticates by key).",
    )
    retrieval_wait_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How long a process waits at start for the retrieval it reaches over a "
        "socket (the Edge shard's owner, or GROUNDWIRE_RETRIEVAL_URL).",
    )

    # --- authentication ---
    auth_mode: AuthMode = AuthMode.OFF
    # JSON object tenant -> key or list of keys; each key is plain text or "sha256:<hex>".
    # Keys are kept only as hashes; plain ones are hashed here and never stored.
    api_keys: dict[str, list[str]] = Field(default_factory=dict)
    tenant_header: str = Field("x-tenant-id", description="Header trusted in mesh_header mode.")

    # --- vector store ---
    vector_store: VectorStoreKind = VectorStoreKind.EDGE
    data_dir: Path = Path("data")
    edge_hnsw: bool = False
    # One URL or a comma-separated list: the home nodes writes go to (peers of one cluster).
    qdrant_url: str | None = None
    # Comma-separated, nearest first: searches go there, then home. Reads may lag writes by
    # the replication delay between regions.
    qdrant_read_urls: Annotated[tuple[str, ...], NoDecode] = ()
    qdrant_grpc_port: int = Field(6334, ge=1, le=65535, description="Every node's gRPC port.")
    qdrant_prefer_grpc: bool = Field(True, description="False: REST only.")
    qdrant_api_key: str | None = None
    qdrant_collection: str = "groundwire"
    # The default of the three timeouts below when they are unset (5 s, 15 s, 60 s otherwise).
    qdrant_timeout_s: float | None = Field(None, gt=0)
    qdrant_search_timeout_s: float | None = Field(None, gt=0)
    qdrant_write_timeout_s: float | None = Field(None, gt=0)
    qdrant_index_timeout_s: float | None = Field(None, gt=0, description="Collections, indexes.")
    # Attempts on other nodes after an unreachable one, within the call's timeout.
    qdrant_retries: int = Field(2, ge=0, le=10)
    qdrant_replication_factor: int | None = Field(None, ge=1)
    qdrant_write_consistency_factor: int | None = Field(None, ge=1)
    # Replicas that must answer a search, scroll or count (Qdrant's read_consistency):
    # all, majority, quorum or a number; unset: Qdrant's default (1, the fastest replica).
    qdrant_read_consistency: str | None = Field(None, pattern=r"^(all|majority|quorum|[1-9]\d*)$")
    # Ordering of writes across replicas (Qdrant's write ordering): weak, medium or strong;
    # unset: Qdrant's default (weak).
    qdrant_write_ordering: str | None = Field(None, pattern=r"^(weak|medium|strong)$")
    # A Qdrant server builds its HNSW index in the background; exact search is for debugging.
    qdrant_hnsw: bool = True

    # --- embeddings ---
    embedder: EmbedderKind = EmbedderKind.LOCAL
    # 16 embeds as fast as 32 on 2 cores and halves how long a query waits behind an ingest.
    embed_batch_size: int = Field(16, ge=1, le=2048)
    embed_threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Intra-op threads of the local model for document batches. Unset: the CPU "
        "count.",
    )
    embed_query_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Intra-op threads of the local model for query batches: two threads on two "
        "busy cores stall a query (255 ms against 15 ms on one).",
    )
    embeddings_base_url: str | None = None
    embeddings_api_key: str | None = None
    embeddings_model: str = "text-embedding-3-small"
    embeddings_dimension: int = Field(1536, ge=1, le=65536)
    embeddings_timeout_s: float = Field(10.0, gt=0)
    bm25_avg_len: float = Field(256.0, gt=0, description="Average document length, in tokens.")

    # --- ingest and retrieval ---
    chunk_tokens: int = Field(200, ge=16, le=8192)
    chunk_overlap_tokens: int = Field(40, ge=0)
    max_document_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    max_query_chars: int = Field(
        16_384,
        ge=16,
        le=65536,
        description="The longest query Retrieve and Generate accept, in characters. Whole "
        "documents used as queries (ArguAna's arguments reach about 7,000) must fit; the "
        "embedder reads only its own window of it, BM25 all of it.",
    )
    max_top_k: int = Field(100, ge=1, le=1000)
    default_top_k: int = Field(8, ge=1)
    ingest_batch_documents: int = Field(32, ge=1, le=1024)

    # --- cache ---
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_max_connections: int = Field(64, ge=1)
    # The bound on every Redis operation, connecting and redis-py's retry included.
    redis_timeout_s: float = Field(0.25, gt=0, le=10)
    # This many consecutive Redis timeouts open its breaker: Redis is then skipped without
    # waiting, and after the reset period one background PING tests it again.
    redis_breaker_failures: int = Field(3, ge=1, le=1000)
    redis_breaker_reset_s: float = Field(2.0, ge=0, le=3600)
    # Every key and counter is <prefix>:<hash of the index's identity>:…, so deployments on
    # one Redis never share entries; the prefix sets apart whatever else lives there.
    redis_key_prefix: str = Field("gw", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    retrieval_cache_ttl_s: int = Field(3600, ge=1)

    # --- generation ---
    # One OpenAI-compatible endpoint (a gateway, vLLM, Ollama) serving every catalog model
    # that names no endpoint of its own. Unset and no catalog file: no LLM, answers degrade.
    llm_base_url: str | None = None
    llm_api_key: str | None = Field(None, repr=False)
    llm_catalog: Path | None = Field(None, description="A TOML model catalog (see README).")
    llm_connect_timeout_s: float = Field(2.0, gt=0, le=60)
    llm_idle_timeout_s: float = Field(30.0, gt=0, le=600, description="Longest silence mid-stream.")
    llm_first_token_timeout_s: float = Field(10.0, gt=0, le=60)
    llm_max_connections: int = Field(256, ge=1, le=10000, description="Per endpoint.")
    breaker_failure_threshold: int = Field(5, ge=1, le=1000)
    breaker_reset_s: float = Field(30.0, ge=0, le=3600)
    # The longest wait an upstream's Retry-After may impose (LLM and embeddings clients, and
    # the model breakers it opens): `inf`, a year or a date far ahead all mean this.
    retry_after_cap_s: float = Field(300.0, ge=0, le=86400, allow_inf_nan=False)
    answer_cache_ttl_s: int = Field(3600, ge=1)
    answer_cache_max_temperature: float = Field(0.3, ge=0, le=2)
    # The answer ends this long before the caller's deadline, so the end frame still arrives.
    deadline_margin_s: float = Field(0.1, ge=0, le=10)
    # Upstream tokens that arrive while a frame is being sent leave together in the next one.
    # Off: one frame per upstream chunk (a plain relay; for comparison in benchmarks).
    coalesce_deltas: bool = True

    # --- quotas ---
    # Per tenant; None (the default) is unlimited. Counted in Redis when GROUNDWIRE_REDIS_URL is
    # set (every replica shares one budget), otherwise in-process (a budget per replica).
    quota_requests_per_minute: int | None = Field(None, ge=1)
    quota_llm_tokens_per_minute: int | None = Field(None, ge=1, description="Prompt + completion.")
    quota_spend_micros_per_day: int | None = Field(
        None, ge=1, description="Micros of the catalog's currency per UTC day."
    )
    # JSON object tenant -> {quota: limit or null}; see QuotaOverride.
    quota_overrides: dict[str, QuotaOverride] = Field(default_factory=dict)

    # --- telemetry ---
    log_level: str = "INFO"
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="0 or unset: off.")
    traces: TracesExporter = TracesExporter.OFF
    otlp_endpoint: str | None = None
    service_name: str = "groundwire"

    @model_validator(mode="after")
    def _backstop_above_bounds(self) -> Settings:
        bounds = (self.max_inflight_streams, self.max_inflight_unary)
        if self.max_concurrent_rpcs is not None and None not in bounds:
            ours = sum(b for b in bounds if b is not None)
            if self.max_concurrent_rpcs <= ours:
                raise ValueError(
                    f"GROUNDWIRE_MAX_CONCURRENT_RPCS ({self.max_concurrent_rpcs}) must exceed "
                    f"GROUNDWIRE_MAX_INFLIGHT_STREAMS + GROUNDWIRE_MAX_INFLIGHT_UNARY ({ours}): "
                    "grpc's cap counts health checks and refuses without a reason or RetryInfo"
                )
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_as_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("api_keys")
    @classmethod
    def _hash_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        hashed: dict[str, list[str]] = {}
        for tenant, keys in value.items():
            if not _TENANT.match(tenant):
                raise ValueError(f"tenant {tenant!r} must match {_TENANT.pattern}")
            if not keys:
                raise ValueError(f"tenant {tenant!r} has no keys")
            out = []
            for key in keys:
                if key.startswith(_HASH_PREFIX):
                    if not _HEX64.match(key[len(_HASH_PREFIX) :]):
                        raise ValueError(f"tenant {tenant!r}: a sha256 key needs 64 hex digits")
                    out.append(key)
                elif len(key) < 16:
                    raise ValueError(f"tenant {tenant!r}: keys need at least 16 characters")
                else:
                    out.append(hash_api_key(key))
            hashed[tenant] = out
        return hashed

    @field_validator("quota_overrides", mode="before")
    @classmethod
    def _known_quotas(cls, value: Any) -> Any:
        # Validated here rather than left to pydantic so the message names tenant and quota.
        if not isinstance(value, dict):
            return value  # pydantic reports the wrong type
        known = sorted(QuotaOverride.model_fields)
        checked: dict[str, QuotaOverride] = {}
        for tenant, limits in value.items():
            if not isinstance(tenant, str) or not _TENANT.match(tenant):
                raise ValueError(f"tenant {tenant!r} must match {_TENANT.pattern}")
            if isinstance(limits, QuotaOverride):
                checked[tenant] = limits
                continue
            if not isinstance(limits, dict):
                raise ValueError(f"tenant {tenant!r}: must be an object of quota limits")
            unknown = sorted(set(limits) - set(known))
            if unknown:
                raise ValueError(
                    f"tenant {tenant!r}: unknown quota {', '.join(map(repr, unknown))}"
                    f" (known: {', '.join(known)})"
                )
            try:
                checked[tenant] = QuotaOverride.model_validate(limits)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"])
                raise ValueError(f"tenant {tenant!r}: {where}: {error['msg']}") from None
        return checked

    @field_validator("services", mode="before")
    @classmethod
    def _service_list(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = {part.strip().lower() for part in value.split(",") if part.strip()}
        if "all" in names:
            return frozenset(ServiceRole)
        known = {role.value for role in ServiceRole}
        unknown = sorted(names - known)
        if unknown or not names:
            raise ValueError(
                f"unknown service {', '.join(map(repr, unknown)) or 'list (empty)'}: give a "
                f"comma-separated list of {', '.join(sorted(known))}, or all"
            )
        return frozenset(ServiceRole(name) for name in names)

    @field_validator("retrieval_url")
    @classmethod
    def _retrieval_target(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.startswith("unix:"):
            if not value.removeprefix("unix:").lstrip("/"):
                raise ValueError("unix: needs a socket path, for example unix:/run/gw.sock")
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError("must be host:port or unix:path, for example retrieval:50051")
        return value

    @field_validator("qdrant_url")
    @classmethod
    def _qdrant_urls(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return ",".join(_qdrant_url_list(value))

    @field_validator("qdrant_read_urls", mode="before")
    @classmethod
    def _qdrant_read_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _qdrant_url_list(value) if value.strip() else ()
        return value

    @property
    def qdrant_urls(self) -> tuple[str, ...]:
        """The home (write) nodes ``GROUNDWIRE_QDRANT_URL`` lists."""
        return _qdrant_url_list(self.qdrant_url) if self.qdrant_url else ()

    @property
    def qdrant_timeouts(self) -> tuple[float, float, float]:
        """Search, write and index timeouts, in seconds."""
        default = self.qdrant_timeout_s
        return (
            self.qdrant_search_timeout_s or default or 5.0,
            self.qdrant_write_timeout_s or default or 15.0,
            self.qdrant_index_timeout_s or default or 60.0,
        )

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, for example 0.0.0.0:50051")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                "GROUNDWIRE_CHUNK_OVERLAP_TOKENS must be smaller than GROUNDWIRE_CHUNK_TOKENS"
            )
        if self.default_top_k > self.max_top_k:
            raise ValueError("GROUNDWIRE_DEFAULT_TOP_K must not exceed GROUNDWIRE_MAX_TOP_K")
        if self.auth_mode is AuthMode.API_KEY and not self.api_keys:
            raise ValueError(
                "GROUNDWIRE_API_KEYS must name at least one key when GROUNDWIRE_AUTH_MODE=api_key"
            )
        if self.vector_store is VectorStoreKind.QDRANT and not self.qdrant_url:
            raise ValueError(
                "GROUNDWIRE_QDRANT_URL is required when GROUNDWIRE_VECTOR_STORE=qdrant"
            )
        if self.embedder is EmbedderKind.OPENAI and not self.embeddings_base_url:
            raise ValueError(
                "GROUNDWIRE_EMBEDDINGS_BASE_URL is required when GROUNDWIRE_EMBEDDER=openai"
            )
        if self.traces is TracesExporter.OTLP and not self.otlp_endpoint:
            raise ValueError("GROUNDWIRE_OTLP_ENDPOINT is required when GROUNDWIRE_TRACES=otlp")
        serves_retrieval = ServiceRole.RETRIEVAL in self.services
        if not serves_retrieval and not self.retrieval_url:
            raise ValueError(
                "GROUNDWIRE_RETRIEVAL_URL is required when GROUNDWIRE_SERVICES leaves out "
                "retrieval: generation reaches retrieval through it"
            )
        if serves_retrieval and self.retrieval_url:
            raise ValueError(
                "GROUNDWIRE_RETRIEVAL_URL is only for a process that does not serve retrieval "
                "(GROUNDWIRE_SERVICES=generation); this one serves it itself"
            )
        return self

    @property
    def serves_retrieval(self) -> bool:
        """Whether RetrievalService and DocumentService are served here."""
        return ServiceRole.RETRIEVAL in self.services

    @property
    def serves_generation(self) -> bool:
        """Whether GenerationService is served here."""
        return ServiceRole.GENERATION in self.services


def _qdrant_url_list(value: str) -> tuple[str, ...]:
    """A comma-separated list of Qdrant node URLs (``http(s)://host[:port]`` or bare
    ``host[:port]``, as qdrant-client reads them), each checked."""
    urls = tuple(part.strip() for part in value.split(","))
    for url in urls:
        scheme, sep, rest = url.rpartition("://")
        if not url or (sep and scheme not in ("http", "https")) or not rest.split("/")[0]:
            raise ValueError(
                f"{url!r} is not a node URL: give http(s)://host[:port], comma-separated"
            )
    return urls


def environment_secret(name: str) -> str | None:
    """The value of the environment variable a catalog entry names for its API key (the one
    read of the environment outside :class:`Settings`, whose field names are fixed)."""
    return os.environ.get(name) or None


class CliSettings(BaseSettings):
    """What the command-line client reads from the environment (flags override it)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    address: str = "127.0.0.1:50051"
    api_key: Annotated[str | None, NoDecode] = None


class SettingsError(Exception):
    """Settings failed validation; the message names each variable and the reason."""


# GROUNDWIRE_ names that something other than the settings models here reads, so that they
# are not taken for misspellings (name: who reads it).
OTHER_VARIABLES: Mapping[str, str] = {
    "GROUNDWIRE_TARGET": "compose.yaml: the image target `docker compose` builds",
    "GROUNDWIRE_QUESTION": "the Go SDK's example (sdks/go/examples/ask)",
    "GROUNDWIRE_INSECURE": "the Go SDK's example (sdks/go/examples/ask)",
    "GROUNDWIRE_FUZZ_EXAMPLES": "the test suite's fuzzing (tests/rpc/test_fuzz.py)",
}
# Reserved for test harnesses (this repository's tests, the SDKs' live scenarios): no setting
# will ever start with it, so none of these names is reported as unknown.
TEST_VARIABLE_PREFIX = ENV_PREFIX + "TEST_"


@dataclass(frozen=True)
class UnknownVariable:
    """A ``GROUNDWIRE_`` variable in the environment that no part of groundwire reads, with
    the known name closest to it (None when none is close)."""

    name: str
    closest: str | None

    def __str__(self) -> str:
        hint = f" (did you mean {self.closest}?)" if self.closest else ""
        return f"{self.name} is not a groundwire setting and is ignored{hint}"


def setting_variables() -> frozenset[str]:
    """The variable of every field of the settings models (server and command line)."""
    return frozenset(
        ENV_PREFIX + name.upper()
        for model in (Settings, CliSettings)
        for name in model.model_fields
    )


def unknown_variables(
    environ: Mapping[str, str] | None = None, *, also_known: Iterable[str] = ()
) -> list[UnknownVariable]:
    """The ``GROUNDWIRE_`` variables of ``environ`` (the process's by default) that nothing
    reads, sorted: not a setting, not in :data:`OTHER_VARIABLES` or ``also_known`` (the
    catalog's key variables), not a test harness's (:data:`TEST_VARIABLE_PREFIX`). Names are
    compared without case, as the settings read them."""
    environment = os.environ if environ is None else environ
    settings = setting_variables()
    known = settings | set(OTHER_VARIABLES) | {name.upper() for name in also_known}
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in settings}
    unknown = []
    for name in sorted(environment):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if upper.startswith(TEST_VARIABLE_PREFIX):
            continue
        # Compared without the shared prefix, which would make every pair look alike.
        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), sorted(suffixes), n=1)
        unknown.append(UnknownVariable(name, suffixes[close[0]] if close else None))
    return unknown


# No variable has this prefix, so settings built with it read nothing from the environment.
_NO_ENVIRONMENT = "GROUNDWIRE_READS_NO_VARIABLE_"


def load_settings(*, read_environment: bool = True, **overrides: Any) -> Settings:
    """Read and validate the settings, turning pydantic's error into one readable message.
    With ``read_environment=False`` only ``overrides`` and the defaults count (a benchmark's
    parts must not pick up the shell's ``GROUNDWIRE_*``)."""
    if not read_environment:
        overrides = {"_env_prefix": _NO_ENVIRONMENT, **overrides}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                message = f"{ENV_PREFIX}{str(error['loc'][0]).upper()}: {message}"
            lines.append(message)
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except PydanticSettingsError as exc:
        # Raised before validation when a complex value (JSON) does not parse.
        match = re.search(r'field "(\w+)"', str(exc))
        variable = ENV_PREFIX + match.group(1).upper() if match else "a GROUNDWIRE_ variable"
        raise SettingsError(f"invalid configuration:\n  {variable}: not valid JSON") from None
