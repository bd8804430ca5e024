"""The ``groundwire`` command: serve, ingest, retrieve, ask, eval, bench."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
from google.protobuf import duration_pb2, json_format
from grpc_status import rpc_status
from tqdm import tqdm

from groundwire.server import cli_ask
from groundwire.server.documents_io import count_documents, discover, read_documents
from groundwire.server.settings import CliSettings, SettingsError
from groundwire.v1 import (
    documents_pb2,
    documents_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

MODES = {
    "dense": retrieval_pb2.RETRIEVAL_MODE_DENSE,
    "sparse": retrieval_pb2.RETRIEVAL_MODE_SPARSE,
    "hybrid": retrieval_pb2.RETRIEVAL_MODE_HYBRID,
}
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def _call_metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    metadata = []
    if args.api_key:
        metadata.append(("authorization", f"Bearer {args.api_key}"))
    if args.correlation_id:
        metadata.append(("x-correlation-id", args.correlation_id))
    return metadata


def describe_error(error: grpc.aio.AioRpcError) -> str:
    """A one-paragraph explanation of a failed call, with field violations."""
    lines = [f"error: {error.code().name}: {error.details()}"]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is not None:
        from google.rpc import error_details_pb2

        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                lines += [f"  {v.field}: {v.description}" for v in bad.field_violations]
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                lines.append(
                    f"  reason {info.reason}, correlation id "
                    f"{info.metadata.get('correlation_id', '?')}"
                )
    return "\n".join(lines)


async def _ingest(args: argparse.Namespace) -> int:
    files = discover([Path(p) for p in args.paths])
    total = count_documents(files)
    progress = tqdm(total=total, unit="doc", desc="ingest", disable=args.quiet)

    async def requests() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
        for document in read_documents(files):
            yield documents_pb2.IngestDocumentsRequest(document=document)
            progress.update(1)

    started = time.perf_counter()
    async with grpc.aio.insecure_channel(args.address, options=CHANNEL_OPTIONS) as channel:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        summary = await stub.IngestDocuments(
            requests(), metadata=_call_metadata(args), timeout=args.timeout
        )
    progress.close()
    elapsed = time.perf_counter() - started
    if args.json:
        print(json_format.MessageToJson(summary, always_print_fields_with_no_presence=True))
    else:
        print(
            f"{total} documents in {elapsed:.1f}s ({total / max(elapsed, 1e-9):.1f} docs/s): "
            f"{summary.created} created, {summary.updated} updated, "
            f"{summary.unchanged} unchanged, {summary.failed} failed; "
            f"{summary.chunks_written} chunks written, {summary.chunks_deleted} deleted"
        )
        for failure in summary.failures:
            print(
                f"  failed {failure.doc_id!r} (#{failure.position}): "
                f"{failure.field}: {failure.reason}"
            )
    return 1 if summary.failed else 0


def _filters(args: argparse.Namespace) -> retrieval_pb2.MetadataFilter:
    conditions = []
    for spec, as_int in [(s, False) for s in args.where] + [(s, True) for s in args.where_int]:
        field, sep, raw = spec.partition("=")
        if not sep:
            raise SystemExit(f"--where expects field=value[|value...], got {spec!r}")
        values = raw.split("|")
        if as_int:
            ints = [int(v) for v in values]
            condition = (
                retrieval_pb2.FieldFilter(field=field, int_equals=ints[0])
                if len(ints) == 1
                else retrieval_pb2.FieldFilter(
                    field=field, int_any=retrieval_pb2.IntList(values=ints)
                )
            )
        else:
            condition = (
                retrieval_pb2.FieldFilter(field=field, string_equals=values[0])
                if len(values) == 1
                else retrieval_pb2.FieldFilter(
                    field=field, string_any=retrieval_pb2.StringList(values=values)
                )
            )
        conditions.append(condition)
    return retrieval_pb2.MetadataFilter(must=conditions)


def _snippet(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def _retrieve(args: argparse.Namespace) -> int:
    request = retrieval_pb2.RetrieveRequest(
        query=args.query,
        top_k=args.top_k,
        mode=MODES[args.mode] if args.mode else retrieval_pb2.RETRIEVAL_MODE_UNSPECIFIED,
        filter=_filters(args),
        bypass_cache=args.no_cache,
    )
    if args.min_score is not None:
        request.min_score = args.min_score
    async with grpc.aio.insecure_channel(args.address, options=CHANNEL_OPTIONS) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        response = await stub.Retrieve(request, metadata=_call_metadata(args), timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(response, always_print_fields_with_no_presence=True))
        return 0
    print(f"{'#':>2}  {'score':>7}  {'doc':<24} {'chunk':>5}  text")
    for rank, chunk in enumerate(response.chunks, start=1):
        doc = _snippet(chunk.title or chunk.doc_id, 24)
        print(
            f"{rank:>2}  {chunk.score:7.4f}  {doc:<24} {chunk.chunk_index:>5}  "
            f"{_snippet(chunk.text, 70)}"
        )
    t = response.timings
    mode = retrieval_pb2.RetrievalMode.Name(response.mode).removeprefix("RETRIEVAL_MODE_")

    def ms(d: duration_pb2.Duration) -> str:
        return f"{d.ToMicroseconds() / 1000:.1f}"

    print(
        f"\nmode {mode.lower()}, {'cache hit' if response.cache_hit else 'cache miss'}, "
        f"embedder {response.embedder_id or '-'}; total {ms(t.total)} ms "
        f"(cache {ms(t.cache)}, embed {ms(t.embed)}, search {ms(t.search)})"
    )
    return 0


async def _ask(args: argparse.Namespace) -> int:
    retrieval = retrieval_pb2.RetrieveRequest(
        mode=MODES[args.mode] if args.mode else retrieval_pb2.RETRIEVAL_MODE_UNSPECIFIED,
        filter=_filters(args),
    )
    if args.top_k is not None:
        retrieval.top_k = args.top_k
    request = cli_ask.build_request(args, retrieval)
    async with grpc.aio.insecure_channel(args.address, options=CHANNEL_OPTIONS) as channel:
        return await cli_ask.ask(args, request, _call_metadata(args), channel)


def _serve(args: argparse.Namespace) -> int:
    # Nothing that imports prometheus_client may load before the worker supervisor has set
    # its multiprocess directory (groundwire.server.workers): app and telemetry load later.
    from groundwire.server.logging_setup import configure_logging
    from groundwire.server.settings import load_settings
    from groundwire.server.workers import run_server, supervise

    overrides = {"workers": args.workers} if args.workers is not None else {}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if settings.workers > 1:
        return supervise(settings)
    from groundwire.server.telemetry import start_metrics_endpoint

    start_metrics_endpoint(settings)
    return run_server(settings)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flags override GROUNDWIRE_ADDRESS / GROUNDWIRE_API_KEY)."""
    defaults = CliSettings()
    parser = argparse.ArgumentParser(prog="groundwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--address", default=defaults.address, help="server host:port")
        cmd.add_argument("--api-key", default=defaults.api_key, help="API key (Bearer)")
        cmd.add_argument("--correlation-id", help="x-correlation-id to send")
        cmd.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
        cmd.add_argument("--json", action="store_true", help="print the response as JSON")
        return cmd

    serve = sub.add_parser(
        "serve", help="run the gRPC server (configured by GROUNDWIRE_* variables)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the port (GROUNDWIRE_WORKERS; default: the usable "
        "cores; 1: a single process)",
    )

    ingest = client("ingest", "index .txt, .md and BEIR .jsonl files through the API")
    ingest.add_argument("paths", nargs="+", help="files or directories")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")

    retrieve = client("retrieve", "show the best chunks for a query")
    retrieve.add_argument("query")
    retrieve.add_argument("--top-k", type=int, default=8)
    retrieve.add_argument("--mode", choices=sorted(MODES))
    retrieve.add_argument("--min-score", type=float)
    retrieve.add_argument("--where", action="append", default=[], metavar="FIELD=V[|V…]")
    retrieve.add_argument("--where-int", action="append", default=[], metavar="FIELD=N[|N…]")
    retrieve.add_argument("--no-cache", action="store_true", help="bypass the retrieval cache")

    ask = client("ask", "answer a question from the corpus, streamed, with its sources")
    cli_ask.add_arguments(ask)
    ask.add_argument("--top-k", type=int, default=None, help="sources to retrieve")
    ask.add_argument("--mode", choices=sorted(MODES))
    ask.add_argument("--where", action="append", default=[], metavar="FIELD=V[|V…]")
    ask.add_argument("--where-int", action="append", default=[], metavar="FIELD=N[|N…]")

    # Imported here: both import this module (for CHANNEL_OPTIONS) through the measure package.
    from groundwire.server.benchmark import command as bench_command
    from groundwire.server.evaluation import command as eval_command

    for name, help_text, command in (
        (
            "eval",
            "retrieval (and answer) quality on a BEIR-format dataset, with a report",
            eval_command,
        ),
        (
            "bench",
            "load-test Retrieve and Generate over gRPC beside the direct calls",
            bench_command,
        ),
    ):
        command.add_arguments(
            sub.add_parser(
                name,
                help=help_text,
                description=command.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
    from groundwire.server.reindex import arguments as reindex_arguments

    reindex_arguments.add_arguments(
        sub.add_parser(
            "reindex",
            help="change embedders without downtime: build, compare, switch, rollback",
            description=reindex_arguments.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``groundwire`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "reindex":
        from groundwire.server.reindex import command as reindex_command

        return reindex_command.main(args)
    if args.command in ("eval", "bench"):
        from groundwire.server.benchmark import command as bench_command
        from groundwire.server.evaluation import command as eval_command

        if args.command == "eval":
            return eval_command.main(args)
        return bench_command.main(args)
    runner = {"ingest": _ingest, "retrieve": _retrieve, "ask": _ask}[args.command]
    try:
        return asyncio.run(runner(args))
    except grpc.aio.AioRpcError as error:
        print(describe_error(error), file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
