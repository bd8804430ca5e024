"""The server a measurement talks to: one already running (``--address``), or one started in
this process on embedded defaults, configured like ``groundwire serve`` by ``GROUNDWIRE_*``.

Either way every call goes through the gRPC API and the generated stubs; only where the
corpus lives and how the caller is identified differ.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from groundwire.server.cli import CHANNEL_OPTIONS
from groundwire.server.settings import AuthMode, CliSettings, Settings, load_settings

if TYPE_CHECKING:
    from groundwire.server.app import GroundwireServer

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Target:
    """Where calls go and the metadata that identifies the caller (and so the tenant)."""

    address: str
    metadata: Metadata = ()
    # The in-process server's settings, when this process started it.
    local_settings: Settings | None = field(default=None, compare=False)

    def channel(self) -> grpc.aio.Channel:
        """A new channel (one HTTP/2 connection) to the target; the caller closes it."""
        return grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``--address``/``--api-key``/``--tenant``: measure a running server instead of an
    in-process one."""
    defaults = CliSettings()
    group = parser.add_argument_group(
        "server", "without --address, a server is started in this process on embedded defaults"
    )
    group.add_argument("--address", help="a running server, host:port")
    group.add_argument(
        "--api-key", default=defaults.api_key, help="API key for --address (its tenant is used)"
    )
    group.add_argument(
        "--tenant", help="tenant header to send (servers in mesh_header mode trust it)"
    )
    group.add_argument(
        "--tenant-header", default="x-tenant-id", help="the header --tenant is sent in"
    )


def call_metadata(
    *, api_key: str | None, tenant: str | None, tenant_header: str = "x-tenant-id"
) -> Metadata:
    """The metadata that selects the tenant: a Bearer key, a mesh tenant header, or both."""
    metadata: list[tuple[str, str]] = []
    if api_key:
        metadata.append(("authorization", f"Bearer {api_key}"))
    if tenant:
        metadata.append((tenant_header.lower(), tenant))
    return tuple(metadata)


def quiet_server_logs() -> None:
    """Warnings and errors only: an in-process server logs a line per answer and per start."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("groundwire", "sentence_transformers", "transformers", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.asynccontextmanager
async def in_process_server(
    *, read_environment: bool = True, **overrides: Any
) -> AsyncIterator[GroundwireServer]:
    """A server built exactly as ``groundwire serve`` builds it (``GROUNDWIRE_*`` apply unless
    ``read_environment`` is false), on 127.0.0.1:0 with no metrics port; ``overrides`` are
    settings fields that win over the environment. Stopped, and its client layer closed, on
    exit."""
    # Imported here: the CLI imports this module to build its arguments, and every command
    # would otherwise pay for loading the whole server.
    from groundwire.server.app import GroundwireServer, build_components

    settings = load_settings(
        read_environment=read_environment,
        **{"listen": "127.0.0.1:0", "metrics_port": None, "grace_period_s": 0.0, **overrides},
    )
    server = GroundwireServer(settings, await build_components(settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=0)


@contextlib.asynccontextmanager
async def open_target(
    args: argparse.Namespace, *, local_tenant: str, **overrides: Any
) -> AsyncIterator[Target]:
    """The target the arguments name. Without ``--address`` a server starts in-process in
    mesh-header mode, and calls carry ``local_tenant`` (or ``--tenant``) in its header, so a
    measurement's corpus never mixes with the ``default`` tenant's."""
    if args.address:
        yield Target(
            args.address,
            call_metadata(
                api_key=args.api_key, tenant=args.tenant, tenant_header=args.tenant_header
            ),
        )
        return
    tenant = args.tenant or local_tenant
    async with in_process_server(
        auth_mode=AuthMode.MESH_HEADER, tenant_header=args.tenant_header, **overrides
    ) as server:
        yield Target(
            f"127.0.0.1:{server.port}",
            call_metadata(api_key=None, tenant=tenant, tenant_header=args.tenant_header),
            local_settings=server.settings,
        )
