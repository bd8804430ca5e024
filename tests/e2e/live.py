"""A live groundwire stack for the SDK scenarios: the scripted OpenAI-compatible upstream and
a real ``groundwire serve`` (embedded defaults: Qdrant Edge, the local MiniLM; API keys for
one tenant per SDK language), each its own process on a free loopback port.

With ``GROUNDWIRE_TEST_LLM_BASE_URL`` set, the server uses that OpenAI-compatible upstream
instead of starting the scripted one (``GROUNDWIRE_TEST_LLM_API_KEY`` its key,
``GROUNDWIRE_TEST_LLM_CATALOG`` a model catalog naming models it serves, as
``GROUNDWIRE_LLM_CATALOG`` does); the scenarios then skip the checks that need scripting.

Run it alone to develop an SDK against it::

    .venv/bin/python -m tests.e2e.live      # prints the GROUNDWIRE_TEST_* variables, then waits
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from groundwire.testing.redis_process import free_port
from groundwire.tools.benchmark.processes import (
    child_env,
    child_process,
    serve_argv,
    wait_until_serving,
)
from groundwire.tools.benchmark.upstream import scripted_upstream

REPO = Path(__file__).resolve().parents[2]
# One tenant per language, so the scenarios never see each other's documents.
API_KEYS = {
    "python": "sdk-python-key-0123456789",
    "go": "sdk-go-key-0123456789abc",
    "typescript": "sdk-ts-key-0123456789abc",
}


@dataclass(frozen=True)
class LiveStack:
    """Where the stack listens."""

    address: str
    upstream_url: str

    def env(self, language: str) -> dict[str, str]:
        """The variables an SDK's scenario reads."""
        return {
            "GROUNDWIRE_TEST_ADDRESS": self.address,
            "GROUNDWIRE_TEST_API_KEY": API_KEYS[language],
            "GROUNDWIRE_TEST_UPSTREAM": self.upstream_url,
        }


@contextlib.contextmanager
def live_stack(work: Path) -> Iterator[LiveStack]:
    """Start the upstream (unless ``GROUNDWIRE_TEST_LLM_BASE_URL`` names one) and the server
    (the benchmark's child processes, logs in ``work``); stop both on the way out."""
    address = f"127.0.0.1:{free_port()}"
    with contextlib.ExitStack() as running:
        llm = _given_upstream()
        if not llm:
            llm = {
                "GROUNDWIRE_LLM_BASE_URL": running.enter_context(scripted_upstream(work)).base_url
            }
        env = child_env(
            {
                "GROUNDWIRE_LISTEN": address,
                "GROUNDWIRE_DATA_DIR": str(work / "data"),
                "GROUNDWIRE_METRICS_PORT": "0",
                "GROUNDWIRE_AUTH_MODE": "api_key",
                "GROUNDWIRE_API_KEYS": json.dumps(API_KEYS),
                "GROUNDWIRE_GRACE_PERIOD_S": "2",
                "GROUNDWIRE_LOG_LEVEL": "WARNING",
                **llm,
            }
        )
        server = running.enter_context(child_process("server", serve_argv(), env, work))
        asyncio.run(wait_until_serving(server, address))
        yield LiveStack(address, llm["GROUNDWIRE_LLM_BASE_URL"])


def _given_upstream() -> dict[str, str]:
    """The server's LLM settings from ``GROUNDWIRE_TEST_LLM_*``; empty when none is given."""
    given = {
        "GROUNDWIRE_LLM_BASE_URL": os.environ.get("GROUNDWIRE_TEST_LLM_BASE_URL", ""),
        "GROUNDWIRE_LLM_API_KEY": os.environ.get("GROUNDWIRE_TEST_LLM_API_KEY", ""),
        "GROUNDWIRE_LLM_CATALOG": os.environ.get("GROUNDWIRE_TEST_LLM_CATALOG", ""),
    }
    if not given["GROUNDWIRE_LLM_BASE_URL"]:
        return {}
    return {name: value for name, value in given.items() if value}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gw-live-") as work, live_stack(Path(work)) as stack:
        for language in API_KEYS:
            print(f"# {language}")
            for key, value in stack.env(language).items():
                print(f"export {key}={value}")
        print("# serving; Ctrl-C or SIGTERM stops the stack", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
