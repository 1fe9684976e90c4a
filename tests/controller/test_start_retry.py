"""A starting controller retries JetStream set-up that fails (a hub still electing its
leaders after a restart) instead of exiting, and gives up after START_RETRY_S."""

from __future__ import annotations

import asyncio

import pytest

from fades.controller import service
from fades.errors import FabricError


def test_set_up_that_fails_for_a_while_is_tried_again() -> None:
    calls: list[int] = []

    async def step() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise FabricError("stream FADES_PEVENTS: TimeoutError()")
        return "ready"

    assert asyncio.run(service._retrying("the streams", step)) == "ready"
    assert len(calls) == 3


def test_it_gives_up_after_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "START_RETRY_S", 0.6)

    async def step() -> None:
        raise FabricError("no JetStream")

    with pytest.raises(FabricError, match="no JetStream"):
        asyncio.run(service._retrying("the streams", step))


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    async def step() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        asyncio.run(service._retrying("the streams", step))
    assert calls == [1]
