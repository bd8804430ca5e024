"""``groundwire bench`` with the Go load generator and the Go scripted upstream, at tiny levels:
real servers (separate processes, worker processes included), the real programs. Checks what
the results say and that the calls succeeded (or were refused, when the server is told to be
small), never how fast anything was."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from groundwire.server.cli import main
from groundwire.tools.benchmark.arguments import worker_support

FAST_UPSTREAM = ["--tokens", "8", "--ttft-ms", "5", "--itl-ms", "1"]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _bench(out: Path, *argv: str) -> dict[str, Any]:
    code = main(
        [
            "bench",
            "--scenarios",
            "generate",
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--rounds",
            "2",
            *FAST_UPSTREAM,
            *argv,
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    results: dict[str, Any] = json.loads((out / "bench.json").read_text())
    return results


def test_bench_drives_the_go_load_generator_beside_the_python_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    results = _bench(out, "--generate-variants", "ours,direct-python", "--cancel-repeats", "1")
    printed = capsys.readouterr().out
    assert "go upstream, go load generator" in printed
    assert "direct (python AsyncOpenAI)" in printed
    assert results["settings"]["loadgen"] == "go" and results["settings"]["upstream"] == "go"
    generate = results["generate"]
    assert generate["loadgen"] == "go" and generate["upstream"]["kind"] == "go"
    assert generate["variants"] == ["direct", "ours", "direct-python"]
    assert generate["labels"]["direct-python"] == "direct (python AsyncOpenAI)"
    (level,) = generate["levels"]
    assert level["concurrency"] == 2
    for name, row in level["variants"].items():
        # 4 calls per stream at least: 8, over 2 rounds.
        assert (row["planned"], row["started"], row["ok"]) == (8, 8, 8), (name, row)
        assert (row["errors"], row["refusals"], row["fallbacks"]) == (0, 0, 0), row
        assert row["routes"] == {"primary" if name == "ours" else "direct": 8}
        assert row["upstream_requests"] == 8
        assert _finite(row["ttft"]["p99_ms"]) and _finite(row["itl"]["p50_ms"])
        assert _finite(row["aggregate_tokens_per_s"]) and _finite(row["streams_per_s"])
        assert row["caller"] == ("bench" if name == "direct-python" else "loadgen")
        assert _finite(row["caller_cpu_ms_per_call"])
    ours = level["variants"]["ours"]
    assert _finite(ours["worker_cpu_ms_per_call"])
    assert set(ours["server_timings_p50_ms"]) == {
        "overhead",
        "first_token",
        "upstream_first_token",
        "total",
    }
    assert all(_finite(v) for v in ours["server_timings_p50_ms"].values())
    for name in ("ours", "direct-python"):
        compared = level["versus_direct"][name]
        assert compared["paired_n"] == 8
        assert _finite(compared["ttft_overhead_p50_ms"])
        assert _finite(compared["aggregate_tokens_per_s_ratio"])
    assert generate["saturation"]["ours"]["at_concurrency"] == 2
    assert generate["saturation"]["ours"]["ratio_to_baseline"] == 1.0
    assert generate["cancel"]["repeats"] == 1
    assert (out / "generate_ttft.png").exists()
    assert (out / "logs" / "loadgen.log").exists()
    assert "Streams per second at saturation" in (out / "report.md").read_text()


@pytest.mark.skipif(not worker_support(), reason="this server runs no worker processes")
def test_bench_runs_one_server_per_worker_count(tmp_path: Path) -> None:
    generate = _bench(tmp_path / "out", "--workers", "1,2", "--cancel-repeats", "0")["generate"]
    assert generate["workers"] == [1, 2]
    assert generate["servers"] == {
        "ours w1": {"variant": "ours", "workers": 1},
        "ours w2": {"variant": "ours", "workers": 2},
    }
    (level,) = generate["levels"]
    assert list(level["variants"]) == ["direct", "ours w1", "ours w2"]
    for row in level["variants"].values():
        assert (row["ok"], row["errors"], row["refusals"]) == (8, 0, 0), row
    assert _finite(level["variants"]["ours w2"]["worker_cpu_ms_per_call"])
    assert generate["saturation"]["ours w2"]["baseline"] == "ours w1"
    assert _finite(generate["saturation"]["ours w2"]["ratio_to_baseline"])


def test_bench_counts_refusals_apart_from_errors(tmp_path: Path) -> None:
    # One stream per server at a time, four at once asked of it: the rest are refused at once.
    generate = _bench(
        tmp_path / "out",
        "--concurrency",
        "4",
        "--server-env",
        "GROUNDWIRE_MAX_INFLIGHT_STREAMS=1",
        "--ttft-ms",
        "200",
        "--no-stagger",
        "--cancel-repeats",
        "0",
    )["generate"]
    (level,) = generate["levels"]
    ours = level["variants"]["ours"]
    assert ours["refusals"] > 0, ours
    assert ours["refusal_reasons"] == {"ERROR_REASON_OVERLOADED": ours["refusals"]}
    assert ours["ok"] + ours["refusals"] == ours["started"] and ours["errors"] == 0
    assert _finite(ours["refusal_latency"]["p50_ms"])
    assert level["variants"]["direct"]["refusals"] == 0


def test_bench_keeps_the_python_load_generator_and_upstream(tmp_path: Path) -> None:
    generate = _bench(
        tmp_path / "out", "--loadgen", "python", "--upstream", "python", "--cancel-repeats", "0"
    )["generate"]
    assert generate["loadgen"] == "python" and generate["upstream"]["kind"] == "python"
    (level,) = generate["levels"]
    assert list(level["variants"]) == ["direct", "ours"]
    for row in level["variants"].values():
        assert (row["ok"], row["errors"], row["refusals"]) == (8, 0, 0), row
        assert row["caller"] == "bench"
