"""The benchmark's tables, from its results document: the same rows for the terminal and for
``report.md``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from groundwire.tools.measure.tables import Row, format_table, markdown_table


@dataclass(frozen=True)
class Table:
    """A titled table."""

    title: str
    headers: tuple[str, ...]
    rows: list[Row]


def generate_tables(result: dict[str, Any]) -> Iterator[Table]:
    """Per (level, variant) figures, then each server variant beside direct."""
    up = result["upstream"]
    pace = f"{up['tokens']}-token answers, upstream TTFT {up['ttft_ms']:g} ms, " + (
        f"{up['itl_ms']:g} ms between tokens"
    )
    failing = bool(up["fail_every"])
    if failing:
        pace += f", 1 in {up['fail_every']} upstream requests HTTP {up['fail_status']}"
    loadgen = result.get("loadgen", "python")
    pace += f"; {up.get('kind', 'python')} upstream, {loadgen} load generator"
    labels: dict[str, str] = result.get("labels") or {}
    headers = (
        "conc",
        "variant",
        "ok",
        "refused",
        "err",
        "fallback",
        "TTFT p50",
        "TTFT p99",
        "ITL p50",
        "ITL p99",
        "total p50",
        "total p99",
        "tok/s/stream p50",
        "agg tok/s",
        "streams/s",
        "srv CPU ms",
        "caller CPU ms",
        "upstream CPU ms",
        "streams/core",
    )
    rows: list[Row] = []
    for level in result["levels"]:
        for name, row in level["variants"].items():
            rows.append(
                [
                    level["concurrency"],
                    labels.get(name, name),
                    row["ok"],
                    row.get("refusals", 0),
                    row["errors"],
                    row.get("fallbacks", row["routes"].get("fallback", 0)),
                    row["ttft"]["p50_ms"],
                    row["ttft"]["p99_ms"],
                    row["itl"]["p50_ms"],
                    row["itl"]["p99_ms"],
                    row["total"]["p50_ms"],
                    row["total"]["p99_ms"],
                    row["stream_tokens_per_s"]["p50"],
                    row["aggregate_tokens_per_s"],
                    row["streams_per_s"],
                    row["worker_cpu_ms_per_call"],
                    row.get("caller_cpu_ms_per_call", row["cpu_ms_per_call"].get("bench")),
                    row["cpu_ms_per_call"].get("upstream", math.nan),
                    row["streams_per_core"],
                ]
                + ([_routes(row)] if failing else [])
            )
    yield Table(
        f"Generate ({pace}); times in ms from issuing the call, client side; CPU per stream "
        "of our server (all its processes), of the caller (the load generator) and of the "
        "upstream; refused = RESOURCE_EXHAUSTED (overloaded), fallback = answered by the "
        "fallback model; streams/core = concurrent streams of this pace one core of our "
        "server sustains",
        headers + (("routes",) if failing else ()),
        rows,
    )
    yield Table(
        "Generate beside direct: overhead = ours - direct (ms), ratio = ours / direct",
        (
            "conc",
            "variant",
            "TTFT +p50",
            "TTFT +p99",
            "TTFT +paired p50",
            "ITL +p50",
            "ITL ratio",
            "total ratio",
            "tok/s/stream ratio",
            "agg tok/s ratio",
        ),
        [
            [
                level["concurrency"],
                labels.get(name, name),
                c["ttft_overhead_p50_ms"],
                c["ttft_overhead_p99_ms"],
                c["ttft_overhead_paired_p50_ms"],
                c["itl_overhead_p50_ms"],
                c["itl_ratio_p50"],
                c["total_ratio_p50"],
                c["stream_tokens_per_s_ratio"],
                c["aggregate_tokens_per_s_ratio"],
            ]
            for level in result["levels"]
            for name, c in level["versus_direct"].items()
        ],
    )

    refused: list[Row] = [
        [level["concurrency"], labels.get(name, name), row["refusals"], *_refusal_ms(row)]
        for level in result["levels"]
        for name, row in level["variants"].items()
        if row.get("refusals")
    ]
    if refused:
        yield Table(
            "Refused calls: time from issuing the call to RESOURCE_EXHAUSTED (ms)",
            ("conc", "variant", "refused", "p50", "p99", "max"),
            refused,
        )
    saturation = result.get("saturation") or {}
    if saturation:
        yield Table(
            "Streams per second at saturation (the most at any level) per server and worker "
            "count; ratio = to the same variant with the fewest workers",
            ("server", "workers", "streams/s", "at conc", "ratio"),
            [
                [
                    name,
                    row["workers"],
                    row["streams_per_s"],
                    row["at_concurrency"] if row["at_concurrency"] is not None else "-",
                    row["ratio_to_baseline"],
                ]
                for name, row in saturation.items()
            ],
        )


def _refusal_ms(row: dict[str, Any]) -> list[float]:
    latency = row["refusal_latency"]
    return [latency["p50_ms"], latency["p99_ms"], latency["max_ms"]]


def _routes(row: dict[str, Any]) -> str:
    return ", ".join(f"{route} {n}" for route, n in sorted(row["routes"].items()))


def retrieve_tables(result: dict[str, Any]) -> Iterator[Table]:
    """Per (mode, level, variant) figures with the ratios against direct."""
    ingest = result["ingest"]
    yield Table(
        f"Retrieve over {ingest['documents']} documents ({ingest['chunks']} chunks), "
        f"top_k {result['top_k']}; ms client side; CPU = the working process's CPU per call "
        "(our server; this process for direct); ratio = variant / direct",
        (
            "mode",
            "conc",
            "variant",
            "ok",
            "err",
            "p50",
            "p99",
            "QPS",
            "CPU ms/call",
            "QPS/core",
            "p50 ratio",
            "p99 ratio",
            "QPS ratio",
            "hits",
            "unexpected",
        ),
        [
            [
                level["mode"],
                level["concurrency"],
                name,
                row["ok"],
                row["errors"],
                row["latency"]["p50_ms"],
                row["latency"]["p99_ms"],
                row["qps"],
                row["worker_cpu_ms_per_call"],
                row["qps_per_core"],
                level["versus_direct"].get(name, {}).get("p50_ratio", "-"),
                level["versus_direct"].get(name, {}).get("p99_ratio", "-"),
                level["versus_direct"].get(name, {}).get("qps_ratio", "-"),
                row["cache_hits"] if name != "direct" else "-",
                row["unexpected_cache_outcomes"] if name != "direct" else "-",
            ]
            for level in result["levels"]
            for name, row in level["variants"].items()
        ],
    )


def cancel_line(cancel: dict[str, Any] | None) -> str | None:
    """The cancel timing in one sentence."""
    if not cancel:
        return None
    return (
        f"cancel -> upstream sees its connection closed ({cancel['repeats']} streams of "
        f"{cancel['variant']}, from the caller's cancel): p50 {cancel['p50_ms']:.2f} ms, "
        f"p99 {cancel['p99_ms']:.2f} ms, max {cancel['max_ms']:.2f} ms"
        + (f"; {cancel['disconnect_unseen']} never seen" if cancel["disconnect_unseen"] else "")
    )


def tables(results: dict[str, Any]) -> list[Table]:
    """Every table of a results document."""
    out: list[Table] = []
    if results.get("retrieve"):
        out += retrieve_tables(results["retrieve"])
    if results.get("generate"):
        out += generate_tables(results["generate"])
    return out


def terminal_report(results: dict[str, Any]) -> str:
    """The tables as plain text, then the cancel timing and the caveat."""
    parts = [f"{t.title}\n{format_table(t.headers, t.rows)}" for t in tables(results)]
    line = cancel_line((results.get("generate") or {}).get("cancel"))
    if line:
        parts.append(line)
    parts.append(f"note: {results['note']}")
    return "\n\n".join(parts)


def markdown_report(results: dict[str, Any], plots: list[str]) -> str:
    """``report.md``: the same tables in Markdown, the plots, the caveat and the command."""
    argv = " ".join(results["environment"].get("argv") or [])
    parts = [
        "# groundwire bench",
        f"Measured {results['environment']['measured_at']} on "
        f"{results['environment']['cpu_count']} CPU cores in {results['elapsed_s']:.0f} s: "
        f"`{argv}`",
        f"> {results['note']}",
    ]
    parts += [f"**{t.title}**\n\n{markdown_table(t.headers, t.rows)}" for t in tables(results)]
    line = cancel_line((results.get("generate") or {}).get("cancel"))
    if line:
        parts.append(line[0].upper() + line[1:] + ".")
    parts += [f"![{name}]({name})" for name in plots]
    return "\n\n".join(parts) + "\n"
