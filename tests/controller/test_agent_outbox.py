"""The node agent's outbox under a burst: the heartbeat's sweep of undelivered results leaves
the ones the outbox loop holds or is publishing to it, so each result is published once."""

from __future__ import annotations

from typing import Any

from fades.functions.artifact import Artifact
from fades.outcome import Outcome

from .conftest import Bed
from .test_api import artifact_of, up

QUICK = """
def main(data, params):
    return {"n": sum(len(ds) for ds in data.values())}
"""

BURST = 60


def test_a_burst_of_results_is_published_once_each_despite_the_heartbeat_sweep(
    bed: Bed, prepare_home: Any, make_task: Any, runtime_artifact: Artifact
) -> None:
    home = prepare_home("edge", functions={"quick": QUICK})
    bed.start_controller()
    node = bed.agent("edge", home)  # heartbeat (and so the sweep) every 0.2 s
    up(bed, "edge")
    sent: list[str] = []
    send = node.outbox.send

    async def counted(outcome: Outcome) -> None:
        await send(outcome)
        sent.append(outcome.task_id)

    node.outbox.send = counted  # type: ignore[method-assign]
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(artifact_of(home, "quick"))
        receipts = c.submit_many([make_task("quick", memory_mib=32) for _ in range(BURST)])
        ids = [r["task_id"] for r in receipts]
        for tid in ids:
            assert c.wait(tid, timeout=120)["status"] == "done"
        # a good request after the burst: the node keeps serving
        assert (
            c.wait(c.submit(make_task("quick", memory_mib=32))["task_id"], timeout=60)["status"]
            == "done"
        )
    assert sorted(sent[:BURST]) == sorted(ids), "a result of the burst was published twice"
    assert len(sent) == BURST + 1 and len(set(sent)) == BURST + 1
