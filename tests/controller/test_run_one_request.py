"""``POST /v1/tasks/run`` and ``FadesClient.run``: submit and wait in one request, with a real
node agent on a real nats-server; the answer is the stored task (the same as a GET), a bad
task gets its one-line 4xx and the next run still works, and a run that outlives its wait
answers the task as it stands and leaves no waiter behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fades.errors import TaskValidationError
from fades.fabric import FabricSettings
from fades.functions.artifact import Artifact, create
from fades.functions.build import build_python
from fades.functions.keys import SigningKey
from fades.node.agent import NodeAgent

from .conftest import CORE_WASM, FACILITIES, Bed, held
from .test_api import up
from .test_with_agent import STATS


def test_run_answers_the_ended_task_in_one_request(
    bed: Bed,
    tmp_path: Path,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
) -> None:
    prepare_home("edge", runtime=False)
    ctl = bed.start_controller()
    agent = NodeAgent(
        "edge", tmp_path / "edge", FabricSettings(bed.nats.url), heartbeat_s=0.2, ingest=False
    )
    bed.run(agent.start())
    try:
        up(bed, "edge")
        src = tmp_path / "src" / "stats.py"
        src.parent.mkdir()
        src.write_text(STATS)
        op = {"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}
        with bed.client() as c:
            c.upload(runtime_artifact.to_bytes())
            c.upload(build_python(src, key=signing_key).to_bytes())
            info = c.run(make_task("stats", data=[op], memory_mib=32), timeout=60)
            assert info["status"] == "done", info
            assert info["result"]["n"] > 0 and info["node"] == "edge"
            assert c.get(info["task_id"]) == info  # what the database holds
            with pytest.raises(TaskValidationError):
                c.run({"credentials": {"tenant": "facilities"}, "function": {}})
            again = c.run(make_task("stats", data=[op], memory_mib=32), timeout=60)
            assert again["status"] == "done" and again["task_id"] != info["task_id"]
        # over plain HTTP: the same route answers a 4xx naming the bad wait
        r = httpx.post(
            f"{bed.url}/v1/tasks/run",
            params={"wait": "nan"},
            json=make_task("stats", data=[op], memory_mib=32),
            headers={"Authorization": f"Bearer {FACILITIES}"},
        )
        assert r.status_code == 400 and "wait" in r.json()["detail"]
    finally:
        bed.run(agent.stop())
    assert ctl.recorder.waiting_count == 0


def test_a_run_that_outlives_its_wait_answers_the_task_as_it_stands(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = bed.start_controller()
    bed.register("edge", [held("room1")])  # registered, but nothing runs its tasks
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        info = c.run(make_task("f"), node="edge", timeout=0.3)
        assert info["status"] == "dispatched"
        assert c.get(info["task_id"])["status"] == "dispatched"
    assert ctl.recorder.waiting_count == 0
