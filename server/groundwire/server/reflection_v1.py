"""Server reflection on both protocol versions: ``grpc.reflection.v1`` beside ``v1alpha``.

grpcio-reflection ships only the ``v1alpha`` service. Current clients (``buf curl``,
``grpcurl``, Postman) ask ``v1`` first and fall back to ``v1alpha`` after an UNIMPLEMENTED
round trip; some newer ones do not fall back at all. The two versions differ only in their
package name: every message and field number is the same, so ``v1`` is served here by the
same servicer, its requests and responses read and written with the ``v1alpha`` classes.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from grpc_reflection.v1alpha._async import ReflectionServicer

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (and the ``v1alpha`` service) on ``v1`` and
    ``v1alpha``. The ``v1`` service is not listed: its descriptor is not in this process's
    pool (grpcio-reflection carries only ``v1alpha``'s), so describing it would fail."""
    names = (*service_names, reflection.SERVICE_NAME)
    servicer = ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    for service in (reflection.SERVICE_NAME, V1_SERVICE_NAME):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
