"""Waiting and stopping in asyncio without hanging: a cancellation-safe ``wait_for`` and a
bounded ``cancel_all``.

On Python 3.11, ``asyncio.wait_for`` loses a cancellation that arrives while the awaited thing
completes (the result is returned and the ``CancelledError`` is dropped). A loop that waits with
it and is stopped by cancelling its task then runs on forever, and the stop waiting for it
hangs. :func:`wait_for` here is built on ``asyncio.timeout``, which counts cancellations and
never drops one. The project bans ``asyncio.wait_for`` (ruff's banned-api).

A third-party library can still drop a cancellation in the same way, so :func:`cancel_all`
repeats the cancellation until the tasks end, and gives up on a task that has not ended after
``timeout`` seconds: it is named in the log and left behind, and the stop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

log = logging.getLogger("fades")

T = TypeVar("T")

#: how long a stop waits for its cancelled tasks to end
CANCEL_TIMEOUT_S = 10.0
#: how often a stop repeats the cancellation of a task that has not ended yet (long enough for
#: a task's own clean-up after the first cancellation to finish undisturbed)
RECANCEL_S = 2.0


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` for at most ``timeout`` seconds (None: no limit), else ``TimeoutError``.

    Like ``asyncio.wait_for``, but a cancellation of the caller is never lost."""
    async with asyncio.timeout(timeout):
        return await aw


async def cancel_all(
    tasks: Iterable[asyncio.Task[Any] | None], timeout: float = CANCEL_TIMEOUT_S
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` (``None`` skipped) and wait at most ``timeout`` seconds for them.

    A task still running after a cancellation (one was lost) is cancelled again every
    :data:`RECANCEL_S`. Returns the tasks that had not ended by ``timeout``."""
    pending = {t for t in tasks if t is not None}
    if not pending:
        return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    done: set[asyncio.Task[Any]] = set()
    while pending:
        for t in pending:
            t.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        finished, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
        done |= finished
    for t in done:  # (an error was logged where it happened; retrieved so it is not again)
        if not t.cancelled():
            t.exception()
    for t in pending:
        log.warning("task %s did not end within %g s of being cancelled", t.get_name(), timeout)
    return list(pending)
