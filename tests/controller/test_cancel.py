"""Cancelling a task through the API: relayed over real NATS to a real node agent, whose
orchestrator stops the persistent task; the outcome says it was cancelled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fades.errors import NodeUnavailable, TaskNotCancellable, TaskNotFound
from fades.functions.artifact import Artifact
from fades.functions.build import build_python
from fades.functions.keys import SigningKey

from .conftest import VISITOR, Bed
from .test_api import up
from .test_with_agent import keep_rooms

COUNTER = """
COUNT = 0

def main(data, params):
    global COUNT
    COUNT += 1
    return {"count": COUNT}
"""


def test_a_running_persistent_task_is_cancelled_on_its_node(
    bed: Bed,
    tmp_path: Path,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
) -> None:
    home = prepare_home("edge", runtime=False)
    keep_rooms(home, "room1")
    bed.start_controller()
    agent = bed.agent("edge", home)
    up(bed, "edge")
    src = tmp_path / "src" / "counter.py"
    src.parent.mkdir()
    src.write_text(COUNTER)
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(build_python(src, key=signing_key).to_bytes())
        task = make_task("counter", memory_mib=32, mode="persistent", period_s=0.05)
        tid = c.submit(task)["task_id"]

        # wait until the node has run it at least twice (readiness, not a time budget)
        orc = agent.require_node().orchestrator
        deadline = time.monotonic() + 120
        while not (orc.exists(tid) and len(orc.invocations(tid)) >= 2):
            assert time.monotonic() < deadline, "the persistent task never ran twice"
            time.sleep(0.05)
        assert c.get(tid)["status"] in ("accepted", "dispatched", "running")

        # a task the node accepted but has not started (its one worker runs the persistent
        # task) is not run: it fails at once as cancelled
        queued = c.submit(make_task("counter", memory_mib=32))["task_id"]
        while not orc.exists(queued):
            assert time.monotonic() < deadline, "the node never accepted the second task"
            time.sleep(0.05)
        assert orc.store.get(queued).status == "accepted"
        c.cancel(queued)
        info = c.wait(queued, timeout=60)
        assert info["status"] == "failed" and info["error_kind"] == "TaskCancelled", info
        assert info["started_at"] is None and "before it started" in info["error"], info

        with bed.client(VISITOR) as other, pytest.raises(TaskNotFound):
            other.cancel(tid)  # another tenant's task is not found (404)

        receipt = c.cancel(tid)
        assert receipt["task_id"] == tid and receipt["node"] == "edge"
        info = c.wait(tid, timeout=60)
        assert info["status"] == "failed", info
        assert info["error_kind"] == "TaskCancelled", info
        assert "cancelled" in info["error"]

        with pytest.raises(TaskNotCancellable, match="already ended"):
            c.cancel(tid)  # 409

        # the node keeps serving: a task after the cancel runs
        tid2 = c.submit(make_task("counter", memory_mib=32))["task_id"]
        assert c.wait(tid2, timeout=60)["status"] == "done"


def test_a_task_the_node_has_not_taken_is_cancelled_at_the_controller(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    from fades.functions.artifact import create

    from .conftest import CORE_WASM, held

    bed.start_controller()
    bed.register("edge", [held("room1")])  # registered, takes no tasks, answers nothing
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        tid = c.submit(make_task("f"))["task_id"]
        # nobody serves edge's control subject: the controller says so (503), names the node
        with pytest.raises(NodeUnavailable, match="edge"):
            c.cancel(tid)
