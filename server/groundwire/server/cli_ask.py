"""``groundwire ask``: the answer as it streams, then its sources, route, usage and cost.

The call goes through the SDK's ``AsyncClient``, so credentials, correlation id, tier names
and error decoding are the SDK's. The timings print as parts that add up to the total (the
contract's ``overhead`` contains the retrieval, so printing both side by side misleads).
"""

from __future__ import annotations

import argparse
import sys

from google.protobuf import duration_pb2, json_format

from groundwire.sdk import TIERS, AsyncClient, tier
from groundwire.sdk.errors import GroundwireError
from groundwire.v1 import generation_pb2, retrieval_pb2


def add_arguments(ask: argparse.ArgumentParser) -> None:
    """The flags of ``ask`` beyond the common client ones and the retrieval options."""
    ask.add_argument("question")
    choice = ask.add_mutually_exclusive_group()
    choice.add_argument("--tier", choices=sorted(TIERS), help="default: standard")
    choice.add_argument("--model", help="a catalog model (see the capabilities RPC)")
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--max-tokens", type=int, help="most output tokens")
    ask.add_argument("--time-limit", type=float, help="soft limit on the answer, in seconds")
    ask.add_argument("--no-answer-cache", action="store_true", help="always ask a model")


def build_request(
    args: argparse.Namespace, retrieval: retrieval_pb2.RetrieveRequest
) -> generation_pb2.GenerateRequest:
    """The GenerateRequest the flags describe."""
    request = generation_pb2.GenerateRequest(
        query=args.question, retrieval=retrieval, bypass_cache=args.no_answer_cache
    )
    if args.tier:
        request.tier = tier(args.tier)
    if args.model:
        request.model = args.model
    if args.temperature is not None:
        request.temperature = args.temperature
    if args.max_tokens is not None:
        request.max_output_tokens = args.max_tokens
    if args.time_limit is not None:
        request.time_limit.FromMilliseconds(int(args.time_limit * 1000))
    return request


def _ms(value: duration_pb2.Duration) -> int:
    return round(value.ToMicroseconds() / 1000)


def timing_parts(
    timings: generation_pb2.GenerationTimings, attempts: int
) -> tuple[list[tuple[str, int]], int]:
    """Where an answer's time went, in whole milliseconds: parts that sum to the total.

    The model's share is ``total - overhead`` (the time spent waiting on upstream calls),
    split at its first token; "other" is the rest of our own time, so rounding never breaks
    the sum.
    """
    total = _ms(timings.total)
    model = max(0, total - _ms(timings.overhead))
    first = min(_ms(timings.upstream_first_token), model)
    parts = [("retrieval", _ms(timings.retrieval))]
    if _ms(timings.cache):
        parts.append(("answer cache", _ms(timings.cache)))
    if model:
        if attempts > 1:
            parts += [
                ("model first token (last attempt)", first),
                (f"model other ({attempts} attempts)", model - first),
            ]
        else:
            parts += [("model first token", first), ("model generation", model - first)]
    parts.append(("other", max(0, total - sum(ms for _, ms in parts))))
    return parts, total


def _name(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def print_summary(
    start: generation_pb2.StartFrame,
    citations: list[generation_pb2.CitationFrame],
    end: generation_pb2.EndFrame | None,
) -> None:
    """Sources cited, route and model, usage, cost and timings."""
    cited = {c.number for c in citations if c.valid}
    invalid = sorted({c.number for c in citations if not c.valid})
    print("\n")
    if cited:
        print("Sources cited:")
    for source in start.sources:
        if source.number in cited:
            label = source.title or source.doc_id or source.chunk_id
            where = f"  {source.source_uri}" if source.source_uri else ""
            print(
                f"  [{source.number}] {label} ({source.chunk_id}, score {source.score:.3f}){where}"
            )
    if invalid:
        print(f"  cited but not a source: {', '.join(f'[{n}]' for n in invalid)}")
    route = _name(generation_pb2.Route.Name(start.route), "ROUTE_")
    model = start.model or "-"
    line = f"route {route}, model {model}"
    if start.attempt > 1:
        line += f" (attempt {start.attempt})"
    if end is None:
        print(line + "; the stream ended without an end frame")
        return
    if end.final_model and end.final_model != start.model:
        line += f", finished by {end.final_model}"
    print(
        line
        + f"; finish {_name(generation_pb2.FinishReason.Name(end.finish_reason), 'FINISH_REASON_')}"
    )
    usage = end.usage
    cached = f", {usage.cached_tokens} cached" if usage.HasField("cached_tokens") else ""
    print(
        f"usage {usage.prompt_tokens} tokens in{cached}, {usage.completion_tokens} out; "
        f"cost {end.cost.micros / 1_000_000:.6f} {end.cost.currency}"
    )
    parts, total = timing_parts(end.timings, end.attempts)
    print(
        "time "
        + " + ".join(f"{name} {ms} ms" for name, ms in parts)
        + f" = total {total} ms; first text after {_ms(end.timings.first_token)} ms"
    )
    if end.detail:
        print(f"detail: {end.detail}")


async def ask(args: argparse.Namespace, request: generation_pb2.GenerateRequest) -> int:
    """Stream one answer to stdout, then its summary (also after a failure mid-answer)."""
    async with AsyncClient(args.address, api_key=args.api_key) as client:
        stream = client.generate(request, timeout=args.timeout, correlation_id=args.correlation_id)
        try:
            async for frame in stream:
                if args.json:
                    print(json_format.MessageToJson(frame, indent=None), flush=True)
                elif frame.WhichOneof("frame") == "delta":
                    sys.stdout.write(frame.delta.text)
                    sys.stdout.flush()
        except GroundwireError:
            if not args.json and stream.start is not None:
                print_summary(stream.start, stream.citations, stream.end)
            raise
    if not args.json:
        print_summary(stream.start or generation_pb2.StartFrame(), stream.citations, stream.end)
    return 0
