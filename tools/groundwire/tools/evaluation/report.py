"""The evaluation's report: tables for the terminal and for ``report.md`` (from the same rows),
and the PNG plots the report embeds by relative path."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundwire.tools.evaluation.metrics import RANKING_METRICS
from groundwire.tools.measure import plots
from groundwire.tools.measure.tables import Row, format_table, markdown_table

METRIC_LABELS = {
    "ndcg@10": "nDCG@10",
    "recall@10": "R@10",
    "recall@100": "R@100",
    "mrr@10": "MRR@10",
}
RETRIEVAL_HEADERS = [
    "run",
    *METRIC_LABELS.values(),
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "docs/query",
]
ANSWER_HEADERS = [
    "answers",
    "EM",
    "F1",
    "source recall",
    "citation precision",
    "judge",
    "TTFT p50 ms",
    "TTFT p95 ms",
    "server TTFT p50 ms",
    "cost/answer",
]
METRICS_PNG = "metrics.png"
LATENCY_PNG = "latency.png"
ANSWERS_PNG = "answers.png"
TTFT_PNG = "ttft.png"


def ingest_line(ingest: Mapping[str, Any]) -> str:
    """The ingest summary in one line."""
    return (
        f"ingest: {ingest['documents']} documents in {ingest['seconds']:.1f}s: "
        f"{ingest['created']} created, {ingest['updated']} updated, "
        f"{ingest['unchanged']} unchanged, {ingest['failed']} failed; "
        f"{ingest['chunks_written']} chunks written"
    )


def long_queries_line(long: Mapping[str, Any]) -> str:
    """How many queries were over the server's length limit and what was done with them."""
    done = "cut to it" if long["action"] == "truncate" else "left out"
    return (
        f"long queries: {long['count']} over the server's {long['limit_chars']:,}-character "
        f"limit, {done} (--long-queries)"
    )


def retrieval_rows(result: Mapping[str, Any]) -> list[Row]:
    """One row per mode, then the reference and published figures when present."""
    rows: list[Row] = []
    for mode, figures in result["retrieval"]["modes"].items():
        latency = figures["latency"]
        rows.append(
            [
                mode,
                *(figures["metrics"][m] for m in RANKING_METRICS),
                latency["p50_ms"],
                latency["p95_ms"],
                latency["p99_ms"],
                figures["mean_distinct_docs"],
            ]
        )
    blank = [math.nan] * 4
    if result.get("reference"):
        metrics = result["reference"]["metrics"]
        label = "reference dense, 1 vector/doc"
        rows.append([label, *(metrics[m] for m in RANKING_METRICS), *blank])
    if result.get("published"):
        published = result["published"]
        rows.append(["published (MTEB)", *(published[m] for m in RANKING_METRICS), *blank])
    return rows


def answer_rows(answers: Mapping[str, Any]) -> list[Row]:
    """The answers' summary as one row."""
    scores = answers["scores"]
    cost = answers["cost_micros_mean"] / 1_000_000
    return [
        [
            answers["answers"],
            scores["exact_match"],
            scores["token_f1"],
            scores["source_recall"],
            scores["citation_precision"],
            scores["judge_score"],
            answers["ttft_client"]["p50_ms"],
            answers["ttft_client"]["p95_ms"],
            answers["ttft_server"]["p50_ms"],
            f"{cost:.6f} {answers['currency']}",
        ]
    ]


def answer_notes(answers: Mapping[str, Any]) -> str:
    """Routes, errors and the judge's cost in one line."""
    routes = ", ".join(f"{k} {v}" for k, v in answers["routes"].items())
    line = f"routes: {routes}; errors {answers['errors']}"
    if answers.get("judge_model"):
        cost = answers["judge_cost_micros_total"]
        spent = "unknown" if cost is None else f"{cost / 1_000_000:.6f} {answers['currency']}"
        line += f"; judge {answers['judge_model']}, cost {spent}"
    return line


def gate_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per gate: PASS or FAIL with the figures."""
    return [
        f"{'PASS' if check['passed'] else 'FAIL'}: {check['detail']}"
        for check in result["gates"]["checks"]
    ]


def terminal_summary(result: Mapping[str, Any]) -> str:
    """What is printed at the end of a run."""
    dataset = result["dataset"]
    retrieval = result["retrieval"]
    lines = [
        f"{dataset['name']} ({dataset['split']}): {dataset['documents']} documents, "
        f"{dataset['queries']} queries; tenant {result['tenant']}; "
        f"top_k {retrieval['top_k_chunks']} chunks -> documents",
        ingest_line(result["ingest"]),
        "",
        format_table(RETRIEVAL_HEADERS, retrieval_rows(result)),
    ]
    if result.get("answers"):
        answers = result["answers"]
        lines += ["", format_table(ANSWER_HEADERS, answer_rows(answers)), answer_notes(answers)]
    lines += ["", *gate_lines(result)]
    return "\n".join(lines)


def _finite(records: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in records if r[key] is not None and not math.isnan(r[key])]


def draw_plots(
    result: Mapping[str, Any], latencies_ms: Mapping[str, list[float]], out: Path
) -> list[str]:
    """Draw the report's PNGs into ``out``; their file names."""
    names = [METRICS_PNG, LATENCY_PNG]
    series = {
        mode: [figures["metrics"][m] for m in RANKING_METRICS]
        for mode, figures in result["retrieval"]["modes"].items()
    }
    reference = result.get("reference")
    if reference and reference.get("metrics"):
        series["reference (1 vector/doc)"] = [reference["metrics"][m] for m in RANKING_METRICS]
    plots.bar_chart(
        out / METRICS_PNG,
        title=f"{result['dataset']['name']}: retrieval quality per mode",
        categories=list(METRIC_LABELS.values()),
        series=series,
        ylabel="score",
        ylim=(0.0, 1.05),
    )
    plots.cdf_plot(
        out / LATENCY_PNG,
        title="Retrieve latency (client-side)",
        series=latencies_ms,
        xlabel="milliseconds",
        log_x=True,
    )
    answers = result.get("answers")
    if answers:
        scores = {k: v for k, v in answers["scores"].items() if not math.isnan(v)}
        plots.bar_chart(
            out / ANSWERS_PNG,
            title=f"answer quality ({answers['answers']} answers)",
            categories=[k.replace("_", " ") for k in scores],
            series={"mean": list(scores.values())},
            ylabel="score",
            ylim=(0.0, 1.05),
        )
        plots.cdf_plot(
            out / TTFT_PNG,
            title="time to first token",
            series={
                "client (first delta)": _finite(answers["records"], "ttft_client_ms"),
                "server-reported": _finite(answers["records"], "ttft_server_ms"),
            },
            xlabel="milliseconds",
            log_x=True,
        )
        names += [ANSWERS_PNG, TTFT_PNG]
    return names


def markdown_report(result: Mapping[str, Any], reproduce: str) -> str:
    """``report.md``: what was measured, the tables, the plots, and how to run it again."""
    dataset = result["dataset"]
    server = result["server"]
    retrieval = result["retrieval"]
    out = [
        f"# Evaluation: {dataset['name']} ({dataset['split']})",
        "",
        f"- dataset: `{dataset['path']}`, {dataset['documents']} documents, "
        f"{dataset['queries']} judged queries, corpus sha256 `{dataset['fingerprint'][:16]}…`",
        f"- server: {result['target']['address']} ({server['version']}), embedder "
        f"`{server['embedder_id']}`, tenant `{result['tenant']}`",
        f"- {ingest_line(result['ingest'])}",
        f"- Retrieve: top_k {retrieval['top_k_chunks']} chunks, documents ranked by their best "
        f"chunk, cache bypassed, concurrency {retrieval['concurrency']}; latency measured by "
        "the client; docs/query: the distinct documents those chunks hold (what R@100 sees)"
        + (
            "; each query's own document id dropped before scoring (--ignore-identical-ids)"
            if retrieval.get("ignore_identical_ids")
            else ""
        ),
        *(
            [f"- {long_queries_line(retrieval['long_queries'])}"]
            if retrieval.get("long_queries", {}).get("count")
            else []
        ),
        f"- measured {result['environment']['measured_at']} on {result['environment']['platform']}"
        f" ({result['environment']['cpu_count']} CPUs)",
        "",
        "## Retrieval",
        "",
        markdown_table(RETRIEVAL_HEADERS, retrieval_rows(result)),
        "",
        f"![retrieval quality per mode]({METRICS_PNG})",
        "",
        f"![Retrieve latency]({LATENCY_PNG})",
    ]
    answers = result.get("answers")
    if answers:
        out += [
            "",
            "## Answers",
            "",
            f"From `{answers['file']}`; {answer_notes(answers)}. EM and F1 are SQuAD-style "
            "(citation markers removed), the best over the accepted answers; the judge grades "
            "0-5, shown over 5.",
            "",
            markdown_table(ANSWER_HEADERS, answer_rows(answers)),
            "",
            f"![answer quality]({ANSWERS_PNG})",
            "",
            f"![time to first token]({TTFT_PNG})",
        ]
    out += ["", "## Gates", ""]
    out += [f"- {line}" for line in gate_lines(result)] or ["- none requested"]
    out += ["", "## Reproduce", "", "```", reproduce, "```", ""]
    return "\n".join(out)
