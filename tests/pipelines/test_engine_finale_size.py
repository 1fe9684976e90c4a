"""A final stage whose result is larger than one fabric message (found by the hostile review).

The run's result travels in the final stage's event; a result of 3 MB (a function may return
8 MiB) made that event unstorable: "left for redelivery: ... MaxPayloadError" once a second,
forever, and the run stayed ``running``. Now the stage fails once, naming the size and the
limit, and the next run goes through.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fades.fabric import EmbeddedNats

from .test_engine import FUNCS, agents, harness, make_plan, run, stage

HUGE = """
def main(data, params):
    if data["_pipeline"]["run"].startswith("huge"):
        return {"v": 1, "blob": "z" * 3_000_000}
    return {"v": 1}
"""


def test_a_final_result_too_big_for_its_event_fails_the_stage_once(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {"n1": prepare_home("n1", functions={**FUNCS, "huge": HUGE}, readings=False)}
    stages = [stage("a", "huge", function={"memory_mib": 128})]

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes) as ags:
            plan = make_plan("finale", stages, {"a": "n1"})
            await h.put_plan(plan)
            await h.trigger(plan, "huge1")
            await h.trigger(plan, "ok1")
            ev = await h.events.wait("a failed", run="huge1", stage="a", status="failed")
            assert ev.error_kind == "ResultTooLarge", ev
            assert ev.error and "3,000,017 bytes of JSON" in ev.error and "1,044,480" in ev.error, (
                ev.error
            )
            fin = await h.events.wait("finale", run="ok1", stage="a", status="done")
            assert fin.result == {"v": 1}
            assert len(h.events.of(run="huge1", stage="a")) == 1  # failed once, not retried
            assert ags["n1"].pipelines.counters["failed"] == 1

    run(main(), timeout=240)
