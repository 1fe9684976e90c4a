"""The HTTP API over a real loopback socket: uploads, tenants, refusals, de-duplication."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fades.errors import (
    ArtifactError,
    DuplicateTask,
    Forbidden,
    SignatureError,
    TaskNotFound,
    TaskValidationError,
    UnknownNode,
)
from fades.functions.artifact import create
from fades.functions.keys import SigningKey, TrustStore
from fades.functions.store import FunctionStore
from fades.outcome import Outcome

from .conftest import CORE_WASM, FACILITIES, VISITOR, Bed, held

COUNT = """
def main(data, params):
    return {"rows": sum(len(ds) for ds in data.values())}
"""

POLICY = {
    "tenants": {
        "facilities": {"locations": "*", "sensor_types": "*"},
        "visitor": {"locations": ["room1"], "sensor_types": ["temperature"]},
    }
}


def raw(bed: Bed, method: str, path: str, token: str | None = FACILITIES, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, bed.url + path, headers=headers, timeout=20, **kw)


def artifact_of(home: Path, name: str) -> bytes:
    store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
    return store.get(name).to_bytes()


def up(bed: Bed, *names: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with bed.client() as c:
        while time.monotonic() < deadline:
            if set(names) <= {n["name"] for n in c.nodes() if n["up"]}:
                return
            time.sleep(0.02)
    raise AssertionError(f"nodes {names} not up")


# --- function upload --------------------------------------------------------------------------
def test_an_upload_is_verified_before_it_enters_the_repository(
    bed: Bed, signing_key: SigningKey
) -> None:
    bed.start_controller()
    good = create("python", "stats", b"def main(data, params):\n    return 1\n", key=signing_key)
    resp = raw(bed, "POST", "/v1/functions", content=good.to_bytes())
    assert resp.status_code == 201, resp.text
    assert resp.json()["digest"] == good.digest and resp.json()["signer"] == signing_key.id

    raw_bytes = bytearray(good.to_bytes())
    raw_bytes[-1] ^= 1  # one payload bit
    unsigned = create("python", "bare", b"def main(d, p):\n    return 2\n", key=None)
    stranger = create(
        "python", "evil", b"def main(d, p):\n    return 3\n", key=SigningKey.generate("stranger")
    )
    cases = [
        (bytes(raw_bytes), "SignatureError", "tampered"),
        (unsigned.to_bytes(), "SignatureError", "unsigned"),
        (stranger.to_bytes(), "SignatureError", "does not trust"),
        (b"hello, not an artifact", "ArtifactFormatError", "not a fades artifact"),
    ]
    for data, kind, words in cases:
        resp = raw(bed, "POST", "/v1/functions", content=data)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error_kind"] == kind and words in resp.json()["detail"]

    with bed.client() as c:
        assert [f["name"] for f in c.functions()] == ["stats"]
        with pytest.raises(SignatureError, match=r"the controller does not trust .*keys trust"):
            c.upload(stranger.to_bytes())
    assert raw(bed, "POST", "/v1/functions", token=None, content=good.to_bytes()).status_code == 401


# --- tenants ----------------------------------------------------------------------------------
def test_tenants_see_only_their_own_tasks_and_the_node_policy_still_applies(
    bed: Bed, prepare_home: Any, make_task: Any
) -> None:
    home = prepare_home("edge", functions={"count": COUNT}, policy=POLICY)
    bed.start_controller()
    bed.agent("edge", home)
    up(bed, "edge")
    fac, vis = bed.client(FACILITIES), bed.client(VISITOR)
    fac.upload(artifact_of(home, "count"))

    # a token cannot act for another tenant
    with pytest.raises(
        Forbidden, match="for tenant 'facilities' but the token belongs to tenant 'visitor'"
    ):
        vis.submit(make_task("count", memory_mib=32))
    assert raw(bed, "POST", "/v1/tasks", VISITOR, json=make_task("count")).status_code == 403

    mine = fac.submit(make_task("count", memory_mib=32))
    theirs = vis.submit(make_task("count", tenant="visitor", memory_mib=32))
    done = fac.wait(mine["task_id"], timeout=30)
    assert done["status"] == "done" and done["tenant"] == "facilities"
    assert done["result"]["rows"] > 0 and done["tenant"] == "facilities"
    assert vis.wait(theirs["task_id"], timeout=30)["status"] == "done"

    # another tenant's task does not exist for you
    with pytest.raises(TaskNotFound):
        vis.get(mine["task_id"])
    assert raw(bed, "GET", f"/v1/tasks/{mine['task_id']}", VISITOR).status_code == 404
    assert [t["task_id"] for t in vis.tasks()] == [theirs["task_id"]]
    assert [t["task_id"] for t in fac.tasks()] == [mine["task_id"]]

    # the node's access policy: visitor may read room1 temperature only
    co2_op = {"name": "c", "select": {"location": "room1", "sensor_type": "co2"}}
    co2 = make_task("count", tenant="visitor", memory_mib=32, data=[co2_op])
    refused = vis.wait(vis.submit(co2, node="edge")["task_id"], timeout=30)
    assert refused["status"] == "failed" and refused["error_kind"] == "AccessDenied"
    assert "visitor" in refused["error"]

    # no token, unknown token
    for token in (None, "not-a-known-token"):
        resp = raw(bed, "GET", "/v1/tasks", token)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    fac.close()
    vis.close()


# --- refusals ---------------------------------------------------------------------------------
def test_refusals_name_the_problem_with_the_right_status(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())

        resp = raw(
            bed,
            "POST",
            "/v1/tasks",
            json={"credentials": {"tenant": "facilities"}, "data": [], "function": {}},
        )
        assert resp.status_code == 400
        fields = {p["field"] for p in resp.json()["problems"]}
        assert {"data", "function.artifact"} <= fields
        assert raw(bed, "POST", "/v1/tasks", content=b"[1, 2").status_code == 400
        assert raw(bed, "POST", "/v1/tasks?where=moon", json=make_task("f")).status_code == 400
        with pytest.raises(TaskValidationError, match=r"function\.artifact"):
            c.submit(
                {"credentials": {"tenant": "facilities"}, "data": [{"name": "t"}], "function": {}}
            )

        reserved = make_task("f")
        reserved["inputs"] = {"_pipeline": 1}  # marks a pipeline stage's task on a node
        resp = raw(bed, "POST", "/v1/tasks", json=reserved)
        assert resp.status_code == 400 and "reserved" in resp.json()["detail"], resp.text

        with pytest.raises(ArtifactError, match="unknown function 'nope'"):
            c.submit(make_task("nope"))
        assert raw(bed, "POST", "/v1/tasks", json=make_task("nope")).status_code == 404
        with pytest.raises(UnknownNode, match="no node named 'mars'"):
            c.submit(make_task("f"), node="mars")
        assert raw(bed, "POST", "/v1/tasks?node=mars", json=make_task("f")).status_code == 404
        with pytest.raises(TaskNotFound):
            c.get("no-such-task")

        c.submit(make_task("f", task_id="job-1"))
        with pytest.raises(DuplicateTask, match="'job-1' was already submitted"):
            c.submit(make_task("f", task_id="job-1"))
        again = raw(bed, "POST", "/v1/tasks", json=make_task("f", task_id="job-1"))
        assert again.status_code == 409


# --- results ----------------------------------------------------------------------------------
def test_an_outcome_delivered_twice_is_stored_once(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        tid = c.submit(make_task("f"), node="edge")["task_id"]
        first = Outcome(
            task_id=tid,
            tenant="facilities",
            node="edge",
            status="done",
            result={"copy": 1},
            accepted_at=time.time(),
        )
        second = first.model_copy(update={"result": {"copy": 2}})
        bed.publish_outcome("edge", first, f"{tid}.result")
        # a second copy with another message id gets past JetStream's de-duplication
        bed.publish_outcome("edge", second, f"{tid}.result.again")
        bed.publish_outcome("edge", second, f"{tid}.result")  # and one JetStream drops itself
        # another tenant's name on it, and garbage: dropped, the consumer carries on
        bed.publish_outcome("edge", first.model_copy(update={"tenant": "visitor"}), "forged")
        bed.publish_outcome("edge", b"{not an outcome", "garbage")
        info = c.wait(tid, timeout=60)
        assert info["status"] == "done" and info["result"] == {"copy": 1}
        assert set(info["timing"]) >= {"dispatch", "latency"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics = httpx.get(bed.url + "/metrics").text
            if "fades_results_duplicate_total 1.0" in metrics:
                break
            time.sleep(0.05)
        assert "fades_results_duplicate_total 1.0" in metrics
        assert 'fades_results_total{status="done",where="edge"} 1.0' in metrics
        with bed.client(VISITOR) as v, pytest.raises(TaskNotFound):
            v.get(tid)
    assert ctl.store.outcome_count("facilities", tid) == 1
    assert ctl.store.outcome_count("visitor", tid) == 0
    stored = ctl.store.get(tid, "facilities").outcome
    assert stored is not None and stored.result == {"copy": 1}
    assert stored.accepted_at == first.accepted_at
