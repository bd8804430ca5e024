"""Spans for the client layer: one per outbound call, tagged with the correlation id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode
from opentelemetry.util.types import AttributeValue

from groundwire.clients.correlation import current_correlation_id

TRACER_NAME = "groundwire"
CORRELATION_ATTRIBUTE = "groundwire.correlation_id"


def tracer() -> trace.Tracer:
    """The tracer of the current provider (looked up per call so tests can swap providers)."""
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def client_span(stage: str, **attributes: AttributeValue) -> Iterator[Span]:
    """Open a client span named ``stage`` carrying the correlation id and ``attributes``.

    An exception leaving the block marks the span as an error and is re-raised unchanged.
    """
    with tracer().start_as_current_span(
        stage, kind=trace.SpanKind.CLIENT, record_exception=True, set_status_on_exception=True
    ) as span:
        correlation_id = current_correlation_id()
        if correlation_id is not None:
            span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
        for key, value in attributes.items():
            span.set_attribute(key, value)
        try:
            yield span
        except BaseException as exc:
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
