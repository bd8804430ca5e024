"""The shared client layer: traced, correlation-aware wrappers around every outbound system.

Each wrapper opens a span, forwards the correlation id and ``traceparent``, applies a timeout
and turns vendor exceptions into :mod:`groundwire.clients.errors`. Vendor exception types
never escape this package.
"""
