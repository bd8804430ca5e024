"""``groundwire serve`` refuses a bad start before its slow part, in its own words and with its
exit status: a bad setting or catalog (2), an Edge store or a port another process holds (3);
and it warns once about a ``GROUNDWIRE_`` variable nothing reads, naming the closest setting.

Each server is a real ``groundwire serve`` process with its output in a file; the store's
owner is a real Edge store opened by this test process (the same lock a server takes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.clients.vector_store.edge_pointer import live_dir
from tests.e2e.serving import start_serve, wait_serving
from tests.redis_server import free_port

START_TIMEOUT_S = 120


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GROUNDWIRE_")}
    env.update(
        {
            "GROUNDWIRE_LISTEN": f"127.0.0.1:{free_port()}",
            "GROUNDWIRE_EMBEDDER": "none",
            "GROUNDWIRE_DATA_DIR": str(tmp / "data"),
            "GROUNDWIRE_METRICS_PORT": "0",
            "GROUNDWIRE_WORKERS": "1",
            **extra,
        }
    )
    return env


def _refused(env: dict[str, str], log_path: Path) -> tuple[int, str]:
    """Run a server that should refuse to start: its exit status and output."""
    process = start_serve(env, log_path)
    try:
        code = process.wait(timeout=START_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, log_path.read_text(encoding="utf-8", errors="replace")


def _log_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture
def held_store(tmp_path: Path) -> Iterator[Path]:
    """The data directory of an Edge store this process owns (as a running server would)."""
    data = tmp_path / "data"
    store = EdgeVectorStore(live_dir(data / "edge"))
    try:
        yield data
    finally:
        asyncio.run(store.close())


def test_a_bad_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = _env(tmp_path, GROUNDWIRE_CHUNK_TOKENS="200", GROUNDWIRE_CHUNK_OVERLAP_TOKENS="300")

    code, output = _refused(env, tmp_path / "server.log")

    assert code == 2
    assert output.startswith("invalid configuration:\n  ")
    assert "GROUNDWIRE_CHUNK_OVERLAP_TOKENS must be smaller than GROUNDWIRE_CHUNK_TOKENS" in output


def test_a_catalog_that_does_not_parse_exits_2_before_the_workers_start(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("[models.local\n", encoding="utf-8")
    env = _env(tmp_path, GROUNDWIRE_LLM_CATALOG=str(catalog), GROUNDWIRE_WORKERS="2")

    code, output = _refused(env, tmp_path / "server.log")

    assert code == 2
    assert (
        f"groundwire: cannot start: GROUNDWIRE_LLM_CATALOG: cannot read the catalog {catalog}"
        in (output)
    )
    assert not any(line.get("message") == "workers started" for line in _log_lines(output))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_store_another_process_owns_exits_3_naming_its_pid(
    tmp_path: Path, held_store: Path, workers: str
) -> None:
    env = _env(tmp_path, GROUNDWIRE_DATA_DIR=str(held_store), GROUNDWIRE_WORKERS=workers)

    code, output = _refused(env, tmp_path / "server.log")

    assert code == 3
    assert (
        f"groundwire: cannot start: the Edge store at {held_store / 'edge'} is owned by another "
        f"process (pid {os.getpid()}); only one may own an Edge shard." in output
    )
    # Said by the supervisor itself: no worker was forked to find it out.
    assert not any(line.get("message") == "workers started" for line in _log_lines(output))


def test_a_generation_only_process_does_not_look_at_the_store(
    tmp_path: Path, held_store: Path
) -> None:
    # It opens no store; here it stops at its next check (the port) instead.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        env = _env(
            tmp_path,
            GROUNDWIRE_DATA_DIR=str(held_store),
            GROUNDWIRE_SERVICES="generation",
            GROUNDWIRE_RETRIEVAL_URL="127.0.0.1:1",
            GROUNDWIRE_LISTEN=listen,
        )
        code, output = _refused(env, tmp_path / "server.log")

    assert code == 3
    assert "Edge store" not in output
    assert f"GROUNDWIRE_LISTEN: {listen} is in use by another process" in output


def test_a_port_another_process_listens_on_exits_3_even_with_workers(tmp_path: Path) -> None:
    # Workers bind with SO_REUSEPORT: without the check, they would share the port with
    # another server of the same user and serve beside it.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        env = _env(tmp_path, GROUNDWIRE_LISTEN=listen, GROUNDWIRE_WORKERS="2")

        code, output = _refused(env, tmp_path / "server.log")

    assert code == 3
    assert (
        f"groundwire: cannot start: GROUNDWIRE_LISTEN: {listen} is in use by another process"
        in output
    )


def test_an_unknown_variable_is_warned_about_once_with_the_closest_setting(
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[models.gpt-4o]\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_key_env = "GROUNDWIRE_HOUSE_KEY"\n',
        encoding="utf-8",
    )
    env = _env(
        tmp_path,
        GROUNDWIRE_WORKERS="2",
        GROUNDWIRE_EMBEDER="local",  # misspelt
        GROUNDWIRE_COLOUR="blue",  # like nothing
        GROUNDWIRE_HOUSE_KEY="catalog-key",  # the catalog's
        GROUNDWIRE_TEST_ANYTHING="1",  # a test harness's
        GROUNDWIRE_LLM_CATALOG=str(catalog),
    )
    log_path = tmp_path / "server.log"
    process = start_serve(env, log_path)
    try:
        asyncio.run(wait_serving(env["GROUNDWIRE_LISTEN"], process))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=START_TIMEOUT_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    warnings = [
        line
        for line in _log_lines(log_path.read_text(encoding="utf-8"))
        if line.get("logger") == "groundwire.server.start_checks"
    ]
    assert [(w["level"], w["message"]) for w in warnings] == [
        (
            "WARNING",
            "GROUNDWIRE_COLOUR is not a groundwire setting and is ignored",
        ),
        (
            "WARNING",
            "GROUNDWIRE_EMBEDER is not a groundwire setting and is ignored "
            "(did you mean GROUNDWIRE_EMBEDDER?)",
        ),
    ]


def test_a_client_command_warns_about_an_unknown_variable_too(tmp_path: Path) -> None:
    env = _env(tmp_path, GROUNDWIRE_ADRESS="127.0.0.1:1")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "groundwire.server.cli", "retrieve", "anything"),
            *("--address", f"127.0.0.1:{free_port()}", "--timeout", "2"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )

    assert result.returncode != 0  # nothing listens there
    warning = (
        "groundwire: warning: GROUNDWIRE_ADRESS is not a groundwire setting and is ignored "
        "(did you mean GROUNDWIRE_ADDRESS?)"
    )
    assert result.stderr.splitlines().count(warning) == 1
