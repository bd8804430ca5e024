"""Retrieval and answer quality on a BEIR-format dataset, through the gRPC API.

DATASET is a BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv. The corpus is
ingested through the API into its own tenant, eval-<name>-<corpus hash>, reused by later
runs (unchanged documents are skipped; a changed embedder or chunking re-indexes). Every
judged query of the split then goes through Retrieve in each mode, cache bypassed, and the
document rankings (a document ranks at its best chunk) are scored: nDCG@10 (graded, as
trec_eval), Recall@10, Recall@100, MRR@10, with client-side latency p50/p95/p99.

With reference answers (DATASET/answers.jsonl, or --answers FILE: one JSON object per line
with "question", "answer" or "answers", optionally "doc_ids"), each question also goes
through Generate: exact match and token F1 (SQuAD-style), source recall and citation
precision when doc_ids are given, route, cost and time to first token; --judge-model adds
the grade of a model the server lists, called directly at --judge-base-url (default
$GROUNDWIRE_LLM_BASE_URL).

A query longer than the server's limit (GetCapabilities' max_query_chars) is cut to it, or
with --long-queries skip left out; either way the report counts them. --ignore-identical-ids
applies BEIR/MTEB's rule for datasets whose queries are corpus documents (ArguAna, Quora):
a query's own document id is dropped from its ranking before scoring.

Without --address a `groundwire serve` process is started, configured by GROUNDWIRE_*
variables as any server is (e.g. GROUNDWIRE_LLM_BASE_URL for answers from a model; without
an LLM answers are the degraded, extractive ones), its index and its log (server.log) in
--data-dir. With --address the corpus goes to the tenant of --api-key (or --tenant on a
mesh_header server).

Writes eval.json, report.md and PNG plots to --output (default results/eval/<name>).
Exit status: 0; 1 when a gate fails (--min-dense-ndcg, --require-hybrid-ge-sparse);
2 for a bad dataset or arguments; 3 when the server fails or cannot be reached.

  groundwire eval ../shared/datasets/scifact
  groundwire eval ../shared/datasets/scifact --min-dense-ndcg 0.64 --require-hybrid-ge-sparse
  groundwire eval DATASET --reference          # + BEIR's own dense figure (1 vector/doc)
  GROUNDWIRE_CHUNK_TOKENS=8192 GROUNDWIRE_CHUNK_OVERLAP_TOKENS=0 \\
      groundwire eval DATASET --data-dir data/eval-1chunk   # other chunking: its own index
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from groundwire.tools.evaluation.defaults import (
    DEFAULT_DATA_DIR,
    EXIT_BAD_INPUT,
    LONG_QUERIES,
    MODE_NAMES,
)
from groundwire.tools.measure.arguments import add_command, non_negative, positive, split_names


def _modes(text: str) -> list[str]:
    return list(dict.fromkeys(split_names(text, MODE_NAMES)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    from groundwire.sdk import TIERS
    from groundwire.tools.measure.progress import add_progress_argument
    from groundwire.tools.measure.target import add_target_arguments

    parser.add_argument("dataset", type=Path, metavar="DATASET", help="a BEIR dataset folder")
    retrieval = parser.add_argument_group("retrieval")
    retrieval.add_argument(
        "--modes",
        type=_modes,
        default=list(MODE_NAMES),
        metavar="LIST",
        help="default dense,sparse,hybrid",
    )
    retrieval.add_argument("--split", default="test", help="qrels/<split>.tsv (default test)")
    retrieval.add_argument(
        "--limit-queries", type=positive(int), metavar="N", help="only the first N judged queries"
    )
    retrieval.add_argument(
        "--top-k",
        type=positive(int),
        default=100,
        metavar="N",
        help="chunks per Retrieve (default 100)",
    )
    retrieval.add_argument(
        "--concurrency",
        type=positive(int),
        default=1,
        metavar="N",
        help="calls in flight (default 1)",
    )
    retrieval.add_argument(
        "--long-queries",
        choices=LONG_QUERIES,
        default="truncate",
        help="a query over the server's length limit: cut to the limit (default) or skipped",
    )
    retrieval.add_argument(
        "--ignore-identical-ids",
        action="store_true",
        help="drop each query's own id from its ranking before scoring (BEIR/MTEB's rule for "
        "datasets whose queries are corpus documents, e.g. ArguAna)",
    )
    retrieval.add_argument(
        "--reference",
        action="store_true",
        help="also compute BEIR's dense figure here (1 vector per document, the local model)",
    )
    answers = parser.add_argument_group("answers")
    answers.add_argument(
        "--answers", type=Path, metavar="FILE", help="default DATASET/answers.jsonl when present"
    )
    answers.add_argument(
        "--limit-answers",
        type=non_negative(int),
        metavar="N",
        help="only the first N (0: no answers)",
    )
    choice = answers.add_mutually_exclusive_group()
    choice.add_argument("--tier", choices=sorted(TIERS), help="default: standard")
    choice.add_argument("--model", help="a catalog model to answer with")
    answers.add_argument(
        "--judge-model", metavar="NAME", help="a model the server lists that grades each answer"
    )
    answers.add_argument(
        "--judge-base-url",
        metavar="URL",
        help="the OpenAI-compatible endpoint the judge is called at (default "
        "$GROUNDWIRE_LLM_BASE_URL)",
    )
    answers.add_argument(
        "--judge-api-key",
        metavar="KEY",
        help="its API key (default $GROUNDWIRE_LLM_API_KEY)",
    )
    gates = parser.add_argument_group("gates (exit 1 when one fails)")
    gates.add_argument("--min-dense-ndcg", type=float, metavar="X", help="dense nDCG@10 >= X")
    gates.add_argument(
        "--require-hybrid-ge-sparse", action="store_true", help="hybrid nDCG@10 >= sparse"
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--output", type=Path, metavar="DIR", help="default results/eval/<dataset name>"
    )
    output.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the in-process server's data, kept for the next run (default {DEFAULT_DATA_DIR})",
    )
    add_progress_argument(parser)
    add_target_arguments(parser)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eval`` to the ``groundwire`` command (the ``groundwire.commands`` entry point)."""
    summary = "retrieval (and answer) quality on a BEIR-format dataset, with a report"
    add_command(commands, "eval", summary, __doc__, add_arguments, main)


def main(args: argparse.Namespace) -> int:
    """Run the command; the exit status."""
    from groundwire.tools.evaluation.run import Evaluation

    problem = _check_arguments(args)
    if problem:
        print(f"groundwire eval: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return asyncio.run(Evaluation(args).run())


def _check_arguments(args: argparse.Namespace) -> str | None:
    if args.min_dense_ndcg is not None and "dense" not in args.modes:
        return "--min-dense-ndcg needs dense in --modes"
    if args.require_hybrid_ge_sparse and not {"hybrid", "sparse"} <= set(args.modes):
        return "--require-hybrid-ge-sparse needs hybrid and sparse in --modes"
    return None
