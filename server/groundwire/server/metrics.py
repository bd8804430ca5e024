"""Prometheus metrics of the server (the client layer defines its own beside its code)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPC_REQUESTS = Counter(
    "groundwire_rpc_requests_total", "Finished RPCs by method and status code.", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "groundwire_rpc_latency_seconds",
    "RPC latency from the interceptor's point of view.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIEVAL_STAGE = Histogram(
    "groundwire_retrieval_stage_seconds",
    "Time per retrieval stage.",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
# Calls admitted (authenticated, not refused while draining) and not yet finished, per gRPC
# service: a Generate stream counts for its whole life. The autoscaling signal of the
# Kubernetes HPA (deploy/kubernetes), read per pod through the custom metrics API. The label
# is not `service`: Prometheus Operator gives every scraped series a `service` target label
# (the Kubernetes Service), which would rename ours to `exported_service`.
# With several worker processes the endpoint sums the live workers ("livesum"): the pod's
# in-flight calls, and a dead worker's count does not linger.
INFLIGHT_CALLS = Gauge(
    "groundwire_inflight_calls",
    "Calls being handled now, by gRPC service.",
    ["grpc_service"],
    multiprocess_mode="livesum",
)
INGESTED_DOCUMENTS = Counter(
    "groundwire_ingested_documents_total", "Ingested documents by outcome.", ["outcome"]
)
# Calls that ended RESOURCE_EXHAUSTED / ERROR_REASON_OVERLOADED, per gRPC service: refused on
# arrival past the in-flight bound, or ended because a timeout fired while this process
# lagged (see groundwire.server.overload). A sustained rate says: add replicas.
OVERLOAD_REFUSALS = Counter(
    "groundwire_overload_refusals_total",
    "Calls refused or ended as overloaded (RESOURCE_EXHAUSTED, OVERLOADED), by gRPC service.",
    ["grpc_service"],
)
# The worst lateness of the event loop's lag monitor over its last 10 s (a recent maximum,
# not an average; see LoopLagMonitor). With several worker processes the endpoint shows the
# worst live worker ("livemax": a dead worker's last value must not linger).
EVENT_LOOP_LAG = Gauge(
    "groundwire_event_loop_lag_seconds",
    "Worst event-loop lateness over the last 10 s, in seconds (the worst live worker).",
    multiprocess_mode="livemax",
)
