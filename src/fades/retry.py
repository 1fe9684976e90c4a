"""Steps on a fabric that may not answer yet (a hub server restarting, JetStream electing its
leaders, a site's uplink cut) are tried again with a backoff for a while instead of failing on
the first timeout.

One backoff loop with two faces: :func:`retrying` awaits (agent and controller start-up,
also importable from :mod:`fades.fabric.retry`), :func:`retrying_sync` sleeps (the node's
worker threads: a stateful task's lease and checkpoint in :mod:`fades.state.keeper`). This
module imports no NATS client, so a node without a fabric does not load one.
"""

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
#: the first pause between two tries; each next one doubles, up to the caller's ``cap``
FIRST_PAUSE_S = 0.25
#: what is retried by default: the fabric did not answer
RETRIED: tuple[type[Exception], ...] = (FabricError, TimeoutError)


def _never() -> bool:
    return False


class _Backoff:
    """When to try a failed step again: pauses of 0.25 s doubling to ``cap`` while the
    deadline is not passed and ``stop()`` is false."""

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        within: float,
        cap: float,
        stop: Callable[[], bool],
    ) -> None:
        self.what, self.log, self.cap, self.stop = what, log, cap, stop
        self.deadline = time.monotonic() + within
        self.pause = FIRST_PAUSE_S

    def after(self, exc: Exception) -> float | None:
        """The pause before the next try after ``exc``, or None: give up (raise it)."""
        if time.monotonic() + self.pause > self.deadline or self.stop():
            return None
        self.log.warning("%s: the fabric did not answer (%r); trying again", self.what, exc)
        pause, self.pause = self.pause, min(self.pause * 2, self.cap)
        return pause


async def retrying(
    what: str,
    step: Callable[[], Awaitable[_T]],
    log: logging.Logger,
    within: float = START_RETRY_S,
    *,
    cap: float = 2.0,
    errors: tuple[type[Exception], ...] = RETRIED,
    stop: Callable[[], bool] = _never,
) -> _T:
    """``await step()``, tried again while it raises one of ``errors``, for up to ``within``
    seconds or until ``stop()``; then the last error is raised."""
    backoff = _Backoff(what, log, within, cap, stop)
    while True:
        try:
            return await step()
        except errors as exc:
            pause = backoff.after(exc)
            if pause is None:
                raise
        await asyncio.sleep(pause)


def retrying_sync(
    what: str,
    step: Callable[[], _T],
    log: logging.Logger,
    within: float = START_RETRY_S,
    *,
    cap: float = 2.0,
    errors: tuple[type[Exception], ...] = RETRIED,
    stop: Callable[[], bool] = _never,
) -> _T:
    """:func:`retrying` for a blocking ``step()`` (the calling thread sleeps between tries)."""
    backoff = _Backoff(what, log, within, cap, stop)
    while True:
        try:
            return step()
        except errors as exc:
            pause = backoff.after(exc)
            if pause is None:
                raise
        time.sleep(pause)
