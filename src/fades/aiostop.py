"""Cancelling asyncio tasks with a bound on the wait, so that a stop never hangs.

A stop cancels its tasks and waits for them to end. A task that does not end (it swallowed
the cancellation, or its clean-up waits on something that never answers) would otherwise hold
the whole stop forever; here it is named in the log and left behind after ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("fades")

#: how long a stop waits for its cancelled tasks to end
CANCEL_TIMEOUT_S = 10.0


async def cancel_all(
    tasks: Iterable[asyncio.Task[Any] | None], timeout: float = CANCEL_TIMEOUT_S
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` (``None`` skipped) and wait at most ``timeout`` seconds for them.

    Returns the tasks that had not ended by then."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    if not live:
        return []
    done, pending = await asyncio.wait(live, timeout=timeout)
    for t in done:  # (an error was logged where it happened; retrieved so it is not again)
        if not t.cancelled():
            t.exception()
    for t in pending:
        log.warning("task %s did not end within %g s of being cancelled", t.get_name(), timeout)
    return list(pending)
