"""One live stack (scripted upstream + ``groundwire serve``) shared by the e2e tests that need
a real server process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.live import LiveStack, live_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    with live_stack(tmp_path_factory.mktemp("live")) as running:
        yield running
