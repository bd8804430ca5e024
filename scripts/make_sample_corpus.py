"""Make datasets/scifact-sample, the small BEIR set shipped in the repository, from BEIR SciFact.

The quick start, ``make eval`` and ``make bench`` need a judged corpus that exists in every
checkout; the full SciFact (5,183 abstracts) lives beside a developer's checkout only. This
script picks a sample from it deterministically, so the sample can be checked and remade:

- queries: the test queries (those with qrels) ordered by the SHA-256 of their id, the first
  ``--queries`` (default 100); their lines are copied byte for byte;
- documents: every document judged relevant for those queries, then, as distractors, the
  documents judged for the other test queries (real, on-topic abstracts), then any others,
  each group in SHA-256 order of the doc id, up to ``--docs`` (default 500) in all;
- qrels: the test qrels of the chosen queries (LF line ends; the original has CRLF);
- metadata: SciFact's documents have none, so each gets two fields derived from its own text,
  for filters to act on: ``topic`` (a keyword rule below; "other" when nothing matches) and
  ``words_100s`` (the abstract's length in hundreds of words, rounded down).

Run ``python scripts/make_sample_corpus.py`` to write the sample, ``--check`` to compare it with
what is committed (exit 1 on a difference). The source files must match the SHA-256 sums that
../shared/datasets/scifact/SOURCE.md records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "datasets" / "scifact"
DEFAULT_OUTPUT = ROOT / "datasets" / "scifact-sample"
SOURCE_SHA256 = {
    "corpus.jsonl": "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6",
    "queries.jsonl": "8ff84a7c903f722981cd8d595c022660140c51867b27608a6d4910db86080313",
    "qrels/test.tsv": "0864bb985e0ca2367ba217977e72004d549054b2b06666ed9d4825ac7c21284c",
}
OUTPUT_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")

# Word prefixes per topic; a document's topic is the one with the most hits (title hits count
# three times), ties going to the earlier topic, "other" when none hits.
TOPICS: dict[str, tuple[str, ...]] = {
    "cancer": (
        "cancer",
        "tumor",
        "tumour",
        "carcinom",
        "oncogen",
        "metasta",
        "leukem",
        "leukaem",
        "lymphoma",
        "melanoma",
        "chemotherap",
    ),
    "infection": (
        "virus",
        "viral",
        "bacteri",
        "infect",
        "hiv",
        "malaria",
        "tubercul",
        "pathogen",
        "vaccin",
        "antibiotic",
    ),
    "cardiovascular": (
        "cardi",
        "heart",
        "vascular",
        "coronary",
        "hypertens",
        "stroke",
        "atheroscl",
        "blood pressure",
    ),
    "neuroscience": (
        "neuron",
        "neural",
        "brain",
        "cognit",
        "alzheimer",
        "parkinson",
        "cortex",
        "cortical",
        "synap",
    ),
    "immunology": (
        "immun",
        "t cell",
        "t-cell",
        "lymphocyte",
        "antibod",
        "inflamm",
        "cytokine",
        "macrophage",
    ),
    "metabolism": ("diabet", "insulin", "obes", "glucose", "metabol", "lipid", "adipo"),
    "genetics": (
        "gene",
        "genes",
        "genom",
        "dna",
        "rna",
        "mutation",
        "transcription",
        "chromatin",
        "epigen",
        "allele",
    ),
}
_PATTERNS = {
    topic: re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + ")")
    for topic, words in TOPICS.items()
}


def topic_of(title: str, text: str) -> str:
    """The topic label of one document (see TOPICS)."""
    title, text = title.lower(), text.lower()
    best, best_hits = "other", 0
    for topic, pattern in _PATTERNS.items():
        hits = 3 * len(pattern.findall(title)) + len(pattern.findall(text))
        if hits > best_hits:
            best, best_hits = topic, hits
    return best


def _order(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_qrels(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if number == 0 or not line.strip():
            continue  # the header
        query_id, doc_id, score = line.split("\t")
        rows.append((query_id, doc_id, score))
    return rows


def make_sample(source: Path, output: Path, n_queries: int, n_docs: int) -> None:
    """Write the sample's three files into ``output``."""
    for name, expected in SOURCE_SHA256.items():
        if _sha256(source / name) != expected:
            raise SystemExit(f"{source / name}: not the BEIR SciFact file (SHA-256 differs)")
    qrels = _read_qrels(source / "qrels" / "test.tsv")
    test_queries = sorted({q for q, _, _ in qrels}, key=_order)
    chosen = set(test_queries[:n_queries])
    judged = sorted({d for q, d, _ in qrels if q in chosen}, key=_order)
    others = sorted({d for q, d, _ in qrels if q not in chosen} - set(judged), key=_order)
    if len(judged) > n_docs:
        raise SystemExit(f"{len(judged)} judged documents do not fit in --docs {n_docs}")

    corpus_lines = (source / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in corpus_lines}
    rest = sorted(set(corpus) - set(judged) - set(others), key=_order)
    picked = set((judged + others + rest)[:n_docs])

    (output / "qrels").mkdir(parents=True, exist_ok=True)
    with (output / "corpus.jsonl").open("w", encoding="utf-8", newline="\n") as out:
        for doc_id in sorted(picked, key=int):
            doc = corpus[doc_id]
            doc["metadata"] = {
                "topic": topic_of(doc["title"], doc["text"]),
                "words_100s": len(doc["text"].split()) // 100,
            }
            out.write(json.dumps(doc) + "\n")
    with (output / "queries.jsonl").open("w", encoding="utf-8", newline="\n") as out:
        for line in (source / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            if json.loads(line)["_id"] in chosen:
                out.write(line + "\n")
    with (output / "qrels" / "test.tsv").open("w", encoding="utf-8", newline="\n") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for query_id, doc_id, score in qrels:
            if query_id in chosen:
                out.write(f"{query_id}\t{doc_id}\t{score}\n")


def main(argv: list[str] | None = None) -> int:
    """Write the sample, or with ``--check`` compare a fresh one with the committed files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="BEIR SciFact")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    if not args.check:
        make_sample(args.source, args.output, args.queries, args.docs)
        for name in OUTPUT_FILES:
            print(f"{_sha256(args.output / name)}  {name}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        make_sample(args.source, Path(scratch), args.queries, args.docs)
        differ = [
            name
            for name in OUTPUT_FILES
            if (Path(scratch) / name).read_bytes() != (args.output / name).read_bytes()
        ]
    for name in differ:
        print(f"{args.output / name}: differs from what the script makes", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
