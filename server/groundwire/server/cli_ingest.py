"""``groundwire ingest``: files in, through the API, in batches the server acknowledges.

The files are read once before anything is sent, so every unreadable file and line is named
up front, ``--strict`` can refuse the lot before the index changes, and an empty input is
caught. Documents then go in batches (the SDK's ``ingest_batches``): each batch's summary is
an acknowledgement, so Ctrl-C or a failed call can still say what was written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from tqdm import tqdm

from groundwire.sdk import DEFAULT_INGEST_BATCH_SIZE, AsyncClient, IngestProgress
from groundwire.sdk.errors import GroundwireError
from groundwire.server.documents_io import FORMATS, DocumentReader, Found, discover, survey
from groundwire.v1 import documents_pb2

#: Problems listed one by one before the rest are only counted.
SHOWN_PROBLEMS = 20
#: Seconds between progress lines when stderr is not a terminal (CI logs, pipes).
PROGRESS_EVERY_S = 5.0
#: Exit status of an interrupted ingest (128 + SIGINT, as shells report it).
INTERRUPTED = 130

EPILOG = f"""\
Reads {FORMATS}.
A .jsonl line is {{"_id", "title", "text", "metadata"}}; metadata holds the string and
integer values that --where / --where-int filter on. Directories are walked for those
suffixes; a file named with another suffix is refused.

exit status: 0 all indexed; 1 a document was rejected by the server, or a file or line could
not be read (skipped, or with --strict nothing indexed); 2 usage (a path that does not exist
or cannot be read, no documents without --allow-empty); 130 interrupted (what the server
acknowledged is printed).
"""


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(ingest: argparse.ArgumentParser) -> None:
    """The flags of ``ingest`` beyond the common client ones."""
    ingest.epilog = EPILOG
    ingest.formatter_class = argparse.RawDescriptionHelpFormatter
    ingest.add_argument("paths", nargs="+", type=Path, help="files or directories")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar or lines")
    ingest.add_argument(
        "--strict",
        action="store_true",
        help="index nothing when a file or line cannot be read (default: skip it, index the "
        "rest, exit 1)",
    )
    ingest.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when there is no document to send (default: an error, exit 2)",
    )
    ingest.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_INGEST_BATCH_SIZE,
        help="documents per IngestDocuments call, each acknowledged by the server "
        f"(default {DEFAULT_INGEST_BATCH_SIZE}); --timeout applies to each call",
    )


@dataclass
class _Sending:
    """What the send phase got back so far; read after an interruption or a failure."""

    planned: int
    last: IngestProgress | None = None


class _Progress:
    """A tqdm bar on a terminal; elsewhere a line on the first acknowledgement and then at
    most every :data:`PROGRESS_EVERY_S` seconds, so a CI log shows the ingest is moving."""

    def __init__(self, total: int, quiet: bool) -> None:
        self._total = total
        self._quiet = quiet
        self._bar = tqdm(total=total, unit="doc", desc="ingest") if sys.stderr.isatty() else None
        self._started = time.perf_counter()
        self._printed_at: float | None = None

    def update(self, progress: IngestProgress) -> None:
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.update(progress.documents - self._bar.n)
            return
        now = time.perf_counter()
        if self._printed_at is not None and now - self._printed_at < PROGRESS_EVERY_S:
            return
        self._printed_at = now
        rate = progress.documents / max(now - self._started, 1e-9)
        print(
            f"ingest: {progress.documents} of {self._total} documents acknowledged "
            f"({rate:.1f} docs/s)",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _counts(summary: documents_pb2.IngestDocumentsResponse) -> str:
    return (
        f"{summary.created} created, {summary.updated} updated, "
        f"{summary.unchanged} unchanged, {summary.failed} failed; "
        f"{summary.chunks_written} chunks written, {summary.chunks_deleted} deleted"
    )


def _report_reading(found: Found, reader: DocumentReader) -> None:
    """Notes and warnings about the files, on stderr, before anything is sent."""
    if found.ignored:
        kinds = ", ".join(f"{suffix}: {n}" for suffix, n in sorted(found.ignored.items()))
        print(
            f"note: {sum(found.ignored.values())} file(s) of other types not read ({kinds})",
            file=sys.stderr,
        )
    for problem in reader.problems[:SHOWN_PROBLEMS]:
        print(f"warning: {problem}", file=sys.stderr)
    if len(reader.problems) > SHOWN_PROBLEMS:
        print(
            f"warning: … and {len(reader.problems) - SHOWN_PROBLEMS} more unreadable lines "
            "or files",
            file=sys.stderr,
        )
    if reader.dropped_metadata:
        print(
            f"note: {reader.dropped_metadata} metadata value(s) dropped: only strings and "
            f"integers are indexed (first: {reader.first_dropped})",
            file=sys.stderr,
        )


def _interrupted(sending: _Sending) -> int:
    last = sending.last
    if last is None:
        print("interrupted: no batch was acknowledged", file=sys.stderr)
    else:
        print(
            f"interrupted: {last.documents} of {sending.planned} documents acknowledged: "
            f"{_counts(last.total)}",
            file=sys.stderr,
        )
    print(
        "  documents of the batch in flight may be written too; run the same command again "
        "to finish (unchanged documents are skipped)",
        file=sys.stderr,
    )
    return INTERRUPTED


async def _send(args: argparse.Namespace, files: list[Path], sending: _Sending) -> None:
    progress = _Progress(sending.planned, args.quiet)
    try:
        async with AsyncClient(args.address, api_key=args.api_key) as client:
            async for step in client.ingest_batches(
                DocumentReader(files),
                batch_size=args.batch_size,
                timeout=args.timeout,
                correlation_id=args.correlation_id,
            ):
                sending.last = step
                progress.update(step)
    finally:
        progress.close()


def run(args: argparse.Namespace) -> int:
    """Read, check and send the files; print the summary. Returns the exit status."""
    sending = _Sending(planned=0)
    try:
        found = discover(args.paths)
        reader = survey(found.files)
        _report_reading(found, reader)
        skipped = len(reader.problems)
        if skipped and args.strict:
            print(
                f"error: --strict: nothing indexed; {skipped} unreadable line(s) or file(s)",
                file=sys.stderr,
            )
            return 1
        if reader.documents_read == 0 and not skipped and not args.allow_empty:
            paths = " ".join(str(p) for p in args.paths)
            print(
                f"error: no documents found in {paths}; ingest reads {FORMATS} "
                "(--allow-empty accepts this)",
                file=sys.stderr,
            )
            return 2
        sending.planned = reader.documents_read
        started = time.perf_counter()
        if sending.planned:
            asyncio.run(_send(args, found.files, sending))
    except KeyboardInterrupt:
        return _interrupted(sending)
    except GroundwireError:
        if sending.last is not None:
            print(
                f"before the error, {sending.last.documents} of {sending.planned} documents "
                f"were acknowledged: {_counts(sending.last.total)}",
                file=sys.stderr,
            )
        raise
    elapsed = time.perf_counter() - started
    summary = sending.last.total if sending.last else documents_pb2.IngestDocumentsResponse()
    if args.json:
        print(json_format.MessageToJson(summary, always_print_fields_with_no_presence=True))
    else:
        line = (
            f"{sending.planned} documents in {elapsed:.1f}s "
            f"({sending.planned / max(elapsed, 1e-9):.1f} docs/s): {_counts(summary)}"
        )
        if skipped:
            line += f"; {skipped} unreadable line(s) or file(s) skipped"
        print(line)
        for failure in summary.failures:
            print(
                f"  failed {failure.doc_id!r} (#{failure.position}): "
                f"{failure.field}: {failure.reason}"
            )
    return 1 if summary.failed or skipped else 0
