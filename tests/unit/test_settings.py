"""Settings are validated at start, errors name the variable, and a GROUNDWIRE_ variable that
nothing reads is reported with the closest setting."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from groundwire.server.settings import (
    SettingsError,
    hash_api_key,
    load_settings,
    unknown_variables,
)


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


# ---- GROUNDWIRE_ variables nothing reads ----------------------------------------------------


def test_a_misspelt_variable_is_reported_with_the_closest_setting() -> None:
    environ = {
        "GROUNDWIRE_EMBEDER": "none",
        "GROUNDWIRE_WORKER": "2",
        "GROUNDWIRE_LOGLEVEL": "DEBUG",
        "GROUNDWIRE_ADRESS": "host:1",
        "GROUNDWIRE_COLOUR": "blue",
    }

    assert [(v.name, v.closest) for v in unknown_variables(environ)] == [
        ("GROUNDWIRE_ADRESS", "GROUNDWIRE_ADDRESS"),  # the command line's settings count
        ("GROUNDWIRE_COLOUR", None),
        ("GROUNDWIRE_EMBEDER", "GROUNDWIRE_EMBEDDER"),
        ("GROUNDWIRE_LOGLEVEL", "GROUNDWIRE_LOG_LEVEL"),
        ("GROUNDWIRE_WORKER", "GROUNDWIRE_WORKERS"),
    ]
    assert str(unknown_variables({"GROUNDWIRE_EMBEDER": "x"})[0]) == (
        "GROUNDWIRE_EMBEDER is not a groundwire setting and is ignored "
        "(did you mean GROUNDWIRE_EMBEDDER?)"
    )


def test_names_something_reads_are_not_reported() -> None:
    environ = {
        "GROUNDWIRE_EMBEDDER": "none",  # a setting
        "groundwire_log_level": "DEBUG",  # settings are read without case
        "GROUNDWIRE_API_KEY": "k",  # the command line's
        "GROUNDWIRE_TARGET": "remote",  # compose.yaml's
        "GROUNDWIRE_TEST_UPSTREAM": "http://x",  # a test harness's
        "GROUNDWIRE_HOUSE_KEY": "k",  # named by the catalog
        "PATH": "/bin",
    }

    assert unknown_variables(environ, also_known=["GROUNDWIRE_HOUSE_KEY"]) == []
    assert [v.name for v in unknown_variables(environ)] == ["GROUNDWIRE_HOUSE_KEY"]


# Where code reads a variable: os.environ / getenv (Python, Go), process.env (TypeScript),
# ${NAME} (shell, compose, Makefile).
_READS = re.compile(
    r"""(?:environ(?:\.get)?\s*[\[(]\s*|getenv\(\s*|Getenv\(\s*|process\.env\[\s*|\$\{)"""
    r"""["']?(GROUNDWIRE_[A-Z0-9_]+)"""
)
_SOURCES = ("server", "sdks", "tools", "testing", "tests", "scripts", "deploy", "bench")
_SUFFIXES = {".py", ".go", ".ts", ".sh", ".yaml", ".yml", ".toml"}
_SKIPPED = {"node_modules", "__pycache__", "dist", "gen", "build"}


def test_every_variable_the_repository_reads_is_known() -> None:
    root = Path(__file__).resolve().parents[2]
    files = [root / "compose.yaml", root / "Makefile", root / "Dockerfile"]
    for top in _SOURCES:
        for directory, subdirectories, names in os.walk(root / top):
            subdirectories[:] = [d for d in subdirectories if d not in _SKIPPED]
            files += [Path(directory, n) for n in names if Path(n).suffix in _SUFFIXES]
    read = {
        name
        for path in files
        if path.is_file()
        for name in _READS.findall(path.read_text(encoding="utf-8", errors="replace"))
    }

    assert "GROUNDWIRE_TARGET" in read and "GROUNDWIRE_TEST_UPSTREAM" in read  # the scan works
    assert unknown_variables(dict.fromkeys(read, "")) == []
