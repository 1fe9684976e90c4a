"""A stop's cancel-and-wait is bounded: a task that swallows its cancellation is named and left
behind after the timeout instead of holding the stop forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from fades.aiostop import cancel_all, wait_for


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


def test_wait_for_keeps_a_cancellation_that_arrives_as_the_awaited_thing_completes() -> None:
    # asyncio.wait_for of Python 3.11 returns the queue item here and drops the cancellation,
    # so a loop stopped this way ran on forever (a controller's stop hung in CI)
    async def go() -> bool:
        queue: asyncio.Queue[int] = asyncio.Queue()

        async def loop() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    await wait_for(queue.get(), 0.5)

        task = asyncio.create_task(loop())
        await asyncio.sleep(0.01)  # the loop waits on the queue
        queue.put_nowait(1)  # the item and the cancellation arrive in the same turn
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=30)
        return task in done and task.cancelled()

    assert asyncio.run(go())


def test_wait_for_times_out_and_returns_results() -> None:
    async def go() -> tuple[int, bool]:
        async def answer() -> int:
            return 42

        got = await wait_for(answer(), 5)
        try:
            await wait_for(asyncio.sleep(3600), 0.01)
        except TimeoutError:
            return got, True
        return got, False

    assert asyncio.run(go()) == (42, True)


def test_cancel_all_repeats_a_cancellation_that_was_lost() -> None:
    # a task that drops the first cancellation (as a library's wait_for can) still ends
    async def go() -> tuple[list[asyncio.Task[None]], bool]:
        async def drops_one() -> None:
            with contextlib.suppress(asyncio.CancelledError):  # lost
                await asyncio.sleep(3600)
            await asyncio.sleep(3600)

        task = asyncio.create_task(drops_one(), name="drops-one")
        await asyncio.sleep(0)
        left = await cancel_all([task], timeout=30)
        return left, task.cancelled()

    left, cancelled = asyncio.run(go())
    assert left == [] and cancelled
