"""The gates a run can be asked to pass (CI's quality bar), each with its outcome and the
figures it compared, and the command line that repeats a run."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from groundwire.tools.evaluation.defaults import MODE_NAMES


def gate_checks(args: argparse.Namespace, modes: dict[str, Any]) -> list[dict[str, Any]]:
    """The requested gates, each with its outcome and the figures it compared."""
    checks: list[dict[str, Any]] = []
    if args.min_dense_ndcg is not None:
        dense = modes["dense"]["metrics"]["ndcg@10"]
        passed = dense >= args.min_dense_ndcg
        checks.append(
            {
                "name": "min_dense_ndcg",
                "passed": passed,
                "detail": f"dense nDCG@10 {dense:.4f} {'>=' if passed else '<'} "
                f"{args.min_dense_ndcg} (--min-dense-ndcg)",
            }
        )
    if args.require_hybrid_ge_sparse:
        hybrid = modes["hybrid"]["metrics"]["ndcg@10"]
        sparse = modes["sparse"]["metrics"]["ndcg@10"]
        passed = hybrid >= sparse
        checks.append(
            {
                "name": "hybrid_ge_sparse",
                "passed": passed,
                "detail": f"hybrid nDCG@10 {hybrid:.4f} {'>=' if passed else '<'} sparse "
                f"{sparse:.4f} (--require-hybrid-ge-sparse)",
            }
        )
    return checks


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that repeats this run (the API key as a variable, never its value)."""
    words = ["groundwire", "eval", str(args.dataset)]
    options: list[tuple[str, Any, Any]] = [
        ("--modes", ",".join(args.modes), ",".join(MODE_NAMES)),
        ("--split", args.split, "test"),
        ("--limit-queries", args.limit_queries, None),
        ("--top-k", args.top_k, 100),
        ("--concurrency", args.concurrency, 1),
        ("--long-queries", args.long_queries, "truncate"),
        ("--answers", args.answers, None),
        ("--limit-answers", args.limit_answers, None),
        ("--tier", args.tier, None),
        ("--model", args.model, None),
        ("--judge-model", args.judge_model, None),
        ("--judge-base-url", args.judge_base_url, None),
        ("--min-dense-ndcg", args.min_dense_ndcg, None),
        ("--address", args.address, None),
        ("--tenant", args.tenant, None),
    ]
    for flag, value, default in options:
        if value is not None and value != default:
            words += [flag, str(value)]
    for flag, on in (
        ("--ignore-identical-ids", args.ignore_identical_ids),
        ("--reference", args.reference),
        ("--require-hybrid-ge-sparse", args.require_hybrid_ge_sparse),
    ):
        if on:
            words.append(flag)
    if args.address is None:
        words += ["--data-dir", str(args.data_dir)]
    command = shlex.join(words)
    if args.address and args.api_key:
        command += ' --api-key "$GROUNDWIRE_API_KEY"'
    return command
