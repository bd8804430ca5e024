"""The ``groundwire`` command: serve, ingest, retrieve, ask, reindex, and the subcommands that
installed distributions add through entry points (the tools' eval and bench)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from google.protobuf import duration_pb2, json_format

from groundwire.sdk import RETRIEVAL_MODES, AsyncClient
from groundwire.sdk.errors import GroundwireError
from groundwire.server import cli_ask, cli_ingest
from groundwire.server.installed_commands import add_installed
from groundwire.server.settings import CliSettings, SettingsError, unknown_variables
from groundwire.v1 import retrieval_pb2

#: The entry-point group of the subcommands other distributions add (``eval``, ``bench``).
COMMANDS_GROUP = "groundwire.commands"


def _condition(spec: str, as_int: bool) -> retrieval_pb2.FieldFilter:
    """One ``--where``/``--where-int`` value as a filter; argparse names the flag on error."""
    field, sep, raw = spec.partition("=")
    if not sep or not field:
        kind = "N" if as_int else "VALUE"
        raise argparse.ArgumentTypeError(
            f"expected FIELD={kind}[|{kind}...] (a metadata field and its value), got {spec!r}"
        )
    values = raw.split("|")
    if not as_int:
        if len(values) == 1:
            return retrieval_pb2.FieldFilter(field=field, string_equals=values[0])
        return retrieval_pb2.FieldFilter(
            field=field, string_any=retrieval_pb2.StringList(values=values)
        )
    ints = []
    for value in values:
        try:
            ints.append(int(value))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} in {spec!r} is not an integer (use --where for text values)"
            ) from None
    if len(ints) == 1:
        return retrieval_pb2.FieldFilter(field=field, int_equals=ints[0])
    return retrieval_pb2.FieldFilter(field=field, int_any=retrieval_pb2.IntList(values=ints))


def _where(spec: str) -> retrieval_pb2.FieldFilter:
    return _condition(spec, as_int=False)


def _where_int(spec: str) -> retrieval_pb2.FieldFilter:
    return _condition(spec, as_int=True)


def _filters(args: argparse.Namespace) -> retrieval_pb2.MetadataFilter:
    return retrieval_pb2.MetadataFilter(must=[*args.where, *args.where_int])


def _add_filter_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--mode", choices=sorted(RETRIEVAL_MODES))
    cmd.add_argument(
        "--where",
        action="append",
        default=[],
        type=_where,
        metavar="FIELD=V[|V…]",
        help="only chunks whose document metadata FIELD is one of these strings",
    )
    cmd.add_argument(
        "--where-int",
        action="append",
        default=[],
        type=_where_int,
        metavar="FIELD=N[|N…]",
        help="only chunks whose document metadata FIELD is one of these integers",
    )


def _snippet(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def _retrieve(args: argparse.Namespace) -> int:
    async with AsyncClient(args.address, api_key=args.api_key) as client:
        response = await client.retrieve(
            args.query,
            top_k=args.top_k,
            mode=args.mode,
            filter=_filters(args),
            min_score=args.min_score,
            bypass_cache=args.no_cache,
            timeout=args.timeout,
            correlation_id=args.correlation_id,
        )
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
        mode=RETRIEVAL_MODES[args.mode] if args.mode else retrieval_pb2.RETRIEVAL_MODE_UNSPECIFIED,
        filter=_filters(args),
    )
    if args.top_k is not None:
        retrieval.top_k = args.top_k
    return await cli_ask.ask(args, cli_ask.build_request(args, retrieval))


def _serve(args: argparse.Namespace) -> int:
    # Nothing that imports prometheus_client may load before the worker supervisor has set
    # its multiprocess directory (groundwire.server.workers): app and telemetry load later.
    from groundwire.server.logging_setup import configure_logging
    from groundwire.server.settings import load_settings
    from groundwire.server.start_checks import check_before_start, warn_unknown_variables
    from groundwire.server.workers import run_server, supervise

    overrides = {"workers": args.workers} if args.workers is not None else {}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    warn_unknown_variables(settings)
    # Before the composition root's imports and the model: a refusal comes in well under a
    # second, not after them (groundwire.server.start_checks).
    refusal = check_before_start(settings)
    if refusal is not None:
        print(f"groundwire: cannot start: {refusal.message}", file=sys.stderr)
        return refusal.exit_code
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
        cmd.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="deadline in seconds (default: the SDK's, 30 for retrieve, 300 for ask and "
            "for each ingest batch)",
        )
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
    cli_ingest.add_arguments(ingest)

    retrieve = client("retrieve", "show the best chunks for a query")
    retrieve.add_argument("query")
    retrieve.add_argument("--top-k", type=int, default=8)
    retrieve.add_argument("--min-score", type=float)
    _add_filter_arguments(retrieve)
    retrieve.add_argument("--no-cache", action="store_true", help="bypass the retrieval cache")

    ask = client("ask", "answer a question from the corpus, streamed, with its sources")
    cli_ask.add_arguments(ask)
    ask.add_argument("--top-k", type=int, default=None, help="sources to retrieve")
    _add_filter_arguments(ask)

    # eval and bench, from the tools' distribution; each sets ``run_command``.
    add_installed(sub, COMMANDS_GROUP, "groundwire")
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
        return _serve(args)  # which logs the unknown variables, with the catalog's known
    for variable in unknown_variables():
        print(f"groundwire: warning: {variable}", file=sys.stderr)
    if args.command == "reindex":
        from groundwire.server.reindex import command as reindex_command

        return reindex_command.main(args)
    installed: Callable[[argparse.Namespace], int] | None = getattr(args, "run_command", None)
    if installed is not None:
        return installed(args)
    try:
        if args.command == "ingest":
            return cli_ingest.run(args)
        return asyncio.run(_retrieve(args) if args.command == "retrieve" else _ask(args))
    except GroundwireError as error:
        print(f"error: {error.describe()}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return cli_ingest.INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
