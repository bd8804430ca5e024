"""Reading documents from files for ``groundwire ingest``: .txt, .md and BEIR-style .jsonl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from groundwire.v1 import common_pb2, documents_pb2

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}


def discover(paths: list[Path]) -> list[Path]:
    """The files to read: files as given, directories walked for known suffixes, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return found


def _metadata(raw: object) -> dict[str, common_pb2.MetadataValue]:
    out: dict[str, common_pb2.MetadataValue] = {}
    if not isinstance(raw, dict):
        return out
    for key, value in raw.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[str(key)] = common_pb2.MetadataValue(int_value=value)
        elif isinstance(value, str):
            out[str(key)] = common_pb2.MetadataValue(string_value=value)
    return out


def _text_document(path: Path) -> documents_pb2.Document:
    text = path.read_text(encoding="utf-8")
    title = path.stem
    for line in text.splitlines():
        if line.strip():
            if path.suffix.lower() in {".md", ".markdown"} and line.lstrip().startswith("#"):
                title = line.lstrip("# ").strip() or title
            break
    return documents_pb2.Document(
        doc_id=str(path),
        title=title,
        text=text,
        source_uri=path.resolve().as_uri(),
        metadata={"format": common_pb2.MetadataValue(string_value=path.suffix.lower()[1:])},
    )


class FileFormatError(ValueError):
    """A file cannot be read; the message names the file (and line) and what is wrong."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    if not path.is_file():
        raise FileFormatError(path, "file not found")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FileFormatError(path, f"not valid JSON ({exc.msg})", number) from None
            if not isinstance(row, dict):
                raise FileFormatError(path, "each line must be a JSON object", number)
            yield number, row


def _jsonl_documents(path: Path) -> Iterator[documents_pb2.Document]:
    """BEIR corpus lines: ``{"_id", "title", "text", "metadata"}`` (``id`` also accepted)."""
    for number, row in jsonl_rows(path):
        doc_id = row.get("_id", row.get("id"))
        if doc_id is None:
            raise FileFormatError(path, "no _id", number)
        yield documents_pb2.Document(
            doc_id=str(doc_id),
            title=str(row.get("title") or ""),
            text=str(row.get("text") or ""),
            source_uri=str(row.get("url") or f"{path.name}#{doc_id}"),
            metadata=_metadata(row.get("metadata")),
        )


def count_documents(files: list[Path]) -> int:
    """How many documents ``read_documents`` will yield (for the progress bar)."""
    total = 0
    for path in files:
        if path.suffix.lower() in JSONL_SUFFIXES:
            with path.open(encoding="utf-8") as handle:
                total += sum(1 for line in handle if line.strip())
        else:
            total += 1
    return total


def read_documents(files: list[Path]) -> Iterator[documents_pb2.Document]:
    """Every document of every file, in order."""
    for path in files:
        if path.suffix.lower() in JSONL_SUFFIXES:
            yield from _jsonl_documents(path)
        else:
            yield _text_document(path)
