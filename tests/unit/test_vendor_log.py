"""The vendor's words go to the log, with the correlation id, throttled per operation."""

from __future__ import annotations

import logging

import pytest

from groundwire.clients.correlation import correlation_scope
from groundwire.clients.vendor_log import MAX_VENDOR_TEXT, VendorErrorLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_logs_the_vendor_text_with_the_correlation_id_and_throttles_a_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    vendor_log = VendorErrorLog("vector_store", interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING), correlation_scope("cid-1"):
        vendor_log("search", ConnectionError("10.0.0.7:6334 refused"), ours="store down")
        for _ in range(5):  # the rest of the outage's burst
            vendor_log("search", ConnectionError("10.0.0.7:6334 refused"))
        vendor_log("upsert", "x" * (MAX_VENDOR_TEXT + 10))  # another operation: its own line
        clock.now += 10.0
        vendor_log("search", ConnectionError("still refused"))
    lines = [vars(r) for r in caplog.records]
    assert [(line["operation"], line["suppressed_since_last_log"]) for line in lines] == [
        ("search", 0),
        ("upsert", 0),
        ("search", 5),
    ]
    first = lines[0]
    assert first["vendor_error"] == "10.0.0.7:6334 refused"
    assert first["error_type"] == "ConnectionError" and first["reported_as"] == "store down"
    assert first["correlation_id"] == "cid-1"
    assert len(lines[1]["vendor_error"]) == MAX_VENDOR_TEXT


def test_outside_a_call_there_is_no_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        VendorErrorLog("embedder")("embed", "HTTP 500")
    assert not hasattr(caplog.records[0], "correlation_id")
