"""``groundwire reindex compare``: the old generation beside the new one on a judged set.

Two running servers answer: the live one (old configuration) and a shadow one started with
the new configuration and ``GROUNDWIRE_QDRANT_COLLECTION`` naming the built generation
directly (``<name>__<n>``: a physical collection is served as it is, not resolved as an
alias). Both hold the corpus already (the shadow through ``reindex build``); nothing is
ingested. Every judged query goes to both, in each mode, through the same code and metrics
as ``groundwire eval`` (cache bypassed), and the figures are printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import grpc

from groundwire.sdk import DEFAULT_CHANNEL_OPTIONS
from groundwire.tools.evaluation.beir import DatasetError, load_dataset
from groundwire.tools.evaluation.metrics import RANKING_METRICS
from groundwire.tools.evaluation.retrieval_eval import retrieve_all, score_mode
from groundwire.tools.measure.target import API_KEY_VARIABLE

MODE_NAMES = ("dense", "sparse", "hybrid")


def register(steps: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``groundwire reindex compare`` (the ``groundwire.reindex_steps`` entry point)."""
    parser = steps.add_parser("compare", help="nDCG@10 of two servers (old, new) on a judged set")
    parser.add_argument("dataset", type=Path, metavar="DATASET", help="a BEIR dataset folder")
    parser.add_argument("--old", required=True, metavar="HOST:PORT", help="the live server")
    parser.add_argument("--new", required=True, metavar="HOST:PORT", help="the shadow server")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VARIABLE),
        help=f"API key of the tenant (default ${API_KEY_VARIABLE})",
    )
    parser.add_argument("--modes", default="dense,hybrid", help="default dense,hybrid")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit-queries", type=int, metavar="N")
    parser.add_argument("--top-k", type=int, default=100, metavar="N")
    parser.set_defaults(run_step=main)


async def compare(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Scores of both servers per mode: ``{"old": {mode: score}, "new": {...}}``."""
    dataset = load_dataset(args.dataset, args.split, args.limit_queries)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODE_NAMES))
    if unknown:
        raise ValueError(f"--modes: unknown mode(s) {', '.join(unknown)}")
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    scores: dict[str, dict[str, Any]] = {}
    for side, address in (("old", args.old), ("new", args.new)):
        async with grpc.aio.insecure_channel(
            address, options=list(DEFAULT_CHANNEL_OPTIONS.items())
        ) as channel:
            runs = await retrieve_all(
                channel,
                metadata,
                dataset.queries,
                modes,
                top_k=args.top_k,
                concurrency=1,
                progress=False,
            )
        scores[side] = {mode: score_mode(run, dataset.qrels) for mode, run in runs.items()}
    return scores


def table(scores: dict[str, dict[str, Any]]) -> list[str]:
    """The figures side by side, one line per mode and metric."""
    lines = [f"{'mode':<8} {'metric':<11} {'old':>7} {'new':>7} {'change':>8}"]
    for mode in scores["old"]:
        for metric in RANKING_METRICS:
            old = scores["old"][mode]["metrics"][metric]
            new = scores["new"][mode]["metrics"][metric]
            lines.append(f"{mode:<8} {metric:<11} {old:7.3f} {new:7.3f} {new - old:+8.3f}")
    return lines


def main(args: argparse.Namespace) -> int:
    """Run the comparison and print it; 2 on bad input, 1 when a server fails."""
    try:
        scores = asyncio.run(compare(args))
    except (DatasetError, ValueError) as exc:
        print(f"groundwire reindex compare: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"groundwire reindex compare: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print("\n".join(table(scores)))
    return 0
