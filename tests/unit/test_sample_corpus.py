"""The sample corpus in datasets/scifact-sample is what its SOURCE.md says it is, a judged BEIR
set that ``groundwire eval`` can score, and (where the full SciFact sits beside the checkout)
exactly what scripts/make_sample_corpus.py makes from it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "datasets" / "scifact-sample"
FULL = ROOT.parent / "shared" / "datasets" / "scifact"
TOPICS = {
    "cancer",
    "infection",
    "cardiovascular",
    "neuroscience",
    "immunology",
    "metabolism",
    "genetics",
    "other",
}


def _lines(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines()]


def test_the_files_match_the_sums_in_source_md() -> None:
    table = (SAMPLE / "SOURCE.md").read_text(encoding="utf-8")
    sums = dict(re.findall(r"^\| (\S+) \|[^|]*\| ([0-9a-f]{64}) \|$", table, re.MULTILINE))
    assert set(sums) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}
    for name, expected in sums.items():
        assert hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest() == expected, name


def test_every_judgement_points_into_the_sample_and_documents_carry_metadata() -> None:
    corpus = {str(doc["_id"]): doc for doc in _lines("corpus.jsonl")}
    queries = {str(query["_id"]) for query in _lines("queries.jsonl")}
    rows = (SAMPLE / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "query-id\tcorpus-id\tscore"
    judged = [row.split("\t") for row in rows[1:]]
    assert (len(corpus), len(queries)) == (500, 100)
    assert {query for query, _, _ in judged} == queries
    assert {doc for _, doc, _ in judged} <= set(corpus)
    for doc in corpus.values():
        metadata = doc["metadata"]
        assert isinstance(metadata, dict) and isinstance(doc["text"], str)
        assert metadata["topic"] in TOPICS
        assert metadata["words_100s"] == len(doc["text"].split()) // 100
    # The topics are spread enough for a filter to mean something.
    counts = {topic: 0 for topic in TOPICS}
    for doc in corpus.values():
        counts[str(doc["metadata"]["topic"])] += 1  # type: ignore[index]
    assert max(counts.values()) < len(corpus) / 2 and min(counts.values()) > 0


@pytest.mark.skipif(not (FULL / "corpus.jsonl").is_file(), reason=f"no full SciFact at {FULL}")
def test_the_script_remakes_the_sample_from_the_full_set() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample_corpus.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
