"""``groundwire bench`` end to end with tiny parameters: real servers (separate processes), the
real model, a private redis-server, the scripted upstream. Checks what the results say and
that they were written, never how fast anything was."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from groundwire.server.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
TOPICS = (
    ("tides", "The Moon's gravity raises the ocean tides twice a day."),
    ("yeast", "Sourdough bread rises with wild yeast and lactic bacteria."),
    ("tcp", "TCP halves its congestion window when it detects packet loss."),
    ("volcano", "Magma rises through the crust and erupts from volcanoes."),
    ("enzyme", "Enzymes lower the activation energy of chemical reactions."),
    ("glacier", "Glaciers carve U-shaped valleys as they slowly flow downhill."),
)
FAST_UPSTREAM = ["--tokens", "8", "--ttft-ms", "5", "--itl-ms", "1"]


def _dataset(root: Path, queries: int) -> Path:
    root.mkdir()
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc_id, text in TOPICS:
            row = {"_id": doc_id, "title": doc_id.title(), "text": text, "metadata": {}}
            handle.write(json.dumps(row) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(queries):
            topic = TOPICS[i % len(TOPICS)][0]
            handle.write(json.dumps({"_id": str(i), "text": f"question {i} about {topic}"}) + "\n")
    return root


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _is_png(path: Path) -> bool:
    return path.read_bytes()[: len(PNG)] == PNG


@pytest.mark.model
def test_bench_measures_retrieve_and_generate_beside_direct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = _dataset(tmp_path / "beir", queries=40)
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--dataset",
            str(dataset),
            "--concurrency",
            "1,4",
            "--requests",
            "8",
            "--rounds",
            "2",
            "--hit-queries",
            "4",
            "--cancel-repeats",
            "2",
            *FAST_UPSTREAM,
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Retrieve over 6 documents" in printed and "Generate beside direct" in printed
    results = json.loads((out / "bench.json").read_text())
    assert results["settings"]["concurrency"] == [1, 4]

    retrieve = results["retrieve"]
    assert retrieve["ingest"]["documents"] == 6 and retrieve["ingest"]["failed"] == 0
    assert [(lv["mode"], lv["concurrency"]) for lv in retrieve["levels"]] == [
        ("hybrid", 1),
        ("hybrid", 4),
    ]
    for level in retrieve["levels"]:
        planned = 8 if level["concurrency"] == 1 else 16
        rows = level["variants"]
        assert list(rows) == ["direct", "miss", "hit"]
        for row in rows.values():
            assert (row["planned"], row["ok"], row["errors"]) == (planned, planned, 0)
            assert _finite(row["latency"]["p50_ms"]) and _finite(row["qps"])
        assert rows["hit"]["cache_hits"] == planned
        assert rows["miss"]["cache_misses"] == planned
        assert rows["hit"]["unexpected_cache_outcomes"] == 0
        assert rows["miss"]["unexpected_cache_outcomes"] == 0
        assert rows["hit"]["server_timings_p50_ms"]["embed"] == 0
        for compared in level["versus_direct"].values():
            assert all(_finite(compared[k]) for k in ("p50_ratio", "p99_ratio", "qps_ratio"))

    generate = results["generate"]
    assert generate["variants"] == ["direct", "ours"]
    for level in generate["levels"]:
        planned = 8 if level["concurrency"] == 1 else 16
        for name, row in level["variants"].items():
            assert (row["planned"], row["ok"], row["errors"]) == (planned, planned, 0)
            assert row["routes"] == {"direct" if name == "direct" else "primary": planned}
            assert row["upstream_requests"] == planned
            assert _finite(row["ttft"]["p99_ms"]) and _finite(row["itl"]["p50_ms"])
        assert _finite(level["variants"]["ours"]["worker_cpu_ms_per_call"])
        compared = level["versus_direct"]["ours"]
        assert compared["paired_n"] == planned
        for key in (
            "ttft_overhead_p50_ms",
            "ttft_overhead_paired_p50_ms",
            "itl_ratio_p50",
            "stream_tokens_per_s_ratio",
            "aggregate_tokens_per_s_ratio",
        ):
            assert _finite(compared[key]), key
    assert generate["cancel"]["repeats"] == 2 and _finite(generate["cancel"]["p50_ms"])

    plots = sorted(p.name for p in out.glob("*.png"))
    assert "generate_ttft.png" in plots and "retrieve_latency_hybrid.png" in plots
    assert "generate_aggregate_tokens_per_s.png" in plots and "retrieve_qps_hybrid.png" in plots
    assert all(_is_png(out / name) for name in plots)
    report = (out / "report.md").read_text()
    assert "![generate_ttft.png](generate_ttft.png)" in report
    assert (out / "logs" / "server-retrieve.log").exists()


def test_bench_counts_upstream_failures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--scenarios",
            "generate",
            "--concurrency",
            "1",
            "--requests",
            "6",
            "--rounds",
            "1",
            "--fail-every",
            "2",
            "--cancel-repeats",
            "0",
            *FAST_UPSTREAM,
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    level = json.loads((out / "bench.json").read_text())["generate"]["levels"][0]
    direct, ours = level["variants"]["direct"], level["variants"]["ours"]
    # Direct meets every second request's HTTP 500; ours retries on the fallback model.
    assert (direct["ok"], direct["errors"], direct["error_kinds"]) == (3, 3, {"HTTP 500": 3})
    assert ours["ok"] + ours["errors"] == ours["started"] == 6
    assert ours["routes"].get("fallback", 0) + ours["errors"] > 0
    assert ours["upstream_requests"] > 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenarios", "retrieve"], "retrieve needs --dataset"),
        (["--concurrency", "0"], "--concurrency"),
        (["--generate-variants", "ours,fast"], "--generate-variants"),
        (["--server-env", "EDGE_HNSW=true"], "--server-env"),
        (["--fail-status", "200"], "--fail-status"),
    ],
)
def test_bench_refuses_bad_arguments(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--scenarios", "generate", *argv, "--output", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()
