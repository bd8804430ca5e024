"""One contract scenario, three languages: the Python, Go and TypeScript SDKs each run the same
steps against one live groundwire server (embedded defaults, the scripted upstream, or any
OpenAI-compatible one named by ``GROUNDWIRE_TEST_LLM_BASE_URL``: see ``tests.e2e.live``; the
checks that need scripting then skip, each scenario saying why).

The steps (see each SDK's scenario): health and capabilities; ingest three documents; retrieve
the expected one first; stream a generated answer (start, deltas, citations, end with usage
and cost); cancel a stream midway; read a bad request's typed error; read the correlation id
back. Each prints ``GENERATE_STREAM_MS language=… p50=…``: the time per stream at concurrency
1, the same server for all three.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live import REPO, LiveStack
from tests.e2e.sdk_scenario import probe_upstream, run_scenario

pytestmark = pytest.mark.sdk


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def _control(upstream_url: str, endpoint: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{upstream_url.removesuffix('/v1')}/_scripted/{endpoint}",
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200


def _timing(output: str, language: str) -> str:
    lines = [line for line in output.splitlines() if "GENERATE_STREAM_MS" in line]
    assert lines, f"the {language} scenario printed no timing line:\n{output[-3000:]}"
    print(lines[-1])
    return lines[-1]


def test_python_sdk_scenario(stack: LiveStack) -> None:
    env = stack.env("python")
    p50 = run_scenario(
        env["GROUNDWIRE_TEST_ADDRESS"],
        env["GROUNDWIRE_TEST_API_KEY"],
        env.get("GROUNDWIRE_TEST_UPSTREAM"),
    )
    assert p50 > 0


def test_go_sdk_scenario(stack: LiveStack) -> None:
    output = _run(["go", "test", "-count=1", "-v", "./..."], REPO / "sdks" / "go", stack.env("go"))
    assert "--- PASS: TestScenario" in output, output[-3000:]
    _timing(output, "go")


def test_typescript_sdk_scenario(stack: LiveStack) -> None:
    output = _run(["npm", "test"], REPO / "sdks" / "typescript", stack.env("typescript"))
    _timing(output, "typescript")


def test_python_sdk_scenario_without_the_control_endpoints(stack: LiveStack) -> None:
    """Against an upstream the scenario cannot script, the scripted checks skip and the rest
    runs. The scripted upstream plays such a model here: its default becomes a longer, paced
    answer (so that step 5 has something to cancel), and the scenario is not told its URL."""
    env = stack.env("python")
    upstream = probe_upstream(stack.upstream_url)
    assert upstream.scripted, upstream.unscripted
    model_like = {"tokens": [f" word{i}" for i in range(60)], "inter_token_s": 0.005}
    _control(
        stack.upstream_url, "script", {"model": None, "scripts": [model_like], "default": True}
    )
    try:
        p50 = run_scenario(env["GROUNDWIRE_TEST_ADDRESS"], env["GROUNDWIRE_TEST_API_KEY"], None)
    finally:
        _control(stack.upstream_url, "reset", {})
    assert p50 > 0
    assert not probe_upstream(None).scripted
