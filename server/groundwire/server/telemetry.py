"""Tracing and metrics exporters, as the settings choose."""

from __future__ import annotations

import logging
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from groundwire.server.settings import Settings, TracesExporter

log = logging.getLogger(__name__)


def configure_tracing(settings: Settings) -> trace.TracerProvider | None:
    """The process's tracer provider, or None when traces are off (spans then cost nothing).
    An already-installed SDK provider (a test's in-memory exporter, an operator's
    auto-instrumentation) is kept rather than replaced."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if settings.traces is TracesExporter.OFF:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.traces is TracesExporter.CONSOLE:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif settings.traces is TracesExporter.OTLP:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    trace.set_tracer_provider(provider)
    return provider


def start_metrics_endpoint(settings: Settings, multiprocess_dir: Path | None = None) -> None:
    """Serve Prometheus metrics on ``metrics_port`` (0 or unset: off). With
    ``multiprocess_dir`` (the worker supervisor's PROMETHEUS_MULTIPROC_DIR) the endpoint
    serves the sum of every worker's metrics, read from their files at each scrape."""
    if not settings.metrics_port:
        return
    if multiprocess_dir is None:
        start_http_server(settings.metrics_port)
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=str(multiprocess_dir)
        )
        start_http_server(settings.metrics_port, registry=registry)
    log.info("metrics endpoint listening", extra={"port": settings.metrics_port})
