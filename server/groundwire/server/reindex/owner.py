"""The reindex steps inside the server that owns an Edge store, while it keeps serving.

An Edge shard has one owning process, so a ``groundwire reindex`` command cannot read the
live generation a server holds. It asks that server instead, over the owner socket
(``groundwire.internal.v1.ReindexService``, served there only, never on the public port),
and the server runs the step the command would have run offline: the same functions of
:mod:`groundwire.server.reindex.command`, over the store it serves (never closed by a step)
and the other generations, which it opens for the step and closes after.

The semantics are the Qdrant path's: ``switch`` catches up, then moves the pointer file; the
running server keeps serving the generation it started on (its embedder, chunker, cache and
quota namespaces were built for it, and so were the other workers' namespaces) until it is
restarted with the new configuration; ``catch-up`` then copies what it wrote meanwhile.

The new embedder is built in this process for the step, off the event loop (a local model
on one thread unless the command names more), and closed after it; when the command names
the embedder this server already runs, the server's own model serves the step, queries
first. One step runs at a time; cancelling the call (the command interrupted) stops it, and
a build run again continues where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from groundwire.clients.errors import GroundwireError, InvalidArgumentError
from groundwire.clients.ports import DenseEmbedder
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.clients.vector_store import collection_record as cr
from groundwire.clients.vector_store.edge import RECORD_FILE
from groundwire.internal.v1 import reindex_pb2, reindex_pb2_grpc
from groundwire.server.reindex import command, job
from groundwire.server.reindex.deployments import EdgeDeployment, ReindexError
from groundwire.server.reindex.sync import SyncReport
from groundwire.server.settings import Settings

if TYPE_CHECKING:
    from groundwire.server.components import Components

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

SERVICE_PREFIX = "/groundwire.internal.v1.ReindexService/"
STEPS = (reindex_pb2.STEP_BUILD, reindex_pb2.STEP_SWITCH, reindex_pb2.STEP_CATCH_UP)


class StepRefusedError(GroundwireError):
    """A step that cannot run as asked (nothing to switch to, another step running); the
    message says why and what to do. Internal: the command prints the message."""

    reason = "ERROR_REASON_UNSPECIFIED"
    code = grpc.StatusCode.FAILED_PRECONDITION


class ReindexServicer(reindex_pb2_grpc.ReindexServiceServicer):
    """ReindexService over the owner's store and settings."""

    def __init__(self, settings: Settings, components: Components) -> None:
        if not isinstance(components.store, EdgeVectorStore):
            raise TypeError("ReindexService runs only over an Edge store")
        self._settings = settings
        self._store = components.store
        self._dense = components.dense
        self._lock = asyncio.Lock()

    def _serving(self) -> str:
        return EdgeDeployment(self._settings, serving=self._store).serving_name() or "?"

    async def GetOwner(
        self, request: reindex_pb2.GetOwnerRequest, context: Context
    ) -> reindex_pb2.GetOwnerResponse:
        record = cr.read_record(self._store.path / RECORD_FILE)
        return reindex_pb2.GetOwnerResponse(
            pid=os.getpid(),
            serving_generation=self._serving(),
            serving_embedder_id=record.embedder_id if record is not None else "",
            step_running=self._lock.locked(),
        )

    async def RunStep(
        self, request: reindex_pb2.RunStepRequest, context: Context
    ) -> AsyncIterator[reindex_pb2.RunStepResponse]:
        if request.step not in STEPS:
            raise InvalidArgumentError.of("step", "name a step: build, switch or catch-up")
        settings = job.decode(self._settings, request.settings)
        if self._lock.locked():
            raise StepRefusedError(
                f"a reindex step is already running in this server (pid {os.getpid()}); "
                "wait for it, or interrupt its command"
            )
        async with self._lock:
            events: asyncio.Queue[reindex_pb2.RunStepResponse | None] = asyncio.Queue()
            step = asyncio.create_task(self._run(request, settings, events))
            try:
                while (event := await events.get()) is not None:
                    yield event
                await step  # its error, if any
            finally:
                if not step.done():
                    step.cancel()
                    log.info("reindex step cancelled", extra={"step": request.step})
                await asyncio.gather(step, return_exceptions=True)

    async def _run(
        self,
        request: reindex_pb2.RunStepRequest,
        settings: Settings,
        events: asyncio.Queue[reindex_pb2.RunStepResponse | None],
    ) -> None:
        def say(line: str) -> None:
            events.put_nowait(reindex_pb2.RunStepResponse(message=line))

        def progress(report: SyncReport) -> None:
            events.put_nowait(
                reindex_pb2.RunStepResponse(
                    progress=reindex_pb2.StepProgress(
                        chunks_done=report.copied_chunks, chunks_total=report.planned_chunks
                    )
                )
            )

        try:
            serving = self._serving()
            name = reindex_pb2.Step.Name(request.step)
            log.info("reindex step", extra={"step": name, "serving": serving})
            say(f"running in the server (pid {os.getpid()}), which serves {serving} meanwhile")
            dense, owned = await self._embedder(settings)
            deployment = EdgeDeployment(settings, serving=self._store)
            try:
                result: command.SyncResult | None
                if request.step == reindex_pb2.STEP_BUILD:
                    result = await command.build(
                        settings, dense, say, deployment=deployment, progress=progress
                    )
                elif request.step == reindex_pb2.STEP_SWITCH:
                    result = await command.switch(
                        settings,
                        dense,
                        catch_up=not request.skip_catch_up,
                        say=say,
                        deployment=deployment,
                        progress=progress,
                    )
                    say(
                        f"this server keeps serving {serving} until it restarts: restart it "
                        "with the new configuration, then run groundwire reindex catch-up"
                    )
                else:
                    result = await command.catch_up(
                        settings, dense, say, deployment=deployment, progress=progress
                    )
            finally:
                await deployment.close()
                if owned and dense is not None:
                    await dense.close()
            live = (await EdgeDeployment(settings).live()).name
            events.put_nowait(reindex_pb2.RunStepResponse(result=_result(result, live)))
        except ReindexError as exc:
            raise StepRefusedError(str(exc)) from exc
        finally:
            events.put_nowait(None)

    async def _embedder(self, settings: Settings) -> tuple[DenseEmbedder | None, bool]:
        """The step's embedder and whether the step owns it (closes it after)."""
        if job.same_embedder(settings, self._settings):
            return self._dense, False
        from groundwire.server.components import build_dense_embedder

        log.info("reindex embedder", extra={"embedder": settings.embedder.value})
        return await build_dense_embedder(settings), True


def _result(result: command.SyncResult | None, live: str) -> reindex_pb2.StepResult:
    if result is None:
        return reindex_pb2.StepResult(live_generation=live)
    report = result.report
    return reindex_pb2.StepResult(
        source=result.source,
        target=result.target,
        source_documents=report.source_documents,
        copied_documents=report.copied_documents,
        copied_chunks=report.copied_chunks,
        unchanged_documents=report.unchanged_documents,
        deleted_documents=report.deleted_documents,
        stale_chunks=report.stale_chunks,
        kept_documents=report.kept_documents,
        live_generation=live,
    )


def add_to_server(server: grpc.aio.Server, settings: Settings, components: Components) -> None:
    """Serve ReindexService on ``server`` (the owner socket's, never the public port's)."""
    reindex_pb2_grpc.add_ReindexServiceServicer_to_server(
        ReindexServicer(settings, components), server
    )
