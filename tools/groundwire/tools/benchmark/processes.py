"""The benchmark's child processes (the scripted upstream, ``groundwire serve``) and their CPU
time.

Each child runs in its own session with its output in a log file, so a Ctrl-C in the terminal
reaches only the benchmark, which then stops its children in order; they are stopped on the
way out whatever happens (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_TIMEOUT_S = 120.0


@dataclass
class Child:
    """A subprocess of the benchmark and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id (the CPU probe reads ``/proc/<pid>``)."""
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        """The last lines of its output."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise RuntimeError, with its last output, when the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with status {code}:\n{self.tail()}")


@contextlib.contextmanager
def child_process(
    name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> Iterator[Child]:
    """Run ``argv`` for the block, output to ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    log_file: IO[bytes] = log_path.open("wb")
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield Child(name, process, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log_file.close()


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without any ``GROUNDWIRE_*`` variable (a child is configured by the
    benchmark alone, so runs compare), offline, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWIRE_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def serve_argv() -> list[str]:
    """``groundwire serve`` with this interpreter."""
    return [sys.executable, "-m", "groundwire.server.cli", "serve"]


async def wait_until_serving(child: Child, address: str) -> None:
    """Poll the gRPC health check until the server says SERVING."""
    deadline = time.monotonic() + START_TIMEOUT_S
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            child.check_alive()
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not become SERVING:\n{child.tail()}")
            await asyncio.sleep(0.2)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after ``pid (comm)`` (field 3 is ``[0]``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all threads (Linux ``/proc``; NaN
    elsewhere or when it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_s(roots: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each root's whole process tree: every live descendant's user + system
    time, plus what the processes of the tree have reaped of their exited children (a
    server's worker processes count, whether they still run or not). NaN for a root that is
    gone."""
    parents: dict[int, int] = {}
    own: dict[int, float] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        entries = []
    for entry in entries:
        fields = _stat_fields(entry)
        if fields is None:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        own[pid] = sum(int(f) for f in fields[11:15]) / _CLOCK_TICKS  # utime..cstime
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    totals: dict[int, float] = {}
    for root in roots:
        if root not in own:
            totals[root] = math.nan
            continue
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            total += own.get(pid, 0.0)
            stack.extend(children.get(pid, ()))
        totals[root] = total
    return totals


@dataclass(frozen=True)
class CpuProbe:
    """CPU seconds used so far by this process (``bench``: the Python load generator and
    the direct baselines it runs) and by each named child's whole process tree (a server's
    worker processes included)."""

    pids: Mapping[str, int]

    def __call__(self) -> dict[str, float]:
        trees = tree_cpu_s(list(self.pids.values()))
        sample = {name: trees[pid] for name, pid in self.pids.items()}
        sample["bench"] = time.process_time()
        return sample
