"""``groundwire reindex``: the steps (usage and arguments in
:mod:`groundwire.server.reindex.arguments`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass

from groundwire.clients.errors import GroundwireError
from groundwire.clients.ports import DenseEmbedder
from groundwire.clients.sparse import Bm25Encoder
from groundwire.server.reindex.deployments import (
    Deployment,
    Generation,
    ReindexError,
    deployment_for,
)
from groundwire.server.reindex.job import Say
from groundwire.server.reindex.sync import Reembedder, SyncReport, Target, sync
from groundwire.server.settings import Settings, SettingsError, VectorStoreKind

Progress = Callable[[SyncReport], None]


def _describe(generation: Generation) -> str:
    embedder = generation.embedder
    what = (
        f"embedder {embedder.embedder_id or 'none (sparse only)'}"
        + (f", dimension {embedder.dimension}" if embedder.dimension else "")
        if embedder is not None
        else "empty"
    )
    size = f", {generation.points} points" if generation.points is not None else ""
    return f"{generation.name} ({what}{size})"


def _pending(live: Generation, generations: list[Generation]) -> Generation | None:
    """The newest generation above the live one: what build fills and switch makes live."""
    above = [g for g in generations if g.number > live.number]
    return above[-1] if above else None


@dataclass
class SyncResult:
    """Where a sync copied from and to, and what it did."""

    source: str
    target: str
    report: SyncReport


async def _sync_into(
    settings: Settings,
    deployment: Deployment,
    dense: DenseEmbedder | None,
    source: Generation,
    target_name: str,
    say: Say,
    progress: Progress | None = None,
) -> SyncResult:
    embedder_id = dense.embedder_id if dense is not None else ""
    dimension = dense.dimension if dense is not None else 0
    say(f"copying {_describe(source)} into {target_name} for embedder {embedder_id or 'none'}")
    reader = await deployment.open_source(source)
    target = await deployment.open_target(target_name, embedder_id, dimension)
    reembed = Reembedder(dense, Bm25Encoder(avg_len=settings.bm25_avg_len))
    report = await sync(reader, target, reembed, progress=progress)
    await _invalidate(settings, target, report.tenants)
    say(report.line())
    return SyncResult(source.name, target_name, report)


async def _invalidate(settings: Settings, target: Target, tenants: set[str]) -> None:
    """Bump the changed tenants' index versions in the target's own Redis namespace, so
    servers already on it drop retrievals cached before the sync."""
    if not tenants or not settings.redis_url:
        return
    from groundwire.server.components import build_cache

    cache = await build_cache(settings, target)
    if cache is None:
        return
    try:
        for tenant in sorted(tenants):
            await cache.bump_index_version(tenant)
    finally:
        await cache.close()


async def build(
    settings: Settings,
    dense: DenseEmbedder | None,
    say: Say = print,
    *,
    deployment: Deployment | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Fill the pending generation (a new one if none) from the live one. ``deployment``:
    the settings' own unless given (a running Edge server passes the one over its store)."""
    deployment = deployment or deployment_for(settings)
    try:
        live = await deployment.live()
        generations = await deployment.generations()
        pending = _pending(live, generations)
        name = pending.name if pending is not None else deployment.new_name(generations)
        result = await _sync_into(settings, deployment, dense, live, name, say, progress)
        say(f"built {name}; live is still {live.name}. Next: groundwire reindex switch")
        return result
    finally:
        await deployment.close()


async def switch(
    settings: Settings,
    dense: DenseEmbedder | None,
    *,
    catch_up: bool = True,
    say: Say = print,
    deployment: Deployment | None = None,
    progress: Progress | None = None,
) -> SyncResult | None:
    """Catch the pending generation up with the live one, then make it live."""
    deployment = deployment or deployment_for(settings)
    try:
        live = await deployment.live()
        pending = _pending(live, await deployment.generations())
        if pending is None or pending.embedder is None:
            raise ReindexError("nothing to switch to: run groundwire reindex build first")
        result = None
        if catch_up:
            result = await _sync_into(
                settings, deployment, dense, live, pending.name, say, progress
            )
        elif dense is not None and pending.embedder.embedder_id != dense.embedder_id:
            raise ReindexError(
                f"{pending.name} was built for {pending.embedder.embedder_id!r}, but the "
                f"configured embedder is {dense.embedder_id!r}"
            )
        await deployment.release()  # the Edge generations are closed before the switch
        await deployment.make_live(pending, live)
        say(
            f"switched: {pending.name} is live, {live.name} kept for a rollback. Servers move "
            "as they restart (rolling restart with the new configuration); then run "
            "groundwire reindex catch-up"
        )
        return result
    finally:
        await deployment.close()


async def catch_up(
    settings: Settings,
    dense: DenseEmbedder | None,
    say: Say = print,
    *,
    deployment: Deployment | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Copy into the live generation what was written to the previous one since."""
    deployment = deployment or deployment_for(settings)
    try:
        live = await deployment.live()
        previous = await deployment.previous()
        if previous is None:
            raise ReindexError("nothing to catch up from: no switch was made yet")
        return await _sync_into(settings, deployment, dense, previous, live.name, say, progress)
    finally:
        await deployment.close()


async def rollback(settings: Settings, say: Say = print) -> Generation:
    """Make the generation live before the last switch live again."""
    deployment = deployment_for(settings)
    try:
        live = await deployment.live()
        previous = await deployment.previous()
        if previous is None:
            raise ReindexError("nothing to roll back to: no switch was made yet")
        await deployment.make_live(previous, live)
        say(
            f"rolled back: {previous.name} is live again, {live.name} kept (switch returns to "
            "it). Restart the servers with the configuration of "
            f"{previous.embedder.embedder_id if previous.embedder else 'that generation'}"
        )
        return previous
    finally:
        await deployment.close()


async def status(settings: Settings, say: Say = print) -> None:
    """Print the generations and which one is live."""
    deployment = deployment_for(settings)
    try:
        live = await deployment.live()
        previous = await deployment.previous()
        say(f"{deployment.kind}: live {_describe(live)}")
        say(f"previous (rollback target): {_describe(previous) if previous else '-'}")
        for generation in await deployment.generations():
            mark = "*" if generation.name == live.name else " "
            say(f" {mark} {_describe(generation)}")
    finally:
        await deployment.close()


def main(args: argparse.Namespace) -> int:
    """Run one step; 0 on success, 2 on bad settings, 3 when the step cannot run."""
    installed: Callable[[argparse.Namespace], int] | None = getattr(args, "run_step", None)
    if installed is not None:  # a step another distribution adds (the tools' compare)
        return installed(args)
    from groundwire.server.components import build_dense_embedder
    from groundwire.server.settings import load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2

    async def run() -> None:
        owner = None
        if settings.vector_store is VectorStoreKind.EDGE and args.step != "rollback":
            from groundwire.server.reindex import remote

            owner = await remote.find_owner(settings)  # a server that holds the store
        if args.step == "status":
            await status(settings)
            if owner is not None:
                print(
                    f"running server (pid {owner.description.pid}): serves "
                    f"{owner.description.serving_generation} until it restarts"
                    + (", a step is running" if owner.description.step_running else "")
                )
                await owner.close()
        elif args.step == "rollback":
            await rollback(settings)  # the pointer file only: the same with a server running
        elif owner is not None:
            try:
                no_catch_up = args.step == "switch" and args.no_catch_up
                await remote.run_step(owner, args.step, settings, skip_catch_up=no_catch_up)
            finally:
                await owner.close()
        else:
            dense = await build_dense_embedder(settings)
            try:
                if args.step == "build":
                    await build(settings, dense)
                elif args.step == "switch":
                    await switch(settings, dense, catch_up=not args.no_catch_up)
                else:
                    await catch_up(settings, dense)
            finally:
                if dense is not None:
                    await dense.close()

    try:
        asyncio.run(run())
    except ReindexError as exc:
        print(f"groundwire reindex: {exc}", file=sys.stderr)
        return 3
    except GroundwireError as exc:
        print(f"groundwire reindex: {exc.message}", file=sys.stderr)
        return 3
    return 0
