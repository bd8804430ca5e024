"""The scripted OpenAI-compatible upstream as a child process, scripted over its HTTP control
endpoints: the Go one (``loadgen upstream``, the default: at a thousand streams of 64 tokens
5 ms apart the Python one cannot keep pace, and its lag would be charged to whoever calls it)
or the Python one (``python -m groundwire.testing.scripted_llm``). Both speak the same
protocol and the same control endpoints."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundwire.testing.redis_process import free_port
from groundwire.tools.benchmark.processes import START_TIMEOUT_S, Child, child_env, child_process


@dataclass(frozen=True)
class UpstreamScript:
    """How every completion streams: ``tokens`` pieces, the first after ``ttft_s``, then one
    every ``itl_s``; every ``fail_every``-th request (0: none) answers HTTP ``fail_status``
    instead (after ``ttft_s``)."""

    tokens: int
    ttft_s: float
    itl_s: float
    fail_every: int = 0
    fail_status: int = 500

    def ok(self) -> dict[str, Any]:
        """The scripted answer (the scripted upstream's ``Script`` as JSON)."""
        return {
            "tokens": [f" w{i}" for i in range(self.tokens)],
            "ttft_s": self.ttft_s,
            "inter_token_s": self.itl_s,
        }

    def failure(self) -> dict[str, Any]:
        """The scripted error response."""
        return {"status": self.fail_status, "ttft_s": self.ttft_s}

    def queue(self, calls: int) -> list[dict[str, Any]]:
        """Scripts for the next ``calls`` requests: every ``fail_every``-th one fails (empty
        when none does: the default answers them all)."""
        if self.fail_every <= 0:
            return []
        return [
            self.failure() if (i + 1) % self.fail_every == 0 else self.ok() for i in range(calls)
        ]

    @property
    def answer_s(self) -> float:
        """How long one answer takes upstream, without load."""
        return self.ttft_s + self.itl_s * max(self.tokens - 1, 0)


class ScriptedUpstream:
    """Control of a running scripted upstream; ``base_url`` is what OpenAI clients use."""

    def __init__(self, base_url: str, child: Child) -> None:
        self.base_url = base_url
        self.child = child
        self._root = base_url.removesuffix("/v1")

    def _post(self, path: str, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self._root}/_scripted/{path}",
            data=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"scripted upstream {path}: HTTP {response.status}")

    def prepare(self, script: UpstreamScript, calls: int = 0) -> None:
        """Forget earlier requests and scripts; answer as ``script`` says, with failures
        queued for the next ``calls`` requests."""
        self._post("reset", {})
        self._post("script", {"model": None, "scripts": [script.ok()], "default": True})
        queued = script.queue(calls)
        if queued:
            self._post("script", {"model": None, "scripts": queued, "default": False})

    def stream_forever(self, itl_s: float) -> None:
        """Answers long enough to be cancelled midway (2,000 tokens, ``itl_s`` apart)."""
        self._post("reset", {})
        script = {"tokens": [f" w{i}" for i in range(2000)], "inter_token_s": itl_s}
        self._post("script", {"model": None, "scripts": [script], "default": True})

    def requests(self) -> list[dict[str, Any]]:
        """What the upstream recorded since the last reset (``GET /_scripted/requests``)."""
        with urllib.request.urlopen(f"{self._root}/_scripted/requests", timeout=10) as response:
            records: list[dict[str, Any]] = json.loads(response.read())
            return records

    def wait_until_up(self) -> None:
        """Poll the control endpoint until the upstream answers."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self.child.check_alive()
            try:
                self._post("reset", {})
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"upstream did not start:\n{self.child.tail()}") from None
                time.sleep(0.1)


UPSTREAMS = ("go", "python")


@contextlib.contextmanager
def scripted_upstream(log_dir: Path, kind: str = "python") -> Iterator[ScriptedUpstream]:
    """A scripted upstream (``kind``: one of ``UPSTREAMS``) on a free loopback port for the
    block."""
    port = free_port()
    if kind == "go":
        from groundwire.tools.benchmark.go_loadgen import upstream_argv

        argv = upstream_argv(port)
    else:
        argv = [
            sys.executable,
            "-m",
            "groundwire.testing.scripted_llm",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    with child_process("upstream", argv, child_env({}), log_dir) as child:
        upstream = ScriptedUpstream(f"http://127.0.0.1:{port}/v1", child)
        upstream.wait_until_up()
        yield upstream
