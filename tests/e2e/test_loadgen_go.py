"""The Go load generator's own tests (``bench/loadgen``: its SSE reader, the Go scripted
upstream against the direct client, the slice runner), run like the Go SDK's: ``go vet`` and
``go test`` in the module."""

from __future__ import annotations

import subprocess

from tests.e2e.live import REPO

LOADGEN = REPO / "bench" / "loadgen"


def test_go_load_generator_unit_tests() -> None:
    for argv in (["go", "vet", "./..."], ["go", "test", "-count=1", "./..."]):
        result = subprocess.run(
            argv, cwd=LOADGEN, capture_output=True, text=True, timeout=600, check=False
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{' '.join(argv)}:\n{output[-6000:]}"
