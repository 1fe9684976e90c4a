"""The outbox takes finished tasks from the orchestrator's worker threads with one wake-up
of the agent's event loop per burst, and still hands over every one, in order."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

from fades.aiostop import wait_for
from fades.node.agent.outbox import Outbox


def test_a_burst_of_finished_tasks_wakes_the_loop_once_and_loses_none() -> None:
    async def go() -> tuple[list[Any], int]:
        outbox = Outbox(None)  # type: ignore[arg-type]  # (publishing is not exercised)
        outbox.bind()
        hold = threading.Event()

        def finish_all() -> None:
            for i in range(500):
                outbox.on_finish(SimpleNamespace(id=f"t{i}"))  # type: ignore[arg-type]
            hold.set()

        # the loop is busy (blocked) while the worker thread finishes 500 tasks
        t = threading.Thread(target=finish_all)
        t.start()
        hold.wait(60)
        t.join(60)
        got: list[Any] = []
        while len(got) < 500:
            got.append(await wait_for(outbox._finished.get(), 60))
        # and later finishes are still handed over
        threading.Thread(target=outbox.on_finish, args=(SimpleNamespace(id="t500"),)).start()
        got.append(await wait_for(outbox._finished.get(), 60))
        return got, outbox.wakeups

    got, wakeups = asyncio.run(go())
    assert [r.id for r in got] == [f"t{i}" for i in range(501)]
    assert wakeups == 2, wakeups  # one for the burst, one for the late task
