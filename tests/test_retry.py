"""The one backoff loop (fades.retry) behind its two faces: the same tries, pauses and
give-ups whether the step blocks or awaits."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from fades.errors import FabricError
from fades.retry import retrying, retrying_sync

log = logging.getLogger("test.retry")


def _flaky(fails: int, exc: Exception) -> tuple[Callable[[], str], list[float]]:
    calls: list[float] = []

    def step() -> str:
        calls.append(time.monotonic())
        if len(calls) <= fails:
            raise exc
        return "ok"

    return step, calls


def _sync(step: Callable[[], str], **kw: Any) -> str:
    return retrying_sync("a step", step, log, **kw)


def _async(step: Callable[[], str], **kw: Any) -> str:
    async def astep() -> str:
        return step()

    return asyncio.run(retrying("a step", astep, log, **kw))


@pytest.mark.parametrize("face", [_sync, _async])
def test_both_faces_retry_with_the_same_backoff_and_give_up_alike(
    face: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    step, calls = _flaky(2, FabricError("no answer"))
    with caplog.at_level(logging.WARNING, "test.retry"):
        assert face(step, within=30) == "ok"
    assert len(calls) == 3
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.5, gaps  # 0.25 s, doubling
    assert sum("trying again" in r.getMessage() for r in caplog.records) == 2
    # out of time: the last error is raised
    step, calls = _flaky(100, FabricError("still no answer"))
    with pytest.raises(FabricError, match="still no answer"):
        face(step, within=0.6)
    assert 2 <= len(calls) <= 3
    # stop() ends the tries at once; an error not retried goes through on the first try
    step, calls = _flaky(100, FabricError("x"))
    with pytest.raises(FabricError):
        face(step, within=30, stop=lambda: True)
    assert len(calls) == 1
    step, calls = _flaky(100, ValueError("a bug"))
    with pytest.raises(ValueError):
        face(step, within=30)
    assert len(calls) == 1
    step, calls = _flaky(1, TimeoutError())
    with pytest.raises(TimeoutError):
        face(step, within=30, errors=(FabricError,))
