"""Start-up steps on a fabric that may not answer yet: a hub server restarting, JetStream
electing its leaders. A process that needs a stream, a bucket or the repository to start
tries again for a while instead of exiting on the first timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fades.errors import FabricError

_T = TypeVar("_T")

#: seconds a start-up step is tried again while the fabric does not answer
START_RETRY_S = 60.0


async def retrying(
    what: str,
    step: Callable[[], Awaitable[_T]],
    log: logging.Logger,
    within: float = START_RETRY_S,
) -> _T:
    """``step()``, tried again (backoff 0.25 s doubling to 2 s) while it raises FabricError
    or TimeoutError, for up to ``within`` seconds; then the last error is raised."""
    deadline = time.monotonic() + within
    pause = 0.25
    while True:
        try:
            return await step()
        except (FabricError, TimeoutError) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s not ready (%r); trying again", what, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
