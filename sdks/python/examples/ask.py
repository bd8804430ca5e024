"""Ask groundwire a question: stream the answer, then print its cited sources, route, usage
and cost.

    python sdks/python/examples/ask.py "Why do volcanoes erupt?" \\
        --address localhost:50051 --api-key "$GROUNDWIRE_API_KEY"
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

try:
    from groundwire.sdk import Client, GenerateRequest, RetrieveRequest, errors
except ModuleNotFoundError:  # run from a checkout without the SDK installed: use its sources
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from groundwire.sdk import Client, GenerateRequest, RetrieveRequest, errors
from groundwire.v1 import generation_pb2


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, ask, and print; the exit status is 1 on a failed call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("question")
    parser.add_argument(
        "--address", default=os.environ.get("GROUNDWIRE_ADDRESS", "localhost:50051")
    )
    parser.add_argument("--api-key", default=os.environ.get("GROUNDWIRE_API_KEY"))
    parser.add_argument("--top-k", type=int, default=5, help="sources to retrieve")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    args = parser.parse_args(argv)

    request = GenerateRequest(query=args.question, retrieval=RetrieveRequest(top_k=args.top_k))
    with Client(args.address, api_key=args.api_key, timeout=args.timeout) as client:
        stream = client.generate_text(request)
        try:
            for text in stream:
                print(text, end="", flush=True)
        except KeyboardInterrupt:
            stream.cancel()
            print("\n(cancelled)", file=sys.stderr)
            return 130
        except errors.GroundwireError as error:
            print(f"\nerror: {error}", file=sys.stderr)
            if stream.answer:
                print("(the answer above is incomplete)", file=sys.stderr)
            return 1
    print()

    start, end = stream.start, stream.end
    cited = {citation.number for citation in stream.citations if citation.valid}
    if start is not None and cited:
        print("\nSources:")
        for source in start.sources:
            if source.number in cited:
                label = source.title or source.doc_id or source.chunk_id
                where = f" - {source.source_uri}" if source.source_uri else ""
                print(f"  [{source.number}] {label} (score {source.score:.3f}){where}")
    if start is not None:
        route = generation_pb2.Route.Name(start.route).removeprefix("ROUTE_").lower()
        print(f"\nroute: {route}, model: {start.model or '-'}", end="")
        print(f", attempt {start.attempt}" if start.attempt > 1 else "")
    if end is not None:
        finish = generation_pb2.FinishReason.Name(end.finish_reason)
        usage = end.usage
        print(f"finish: {finish.removeprefix('FINISH_REASON_').lower()}")
        print(f"usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens")
        print(f"cost: {end.cost.micros / 1_000_000:.6f} {end.cost.currency}")
        if end.detail:
            print(f"detail: {end.detail}")
    print(f"correlation id: {stream.correlation_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
