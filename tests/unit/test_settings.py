"""Settings are validated at start, and errors name the variable."""

from __future__ import annotations

import pytest

from groundwire.server.settings import SettingsError, hash_api_key, load_settings


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings()
    assert settings.vector_store.value == "edge"
    assert settings.embedder.value == "local"
    assert settings.redis_url is None
    assert settings.auth_mode.value == "off"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("GROUNDWIRE_MAX_TOP_K", "many", "GROUNDWIRE_MAX_TOP_K"),
        ("GROUNDWIRE_LISTEN", "50051", "GROUNDWIRE_LISTEN"),
        ("GROUNDWIRE_VECTOR_STORE", "pinecone", "GROUNDWIRE_VECTOR_STORE"),
        ("GROUNDWIRE_LOG_LEVEL", "LOUD", "GROUNDWIRE_LOG_LEVEL"),
        ("GROUNDWIRE_API_KEYS", '{"t": "short"}', "GROUNDWIRE_API_KEYS"),
        ("GROUNDWIRE_API_KEYS", "not json", "GROUNDWIRE_API_KEYS"),
        ("GROUNDWIRE_CHUNK_OVERLAP_TOKENS", "500", "GROUNDWIRE_CHUNK_OVERLAP_TOKENS"),
        ("GROUNDWIRE_AUTH_MODE", "api_key", "GROUNDWIRE_API_KEYS"),
        ("GROUNDWIRE_VECTOR_STORE", "qdrant", "GROUNDWIRE_QDRANT_URL"),
        ("GROUNDWIRE_EMBEDDER", "openai", "GROUNDWIRE_EMBEDDINGS_BASE_URL"),
    ],
)
def test_a_bad_variable_is_named_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert named in str(caught.value)


def test_api_keys_are_kept_only_as_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = "a-very-secret-key-123"
    hashed = hash_api_key("another-secret-key-456")
    monkeypatch.setenv("GROUNDWIRE_AUTH_MODE", "api_key")
    monkeypatch.setenv("GROUNDWIRE_API_KEYS", f'{{"a": "{plain}", "b": ["{hashed}"]}}')
    settings = load_settings()
    assert settings.api_keys == {"a": [hash_api_key(plain)], "b": [hashed]}
    assert plain not in repr(settings)
