"""``groundwire serve``'s event loop: uvloop by default, asyncio's own on request, and a bad
value refused at start with the variable named."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from groundwire.server.event_loop import run
from groundwire.server.settings import EventLoop, SettingsError, load_settings


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_serve_runs_on_uvloop_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUNDWIRE_EVENT_LOOP", raising=False)
    default = load_settings().event_loop
    assert default is EventLoop.UVLOOP
    assert issubclass(run(_loop_type(), default), uvloop.Loop)
    assert not issubclass(run(_loop_type(), EventLoop.ASYNCIO), uvloop.Loop)


def test_the_loop_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUNDWIRE_EVENT_LOOP", "asyncio")
    assert load_settings().event_loop is EventLoop.ASYNCIO
    monkeypatch.setenv("GROUNDWIRE_EVENT_LOOP", "trio")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "GROUNDWIRE_EVENT_LOOP" in str(caught.value)
