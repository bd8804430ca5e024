"""The server a measurement talks to: one already running (``--address``), or a ``groundwire
serve`` process this command starts on embedded defaults, configured by ``GROUNDWIRE_*`` as
any server is, its output in a log file.

Either way every call goes through the gRPC API (the SDK's channel options, the generated
stubs), so the tools depend on the contract alone, never on the server's modules: only where
the corpus lives and how the caller is identified differ.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from groundwire.sdk import AsyncClient
from groundwire.testing.redis_process import free_port
from groundwire.tools.benchmark.processes import child_process, serve_argv, wait_until_serving

Metadata = tuple[tuple[str, str], ...]
ENV_PREFIX = "GROUNDWIRE_"
#: Where ``--api-key`` comes from when not given: the variable ``groundwire ingest`` reads.
API_KEY_VARIABLE = "GROUNDWIRE_API_KEY"
#: ``groundwire serve``'s exit status for settings it refuses (it says which in its log).
SERVE_BAD_SETTINGS = 2
LOG_NAME = "server"


class ServerStartError(RuntimeError):
    """The server this command started exited or never served; ``bad_settings`` when it
    refused its configuration. The message ends with the last lines of its log."""

    def __init__(self, message: str, *, bad_settings: bool) -> None:
        super().__init__(message)
        self.bad_settings = bad_settings


@dataclass(frozen=True)
class LocalServer:
    """A server this command started: its data directory, log file and the ``GROUNDWIRE_*``
    variables it was started with."""

    data_dir: Path
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Where calls go and the metadata that identifies the caller (and so the tenant)."""

    address: str
    metadata: Metadata = ()
    # The server this command started, when it started one.
    local: LocalServer | None = field(default=None, compare=False)

    def channel(self) -> grpc.aio.Channel:
        """A new channel (one HTTP/2 connection) to the target; the caller closes it."""
        return open_channel(self.address)


def open_channel(address: str) -> grpc.aio.Channel:
    """A channel with the SDK's options (message size limits, user agent); the caller
    closes it."""
    return AsyncClient(address).channel


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``--address``/``--api-key``/``--tenant``: measure a running server instead of one
    started here."""
    group = parser.add_argument_group(
        "server", "without --address, a `groundwire serve` process is started on embedded defaults"
    )
    group.add_argument("--address", help="a running server, host:port")
    group.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VARIABLE),
        help=f"API key for --address (its tenant is used; default ${API_KEY_VARIABLE})",
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
    """Warnings and errors only (the judge's and the direct baselines' clients log here)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("groundwire", "sentence_transformers", "transformers", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def server_environment(
    settings: Mapping[str, str],
    *,
    inherit: bool = True,
    defaults: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a ``groundwire serve`` child: this one's (without its
    ``GROUNDWIRE_*`` variables unless ``inherit``), offline, ``defaults`` under whatever this
    environment sets, and ``settings`` over everything."""
    env = {k: v for k, v in os.environ.items() if inherit or not k.startswith(ENV_PREFIX)}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update({k: v for k, v in (defaults or {}).items() if k not in env})
    env.update(settings)
    return env


@contextlib.asynccontextmanager
async def local_server(
    data_dir: Path,
    settings: Mapping[str, str],
    *,
    inherit: bool = True,
    log_dir: Path | None = None,
    log_name: str = LOG_NAME,
) -> AsyncIterator[tuple[str, LocalServer]]:
    """A ``groundwire serve`` process for the block, on a free loopback port, its index in
    ``data_dir``, one worker, no metrics port and no drain; ``settings`` are ``GROUNDWIRE_*``
    variables over the environment (which it inherits unless ``inherit`` is false). Its
    output goes to ``<log_dir or data_dir>/<log_name>.log``. Yields its address and description;
    raises :class:`ServerStartError` when it does not come up."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    log_dir = log_dir or data_dir
    address = f"127.0.0.1:{free_port()}"
    env = server_environment(
        {
            "GROUNDWIRE_LISTEN": address,
            "GROUNDWIRE_DATA_DIR": str(data_dir),
            "GROUNDWIRE_METRICS_PORT": "0",
            "GROUNDWIRE_GRACE_PERIOD_S": "0",
            **settings,
        },
        inherit=inherit,
        defaults={"GROUNDWIRE_WORKERS": "1"},
    )
    with child_process(log_name, serve_argv(), env, log_dir) as child:
        try:
            await wait_until_serving(child, address)
        except RuntimeError as exc:
            status = child.process.poll()
            raise ServerStartError(
                f"the server did not start (log: {child.log_path}):\n{child.tail()}"
                if status is not None
                else str(exc),
                bad_settings=status == SERVE_BAD_SETTINGS,
            ) from None
        described = LocalServer(
            data_dir, child.log_path, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        )
        yield address, described


@contextlib.asynccontextmanager
async def open_target(
    args: argparse.Namespace, *, local_tenant: str, data_dir: Path, **settings: str
) -> AsyncIterator[Target]:
    """The target the arguments name. Without ``--address`` a server is started in
    mesh-header mode over ``data_dir`` (``settings``: more ``GROUNDWIRE_*`` variables), and
    calls carry ``local_tenant`` (or ``--tenant``) in its header, so a measurement's corpus
    never mixes with the ``default`` tenant's."""
    if args.address:
        yield Target(
            args.address,
            call_metadata(
                api_key=args.api_key, tenant=args.tenant, tenant_header=args.tenant_header
            ),
        )
        return
    tenant = args.tenant or local_tenant
    mesh = {"GROUNDWIRE_AUTH_MODE": "mesh_header", "GROUNDWIRE_TENANT_HEADER": args.tenant_header}
    async with local_server(data_dir, {**mesh, **settings}) as (address, server):
        yield Target(
            address,
            call_metadata(api_key=None, tenant=tenant, tenant_header=args.tenant_header),
            local=server,
        )
