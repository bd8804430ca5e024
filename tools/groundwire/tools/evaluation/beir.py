"""BEIR-format datasets: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``, plus an
optional JSONL of reference answers.

Every reader names the file and line of the first thing it cannot use (:class:`DatasetError`),
so a bad dataset fails before any server is started.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NOT_TENANT = re.compile(r"[^A-Za-z0-9_.\-]+")
_TENANT_PREFIX = "eval"
_FINGERPRINT_CHARS = 10
# A tenant is at most 64 characters: "eval-" + name + "-" + 10 hex digits.
_MAX_NAME_CHARS = 64 - len(_TENANT_PREFIX) - 2 - _FINGERPRINT_CHARS


class DatasetError(ValueError):
    """The dataset cannot be read; the message names the file (and line) and what is wrong."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        super().__init__(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class Document:
    """One corpus document."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class ReferenceAnswer:
    """A question with its accepted answers and, optionally, the documents that support it."""

    question_id: str
    question: str
    answers: tuple[str, ...]
    doc_ids: tuple[str, ...] = ()


Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Dataset:
    """One split of a BEIR dataset: the corpus, the split's queries (in qrels order) and their
    graded judgements."""

    name: str
    path: Path
    split: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: Qrels
    fingerprint: str  # sha256 of corpus.jsonl, hex

    @property
    def judged_docs_missing(self) -> int:
        """Relevant (grade > 0) judgements naming a document the corpus does not hold."""
        ids = {doc.doc_id for doc in self.corpus}
        return sum(
            1
            for relevance in self.qrels.values()
            for doc_id, grade in relevance.items()
            if grade > 0 and doc_id not in ids
        )


def _text_field(row: dict[str, Any], key: str, path: Path, line: int, *, required: bool) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise DatasetError(path, f"missing {key!r}", line)
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise DatasetError(path, f"{key!r} must be a string", line)
    return str(value)


def _json_object(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"not valid JSON ({exc.msg})", number) from None
    if isinstance(row, dict):
        return row
    raise DatasetError(path, "each line must be a JSON object", number)


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file, read lazily."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    with path.open(encoding="utf-8") as handle:
        yield from (
            (number, _json_object(path, number, line))
            for number, line in enumerate(handle, start=1)
            if line.strip()
        )


def corpus_documents(path: Path) -> Iterator[tuple[int, Document]]:
    """(line number, document) for each line of a ``corpus.jsonl`` (``_id``, ``title``,
    ``text``), in file order, read lazily."""
    for line, row in jsonl_rows(path):
        yield (
            line,
            Document(
                _text_field(row, "_id", path, line, required=True),
                _text_field(row, "title", path, line, required=False),
                _text_field(row, "text", path, line, required=True),
            ),
        )


def load_corpus(path: Path) -> list[Document]:
    """The documents of a ``corpus.jsonl``; a repeated ``_id`` is an error."""
    docs: list[Document] = []
    seen: set[str] = set()
    for line, doc in corpus_documents(path):
        if doc.doc_id in seen:
            raise DatasetError(path, f"duplicate _id {doc.doc_id!r}", line)
        seen.add(doc.doc_id)
        docs.append(doc)
    if not docs:
        raise DatasetError(path, "no documents")
    return docs


def load_queries(path: Path) -> dict[str, str]:
    """Query id → text for every query of a ``queries.jsonl`` (all splits)."""
    queries: dict[str, str] = {}
    for line, row in jsonl_rows(path):
        queries[_text_field(row, "_id", path, line, required=True)] = _text_field(
            row, "text", path, line, required=True
        )
    return queries


def load_qrels(path: Path) -> Qrels:
    """Query id → {doc id: grade} from a BEIR qrels file: tab-separated ``query-id``,
    ``corpus-id``, ``score``, an optional header line, LF or CRLF line ends."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        fields = [f.strip() for f in raw.split("\t")]
        if number == 1 and fields[0] == "query-id":
            continue
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise DatasetError(
                path, "expected three tab-separated fields: query-id, corpus-id, score", number
            )
        query_id, doc_id, score = fields
        try:
            grade = int(score)
        except ValueError:
            raise DatasetError(path, f"score {score!r} is not an integer", number) from None
        qrels.setdefault(query_id, {})[doc_id] = grade
    if not qrels:
        raise DatasetError(path, "no judgements")
    return qrels


def corpus_fingerprint(path: Path) -> str:
    """The sha256 of the corpus file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tenant_for(name: str, fingerprint: str) -> str:
    """``eval-<name>-<first 10 hex of the corpus hash>``, within the tenant rules (letters,
    digits, ``_.-``, at most 64 characters): the same corpus reuses its index, another one
    gets its own."""
    safe = _NOT_TENANT.sub("-", name).strip("-.") or "dataset"
    return f"{_TENANT_PREFIX}-{safe[:_MAX_NAME_CHARS]}-{fingerprint[:_FINGERPRINT_CHARS]}"


def load_dataset(folder: Path, split: str = "test", limit_queries: int | None = None) -> Dataset:
    """The corpus, the split's judged queries (the first ``limit_queries`` when given) and
    their qrels. A judged query without text in ``queries.jsonl`` is an error."""
    if not folder.is_dir():
        raise DatasetError(folder, "not a directory (expected a BEIR dataset folder)")
    corpus_path = folder / "corpus.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    queries_path = folder / "queries.jsonl"
    qrels = load_qrels(qrels_path)
    texts = load_queries(queries_path)
    corpus = load_corpus(corpus_path)
    missing = [q for q in qrels if q not in texts]
    if missing:
        raise DatasetError(
            queries_path,
            f"{len(missing)} quer{'y' if len(missing) == 1 else 'ies'} judged in {qrels_path.name}"
            f" {'has' if len(missing) == 1 else 'have'} no text here (first: {missing[0]!r})",
        )
    if limit_queries is not None:
        qrels = dict(list(qrels.items())[:limit_queries])
    return Dataset(
        name=folder.resolve().name,
        path=folder,
        split=split,
        corpus=corpus,
        queries={q: texts[q] for q in qrels},
        qrels=qrels,
        fingerprint=corpus_fingerprint(corpus_path),
    )


def _answer_list(row: dict[str, Any], path: Path, line: int) -> tuple[str, ...]:
    value = row.get("answers", row.get("answer"))
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise DatasetError(
            path, "needs 'answer' (a string) or 'answers' (a list of non-empty strings)", line
        )
    return tuple(value)


def load_answers(path: Path) -> list[ReferenceAnswer]:
    """Reference answers, one JSON object per line: ``question``, ``answer`` (a string) or
    ``answers`` (several accepted ones), optionally ``doc_ids`` (the documents that support
    the answer) and ``id`` (default: the line number)."""
    answers: list[ReferenceAnswer] = []
    for line, row in jsonl_rows(path):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(path, "needs 'question' (a non-empty string)", line)
        doc_ids = row.get("doc_ids", [])
        if not isinstance(doc_ids, list) or not all(isinstance(d, str | int) for d in doc_ids):
            raise DatasetError(path, "'doc_ids' must be a list of document ids", line)
        question_id = row.get("id", row.get("_id", line))
        answers.append(
            ReferenceAnswer(
                question_id=str(question_id),
                question=question,
                answers=_answer_list(row, path, line),
                doc_ids=tuple(str(d) for d in doc_ids),
            )
        )
    if not answers:
        raise DatasetError(path, "no reference answers")
    return answers
