"""The `groundwire` command against a real server: ingest files, retrieve as table and JSON,
ask; what a newcomer meets: unreadable files and lines, empty input, Ctrl-C, bad flags."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shlex
import signal
import sys
from pathlib import Path

import pytest

from groundwire.clients.errors import EmbedderMismatchError
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.server.cli import main
from groundwire.server.components import assemble_components
from groundwire.server.settings import load_settings
from groundwire.testing.scripted_llm import Script, ScriptedLLM
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


def _time_parts(out: str) -> list[str]:
    """The names of the parts of ask's time line, after checking that they add up."""
    line = next(x for x in out.splitlines() if x.startswith("time "))
    found = re.fullmatch(r"time (.+) = total (\d+) ms; first text after (\d+) ms", line)
    assert found is not None, line
    parts = [re.fullmatch(r"(.+) (\d+) ms", p) for p in found.group(1).split(" + ")]
    assert all(parts), line
    assert sum(int(p.group(2)) for p in parts if p) == int(found.group(2)), line
    # The answer cache's lookup shows only when it took a millisecond or more.
    return [p.group(1) for p in parts if p and p.group(1) != "answer cache"]


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
    assert _time_parts(out) == ["retrieval", "model first token", "model generation", "other"]

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
    assert _time_parts(out) == ["retrieval", "other"]
    assert "no language model is configured" in out


ROOT = Path(__file__).resolve().parents[2]


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_ingest_refuses_files_it_cannot_read_as_text(
    make_server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await make_server()
    common = ["--address", f"127.0.0.1:{running.server.port}", "--api-key", KEY_A, "--quiet"]
    pdf = tmp_path / "notes.pdf"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n")
    assert await _cli("ingest", str(pdf), *common) == 2
    err = capsys.readouterr().err
    assert f"error: {pdf}: cannot ingest a .pdf file (extract its text first" in err
    assert ".txt, .md, .markdown" in err

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "good.md").write_text("# Tides\n\nThe Moon raises the tides.\n")
    (folder / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "copy.pdf").write_bytes(pdf.read_bytes())
    assert await _cli("ingest", str(folder), *common) == 1
    captured = capsys.readouterr()
    assert f"warning: {folder / 'image.txt'}: not UTF-8 text (a binary file?)" in captured.err
    assert f"warning: {folder / 'latin1.txt'}: not UTF-8 text" in captured.err
    assert "note: 1 file(s) of other types not read (.pdf: 1)" in captured.err
    assert "1 documents in" in captured.out and "1 created" in captured.out
    assert "2 unreadable line(s) or file(s) skipped" in captured.out


async def test_ingest_of_nothing_is_an_error_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing is sent in either case, so no server is needed (nothing listens on port 1).
    common = ["--address", "127.0.0.1:1", "--quiet"]
    assert await _cli("ingest", str(tmp_path), *common) == 2
    assert f"error: no documents found in {tmp_path}; ingest reads" in capsys.readouterr().err
    assert await _cli("ingest", str(tmp_path), "--allow-empty", *common) == 0
    assert capsys.readouterr().out.startswith("0 documents in")
    assert await _cli("ingest", str(tmp_path / "missing"), *common) == 2
    assert "error: no such file or directory" in capsys.readouterr().err


def _bad_jsonl(path: Path) -> None:
    lines = [
        json.dumps({"_id": "g1", "title": "Tides", "text": "The Moon raises the tides."}),
        '{"_id": "broken", "text": "no closing brace"',
        json.dumps({"title": "no id", "text": "Nothing names this one."}),
        json.dumps(
            {
                "_id": "g2",
                "title": "Bread",
                "text": "Sourdough rises with wild yeast.",
                "metadata": {"year": 2020, "score": 0.5},
            }
        ),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def test_corrupt_jsonl_lines_are_named_and_skipped_or_stop_everything_with_strict(
    make_server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await make_server()
    common = ["--address", f"127.0.0.1:{running.server.port}", "--api-key", KEY_A, "--quiet"]
    corpus = tmp_path / "corpus.jsonl"
    _bad_jsonl(corpus)

    assert await _cli("ingest", str(corpus), "--strict", *common) == 1
    captured = capsys.readouterr()
    assert f"warning: {corpus}:2: not valid JSON" in captured.err
    assert f"warning: {corpus}:3: no _id" in captured.err
    assert "error: --strict: nothing indexed; 2 unreadable line(s)" in captured.err
    assert captured.out == ""
    assert await _cli("retrieve", "wild yeast", "--json", *common[:-1]) == 0
    assert json.loads(capsys.readouterr().out).get("chunks", []) == []

    assert await _cli("ingest", str(corpus), *common) == 1
    captured = capsys.readouterr()
    assert f"warning: {corpus}:2: not valid JSON" in captured.err
    assert (
        f"note: 1 metadata value(s) dropped: only strings and integers are indexed "
        f"(first: {corpus}:4 metadata.score = 0.5)" in captured.err
    )
    assert "2 documents in" in captured.out and "2 created" in captured.out
    assert "2 unreadable line(s) or file(s) skipped" in captured.out
    assert (
        await _cli("retrieve", "wild yeast", "--where-int", "year=2020", "--json", *common[:-1])
        == 0
    )
    assert [c["docId"] for c in json.loads(capsys.readouterr().out)["chunks"]] == ["g2"]


async def test_ctrl_c_during_ingest_prints_what_the_server_acknowledged(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    running = await make_server()
    corpus = tmp_path / "many.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": f"n{i}", "title": f"Note {i}", "text": f"Note number {i} of many."})
            + "\n"
            for i in range(600)
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "groundwire.server.cli",
        "ingest",
        str(corpus),
        "--batch-size",
        "2",
        "--address",
        f"127.0.0.1:{running.server.port}",
        "--api-key",
        KEY_A,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    # Off a terminal, the first acknowledged batch prints a progress line at once.
    first = (await asyncio.wait_for(process.stderr.readline(), 120)).decode()
    assert first.startswith("ingest: 2 of 600 documents acknowledged"), first
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 130, err.decode()
    found = re.search(
        r"interrupted: (\d+) of 600 documents acknowledged: (\d+) created, 0 updated, "
        r"0 unchanged, 0 failed; (\d+) chunks written",
        err.decode(),
    )
    assert found is not None, err.decode()
    acknowledged, created, chunks = (int(g) for g in found.groups())
    assert 2 <= acknowledged < 600 and created == acknowledged and chunks >= acknowledged
    assert "run the same command again" in err.decode()
    assert b"documents in" not in out  # no summary as if it had finished
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--where-int", "year=abc", "'abc' in 'year=abc' is not an integer"),
        ("--where-int", "year=2020|x", "'x' in 'year=2020|x' is not an integer"),
        ("--where", "year", "expected FIELD=VALUE[|VALUE...]"),
        ("--where", "=2020", "expected FIELD=VALUE[|VALUE...]"),
        ("--where-int", "year", "expected FIELD=N[|N...]"),
    ],
)
def test_bad_filter_flags_are_usage_errors_naming_the_flag(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["retrieve", "tides"], ["ask", "why tides"]):
        with pytest.raises(SystemExit) as exited:
            main([*command, flag, value, "--address", "127.0.0.1:1"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"error: argument {flag}: {message}" in err, err


def _readme_filter_commands() -> list[list[str]]:
    """The README's `groundwire retrieve` examples that filter, as argument lists."""
    commands = []
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(".venv/bin/groundwire retrieve") and "--where" in line:
            commands.append(shlex.split(line, comments=True)[1:])
    return commands


def _matches(metadata: dict[str, object], argv: list[str]) -> bool:
    """Whether a document's metadata passes every --where / --where-int of a command."""
    for flag, spec in itertools.pairwise(argv):
        if flag in ("--where", "--where-int"):
            field, _, values = spec.partition("=")
            allowed: list[object] = (
                [int(v) for v in values.split("|")]
                if flag == "--where-int"
                else list(values.split("|"))
            )
            if metadata.get(field) not in allowed:
                return False
    return True


async def test_the_readme_filter_examples_return_something_on_the_sample_data(
    make_server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = _readme_filter_commands()
    assert any("--where-int" in c for c in commands) and any("--where" in c for c in commands)
    # The sample documents some example matches, and a few that none does: enough to show
    # each filter works without embedding all 500 abstracts.
    rows = [
        json.loads(line)
        for line in (ROOT / "datasets/scifact-sample/corpus.jsonl").read_text().splitlines()
    ]
    chosen = [r for r in rows if any(_matches(r["metadata"], c) for c in commands)]
    chosen += [r for r in rows if not any(_matches(r["metadata"], c) for c in commands)][:20]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    running = await make_server()
    common = ["--address", f"127.0.0.1:{running.server.port}", "--api-key", KEY_A]
    assert await _cli("ingest", str(corpus), "--quiet", *common) == 0
    capsys.readouterr()
    for argv in commands:
        assert await _cli(*argv, "--json", *common) == 0, argv
        chunks = json.loads(capsys.readouterr().out).get("chunks", [])
        assert chunks, argv
        for chunk in chunks:
            metadata = {
                key: int(value["intValue"]) if "intValue" in value else value["stringValue"]
                for key, value in chunk["metadata"].items()
            }
            assert _matches(metadata, argv), (argv, metadata)
