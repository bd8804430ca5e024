"""The BEIR/MTEB dense figure, computed here without the server: the number comparable with
published ones (all-MiniLM-L6-v2 on SciFact: nDCG@10 0.645).

BEIR embeds one vector per document, ``title + " " + text`` truncated by the model at its
256 word pieces, and searches exactly by cosine. The server instead embeds chunks that cover
the whole document (each with its title), so its dense figure differs (on SciFact it is
higher: most abstracts are longer than the model's window). The reference makes that gap
visible; the corpus profile says how many documents the window cuts, and the score check
confirms the server's dense scores are plain cosines of the texts it embeds: a chunk is
embedded as its title, a line break and its text, and a query after Unicode NFKC
normalisation with runs of white space as one space (:func:`server_embedding_text`,
:func:`server_query_text`; written here from that description, not imported, so the check
holds the server to it).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from groundwire.clients.embedding_base import LocalModelEmbedder
from groundwire.sdk import retrieval_mode
from groundwire.tools.evaluation.beir import Document
from groundwire.tools.measure.progress import Progress, progress_bar
from groundwire.tools.measure.target import Metadata
from groundwire.v1 import retrieval_pb2, retrieval_pb2_grpc

# Published figures (MTEB: one vector per document) per (dataset folder name, embedder id),
# shown beside the server's.
PUBLISHED: dict[tuple[str, str], dict[str, float]] = {
    ("scifact", "all-MiniLM-L6-v2/384"): {
        "ndcg@10": 0.64508,
        "recall@10": 0.78333,
        "recall@100": 0.925,
        "mrr@10": 0.60472,
    },
}
_BLOCK = 256
_SPACES = re.compile(r"\s+")


def server_query_text(query: str) -> str:
    """The text the server embeds for ``query``: NFKC, trimmed, white space runs as one."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", query)).strip()


def server_embedding_text(title: str, text: str) -> str:
    """The text the server embeds for a chunk: its title (when there is one), a line break,
    the chunk's text."""
    return f"{title}\n{text}" if title else text


async def reference_dense(
    embedder: LocalModelEmbedder,
    corpus: Sequence[Document],
    queries: Mapping[str, str],
    *,
    top_k: int = 100,
    cache_dir: Path | None = None,
    progress: Progress = False,
) -> dict[str, list[str]]:
    """Query id → document ranking, BEIR's way: one vector per ``(title + " " + text)``,
    raw query text, exact cosine in numpy. Document vectors are kept in ``cache_dir`` when
    given (keyed by the embedder id and the texts), so a re-run only embeds the queries."""
    import numpy as np

    texts = [(d.title + " " + d.text).strip() for d in corpus]
    digest = hashlib.sha256(
        json.dumps([embedder.embedder_id, texts], ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:16]
    cached = cache_dir / f"reference-vectors-{digest}.npy" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        vectors = np.load(cached)
    else:
        # Longest first, in blocks: texts of similar length pad less, so encoding is faster.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
        with progress_bar(len(texts), "reference embed", "doc", enabled=progress) as bar:
            for first in range(0, len(order), _BLOCK):
                ids = order[first : first + _BLOCK]
                encoded = await embedder.embed_documents([texts[i] for i in ids])
                vectors[ids] = np.array(encoded, dtype=np.float32)
                bar.update(len(ids))
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, vectors)
    query_ids = list(queries)
    query_vectors = np.array(
        [await embedder.embed_query(queries[q]) for q in query_ids], dtype=np.float32
    )
    scores = query_vectors @ vectors.T
    rankings: dict[str, list[str]] = {}
    for row, query_id in enumerate(query_ids):
        best = np.argsort(-scores[row], kind="stable")[:top_k]
        rankings[query_id] = [corpus[int(i)].doc_id for i in best]
    return rankings


def corpus_profile(
    embedder: LocalModelEmbedder, corpus: Sequence[Document], chunk_tokens: int | None
) -> dict[str, Any]:
    """How many documents outgrow one chunk and the model's window (in its word pieces,
    without [CLS]/[SEP])."""
    tokenizer = embedder.tokenizer
    window = embedder.max_seq_length - 2  # [CLS] and [SEP] take two of the positions
    text_tokens = [len(tokenizer.token_spans(d.text)) for d in corpus]
    full_tokens = [len(tokenizer.token_spans(d.title + " " + d.text)) for d in corpus]
    profile: dict[str, Any] = {
        "documents": len(corpus),
        "model_window_tokens": window,
        "docs_title_text_over_model_window": sum(1 for n in full_tokens if n > window),
        "mean_text_tokens": sum(text_tokens) / len(text_tokens),
        "max_text_tokens": max(text_tokens),
    }
    if chunk_tokens is not None:
        profile["chunk_tokens"] = chunk_tokens
        profile["docs_text_over_chunk_tokens"] = sum(1 for n in text_tokens if n > chunk_tokens)
    return profile


async def dense_score_gap(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    embedder: LocalModelEmbedder,
    queries: Sequence[str],
    per_query: int = 3,
) -> float:
    """The largest |server dense score - cosine computed here| over a few hits: the server's
    dense scores must be cosines of unit vectors of :func:`server_embedding_text`."""
    import numpy as np

    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    worst = 0.0
    for text in queries:
        request = retrieval_pb2.RetrieveRequest(
            query=text, top_k=per_query, mode=retrieval_mode("dense"), bypass_cache=True
        )
        response = await stub.Retrieve(request, metadata=metadata, timeout=60)
        query_vector = np.array(await embedder.embed_query(server_query_text(text)))
        chunk_vectors = np.array(
            await embedder.embed_documents(
                [server_embedding_text(c.title, c.text) for c in response.chunks]
            )
        )
        for chunk, vector in zip(response.chunks, chunk_vectors, strict=True):
            worst = max(worst, abs(float(chunk.score) - float(query_vector @ vector)))
    return worst
