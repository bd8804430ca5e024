"""Reading documents from files for ``groundwire ingest``: UTF-8 text and BEIR-style .jsonl.

What cannot be read as text must never reach the index as text (a PDF's bytes are not its
words), and one bad line must not cost the rest of its file. So a file named with a suffix we
do not read is refused outright; a file that is not UTF-8 text, or a .jsonl line that is not a
document, is a :class:`Problem` the reader records (naming file and line) while it goes on;
the command decides whether problems stop the ingest (``--strict``) or are skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundwire.v1 import common_pb2, documents_pb2

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}
READABLE_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES
_INT64 = -(2**63)
#: The formats ``groundwire ingest`` reads, in words (for messages and help).
FORMATS = "UTF-8 text files (.txt, .md, .markdown) and BEIR-style .jsonl"


class FileFormatError(ValueError):
    """A file cannot be read; the message names the file (and line) and what is wrong."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class Problem:
    """A file, or one line of a .jsonl file, that was not read, and why."""

    path: Path
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


@dataclass
class Found:
    """The files to read, and how many files of other suffixes a directory walk passed over."""

    files: list[Path]
    ignored: Counter[str] = field(default_factory=Counter)


def _unsupported(path: Path) -> str:
    suffix = path.suffix.lower()
    kind = f"a {suffix} file" if suffix else "a file without a suffix"
    hint = " (extract its text first, for example with pdftotext)" if suffix == ".pdf" else ""
    return f"cannot ingest {kind}{hint}; ingest reads {FORMATS}"


def discover(paths: list[Path]) -> Found:
    """The files to read: files as given, directories walked for readable suffixes, sorted.

    A missing path raises ``FileNotFoundError``; a file named with a suffix we do not read
    raises :class:`FileFormatError` (a directory walk counts those in ``ignored`` instead).
    """
    found = Found(files=[])
    for path in paths:
        if path.is_dir():
            for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
                if candidate.suffix.lower() in READABLE_SUFFIXES:
                    found.files.append(candidate)
                else:
                    found.ignored[candidate.suffix.lower() or "no suffix"] += 1
        elif path.is_file():
            if path.suffix.lower() not in READABLE_SUFFIXES:
                raise FileFormatError(path, _unsupported(path))
            found.files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return found


def _decode(data: bytes) -> str | None:
    """The text of ``data``, or None when it is not UTF-8 text (NUL bytes mean binary)."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


class DocumentReader:
    """Iterates the documents of files, recording what it cannot read in :attr:`problems`.

    Metadata values the index cannot hold (floats, booleans, lists, objects) are dropped and
    counted in :attr:`dropped_metadata`, with the first one's place in :attr:`first_dropped`.
    """

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.problems: list[Problem] = []
        self.documents_read = 0
        self.dropped_metadata = 0
        self.first_dropped = ""

    def __iter__(self) -> Iterator[documents_pb2.Document]:
        for path in self.files:
            if path.suffix.lower() in JSONL_SUFFIXES:
                documents = self._jsonl_documents(path)
            else:
                documents = self._text_document(path)
            for document in documents:
                self.documents_read += 1
                yield document

    def _problem(self, path: Path, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(path, message, line))

    def _text_document(self, path: Path) -> Iterator[documents_pb2.Document]:
        text = _decode(path.read_bytes())
        if text is None:
            self._problem(path, "not UTF-8 text (a binary file?); skipped")
            return
        title = path.stem
        for line in text.splitlines():
            if line.strip():
                if path.suffix.lower() in {".md", ".markdown"} and line.lstrip().startswith("#"):
                    title = line.lstrip("# ").strip() or title
                break
        yield documents_pb2.Document(
            doc_id=str(path),
            title=title,
            text=text,
            source_uri=path.resolve().as_uri(),
            metadata={"format": common_pb2.MetadataValue(string_value=path.suffix.lower()[1:])},
        )

    def _jsonl_documents(self, path: Path) -> Iterator[documents_pb2.Document]:
        """BEIR corpus lines: ``{"_id", "title", "text", "metadata"}`` (``id`` also accepted)."""
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                line = _decode(raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw)
                if line is None:
                    self._problem(path, "not UTF-8 text; line skipped", number)
                    continue
                if not line.strip():
                    continue
                document = self._jsonl_document(path, number, line)
                if document is not None:
                    yield document

    def _jsonl_document(self, path: Path, number: int, line: str) -> documents_pb2.Document | None:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            self._problem(path, f"not valid JSON ({exc.msg}); line skipped", number)
            return None
        if not isinstance(row, dict):
            self._problem(path, "not a JSON object; line skipped", number)
            return None
        doc_id = row.get("_id", row.get("id"))
        if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or doc_id == "":
            self._problem(path, "no _id (a string or an integer); line skipped", number)
            return None
        metadata = row.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            self._problem(path, "metadata must be a JSON object; line skipped", number)
            return None
        return documents_pb2.Document(
            doc_id=str(doc_id),
            title=str(row.get("title") or ""),
            text=str(row.get("text") or ""),
            source_uri=str(row.get("url") or f"{path.name}#{doc_id}"),
            metadata=self._metadata(metadata or {}, f"{path}:{number}"),
        )

    def _metadata(self, raw: dict[str, Any], where: str) -> dict[str, common_pb2.MetadataValue]:
        out: dict[str, common_pb2.MetadataValue] = {}
        for key, value in raw.items():
            if isinstance(value, str):
                out[str(key)] = common_pb2.MetadataValue(string_value=value)
            elif (
                isinstance(value, int) and not isinstance(value, bool) and _INT64 <= value < -_INT64
            ):
                out[str(key)] = common_pb2.MetadataValue(int_value=value)
            else:
                self.dropped_metadata += 1
                if not self.first_dropped:
                    self.first_dropped = f"{where} metadata.{key} = {json.dumps(value)}"
        return out


def survey(files: list[Path]) -> DocumentReader:
    """Read every file once without sending anything: the count, the problems, the drops."""
    reader = DocumentReader(files)
    for _ in reader:
        pass
    return reader
