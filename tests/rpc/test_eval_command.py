"""`groundwire eval` end to end on a tiny BEIR dataset, with the real MiniLM model: an
in-process server (its index reused by the next run), a running server by --address, answers
from the scripted upstream scored by hand, the judge, the gates and the exit statuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from groundwire.server.cli import main
from groundwire.testing.scripted_llm import Script, ScriptedLLM
from tests.rpc.conftest import KEY_A, ServerFactory

pytestmark = pytest.mark.model

FLASH = "deepseek-ai/DeepSeek-V4-Flash"  # the standard tier's first model, upstream name
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DOCS = {
    "tides": ("Ocean tides", "The Moon's gravity pulls on the oceans and raises the tides."),
    "bread": ("Sourdough", "Sourdough bread rises with wild yeast and lactic acid bacteria."),
    "volcano": ("Volcanoes", "Magma from deep inside the Earth erupts through volcanoes."),
    "tcp": ("TCP", "TCP halves its congestion window when it detects packet loss."),
    "leaves": ("Photosynthesis", "Green leaves turn sunlight, water and CO2 into sugar."),
    "chess": ("Chess", "The Sicilian Defence is a sharp chess opening for black."),
    "insulin": ("Insulin", "The pancreas releases insulin to lower the sugar in the blood."),
    "jupiter": ("Jupiter", "Jupiter is the largest planet of the Solar System."),
    "violin": ("Violins", "A violin has four strings tuned in fifths and is played with a bow."),
}
QUERIES = {
    "q-tides": ("What raises the ocean tides?", {"tides": 2}),
    "q-bread": ("How does sourdough bread rise?", {"bread": 2, "leaves": 0}),
    "q-tcp": ("What does TCP do after packet loss?", {"tcp": 2}),
    "q-sugar": ("Which hormone lowers blood sugar?", {"insulin": 2, "leaves": 1}),
    "q-planet": ("Which is the biggest planet?", {"jupiter": 1}),
}
ANSWERS = [
    {
        "question": "What raises the ocean tides?",
        "answer": "The Moon's gravity",
        "doc_ids": ["tides"],
    },
    {
        "question": "Which planet is the largest?",
        "answers": ["Saturn?", "Jupiter"],
        "doc_ids": ["jupiter"],
    },
]


def write_dataset(root: Path, *, answers: bool = True) -> Path:
    """A BEIR folder with graded qrels (CRLF and a header, as BEIR ships them)."""
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as out:
        for doc_id, (title, text) in DOCS.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as out:
        for query_id, (text, _) in QUERIES.items():
            out.write(json.dumps({"_id": query_id, "text": text, "metadata": {}}) + "\n")
        out.write(json.dumps({"_id": "train-only", "text": "not judged in test"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{grade}" for q, (_, rel) in QUERIES.items() for d, grade in rel.items()
    ]
    (root / "qrels" / "test.tsv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    if answers:
        (root / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in ANSWERS))
    return root


async def run_eval(*argv: str) -> int:
    """``groundwire eval ...`` on a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, ["eval", *argv])


def read_result(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "eval.json").read_text())
    return result


async def test_in_process_eval_reports_every_mode_and_reuses_its_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GROUNDWIRE_LLM_BASE_URL", raising=False)
    dataset = write_dataset(tmp_path / "tiny")
    data, out = tmp_path / "data", tmp_path / "out"
    common = [str(dataset), "--data-dir", str(data), "--output", str(out)]
    assert await run_eval(*common, "--no-progress") == 0
    printed = capsys.readouterr()
    result = read_result(out)

    assert result["tenant"].startswith("eval-tiny-") and len(result["tenant"]) == 20
    assert result["dataset"]["queries"] == 5 and result["dataset"]["documents"] == len(DOCS)
    assert result["server"]["embedder_id"] == "all-MiniLM-L6-v2-int8/384"
    ingest = result["ingest"]
    assert (ingest["created"], ingest["unchanged"], ingest["failed"]) == (len(DOCS), 0, 0)
    modes = result["retrieval"]["modes"]
    assert list(modes) == ["dense", "sparse", "hybrid"]
    for mode, figures in modes.items():
        assert all(0.0 <= v <= 1.0 for v in figures["metrics"].values()), mode
        assert figures["latency"]["n"] == 5
        per_query = figures["per_query"]
        assert per_query["q-tides"]["top10"][0] == "tides", mode
        assert per_query["q-tides"]["ndcg@10"] == 1.0 and per_query["q-tides"]["mrr@10"] == 1.0
    assert modes["dense"]["metrics"]["ndcg@10"] > 0.8
    assert result["gates"] == {"checks": [], "passed": True}

    # No LLM configured: the answers are the degraded, extractive ones, scored all the same.
    answers = result["answers"]
    assert answers["answers"] == 2 and answers["routes"] == {"degraded": 2}
    tides = answers["records"][0]
    assert "Moon" in tides["answer"] and tides["cost_micros"] == 0
    assert tides["ttft_client_ms"] > 0 and tides["ttft_server_ms"] > 0
    assert 0 < tides["token_f1"] <= 1 and tides["source_recall"] == 1.0

    report = (out / "report.md").read_text()
    images = [
        line[line.index("(") + 1 : -1] for line in report.splitlines() if line.startswith("![")
    ]
    assert images == ["metrics.png", "latency.png", "answers.png", "ttft.png"]
    for name in images:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
    assert f"groundwire eval {dataset} --data-dir {data}" in report
    assert "| dense |" in report and "| hybrid |" in report
    # The same table on stdout; nothing on stderr without a progress bar.
    assert "nDCG@10" in printed.out and "routes: degraded 2; errors 0" in printed.out
    assert printed.err == ""

    # Second run: the index is reused; a gate that cannot pass exits 1 and says why.
    code = await run_eval(*common, "--min-dense-ndcg", "1.01", "--limit-answers", "0", "--progress")
    printed = capsys.readouterr()
    assert code == 1
    assert (
        "gate failed: dense nDCG@10" in printed.err and "< 1.01 (--min-dense-ndcg)" in printed.err
    )
    assert "ingest:" in printed.err  # the progress bars go to stderr
    again = read_result(out)
    assert again["tenant"] == result["tenant"]
    assert (again["ingest"]["created"], again["ingest"]["unchanged"]) == (0, len(DOCS))
    assert again["ingest"]["chunks_written"] == 0
    assert again["answers"] is None
    assert again["gates"]["passed"] is False
    assert "FAIL: dense nDCG@10" in (out / "report.md").read_text()


async def test_answers_from_a_model_are_scored_by_hand_and_judged(
    make_server: ServerFactory,
    llm: ScriptedLLM,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    monkeypatch.setenv("GROUNDWIRE_LLM_BASE_URL", llm.base_url)  # the judge's catalog
    llm.script(
        FLASH,
        Script(
            tokens=["Tides", " follow", " the", " Moon's", " gravity", " [1]", "."],
            prompt_tokens=100,
        ),
        Script(tokens=["Jupiter", " [1]", "."], prompt_tokens=100),
    )
    llm.set_default(Script(tokens=["4"], prompt_tokens=50), model="gpt-4o")
    dataset = write_dataset(tmp_path / "tiny")
    out = tmp_path / "out"
    code = await run_eval(
        str(dataset),
        "--address",
        f"127.0.0.1:{running.server.port}",
        "--api-key",
        KEY_A,
        "--modes",
        "hybrid",
        "--judge-model",
        "gpt-4o",
        "--output",
        str(out),
        "--no-progress",
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    result = read_result(out)
    assert result["target"] == {"address": f"127.0.0.1:{running.server.port}", "in_process": False}
    assert result["tenant"] == "(the API key's tenant)"
    assert result["ingest"]["created"] == len(DOCS)
    assert list(result["retrieval"]["modes"]) == ["hybrid"]

    answers = result["answers"]
    first, second = answers["records"]
    assert first["answer"] == "Tides follow the Moon's gravity [1]."
    assert (first["route"], first["model"], first["finish_reason"]) == (
        "primary",
        "deepseek-v4-flash",
        "stop",
    )
    # "tides follow moons gravity" against "moons gravity": P = 2/4, R = 2/2, F1 = 2/3.
    assert first["exact_match"] == 0.0 and first["token_f1"] == pytest.approx(2 / 3)
    # "jupiter" is the second accepted answer exactly (the citation marker is not scored).
    assert second["exact_match"] == 1.0 and second["token_f1"] == 1.0
    assert answers["scores"]["exact_match"] == 0.5
    assert answers["scores"]["token_f1"] == pytest.approx((2 / 3 + 1) / 2)
    # Gold documents: retrieved, and the one cited source is the gold one.
    assert first["source_recall"] == 1.0 and first["citation_precision"] == 1.0
    assert first["cited"] == [1]
    # V4 Flash, $0.27 in and $1.10 out per million: 100 x 0.27 + 7 x 1.10 = 34.7 → 35 micros;
    # 100 x 0.27 + 3 x 1.10 = 30.3 → 30.
    assert (first["prompt_tokens"], first["completion_tokens"]) == (100, 7)
    assert (first["cost_micros"], second["cost_micros"], first["currency"]) == (35, 30, "USD")
    assert answers["cost_micros_total"] == 65
    assert first["ttft_client_ms"] > 0 and first["ttft_server_ms"] > 0
    assert first["upstream_ttft_ms"] > 0

    # The judge (GPT-4o, $2.50 in, $10 out): "4" of 5 = 0.8; 50 x 2.5 + 1 x 10 = 135 micros.
    assert answers["judge_model"] == "gpt-4o"
    assert (first["judge_score"], first["judge_reply"], first["judge_cost_micros"]) == (
        0.8,
        "4",
        135,
    )
    assert answers["scores"]["judge_score"] == pytest.approx(0.8)
    assert answers["judge_cost_micros_total"] == 270
    judged = [r for r in llm.requests if r.model == "gpt-4o"]
    assert len(judged) == 2
    prompt = judged[0].body["messages"][1]["content"]
    assert "What raises the ocean tides?" in prompt and "The Moon's gravity" in prompt
    assert "Tides follow the Moon's gravity [1]." in prompt
    assert "routes: primary 2; errors 0; judge gpt-4o, cost 0.000270 USD" in printed.out


async def test_bad_inputs_exit_2_and_server_failures_exit_3(
    make_server: ServerFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset = write_dataset(tmp_path / "tiny")
    qrels = dataset / "qrels" / "test.tsv"
    good = qrels.read_bytes()
    qrels.write_bytes(good + b"q-tides\ttides\n")
    assert await run_eval(str(dataset), "--data-dir", str(tmp_path / "data")) == 2
    err = capsys.readouterr().err
    bad_line = 2 + sum(len(relevance) for _, relevance in QUERIES.values())
    assert f"{qrels}:{bad_line}: expected three tab-separated" in err
    assert not (tmp_path / "data").exists()  # no server was started
    qrels.write_bytes(good)

    assert await run_eval(str(tmp_path / "missing")) == 2
    assert "not a directory" in capsys.readouterr().err

    monkeypatch.delenv("GROUNDWIRE_LLM_BASE_URL", raising=False)
    assert await run_eval(str(dataset), "--judge-model", "gpt-4o") == 2
    assert "judge model 'gpt-4o' is not available" in capsys.readouterr().err

    assert await run_eval(str(dataset), "--modes", "sparse", "--min-dense-ndcg", "0.5") == 2
    assert "--min-dense-ndcg needs dense" in capsys.readouterr().err

    running = await make_server()
    address = f"127.0.0.1:{running.server.port}"
    out = tmp_path / "out"
    code = await run_eval(
        str(dataset),
        "--address",
        address,
        "--api-key",
        "wrong-key-0123456789",
        "--output",
        str(out),
    )
    err = capsys.readouterr().err
    assert code == 3 and "UNAUTHENTICATED" in err and "invalid API key" in err
    assert not out.exists()
    code = await run_eval(str(dataset), "--address", address, "--api-key", KEY_A, "--top-k", "500")
    assert code == 2 and "--top-k 500 exceeds the server's max_top_k 100" in capsys.readouterr().err


ARGUMENTS = {
    "arg-tides-pro": "The Moon's gravity raises the ocean tides twice a day along every coast.",
    "arg-tides-con": "Tides are not only lunar: the Sun's gravity also raises ocean tides.",
    "arg-bread": "Sourdough bread rises slowly with wild yeast and lactic acid bacteria.",
    "arg-chess": "The Sicilian Defence gives black sharp counterplay in chess openings.",
}
LONG_QUERY = "Which hormone lowers blood sugar? " + "Insulin comes from the pancreas. " * 12


def write_argument_dataset(root: Path) -> Path:
    """ArguAna's shape: a query is itself a corpus document (same id, same text) and its
    relevant document is the counter-argument; plus one query over the server's length
    limit (GROUNDWIRE_MAX_QUERY_CHARS=300 below)."""
    (root / "qrels").mkdir(parents=True)
    docs = {**ARGUMENTS, "insulin": DOCS["insulin"][1]}
    with (root / "corpus.jsonl").open("w") as out:
        for doc_id, text in docs.items():
            out.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    queries = {"arg-tides-pro": ARGUMENTS["arg-tides-pro"], "q-long": LONG_QUERY}
    with (root / "queries.jsonl").open("w") as out:
        for query_id, text in queries.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\narg-tides-pro\targ-tides-con\t1\nq-long\tinsulin\t1\n"
    )
    return root


async def test_long_queries_are_cut_or_skipped_and_identical_ids_can_be_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(LONG_QUERY) > 300
    monkeypatch.setenv("GROUNDWIRE_MAX_QUERY_CHARS", "300")  # the server started here reads it
    monkeypatch.delenv("GROUNDWIRE_LLM_BASE_URL", raising=False)
    dataset = write_argument_dataset(tmp_path / "args")
    data, out = tmp_path / "data", tmp_path / "out"
    common = [str(dataset), "--data-dir", str(data), "--output", str(out), "--modes", "dense"]

    # Default: the long query is cut to the server's limit (no exit 3), and counted.
    assert await run_eval(*common, "--no-progress") == 0
    printed = capsys.readouterr()
    result = read_result(out)
    long = result["retrieval"]["long_queries"]
    assert long == {"limit_chars": 300, "action": "truncate", "count": 1, "first_ids": ["q-long"]}
    assert "long queries: 1 over the server's 300-character limit, cut to it" in printed.out
    dense = result["retrieval"]["modes"]["dense"]["per_query"]
    assert dense["q-long"]["top10"][0] == "insulin"
    # The query is a corpus document: it finds itself first, its counter-argument second.
    assert dense["arg-tides-pro"]["top10"][:2] == ["arg-tides-pro", "arg-tides-con"]
    assert dense["arg-tides-pro"]["mrr@10"] == 0.5
    assert result["retrieval"]["ignore_identical_ids"] is False
    assert "over the server's 300-character limit" in (out / "report.md").read_text()

    # --ignore-identical-ids: its own id is dropped before scoring (BEIR/MTEB's rule);
    # --long-queries skip: the long query is left out of the run and of the means.
    code = await run_eval(
        *common, "--no-progress", "--ignore-identical-ids", "--long-queries", "skip"
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    again = read_result(out)
    assert again["retrieval"]["long_queries"]["action"] == "skip"
    assert again["retrieval"]["long_queries"]["count"] == 1
    assert "left out (--long-queries)" in printed.out
    dense = again["retrieval"]["modes"]["dense"]
    assert list(dense["per_query"]) == ["arg-tides-pro"]
    assert dense["per_query"]["arg-tides-pro"]["top10"][0] == "arg-tides-con"
    assert dense["metrics"]["mrr@10"] == 1.0 and dense["latency"]["n"] == 1
    report = (out / "report.md").read_text()
    assert "--long-queries skip" in report and "--ignore-identical-ids" in report
