"""``groundwire serve`` with several worker processes: one event loop per core.

One Python process is one event loop on one core. With ``GROUNDWIRE_WORKERS`` > 1 this
module's supervisor forks the workers before any gRPC server, channel or model exists (gRPC
must not be initialised across a fork; grpc's own multiprocessing example does the same),
and each worker binds the same port with SO_REUSEPORT, so the kernel spreads connections
over them.

- **Drain**: SIGTERM or SIGINT to the supervisor reaches every worker, each drains as a lone
  server does (GroundwireServer.stop, with the grace period), and the supervisor exits 0 once
  all have. A second signal kills them at once.
- **Failure**: a worker that exits on its own makes the supervisor stop the others and exit
  non-zero with the worker's status (an orchestrator restarts the pod). Workers die with the
  supervisor (PR_SET_PDEATHSIG): none outlives it.
- **Metrics**: prometheus_client's multiprocess mode. The supervisor sets
  PROMETHEUS_MULTIPROC_DIR (a private temporary directory) before anything imports
  prometheus_client, workers write their values there, and the supervisor alone serves
  GROUNDWIRE_METRICS_PORT, summing them (gauges by their ``multiprocess_mode``).
- **The Edge shard has one owner**: worker 0 opens the store and loads the embedder, and also
  listens on a private Unix socket; the others build neither and reach it through the
  ``groundwire.v1`` contract (:mod:`groundwire.server.roles`). Once they have all stopped the
  supervisor tells the owner (SIGUSR2), which then closes its socket.
- **Logs**: every line of a worker carries ``worker`` (its index).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from groundwire.clients.errors import GroundwireError
from groundwire.server.owner_path import owner_socket_path
from groundwire.server.settings import Settings, VectorStoreKind

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The supervisor's word to the shard's owner that every other worker has stopped.
PEERS_DONE = signal.SIGUSR2
GAUGE_REFRESH_S = 1.0


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker is: its index among ``count``, and where the Edge shard's owner
    listens (None: no owner, every worker has its own store client)."""

    index: int
    count: int
    owner_socket: Path | None = None

    @property
    def owner(self) -> bool:
        """Whether this worker owns the Edge shard (worker 0, when there is a shard)."""
        return self.owner_socket is not None and self.index == 0

    @property
    def peers_done_signal(self) -> signal.Signals | None:
        """The signal the owner waits for before closing its socket."""
        return PEERS_DONE if self.owner else None


def run_server(settings: Settings, plan: WorkerPlan | None = None) -> int:
    """Serve in this process until stopped; the exit status (a refusal to start is said in
    one line on stderr, without a traceback)."""
    from groundwire.server.event_loop import run
    from groundwire.server.pipeline.generation.catalog import CatalogError

    try:
        run(_serve(settings, plan), settings.event_loop)  # uvloop unless GROUNDWIRE_EVENT_LOOP
    except GroundwireError as exc:
        # A refusal to start (embedder mismatch, unreachable store): say why, no traceback.
        print(f"groundwire: cannot start: {exc.message}", file=sys.stderr)
        return 3
    except CatalogError as exc:
        print(f"groundwire: cannot start: GROUNDWIRE_LLM_CATALOG: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(settings: Settings, plan: WorkerPlan | None) -> None:
    from groundwire.clients import gauges
    from groundwire.server.app import serve

    if plan is None or not gauges.multiprocess():
        await serve(settings, plan)
        return

    async def refresh() -> None:
        while True:
            gauges.refresh()
            await asyncio.sleep(GAUGE_REFRESH_S)

    refresher = asyncio.create_task(refresh())
    try:
        await serve(settings, plan)
    finally:
        refresher.cancel()


class _WorkerField(logging.Filter):
    """Adds ``worker`` (the index) to every record, so JSON lines say which process wrote
    them."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel send SIGTERM (a drain) to this worker when the supervisor dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as exc:
        log.warning("workers may outlive the supervisor", extra={"why": str(exc)})
    if os.getppid() != parent_pid:
        os._exit(1)  # the supervisor died before the request took effect


def _worker_main(settings: Settings, plan: WorkerPlan, parent_pid: int) -> None:
    """A forked worker: its signals, its log field, then a server of its own."""
    _die_with_parent(parent_pid)
    # Until its loop handles them, a stop signal ends a starting worker at once, and a stray
    # PEERS_DONE is ignored; then unblock what the supervisor blocked around the fork.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(PEERS_DONE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(plan.index))
    sys.exit(run_server(settings, plan))


def listen_port(settings: Settings) -> int:
    """The port of GROUNDWIRE_LISTEN."""
    return int(settings.listen.rpartition(":")[2])


def supervise(settings: Settings) -> int:
    """Fork ``settings.workers`` workers, serve the summed metrics, and wait: the exit
    status is 0 after a requested stop, else the first failed worker's (at least 1)."""
    if listen_port(settings) == 0:
        print(
            "groundwire: cannot start: GROUNDWIRE_LISTEN has port 0, which makes no sense with "
            f"{settings.workers} workers (each would get a port of its own): name a port, "
            "or set GROUNDWIRE_WORKERS=1",
            file=sys.stderr,
        )
        return 2
    if "prometheus_client" in sys.modules:
        # Its metrics would already hold their values in this process's memory: the workers
        # would count into copies the endpoint never reads, and it would serve nothing.
        raise RuntimeError(
            "prometheus_client was imported before the worker supervisor set its "
            "multiprocess directory: keep it out of what `groundwire serve` loads first"
        )
    metrics_dir = Path(tempfile.mkdtemp(prefix="groundwire-metrics-"))
    # Before anything imports prometheus_client, in this process or a worker.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    socket_dir: Path | None = None
    owner_socket: Path | None = None
    if settings.vector_store is VectorStoreKind.EDGE and settings.serves_retrieval:
        owner_socket, socket_dir = owner_socket_path(settings.data_dir)
    try:
        return _Supervisor(settings, owner_socket, metrics_dir).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)


class _Supervisor:
    """The parent process: forks, forwards stop signals, watches, reaps."""

    def __init__(self, settings: Settings, owner_socket: Path | None, metrics_dir: Path) -> None:
        self.settings = settings
        self.owner_socket = owner_socket
        self.metrics_dir = metrics_dir
        self.workers: dict[int, BaseProcess] = {}
        self.stopping = False
        self.kill_at: float | None = None
        self.exit_code = 0
        self.peers_told = False
        self.signals: list[int] = []
        self.reaped: set[int] = set()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)

    def run(self) -> int:
        context = multiprocessing.get_context("fork")
        count = self.settings.workers
        # Blocked across the forks: a stop signal arriving meanwhile waits for the handlers
        # (here) or for the worker's own (there), never runs this process's in a child.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for index in range(count):
                plan = WorkerPlan(index, count, self.owner_socket)
                process = context.Process(
                    target=_worker_main,
                    args=(self.settings, plan, os.getpid()),
                    name=f"groundwire-worker-{index}",
                )
                process.start()
                self.workers[index] = process
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._on_signal)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        log.info(
            "workers started",
            extra={
                "workers": count,
                "pids": [p.pid for p in self.workers.values()],
                "owner_socket": str(self.owner_socket) if self.owner_socket else None,
            },
        )
        from groundwire.server.telemetry import start_metrics_endpoint

        try:
            start_metrics_endpoint(self.settings, self.metrics_dir)
        except OSError as exc:
            log.error("metrics endpoint failed; stopping the workers", extra={"err": str(exc)})
            self._stop(exit_code=2)
        self._watch()
        log.info("workers stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_write, b"\0")

    def _alive(self) -> dict[int, BaseProcess]:
        return {i: p for i, p in self.workers.items() if p.exitcode is None}

    def _stop(self, *, exit_code: int = 0) -> None:
        """SIGTERM every live worker (once), and arm the kill deadline."""
        if exit_code and not self.exit_code:
            self.exit_code = exit_code
        if self.stopping:
            return
        self.stopping = True
        # Each drains within the grace period; the owner may then serve its peers' calls
        # for one more. Past both (and a margin for start-up), they are killed.
        self.kill_at = time.monotonic() + 2 * self.settings.grace_period_s + 15.0
        for process in self._alive().values():
            _signal(process, signal.SIGTERM)

    def _watch(self) -> None:
        from prometheus_client import multiprocess

        while True:
            # Every worker not yet handled here, whether or not it has been reaped: a dead
            # worker's sentinel is readable before waitpid can reap it, so a list of the live
            # ones only (exitcode None) could drop a worker reaped between the wake-up and
            # the next wait, and the supervisor would then wait on without ever handling it.
            waiting = [p for i, p in self.workers.items() if i not in self.reaped]
            if not waiting:
                break
            timeout = None if self.kill_at is None else max(0.0, self.kill_at - time.monotonic())
            connection.wait([*(p.sentinel for p in waiting), self.wake_read], timeout)
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_read, 64)
            while self.signals:
                signum = self.signals.pop(0)
                if self.stopping:
                    log.warning("second stop signal: killing the workers")
                    self.kill_at = time.monotonic()
                else:
                    log.info("stopping the workers", extra={"signal": signal.Signals(signum).name})
                    self._stop()
            for index, process in self.workers.items():
                if process.exitcode is None or index in self.reaped:
                    continue
                process.join()
                self.reaped.add(index)
                multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                    process.pid, str(self.metrics_dir)
                )
                self._reaped(index, process)
            self._tell_owner()
            if self.kill_at is not None and time.monotonic() >= self.kill_at:
                for process in self._alive().values():
                    log.error("worker did not stop in time; killing it", extra={"pid": process.pid})
                    _signal(process, signal.SIGKILL)
                self.kill_at = time.monotonic() + 5.0

    def _reaped(self, index: int, process: BaseProcess) -> None:
        code = process.exitcode or 0
        if not self.stopping:
            status = f"signal {-code}" if code < 0 else f"status {code}"
            log.error(
                f"worker {index} (pid {process.pid}) exited unexpectedly with {status}; "
                "stopping the others",
                extra={"worker_index": index, "exit_code": code},
            )
            self._stop(exit_code=code if code > 0 else 1)
        elif code > 0:
            log.error(
                "worker failed while stopping",
                extra={"worker_index": index, "pid": process.pid, "exit_code": code},
            )
            self._stop(exit_code=code)

    def _tell_owner(self) -> None:
        """Once every other worker has stopped, let the owner close its socket."""
        if self.peers_told or not self.stopping or self.owner_socket is None:
            return
        alive = self._alive()
        if set(alive) == {0}:
            _signal(alive[0], PEERS_DONE)
            self.peers_told = True


def _signal(process: BaseProcess, sig: signal.Signals) -> None:
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
