"""The checks ``groundwire serve`` runs before its slow start, on a real Edge store's lock, real
sockets and a real catalog file (the refusals themselves: tests/e2e/test_start_checks.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from groundwire.clients.vector_store import edge
from groundwire.server import start_checks
from groundwire.server.settings import load_settings
from groundwire.server.start_checks import (
    EXIT_CANNOT_START,
    EXIT_CONFIGURATION,
    catalog_key_variables,
    check_before_start,
    edge_owner,
    port_taken,
)


def test_the_lock_file_is_the_stores_own() -> None:
    assert start_checks.LOCK_FILE == edge.LOCK_FILE


async def test_the_edge_owner_is_named_and_the_probe_holds_nothing(tmp_path: Path) -> None:
    assert edge_owner(tmp_path / "never-opened") is None

    store = edge.EdgeVectorStore(tmp_path)
    owner = edge_owner(tmp_path)
    await store.close()

    assert owner is not None and f"is owned by another process (pid {os.getpid()})" in owner
    assert edge_owner(tmp_path) is None
    # The probe let go of the lock: a store opens it as if nobody had looked.
    again = edge.EdgeVectorStore(tmp_path)
    await again.close()


def test_a_port_in_use_is_refused_and_a_free_one_is_not() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refusal = port_taken(f"127.0.0.1:{port}")
        assert refusal is not None and refusal.exit_code == EXIT_CANNOT_START
        assert refusal.message.startswith(f"GROUNDWIRE_LISTEN: 127.0.0.1:{port} is in use")
    assert port_taken(f"127.0.0.1:{port}") is None  # closed again (port reuse aside)
    assert port_taken("127.0.0.1:0") is None
    assert port_taken("no-such-host.invalid:50051") is None  # the server's bind says why


def test_the_catalogs_key_variables_are_listed_whether_set_or_not(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[models.gpt-4o]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "HOUSE_KEY"\n',
        encoding="utf-8",
    )

    assert catalog_key_variables(
        load_settings(read_environment=False, llm_catalog=catalog)
    ) == frozenset({"HOUSE_KEY"})
    assert catalog_key_variables(load_settings(read_environment=False)) == frozenset()


@pytest.mark.parametrize("content", ["[models.x\n", "surprise = 1\n"])
def test_a_bad_catalog_is_a_configuration_error(tmp_path: Path, content: str) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(content, encoding="utf-8")
    settings = load_settings(
        read_environment=False, llm_catalog=catalog, data_dir=tmp_path, listen="127.0.0.1:0"
    )

    refusal = check_before_start(settings)

    assert refusal is not None and refusal.exit_code == EXIT_CONFIGURATION
    assert refusal.message.startswith("GROUNDWIRE_LLM_CATALOG: ")
    assert catalog_key_variables(settings) == frozenset()


def test_nothing_to_refuse_on_a_fresh_data_directory(tmp_path: Path) -> None:
    settings = load_settings(read_environment=False, data_dir=tmp_path, listen="127.0.0.1:0")

    assert check_before_start(settings) is None
