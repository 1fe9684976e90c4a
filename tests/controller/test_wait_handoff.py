"""A long-poll woken by a stored outcome answers with that outcome, without reading the task
back from controller.db, and answers exactly what the database holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fades.aiostop import wait_for
from fades.bus.memory import MemoryBus, MemoryFabric
from fades.controller import Controller
from fades.controller.logops import add_task_args
from fades.outcome import Outcome

from .conftest import TOKENS


def test_a_woken_wait_answers_the_stored_outcome_without_a_read_back(tmp_path: Path) -> None:
    home = tmp_path / "controller"
    (home / "trusted").mkdir(parents=True)

    async def scenario() -> None:
        ctl = Controller(home, tokens=TOKENS, bus=MemoryBus(MemoryFabric()))
        await ctl.start()
        try:
            wire_id = await ctl.writes.write(
                "add_task",
                add_task_args(
                    task_id="t1",
                    tenant="facilities",
                    node="edge",
                    where="edge",
                    task={"credentials": {"tenant": "facilities", "task_id": "t1"}},
                    placement="node named by the client",
                    submitted_at=time.time(),
                    digest=None,
                    decision=None,
                ),
            )
            reads: list[tuple[Any, ...]] = []
            get = ctl.store.get

            def counted(*args: Any) -> Any:
                reads.append(args)
                return get(*args)

            ctl.store.get = counted  # type: ignore[method-assign]
            waiting = asyncio.create_task(ctl.wait("t1", 60, tenant="facilities"))
            deadline = time.monotonic() + 30
            while ctl.recorder.waiting_count == 0 or not reads:
                assert time.monotonic() < deadline, "the wait never started"
                await asyncio.sleep(0.01)
            assert not waiting.done()
            out = Outcome(
                task_id=wire_id,
                tenant="facilities",
                node="edge",
                status="done",
                result={"n": 3},
                accepted_at=time.time(),
                finished_at=time.time(),
            )
            assert await ctl.recorder.from_node(out.encode(), "fades.result.edge") is True
            rec = await wait_for(waiting, 30)
            assert len(reads) == 1  # only the read before the outcome arrived
            ctl.store.get = get  # type: ignore[method-assign]
            assert rec == await ctl.get("t1", tenant="facilities")
            assert rec.status == "done" and rec.outcome is not None
            assert rec.outcome.task_id == "t1" and rec.outcome.result == {"n": 3}
            assert rec.bytes_uplink == len(out.encode()) and rec.latency_s is not None
            # a wait after the fact reads it (and the controller keeps answering)
            again = await ctl.wait("t1", 5, tenant="facilities")
            assert again == rec
        finally:
            await ctl.stop()

    asyncio.run(scenario())
