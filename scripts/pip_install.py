"""``pip install`` that keeps talking when its output is not a terminal (CI logs, ``make run``
piped to a file): pip's own lines, and a line every few seconds while it is quiet.

pip draws its progress bars only on a terminal; elsewhere a download of torch is one line and
then minutes of silence, and ``pip -q`` was silent throughout. Here pip runs with
``--progress-bar off`` and its lines pass through (the run of "Requirement already
satisfied" lines of an up-to-date environment is counted, not printed); whenever pip has said
nothing for ``HEARTBEAT_S``, a line says how long it has been working and on what. On a
terminal pip runs as it is, bars and all.

Usage: ``python scripts/pip_install.py <pip install arguments>`` (with the interpreter of
the environment to install into). The exit status is pip's.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

HEARTBEAT_S = 5.0
_SATISFIED = "Requirement already satisfied"


def main(arguments: list[str]) -> int:
    """Run ``pip install arguments``; return pip's exit status."""
    command = [sys.executable, "-m", "pip", "install", *arguments]
    if sys.stdout.isatty():
        return subprocess.call(command)
    process = subprocess.Popen(
        [*command, "--progress-bar", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    started = time.monotonic()
    doing = "starting"
    satisfied = 0
    while True:
        try:
            line = lines.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            elapsed = time.monotonic() - started
            say(f"pip: still working ({elapsed:.0f} s so far): {doing}")
            continue
        if line is None:
            break
        if line.lstrip().startswith(_SATISFIED):
            satisfied += 1
            continue
        if line.strip():
            doing = line.strip()
        say(line)
    code = process.wait()
    if satisfied:
        say(f"pip: {satisfied} requirements were already satisfied")
    say(f"pip: finished in {time.monotonic() - started:.0f} s (exit status {code})")
    return code


def say(line: str) -> None:
    """One line on stdout, at once."""
    print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
