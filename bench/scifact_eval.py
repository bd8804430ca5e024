"""Retrieval quality on BEIR SciFact, measured through the gRPC API.

What it does:

1. starts an in-process groundwire server from real parts (Qdrant Edge on disk, the bundled
   all-MiniLM-L6-v2, no cache; auth off; 127.0.0.1:0);
2. ingests the SciFact corpus (5,183 abstracts) through ``DocumentService.IngestDocuments``
   with the server's chunking (default 200 tokens, 40 overlap; ``--chunk-tokens`` /
   ``--overlap-tokens`` to change it);
3. runs the 300 test queries (those in ``qrels/test.tsv``) through ``RetrievalService.Retrieve``
   in dense, sparse and hybrid mode (``top_k=100``, ``bypass_cache=True``), turns chunk hits
   into a document ranking (a document ranks at its best chunk; duplicates dropped), and
   reports nDCG@10, Recall@10, Recall@100 and MRR@10 (pytrec_eval's ``ndcg_cut_10``,
   ``recall_10``, ``recall_100`` and reciprocal rank cut at 10) plus client-side Retrieve
   latency p50/p95/p99 per mode;
4. with ``--reference``, also computes the dense figure the way BEIR/MTEB do, with no server:
   one vector per document of ``title + " " + text`` (truncated by the model at 256 word
   pieces), exact cosine search in numpy. That is the number to compare with the published
   0.645 for all-MiniLM-L6-v2.

Results are printed and written to ``bench/results/scifact.json`` (``--output``).

Rerun (from the repository root)::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/scifact_eval.py                # defaults
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scifact_eval.py --reference    # + BEIR-style ref
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scifact_eval.py --chunk-tokens 8192 \\
        --overlap-tokens 0 --output /tmp/scifact-one-chunk.json    # one chunk per doc
    # a CI gate:
    .venv/bin/python bench/scifact_eval.py --min-dense-ndcg 0.64 --require-hybrid-ge-sparse

``--data-dir`` keeps the Edge store between runs (a re-run skips unchanged documents).
Exit status: 0, or 1 when a ``--min-dense-ndcg`` / ``--require-hybrid-ge-sparse`` check fails.

Measured (2 cores, 2026-11): the BEIR-style reference gives nDCG@10 0.6451, R@10 0.7833,
R@100 0.9250, MRR@10 0.6047, the published MTEB figures to four places, and so does the
server with one chunk per document (``--chunk-tokens 8192 --overlap-tokens 0``). With the
default 200/40 chunks dense is higher (0.668): 71% of the abstracts are longer than the
model's 254-word-piece window, so one vector per document never sees their tails, while
chunks cover the whole abstract (each with its title). Hybrid moves by about ±0.001 between
runs: RRF leaves many exact score ties, which the engine returns in no fixed order.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_DATASET,
    RESULTS_DIR,
    Doc,
    environment,
    ingest_documents,
    latency_summary_ms,
    load_corpus,
    load_embedder,
    load_qrels,
    load_queries,
    print_table,
    quiet_logs,
    running_server,
    write_json,
)
from tqdm import tqdm

from groundwire.clients.embedder import LocalEmbedder
from groundwire.server.cli import MODES
from groundwire.server.pipeline.ingest import embedding_text
from groundwire.server.pipeline.retrieval import normalize_query
from groundwire.server.settings import Settings
from groundwire.v1 import retrieval_pb2

PUBLISHED_DENSE_NDCG10 = 0.645  # all-MiniLM-L6-v2 on SciFact (MTEB: 0.64508)
PUBLISHED_DENSE = {"ndcg@10": 0.64508, "recall@10": 0.78333, "recall@100": 0.925, "mrr@10": 0.60472}
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")

Qrels = Mapping[str, Mapping[str, int]]


# --------------------------------------------------------------------------- metrics


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain: sum of gain_i / log2(i + 1) for ranks i = 1, 2, ..."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """nDCG@k with graded (linear) gains, as trec_eval's ``ndcg_cut_k``: the ideal DCG comes
    from the qrels' own grades, best first; 0 when the query has no relevant document."""
    gains = [max(relevance.get(doc_id, 0), 0) for doc_id in ranking[:k]]
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    ideal_dcg = dcg(ideal)
    return dcg(gains) / ideal_dcg if ideal_dcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents (grade > 0) found in the first ``k``."""
    relevant = {doc_id for doc_id, r in relevance.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document within the first ``k``, else 0."""
    for rank, doc_id in enumerate(ranking[:k], start=1):
        if relevance.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean of each metric over every query of the qrels (a query with no run scores 0)."""
    totals = dict.fromkeys(METRICS, 0.0)
    for query_id, relevance in qrels.items():
        ranking = runs.get(query_id, [])
        totals["ndcg@10"] += ndcg_at_k(ranking, relevance, 10)
        totals["recall@10"] += recall_at_k(ranking, relevance, 10)
        totals["recall@100"] += recall_at_k(ranking, relevance, 100)
        totals["mrr@10"] += mrr_at_k(ranking, relevance, 10)
    return {name: value / len(qrels) for name, value in totals.items()}


def documents_in_rank_order(chunk_doc_ids: Sequence[str]) -> list[str]:
    """Chunk hits (best first) to documents: each document at its best chunk's rank."""
    return list(dict.fromkeys(chunk_doc_ids))


def check_metrics_by_hand() -> None:
    """Hand-computed cases; raises AssertionError when an implementation drifts."""

    def close(a: float, b: float) -> bool:
        return abs(a - b) < 1e-4

    # Two relevant docs, found at ranks 2 and 4:
    # DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161; IDCG = 1 + 0.63093.
    rel = {"a": 1, "b": 1}
    ranking = ["x", "a", "y", "b"]
    assert close(ndcg_at_k(ranking, rel, 10), 1.06161 / 1.63093)  # 0.65092
    assert close(ndcg_at_k(ranking, rel, 2), 0.63093 / 1.63093)  # 0.38685
    assert close(recall_at_k(ranking, rel, 2), 0.5)
    assert close(recall_at_k(ranking, rel, 10), 1.0)
    assert close(mrr_at_k(ranking, rel, 10), 0.5)
    assert close(mrr_at_k(ranking, rel, 1), 0.0)
    # Graded: b (1) before a (2). DCG = 1 + 2/log2(3) = 2.26186; IDCG = 2 + 1/log2(3).
    graded = {"a": 2, "b": 1}
    assert close(ndcg_at_k(["b", "a"], graded, 10), 2.26186 / 2.63093)  # 0.85972
    assert close(ndcg_at_k(["a", "b"], graded, 10), 1.0)
    # Nothing relevant retrieved; a zero grade is not relevant.
    assert ndcg_at_k(["x", "y"], rel, 10) == 0.0
    assert recall_at_k(["x"], {"x": 0, "a": 1}, 10) == 0.0
    # More relevant docs than k: the ideal is cut at k too.
    many = {d: 1 for d in "abcdefghijkl"}
    assert close(ndcg_at_k(list("abcdefghij"), many, 10), 1.0)
    assert documents_in_rank_order(["d1", "d2", "d1", "d3", "d2"]) == ["d1", "d2", "d3"]
    assert close(
        evaluate({"q1": ["a"], "q2": ["x"]}, {"q1": {"a": 1}, "q2": {"b": 1}})["mrr@10"], 0.5
    )


# --------------------------------------------------------------------------- through the API


async def retrieve_all(
    stub: Any,
    queries: Mapping[str, str],
    modes: Sequence[str],
    top_k: int,
) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[float]], dict[str, float]]:
    """Per mode: query id -> document ranking, client-side latencies, mean distinct docs.

    The modes are interleaved per query (rotating which goes first) so drift in machine load
    falls on all of them alike."""
    runs: dict[str, dict[str, list[str]]] = {m: {} for m in modes}
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    distinct: dict[str, float] = dict.fromkeys(modes, 0.0)
    items = list(queries.items())
    for number, (query_id, text) in enumerate(tqdm(items, desc="retrieve", unit="query")):
        order = [*modes[number % len(modes) :], *modes[: number % len(modes)]]
        for mode in order:
            request = retrieval_pb2.RetrieveRequest(
                query=text, top_k=top_k, mode=MODES[mode], bypass_cache=True
            )
            started = time.perf_counter()
            response = await stub.Retrieve(request, timeout=60)
            latencies[mode].append(time.perf_counter() - started)
            ranking = documents_in_rank_order([c.doc_id for c in response.chunks])
            runs[mode][query_id] = ranking
            distinct[mode] += len(ranking) / len(items)
    return runs, latencies, distinct


async def check_dense_scores(
    stub: Any, embedder: LocalEmbedder, queries: Sequence[str], per_query: int = 3
) -> float:
    """Largest |server dense score - cosine computed here| over a few hits: the server's
    scores must be plain cosines of unit vectors of ``embedding_text(title, chunk)``."""
    import numpy as np

    worst = 0.0
    for text in queries:
        response = await stub.Retrieve(
            retrieval_pb2.RetrieveRequest(
                query=text, top_k=per_query, mode=MODES["dense"], bypass_cache=True
            ),
            timeout=60,
        )
        query_vec = np.array(await embedder.embed_query(normalize_query(text)))
        chunk_vecs = np.array(
            await embedder.embed_documents(
                [embedding_text(c.title, c.text) for c in response.chunks]
            )
        )
        for chunk, vec in zip(response.chunks, chunk_vecs, strict=True):
            worst = max(worst, abs(float(chunk.score) - float(query_vec @ vec)))
    return worst


# --------------------------------------------------------------------------- reference


async def reference_dense(
    embedder: LocalEmbedder,
    corpus: Sequence[Doc],
    queries: Mapping[str, str],
    *,
    separator: str,
    top_k: int,
    cache_dir: Path | None = None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """BEIR/MTEB's setup without the server: one vector per document of
    ``(title + separator + text).strip()`` (the model truncates at its max_seq_length),
    raw query text, exact cosine (dot of unit vectors) in numpy. The document vectors are
    kept in ``cache_dir`` when given (keyed by the embedder id and the texts)."""
    import numpy as np

    texts = [(d.title + separator + d.text).strip() for d in corpus]
    digest = hashlib.sha256(
        json.dumps([embedder.embedder_id, texts], ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:16]
    cached = cache_dir / f"reference-vectors-{digest}.npy" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        vectors = np.load(cached)
    else:
        # Longest first, in blocks: batches of similar length pad less, so encoding is faster.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
        block = 256
        bar = tqdm(total=len(texts), desc=f"reference embed (sep={separator!r})", unit="doc")
        for start in range(0, len(order), block):
            ids = order[start : start + block]
            encoded = await embedder.embed_documents([texts[i] for i in ids])
            vectors[ids] = np.array(encoded, dtype=np.float32)
            bar.update(len(ids))
        bar.close()
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, vectors)
    norms = np.linalg.norm(vectors, axis=1)
    query_ids = list(queries)
    query_vecs = np.array(
        [await embedder.embed_query(queries[q]) for q in query_ids], dtype=np.float32
    )
    scores = query_vecs @ vectors.T
    runs: dict[str, list[str]] = {}
    for row, query_id in enumerate(query_ids):
        best = np.argsort(-scores[row], kind="stable")[:top_k]
        runs[query_id] = [corpus[i].doc_id for i in best]
    info = {
        "doc_vector_norm_min": float(norms.min()),
        "doc_vector_norm_max": float(norms.max()),
    }
    return runs, info


def truncation_profile(
    embedder: LocalEmbedder, corpus: Sequence[Doc], chunk_tokens: int
) -> dict[str, Any]:
    """How many documents exceed one chunk, and the model's 256-token window (counting the
    model's word pieces, without [CLS]/[SEP])."""
    tokenizer = embedder.tokenizer
    window = embedder.max_seq_length - 2  # [CLS] and [SEP] take two of the 256 positions
    text_tokens = [len(tokenizer.token_spans(d.text)) for d in corpus]
    full_tokens = [len(tokenizer.token_spans(d.title + " " + d.text)) for d in corpus]

    def pieces(text: str) -> list[str]:
        return [text[start:end] for start, end in tokenizer.token_spans(text)]

    # BEIR joins title and text with " ", we with "\n": both are white space to WordPiece.
    newline_same = sum(
        1 for d in corpus if pieces(d.title + "\n" + d.text) == pieces(d.title + " " + d.text)
    )
    return {
        "docs": len(corpus),
        "docs_text_over_chunk_tokens": sum(1 for n in text_tokens if n > chunk_tokens),
        "docs_title_text_over_model_window": sum(1 for n in full_tokens if n > window),
        "model_window_tokens": window,
        "mean_text_tokens": sum(text_tokens) / len(text_tokens),
        "max_text_tokens": max(text_tokens),
        "docs_same_word_pieces_newline_vs_space": newline_same,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="See the module docstring (head bench/scifact_eval.py) for rerun commands.",
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR SciFact dir")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep the Edge store here (default: temp)"
    )
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        default=defaults["chunk_tokens"].default,
        help="chunk window in model tokens (server default %(default)s)",
    )
    parser.add_argument(
        "--overlap-tokens",
        type=int,
        default=defaults["chunk_overlap_tokens"].default,
        help="overlap between chunks (server default %(default)s)",
    )
    parser.add_argument("--top-k", type=int, default=100, help="chunks per Retrieve")
    parser.add_argument(
        "--modes", default="dense,sparse,hybrid", help="comma-separated: dense,sparse,hybrid"
    )
    parser.add_argument("--docs", type=int, default=None, help="only the first N documents")
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also compute BEIR-style dense figures in-process (one vector per document)",
    )
    parser.add_argument(
        "--reference-only", action="store_true", help="skip the server; only --reference"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "scifact.json", help="JSON results"
    )
    parser.add_argument(
        "--min-dense-ndcg",
        type=float,
        default=None,
        help="exit 1 if dense nDCG@10 is below this (e.g. 0.64)",
    )
    parser.add_argument(
        "--require-hybrid-ge-sparse",
        action="store_true",
        help="exit 1 if hybrid nDCG@10 is below sparse nDCG@10",
    )
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {sorted(MODES)}")
    if args.reference_only:
        args.reference = True
    return args


def metric_rows(results: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for name, figures in results.items():
        latency = figures.get("latency", {})
        rows.append(
            [
                name,
                *(figures["metrics"][m] for m in METRICS),
                latency.get("p50_ms", math.nan),
                latency.get("p95_ms", math.nan),
                latency.get("p99_ms", math.nan),
            ]
        )
    return rows


async def run(args: argparse.Namespace) -> int:
    check_metrics_by_hand()
    quiet_logs()
    qrels = load_qrels(args.dataset, "test")
    all_queries = load_queries(args.dataset)
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        print(f"warning: {len(missing)} qrels queries have no text", file=sys.stderr)
    corpus = load_corpus(args.dataset, args.docs)
    print(
        f"SciFact: {len(corpus)} documents, {len(queries)} test queries, "
        f"{sum(len(r) for r in qrels.values())} qrels"
    )
    changed = sum(1 for t in queries.values() if normalize_query(t) != t)
    embedder = await load_embedder()
    output: dict[str, Any] = {
        "dataset": str(args.dataset),
        "documents": len(corpus),
        "queries": len(queries),
        "top_k_chunks": args.top_k,
        "chunk_tokens": args.chunk_tokens,
        "overlap_tokens": args.overlap_tokens,
        "embedder_id": embedder.embedder_id,
        "published_all_minilm_l6_v2": PUBLISHED_DENSE,
        "queries_changed_by_normalize_query": changed,
        "environment": environment(),
        "results": {},
    }
    results: dict[str, dict[str, Any]] = output["results"]
    try:
        output["corpus_profile"] = truncation_profile(embedder, corpus, args.chunk_tokens)
        if not args.reference_only:
            async with running_server(
                embedder,
                data_dir=args.data_dir,
                chunk_tokens=args.chunk_tokens,
                chunk_overlap_tokens=args.overlap_tokens,
                max_top_k=max(100, args.top_k),
            ) as server:
                totals = await ingest_documents(server, corpus)
                output["ingest"] = {
                    "created": totals.created,
                    "updated": totals.updated,
                    "unchanged": totals.unchanged,
                    "failed": totals.failed,
                    "chunks_written": totals.chunks_written,
                    "chunks_stored": await server.components.store.count("default"),
                    "seconds": totals.seconds,
                }
                print(
                    f"ingested: {output['ingest']} "
                    f"({len(corpus) / max(totals.seconds, 1e-9):.1f} docs/s)"
                )
                if "dense" in args.modes:
                    output["dense_score_max_abs_diff"] = await check_dense_scores(
                        server.retrieval, embedder, list(queries.values())[:5]
                    )
                runs, latencies, distinct = await retrieve_all(
                    server.retrieval, queries, args.modes, args.top_k
                )
                for mode in args.modes:
                    results[mode] = {
                        "metrics": evaluate(runs[mode], qrels),
                        "latency": latency_summary_ms(latencies[mode]),
                        "mean_distinct_docs_in_top_k_chunks": distinct[mode],
                    }
        if args.reference:
            for separator, name in ((" ", "reference dense (title+' '+text, 1 vec/doc)"),):
                ref_runs, info = await reference_dense(
                    embedder,
                    corpus,
                    queries,
                    separator=separator,
                    top_k=100,
                    cache_dir=args.data_dir,
                )
                results[name] = {"metrics": evaluate(ref_runs, qrels), **info}
    finally:
        await embedder.close()

    print()
    print(
        f"SciFact test ({len(queries)} queries), chunks {args.chunk_tokens}/"
        f"{args.overlap_tokens} tokens, top_k={args.top_k} chunks -> documents"
    )
    print_table(
        ["run", *METRICS, "p50 ms", "p95 ms", "p99 ms"],
        [*metric_rows(results), ["published MiniLM (MTEB)", *PUBLISHED_DENSE.values(), "", "", ""]],
    )
    if "dense_score_max_abs_diff" in output:
        print(
            "dense score check: max |server score - in-process cosine| = "
            f"{output['dense_score_max_abs_diff']:.2e}"
        )
    print(f"corpus profile: {output['corpus_profile']}")
    print("latency: client-side Retrieve, sequential, client and server in one process")

    failures = []
    dense = results.get("dense", {}).get("metrics", {}).get("ndcg@10")
    if args.min_dense_ndcg is not None:
        if dense is None:
            failures.append("--min-dense-ndcg: dense mode was not run")
        elif dense < args.min_dense_ndcg:
            failures.append(f"dense nDCG@10 {dense:.4f} < {args.min_dense_ndcg}")
    if args.require_hybrid_ge_sparse:
        hybrid = results.get("hybrid", {}).get("metrics", {}).get("ndcg@10")
        sparse = results.get("sparse", {}).get("metrics", {}).get("ndcg@10")
        if hybrid is None or sparse is None:
            failures.append("--require-hybrid-ge-sparse: hybrid and sparse must both run")
        elif hybrid < sparse:
            failures.append(f"hybrid nDCG@10 {hybrid:.4f} < sparse {sparse:.4f}")
    output["checks_failed"] = failures
    write_json(args.output, output)
    print(f"wrote {args.output}")
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
