"""``groundwire ask``: the answer as it streams, then its sources, route, usage and cost."""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import duration_pb2, json_format

from groundwire.v1 import generation_pb2, generation_pb2_grpc, retrieval_pb2

TIERS = {
    "standard": generation_pb2.TIER_STANDARD,
    "economy": generation_pb2.TIER_ECONOMY,
    "long-context": generation_pb2.TIER_LONG_CONTEXT,
}


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
        request.tier = TIERS[args.tier]
    if args.model:
        request.model = args.model
    if args.temperature is not None:
        request.temperature = args.temperature
    if args.max_tokens is not None:
        request.max_output_tokens = args.max_tokens
    if args.time_limit is not None:
        request.time_limit.FromMilliseconds(int(args.time_limit * 1000))
    return request


def _ms(value: duration_pb2.Duration) -> str:
    return f"{value.ToMicroseconds() / 1000:.0f} ms"


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
    t = end.timings
    print(
        f"first token {_ms(t.first_token)} (upstream {_ms(t.upstream_first_token)}), "
        f"total {_ms(t.total)} (retrieval {_ms(t.retrieval)}, overhead {_ms(t.overhead)})"
    )
    if end.detail:
        print(f"detail: {end.detail}")


async def ask(
    args: argparse.Namespace,
    request: generation_pb2.GenerateRequest,
    metadata: list[tuple[str, str]],
    channel: grpc.aio.Channel,
) -> int:
    """Stream one answer to stdout."""
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    call = stub.Generate(request, metadata=metadata, timeout=args.timeout)
    start = generation_pb2.StartFrame()
    citations: list[generation_pb2.CitationFrame] = []
    end: generation_pb2.EndFrame | None = None
    async for frame in call:
        if args.json:
            print(json_format.MessageToJson(frame, indent=None), flush=True)
            continue
        kind = frame.WhichOneof("frame")
        if kind == "start":
            start = frame.start
        elif kind == "delta":
            sys.stdout.write(frame.delta.text)
            sys.stdout.flush()
        elif kind == "citation":
            citations.append(frame.citation)
        elif kind == "end":
            end = frame.end
    if not args.json:
        print_summary(start, citations, end)
    return 0
