"""``python -m groundwire.server.healthcheck [ADDRESS] [--service NAME]``: exit 0 when the
server at ADDRESS answers the standard gRPC health check with SERVING, 1 otherwise.

The container image's ``HEALTHCHECK`` and the compose file use it (Kubernetes has a native
``grpc:`` probe and does not need it). It is plain synchronous gRPC with a short deadline and
imports nothing of the server, so a check costs a fraction of a second, not a model load.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundwire.server.settings import CliSettings


def check(address: str, service: str = "", timeout_s: float = 2.0) -> bool:
    """Whether ``service`` ("" is the whole server) at ``address`` reports SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, check once, and say what was found on failure."""
    parser = argparse.ArgumentParser(prog="python -m groundwire.server.healthcheck")
    parser.add_argument(
        "address",
        nargs="?",
        default=CliSettings().address,
        help="host:port of the server (default: GROUNDWIRE_ADDRESS or 127.0.0.1:50051)",
    )
    parser.add_argument("--service", default="", help="a gRPC service name; default: the server")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    args = parser.parse_args(argv)
    if check(args.address, args.service, args.timeout):
        return 0
    print(f"{args.address}: {args.service or 'server'} is not SERVING", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
