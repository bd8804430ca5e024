"""The one Retry-After reader: seconds, milliseconds, HTTP dates, and every hostile value
(``inf``, ``nan``, negative, huge, garbage, empty) with its defined answer; both clients use
it, with the cap the settings configure (the LLM side of the wiring is in
``tests/rpc/test_generate_faults.py``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundwire.clients.errors import EmbedderUnavailableError
from groundwire.clients.retry_after import DEFAULT_RETRY_AFTER_CAP_S, retry_after_s
from groundwire.server.components import build_dense_embedder
from groundwire.server.settings import SettingsError, load_settings
from tests.unit.test_embedder import EmbeddingsServer, Reply

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC).timestamp()


def read(value: str, *, cap_s: float = 300.0, name: str = "Retry-After") -> float | None:
    return retry_after_s(httpx.Headers({name: value}), cap_s=cap_s, now=lambda: NOW)


def http_date(offset_s: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset_s, tz=UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("2.5", 2.5),
        ("0", 0.0),
        ("1e2", 100.0),
        ("-3", 0.0),  # negative: retry now
        ("-inf", 0.0),
        ("inf", 300.0),  # infinite: the cap
        ("Infinity", 300.0),
        ("86400", 300.0),  # huge: the cap
        ("1" + "0" * 400, 300.0),  # a number past float's range is inf: the cap
        ("nan", None),  # not a number: no hint
        ("soon", None),  # garbage: no hint
        ("", None),
        ("   ", None),
        ("1_000", None),  # float() would take it; the header grammar does not
        ("0x10", None),
        ("7 seconds", None),
    ],
)
def test_delta_seconds_and_hostile_values(value: str, expected: float | None) -> None:
    assert read(value) == expected


def test_http_dates_are_relative_to_now() -> None:
    assert read(http_date(60)) == 60.0
    assert read(http_date(-60)) == 0.0  # in the past: retry now
    assert read(http_date(10 * 365 * 86400)) == 300.0  # years ahead: the cap
    assert read("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert read("Wed, 32 Oct 2015 07:28:00 GMT") is None  # no such day
    # A date without a zone is read as GMT, as RFC 9110 dates are.
    assert read(http_date(30).replace(" GMT", "")) == 30.0


def test_milliseconds_come_first_and_fall_back_when_unreadable() -> None:
    both = httpx.Headers({"retry-after-ms": "1500", "Retry-After": "9"})
    assert retry_after_s(both) == 1.5
    assert read("250", name="retry-after-ms") == 0.25
    assert read("inf", name="retry-after-ms") == 300.0
    assert read("-10", name="retry-after-ms") == 0.0
    for garbage in ("soon", "nan", ""):
        headers = httpx.Headers({"retry-after-ms": garbage, "retry-after": "4"})
        assert retry_after_s(headers) == 4.0
        assert read(garbage, name="retry-after-ms") is None


def test_absent_is_no_hint_and_names_are_case_blind() -> None:
    assert retry_after_s(httpx.Headers()) is None
    assert retry_after_s({}) is None
    assert retry_after_s({"RETRY-AFTER": "3"}) == 3.0


def test_the_cap_is_configurable_and_validated() -> None:
    assert retry_after_s({}, cap_s=0) is None
    assert read("inf", cap_s=5) == 5.0
    assert read("3", cap_s=0) == 0.0
    assert DEFAULT_RETRY_AFTER_CAP_S == 300.0
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="cap"):
            retry_after_s({}, cap_s=bad)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.text(max_size=40),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers().map(str),
    ),
    millis=st.one_of(st.none(), st.text(max_size=20), st.integers().map(str)),
    cap=st.floats(min_value=0, max_value=1e6),
)
def test_any_value_gives_none_or_a_wait_within_the_cap(
    value: str, millis: str | None, cap: float
) -> None:
    headers = {"retry-after": value}
    if millis is not None:
        headers["retry-after-ms"] = millis
    try:
        result = retry_after_s(headers, cap_s=cap, now=lambda: NOW)
    except Exception as exc:  # pragma: no cover - the property is that this never happens
        raise AssertionError(f"{headers!r} raised {exc!r}") from exc
    assert result is None or 0.0 <= result <= cap


def test_the_cap_is_one_setting_validated_at_start() -> None:
    assert load_settings(read_environment=False).retry_after_cap_s == 300.0
    for bad in ("inf", "nan", "-1"):
        with pytest.raises(SettingsError, match="GROUNDWIRE_RETRY_AFTER_CAP_S"):
            load_settings(read_environment=False, retry_after_cap_s=bad)


async def test_the_app_hands_the_cap_to_the_embeddings_client() -> None:
    server = EmbeddingsServer()
    try:
        settings = load_settings(
            read_environment=False,
            embedder="openai",
            embeddings_base_url=server.base_url,
            embeddings_dimension=4,
            retry_after_cap_s=12,
        )
        dense = await build_dense_embedder(settings)
        assert dense is not None
        server.replies.append(Reply(status=429, body=b"{}", headers={"Retry-After": "inf"}))
        with pytest.raises(EmbedderUnavailableError) as caught:
            await dense.embed_query("q")
        await dense.close()
    finally:
        server.close()
    assert caught.value.retry_after_s == 12.0
