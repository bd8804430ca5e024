"""The command's side of an Edge reindex while a server serves: find the server that owns
the store and have it run the step (:mod:`groundwire.server.reindex.owner`), printing what it
reports as it goes.

The owner advertises its socket under ``<data_dir>/edge``; the command connects only there
(mode 0600: this user's processes alone). When no server answers (none runs, or one crashed
and left its advertisement behind), the command runs the step itself, offline, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from groundwire.internal.v1 import reindex_pb2, reindex_pb2_grpc
from groundwire.server import owner_socket
from groundwire.server.reindex import job
from groundwire.server.reindex.deployments import ReindexError
from groundwire.server.reindex.job import Say
from groundwire.server.settings import Settings

STEPS = {
    "build": reindex_pb2.STEP_BUILD,
    "switch": reindex_pb2.STEP_SWITCH,
    "catch-up": reindex_pb2.STEP_CATCH_UP,
}
PROBE_TIMEOUT_S = 5.0
# Progress lines per step: one each tenth of the chunks to embed.
PROGRESS_LINES = 10


@dataclass
class Owner:
    """A server that owns the Edge store, reached over its socket."""

    channel: grpc.aio.Channel
    description: reindex_pb2.GetOwnerResponse

    @property
    def stub(self) -> reindex_pb2_grpc.ReindexServiceAsyncStub:
        """The ReindexService of the owner."""
        return reindex_pb2_grpc.ReindexServiceStub(self.channel)

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close(None)


async def find_owner(settings: Settings) -> Owner | None:
    """The server that owns the store under the settings' data directory, or None when none
    answers. Raises ReindexError for an owner that cannot run steps (an older server)."""
    socket = owner_socket.find(settings.data_dir / "edge")
    if socket is None:
        return None
    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    try:
        description = await reindex_pb2_grpc.ReindexServiceStub(channel).GetOwner(
            reindex_pb2.GetOwnerRequest(), timeout=PROBE_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as exc:
        await channel.close(None)
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise ReindexError(
                f"the server listening on {socket} owns the Edge store but cannot run a "
                "reindex step (a groundwire from before the online Edge reindex): stop it, "
                "run the step, then start it again"
            ) from None
        return None  # nobody listens there any more: a stale advertisement
    return Owner(channel, description)


async def run_step(
    owner: Owner,
    step: str,
    settings: Settings,
    *,
    skip_catch_up: bool = False,
    say: Say = print,
) -> reindex_pb2.StepResult:
    """Have ``owner`` run ``step`` (build, switch or catch-up) for the configuration
    ``settings`` describe; prints its lines and progress, returns its result."""
    serving = owner.description.serving_generation
    say(
        f"a running server (pid {owner.description.pid}) owns the Edge store and serves "
        f"{serving}: it runs the {step} step and keeps serving"
    )
    request = reindex_pb2.RunStepRequest(
        step=STEPS[step], settings=job.encode(settings), skip_catch_up=skip_catch_up
    )
    result: reindex_pb2.StepResult | None = None
    shown = 0
    try:
        async for event in owner.stub.RunStep(request):
            kind = event.WhichOneof("event")
            if kind == "message":
                say(event.message)
            elif kind == "progress":
                done, total = event.progress.chunks_done, event.progress.chunks_total
                tenth = done * PROGRESS_LINES // total if total else PROGRESS_LINES
                if tenth > shown or done == total:
                    shown = tenth
                    say(f"  {done} of {total} chunks embedded")
            elif kind == "result":
                result = event.result
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise ReindexError(
                f"the server stopped answering during the {step} step; run it again (a "
                "build continues where it stopped)"
            ) from None
        raise ReindexError(exc.details() or str(exc.code())) from None
    if result is None:
        raise ReindexError(f"the server ended the {step} step without a result; run it again")
    return result
