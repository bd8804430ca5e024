"""The `groundwire` command against a real server: ingest files, retrieve as table and JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from groundwire.clients.errors import EmbedderMismatchError
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.server.app import assemble_components
from groundwire.server.cli import main
from groundwire.server.scripted_llm import Script, ScriptedLLM
from groundwire.server.settings import load_settings
from tests.rpc.conftest import KEY_A, ServerFactory


def _write_corpus(root: Path) -> None:
    (root / "notes").mkdir()
    (root / "notes" / "tides.md").write_text(
        "# Ocean tides\n\nThe Moon's gravity raises the tides twice a day.\n", encoding="utf-8"
    )
    (root / "notes" / "bread.txt").write_text(
        "Sourdough rises with wild yeast.\n", encoding="utf-8"
    )
    rows = [
        {"_id": "d1", "title": "Volcanoes", "text": "Magma erupts from volcanoes.", "metadata": {}},
        {
            "_id": "d2",
            "title": "TCP",
            "text": "TCP halves its congestion window on loss.",
            "metadata": {"year": 2023, "kind": "network"},
        },
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


async def test_ingest_then_retrieve_through_the_cli(
    make_server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await make_server()
    address = f"127.0.0.1:{running.server.port}"
    _write_corpus(tmp_path)
    common = ["--address", address, "--api-key", KEY_A, "--correlation-id", "cli-1"]
    code = await asyncio.to_thread(main, ["ingest", str(tmp_path), "--quiet", *common])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 created" in out and "0 failed" in out

    code = await asyncio.to_thread(
        main, ["retrieve", "what raises the tides", "--top-k", "2", *common]
    )
    table = capsys.readouterr().out
    assert code == 0 and "Ocean tides" in table.splitlines()[1]
    assert "cache miss" in table

    code = await asyncio.to_thread(
        main,
        [
            "retrieve",
            "congestion",
            "--mode",
            "sparse",
            "--where-int",
            "year=2023",
            "--json",
            *common,
        ],
    )
    response = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [c["docId"] for c in response["chunks"]] == ["d2"]
    assert response["chunks"][0]["metadata"]["kind"]["stringValue"] == "network"


async def test_cli_reports_bad_input_with_the_field(
    make_server: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await make_server()
    address = f"127.0.0.1:{running.server.port}"
    code = await asyncio.to_thread(
        main, ["retrieve", "q", "--top-k", "0", "--address", address, "--api-key", KEY_A]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "top_k" in err and "correlation id" in err


async def test_the_server_refuses_a_collection_built_by_another_embedder(
    tmp_path: Path, embedder: object
) -> None:
    settings = load_settings(data_dir=tmp_path, metrics_port=None)
    first = EdgeVectorStore(tmp_path / "edge")
    await first.ensure_collection("other-model/8", 8)
    await first.close()
    with pytest.raises(EmbedderMismatchError) as caught:
        await assemble_components(
            settings,
            store=EdgeVectorStore(tmp_path / "edge"),
            dense=embedder,
            cache=None,  # type: ignore[arg-type]
        )
    assert (
        "other-model/8" in caught.value.message
        and "all-MiniLM-L6-v2-int8/384" in caught.value.message
    )


async def test_ask_streams_the_answer_then_sources_route_usage_and_cost(
    make_server: ServerFactory,
    llm: ScriptedLLM,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(
        Script(tokens=["Tides", " follow", " the", " Moon", " [1", "]."], prompt_tokens=80)
    )
    address = f"127.0.0.1:{running.server.port}"
    _write_corpus(tmp_path)
    common = ["--address", address, "--api-key", KEY_A]
    assert await asyncio.to_thread(main, ["ingest", str(tmp_path), "--quiet", *common]) == 0
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["ask", "what raises the tides", "--top-k", "2", *common])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "Tides follow the Moon [1]."
    assert "Sources cited:" in out and "[1] Ocean tides" in out
    assert "route primary, model deepseek-v4-flash; finish stop" in out
    assert "usage 80 tokens in" in out and "6 out" in out and "USD" in out
    assert "first token" in out

    code = await asyncio.to_thread(
        main, ["ask", "what raises the tides", "--json", "--no-answer-cache", *common]
    )
    frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert next(iter(frames[0])) == "start" and next(iter(frames[-1])) == "end"
    assert frames[-1]["end"]["cost"]["currency"] == "USD"


async def test_ask_without_an_llm_prints_the_degraded_answer(
    make_server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await make_server()
    address = f"127.0.0.1:{running.server.port}"
    _write_corpus(tmp_path)
    common = ["--address", address, "--api-key", KEY_A]
    assert await asyncio.to_thread(main, ["ingest", str(tmp_path), "--quiet", *common]) == 0
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["ask", "what raises the tides", *common])
    out = capsys.readouterr().out
    assert code == 0
    assert "Moon" in out.splitlines()[0] and "[1]" in out.splitlines()[0]
    assert "route degraded, model -" in out and "finish degraded" in out
    assert "no language model is configured" in out
