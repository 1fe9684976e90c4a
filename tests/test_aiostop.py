"""A stop's cancel-and-wait is bounded: a task that swallows its cancellation is named and left
behind after the timeout instead of holding the stop forever."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fades.aiostop import cancel_all


def test_a_task_that_does_not_end_is_left_behind_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:  # swallowed: only ``release`` ends it
                continue

    async def polite() -> None:
        await asyncio.sleep(3600)

    async def failing() -> None:
        raise RuntimeError("boom")

    async def go() -> tuple[list[str], bool]:
        tasks = [
            asyncio.create_task(stubborn(), name="stubborn"),
            asyncio.create_task(polite(), name="polite"),
            asyncio.create_task(failing(), name="failing"),
        ]
        await asyncio.sleep(0)
        left = await cancel_all([*tasks, None], timeout=0.5)
        names = [t.get_name() for t in left]
        release.set()
        tasks[0].cancel()
        await asyncio.wait([tasks[0]], timeout=30)
        return names, tasks[1].cancelled()

    with caplog.at_level(logging.WARNING, logger="fades"):
        names, polite_cancelled = asyncio.run(go())
    assert names == ["stubborn"]
    assert polite_cancelled
    assert "stubborn did not end" in caplog.text
