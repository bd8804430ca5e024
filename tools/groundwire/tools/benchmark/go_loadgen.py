"""The Go load generator (``bench/loadgen``): built from the checkout into ``.tools/bin``, and
driven slice by slice over its standard input.

At hundreds of concurrent streams a Python load generator (one event loop parsing every frame
of every stream) is slower than the server it measures, so Generate's calls are made by a Go
program instead: ``ours`` through the project's Go SDK, ``direct`` by a plain Go SSE client
POSTing the very request our server sends upstream. The same program is the Go scripted
upstream (``loadgen upstream``). Its binary is rebuilt when any source it is built from (its
own, the Go SDK's) changes; the digest of those sources is kept beside it.

The driver protocol: one JSON command a line in (a slice: variant, address, calls,
concurrency, deadline, stagger); out, a ``measured`` line as soon as the slice ends (wall
time, the Go process's own CPU), then one line per call, then ``done``. The calls are written
after the slice, so writing them costs no CPU while it is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format

from groundwire.tools.benchmark.load import ERROR_SAMPLES, REFUSED, CpuSample, Slice
from groundwire.tools.benchmark.streams import (
    CALL_TIMEOUT_S,
    StreamTiming,
    generate_request,
)

REPO = Path(__file__).resolve().parents[4]
SOURCE = REPO / "bench" / "loadgen"
SDK = REPO / "sdks" / "go"
BINARY = REPO / ".tools" / "bin" / "loadgen"
BUILD_TIMEOUT_S = 600.0
# gRPC connections per server at a level: at most this many, one per stream below it. Many
# callers open many connections; a server whose workers share one port (SO_REUSEPORT) is
# balanced per connection, so a handful would load its workers unevenly.
MAX_CONNECTIONS = 64


class LoadgenUnavailable(RuntimeError):
    """The Go load generator cannot be built here (no checkout, no Go toolchain)."""


def unavailable_reason() -> str | None:
    """Why the Go load generator cannot be used here, or None when it can."""
    if not (SOURCE / "go.mod").is_file():
        return f"no Go load generator sources at {SOURCE} (run from a source checkout)"
    if shutil.which("go") is None:
        return "no Go toolchain on PATH (https://go.dev/dl/)"
    return None


def _sources() -> list[Path]:
    found = [SOURCE / "go.mod", SOURCE / "go.sum", SDK / "go.mod", SDK / "go.sum"]
    for root in (SOURCE, SDK / "groundwire", SDK / "gen"):
        found += [p for p in root.rglob("*.go") if not p.name.endswith("_test.go")]
    return sorted(p for p in found if p.is_file())


def source_digest() -> str:
    """SHA-256 over the paths and contents of every file the binary is built from."""
    digest = hashlib.sha256()
    for path in _sources():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_binary() -> Path:
    """The load generator's binary, built first when missing or older than its sources."""
    reason = unavailable_reason()
    if reason is not None:
        raise LoadgenUnavailable(reason)
    digest = source_digest()
    stamp = BINARY.with_name(BINARY.name + ".sha256")
    if BINARY.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return BINARY
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final place and renamed, so a concurrent run never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=".loadgen-", dir=BINARY.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            ["go", "build", "-trimpath", "-o", tmp, "."],
            cwd=SOURCE,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise LoadgenUnavailable(f"go build in {SOURCE} failed:\n{result.stderr[-3000:]}")
        os.replace(tmp, BINARY)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    stamp.write_text(digest + "\n")
    return BINARY


def timing_from(line: Mapping[str, Any]) -> StreamTiming:
    """A successful call's JSON line as the Python side's StreamTiming."""
    return StreamTiming(
        ttft_s=float(line["ttft_s"]),
        last_text_s=float(line["last_text_s"]),
        total_s=float(line["total_s"]),
        tokens=int(line["tokens"]),
        frames=int(line["frames"]),
        text_frames=int(line["text_frames"]),
        gaps_s=tuple(g / 1e6 for g in line.get("gaps_us") or ()),
        route=str(line.get("route") or ""),
        server={k: float(v) for k, v in (line.get("server") or {}).items()},
    )


def _record(out: Slice[StreamTiming], line: Mapping[str, Any]) -> None:
    index = int(line["i"])
    outcome = line["outcome"]
    if outcome == "ok":
        out.results[index] = timing_from(line)
        return
    kind = str(line.get("kind") or "error")
    if outcome == "refused":
        kind = REFUSED + kind
        out.refusal_s.append(float(line["total_s"]))
    out.errors[kind] += 1
    if len(out.error_samples) < ERROR_SAMPLES:
        out.error_samples.append(f"{kind}: {line.get('detail', '')}"[:300])


class GoDriver:
    """A running ``loadgen drive``: one slice at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._next_id = 0

    @property
    def pid(self) -> int:
        """The process id (its CPU is probed like every other process's)."""
        return self._process.pid

    async def _line(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        raw = await self._process.stdout.readline()
        if not raw:
            code = await self._process.wait()
            raise RuntimeError(f"the Go load generator exited with status {code} (see its log)")
        line: dict[str, Any] = json.loads(raw)
        return line

    async def slice(
        self,
        variant: str,
        address: str,
        count: int,
        concurrency: int,
        *,
        deadline_s: float,
        expect_tokens: int,
        stagger_s: float = 0.0,
        cpu: CpuSample | None = None,
        on_done: Callable[[], None] | None = None,
        quiet: bool = False,
    ) -> Slice[StreamTiming]:
        """Run one slice of ``variant`` (``direct``: ``address`` is the upstream's base URL;
        else a server's host:port) as the Python ``run_slice`` would, CPU sampled around
        it. The Go process's own CPU is what it measured itself during the slice."""
        assert self._process.stdin is not None
        self._next_id += 1
        command = {
            "id": self._next_id,
            "variant": variant,
            "address": address,
            "calls": count,
            "concurrency": concurrency,
            "deadline_s": deadline_s,
            "stagger_s": stagger_s,
            "expect_tokens": expect_tokens,
            "timeout_s": CALL_TIMEOUT_S,
            "connections": min(concurrency, MAX_CONNECTIONS),
            "quiet": quiet,
        }
        out: Slice[StreamTiming] = Slice(results=[None] * count)
        before = dict(cpu()) if cpu is not None else {}
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()
        while True:
            line = await self._line()
            if line.get("error"):
                raise RuntimeError(f"the Go load generator refused a slice: {line['error']}")
            if line.get("measured"):
                if cpu is not None:
                    after = cpu()
                    out.cpu_s = {name: after[name] - value for name, value in before.items()}
                    out.cpu_s["loadgen"] = float(line["cpu_s"])
                out.started = int(line["started"])
                out.wall_s = float(line["wall_s"])
            elif line.get("done"):
                return out
            else:
                _record(out, line)
                if on_done is not None:
                    on_done()


@contextlib.asynccontextmanager
async def go_driver(work: Path, body: Mapping[str, Any]) -> AsyncIterator[GoDriver]:
    """``loadgen drive`` for the block, with the Generate request and the direct baseline's
    upstream request ``body`` written to ``work``; its diagnostics go to
    ``work/loadgen.log``."""
    binary = await asyncio.to_thread(ensure_binary)
    request_path = work / "generate_request.json"
    request_path.write_text(json_format.MessageToJson(generate_request()), encoding="utf-8")
    body_path = work / "upstream_request.json"
    body_path.write_text(json.dumps(body), encoding="utf-8")
    log: IO[bytes] = (work / "loadgen.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "drive",
        "-request",
        str(request_path),
        "-body",
        str(body_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        start_new_session=True,
        limit=16 * 1024 * 1024,
    )
    try:
        yield GoDriver(process)
    finally:
        if process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


def upstream_argv(port: int) -> list[str]:
    """The Go scripted upstream on 127.0.0.1:``port`` (scripted over its control endpoints,
    like the Python one)."""
    return [str(ensure_binary()), "upstream", "-host", "127.0.0.1", "-port", str(port)]


def main() -> int:
    """Build the binary (``make`` runs this): its path, or why it cannot be built."""
    started = time.perf_counter()
    try:
        path = ensure_binary()
    except LoadgenUnavailable as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    path.touch()  # up to date: newer than its sources, for make
    print(f"{path} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
