"""One contract scenario, three languages: the Python, Go and TypeScript SDKs each run the same
steps against one live groundwire server (embedded defaults, the scripted upstream).

The steps (see each SDK's scenario): health and capabilities; ingest three documents; retrieve
the expected one first; stream a generated answer (start, deltas, citations, end with usage
and cost); cancel a stream midway; read a bad request's typed error; read the correlation id
back. Each prints ``GENERATE_STREAM_MS language=… p50=…``: the time per stream at concurrency
1, the same server for all three.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.live import REPO, LiveStack
from tests.e2e.sdk_scenario import run_scenario

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
        env["GROUNDWIRE_TEST_UPSTREAM"],
    )
    assert p50 > 0


def test_go_sdk_scenario(stack: LiveStack) -> None:
    output = _run(["go", "test", "-count=1", "-v", "./..."], REPO / "sdks" / "go", stack.env("go"))
    assert "--- PASS: TestScenario" in output, output[-3000:]
    _timing(output, "go")


def test_typescript_sdk_scenario(stack: LiveStack) -> None:
    output = _run(["npm", "test"], REPO / "sdks" / "typescript", stack.env("typescript"))
    _timing(output, "typescript")
