"""Quota settings: defaults, per-tenant overrides from JSON, and errors that name the variable."""

from __future__ import annotations

import pytest

from groundwire.server.quotas import QuotaLimits, build_quotas, limits_from_settings
from groundwire.server.settings import SettingsError, load_settings


def test_no_limits_by_default_and_no_quotas_to_build() -> None:
    settings = load_settings(read_environment=False)
    defaults, overrides = limits_from_settings(settings)
    assert defaults == QuotaLimits() and overrides == {}
    assert build_quotas(settings, link=None, namespace="gw:x", currency="USD") is None


def test_an_override_replaces_the_keys_it_names_and_null_is_unlimited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GROUNDWIRE_QUOTA_REQUESTS_PER_MINUTE", "60")
    monkeypatch.setenv("GROUNDWIRE_QUOTA_SPEND_MICROS_PER_DAY", "5000000")
    monkeypatch.setenv(
        "GROUNDWIRE_QUOTA_OVERRIDES",
        '{"tenant-a": {"requests_per_minute": 100, "spend_micros_per_day": null}}',
    )
    defaults, overrides = limits_from_settings(load_settings())
    assert defaults == QuotaLimits(requests_per_minute=60, spend_micros_per_day=5_000_000)
    assert overrides == {"tenant-a": QuotaLimits(requests_per_minute=100)}


def test_an_override_alone_builds_in_process_quotas() -> None:
    settings = load_settings(
        read_environment=False, quota_overrides={"tenant-a": {"llm_tokens_per_minute": 10}}
    )
    quotas = build_quotas(settings, link=None, namespace="gw:x", currency="USD")
    assert quotas is not None and not quotas.shared
    assert quotas.limits_for("tenant-a") == QuotaLimits(llm_tokens_per_minute=10)
    assert quotas.limits_for("tenant-b") == QuotaLimits()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"tenant-a": {"requests_per_minut": 5}}', "unknown quota 'requests_per_minut'"),
        ('{"no spaces": {}}', "tenant 'no spaces' must match"),
        ('{"tenant-a": {"requests_per_minute": 0}}', "requests_per_minute: Input should be"),
        ('{"tenant-a": 5}', "must be an object of quota limits"),
        ("[1]", "valid dictionary"),
        ("{nope", "not valid JSON"),
    ],
)
def test_a_bad_override_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("GROUNDWIRE_QUOTA_OVERRIDES", value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "GROUNDWIRE_QUOTA_OVERRIDES:" in str(error.value)
    assert message in str(error.value)


def test_a_default_limit_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUNDWIRE_QUOTA_LLM_TOKENS_PER_MINUTE", "0")
    with pytest.raises(SettingsError, match="GROUNDWIRE_QUOTA_LLM_TOKENS_PER_MINUTE"):
        load_settings()
