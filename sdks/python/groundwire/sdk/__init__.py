"""The groundwire Python SDK: sync and asyncio clients over the generated gRPC stubs.

::

    from groundwire.sdk import Client

    with Client("localhost:50051", api_key="...") as client:
        stream = client.generate_text("Why do volcanoes erupt?")
        for text in stream:
            print(text, end="", flush=True)
        print(stream.end.cost.micros if stream.end else "no end frame")

The message types are the generated ones, re-exported here for convenience; every failure
raises a :class:`~groundwire.sdk.errors.GroundwireError`.
"""

from groundwire.sdk import errors
from groundwire.sdk._common import (
    DEFAULT_CHANNEL_OPTIONS,
    DEFAULT_STREAM_TIMEOUT_S,
    DEFAULT_UNARY_TIMEOUT_S,
    RETRIEVAL_MODES,
    TIERS,
    ServingStatus,
    retrieval_mode,
    tier,
)
from groundwire.sdk._ingest import DEFAULT_INGEST_BATCH_SIZE, IngestProgress
from groundwire.sdk._version import __version__
from groundwire.sdk.aio import AsyncClient, AsyncGenerateStream, AsyncTextStream
from groundwire.sdk.client import Client, GenerateStream, TextStream
from groundwire.sdk.errors import FieldViolation, GroundwireError, QuotaViolation
from groundwire.v1.capabilities_pb2 import GetCapabilitiesResponse
from groundwire.v1.common_pb2 import Chunk, MetadataValue
from groundwire.v1.documents_pb2 import DeleteDocumentsResponse, Document, IngestDocumentsResponse
from groundwire.v1.generation_pb2 import (
    ContextPassage,
    ContextPassages,
    GenerateRequest,
    GenerateResponse,
)
from groundwire.v1.retrieval_pb2 import (
    FieldFilter,
    MetadataFilter,
    RetrieveRequest,
    RetrieveResponse,
)

__all__ = [
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_INGEST_BATCH_SIZE",
    "DEFAULT_STREAM_TIMEOUT_S",
    "DEFAULT_UNARY_TIMEOUT_S",
    "RETRIEVAL_MODES",
    "TIERS",
    "AsyncClient",
    "AsyncGenerateStream",
    "AsyncTextStream",
    "Chunk",
    "Client",
    "ContextPassage",
    "ContextPassages",
    "DeleteDocumentsResponse",
    "Document",
    "FieldFilter",
    "FieldViolation",
    "GenerateRequest",
    "GenerateResponse",
    "GenerateStream",
    "GetCapabilitiesResponse",
    "GroundwireError",
    "IngestDocumentsResponse",
    "IngestProgress",
    "MetadataFilter",
    "MetadataValue",
    "QuotaViolation",
    "RetrieveRequest",
    "RetrieveResponse",
    "ServingStatus",
    "TextStream",
    "__version__",
    "errors",
    "retrieval_mode",
    "tier",
]
