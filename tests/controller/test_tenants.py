"""Issue 16, class 8: tenants cannot see or harm each other through the controller.

Task ids are per tenant (no existence oracle), function names belong to the tenant that first
published them, an older version is not made current again by replaying it, and a task the
fabric cannot carry is refused at submit, never blocking the dispatch of others.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fades.errors import NameTaken, RollbackRefused, TaskValidationError
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.outcome import Outcome

from .conftest import CORE_WASM, FACILITIES, VISITOR, Bed, held
from .test_api import raw, up


def fn(key: SigningKey, name: str, value: int, created: int) -> Artifact:
    source = f"def main(data, params):\n    return {value}\n".encode()
    return create("python", name, source, key=key, extra={"created": created})


def test_task_ids_are_per_tenant_and_reveal_nothing_across_tenants(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    bed.start_controller()
    reg = bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client(FACILITIES) as fac, bed.client(VISITOR) as vis:
        fac.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        fac.submit(make_task("f", task_id="job-1"), node="edge")
        # the same id for another tenant: accepted, not 409
        resp = raw(
            bed,
            "POST",
            "/v1/tasks?node=edge",
            VISITOR,
            json=make_task("f", tenant="visitor", task_id="job-1"),
        )
        assert resp.status_code == 202, resp.text
        # a tenant's own duplicate is still refused
        again = raw(
            bed,
            "POST",
            "/v1/tasks?node=edge",
            VISITOR,
            json=make_task("f", tenant="visitor", task_id="job-1"),
        )
        assert again.status_code == 409
        # another tenant's id looks exactly like an id nobody used
        theirs = raw(bed, "GET", "/v1/tasks/job-1", VISITOR).json()
        assert theirs["tenant"] == "visitor"
        ghost = raw(bed, "GET", "/v1/tasks/job-2", VISITOR)
        also = raw(bed, "GET", "/v1/tasks/job-2", FACILITIES)
        assert ghost.status_code == also.status_code == 404 and ghost.json() == also.json()

        # on the wire the two tasks carry distinct ids; each outcome reaches its own tenant
        sent = bed.run(reg.dispatched())
        wire = {
            e["task"]["credentials"]["tenant"]: e["task"]["credentials"]["task_id"] for e in sent
        }
        assert wire["facilities"] == "job-1" and wire["visitor"] != "job-1"
        for tenant, value in (("facilities", 1), ("visitor", 2)):
            out = Outcome(
                task_id=wire[tenant], tenant=tenant, node="edge", status="done", result=value
            )
            bed.publish_outcome("edge", out, f"{wire[tenant]}.result")
        assert fac.outcome("job-1", timeout=10).result == 1
        mine = vis.outcome("job-1", timeout=10)
        assert mine.result == 2 and mine.task_id == "job-1" and mine.tenant == "visitor"
        assert [t["task_id"] for t in vis.tasks()] == ["job-1"]


def test_names_belong_to_their_first_publisher_and_old_versions_stay_old(
    bed: Bed, signing_key: SigningKey
) -> None:
    bed.start_controller()
    v1, v2 = fn(signing_key, "stats", 1, 1_000), fn(signing_key, "stats", 2, 2_000)
    with bed.client(FACILITIES) as fac, bed.client(VISITOR) as vis:
        fac.upload(v1.to_bytes())
        fac.upload(v2.to_bytes())
        fac.upload(v2.to_bytes())  # the current version again: harmless
        # another tenant cannot publish under the name, whatever the version
        with pytest.raises(NameTaken, match="'stats' belongs to tenant 'facilities'"):
            vis.upload(fn(signing_key, "stats", 9, 9_000).to_bytes())
        resp = raw(
            bed,
            "POST",
            "/v1/functions",
            VISITOR,
            content=fn(signing_key, "stats", 8, 8_000).to_bytes(),
        )
        assert resp.status_code == 403 and resp.json()["error_kind"] == "NameTaken"
        assert vis.upload(fn(signing_key, "vstats", 1, 1_000).to_bytes())["name"] == "vstats"

        # replaying v1, or a fresh artifact older than v2: refused unless asked for
        with pytest.raises(RollbackRefused, match="allow_rollback=true"):
            fac.upload(v1.to_bytes())
        older = fn(signing_key, "stats", 0, 500)
        resp = raw(bed, "POST", "/v1/functions", FACILITIES, content=older.to_bytes())
        assert resp.status_code == 409 and resp.json()["error_kind"] == "RollbackRefused"
        assert bed.run(bed.controller.repository.resolve("stats")) == v2.digest  # type: ignore[union-attr]
        # asked for explicitly: v1 is current again
        assert fac.upload(v1.to_bytes(), allow_rollback=True)["digest"] == v1.digest
        assert bed.run(bed.controller.repository.resolve("stats")) == v1.digest  # type: ignore[union-attr]
        # two builds of the same second: the version order (then the digest) decides, and the
        # one that sorts first is refused, not silently left behind the other
        low, high = sorted(
            (fn(signing_key, "same", 1, 3_000), fn(signing_key, "same", 2, 3_000)),
            key=lambda a: a.digest,
        )
        fac.upload(high.to_bytes())
        with pytest.raises(RollbackRefused):
            fac.upload(low.to_bytes())
        # and the controller keeps serving
        assert vis.health()["status"] == "ok"


def test_a_task_the_fabric_cannot_carry_is_refused_at_submit(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = bed.start_controller()
    reg = bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        # within the HTTP body limit, over what one message carries: params are bounded by
        # the task model (262,144 bytes) below the fabric's limit, so it is a 400 naming it
        assert ctl.max_payload - 4096 > 262_144
        big = make_task("f", params={"blob": "x" * 300_000})
        resp = raw(bed, "POST", "/v1/tasks?node=edge", json=big)
        assert resp.status_code == 400, resp.text
        assert "at most 262,144" in resp.json()["detail"]
        # over the HTTP body limit: refused before it is read
        huge = make_task("f", params={"blob": "x" * (2 * 1024 * 1024)})
        resp = raw(bed, "POST", "/v1/tasks?node=edge", json=huge)
        assert resp.status_code == 413 and "limit of 1048576 bytes" in resp.json()["detail"]
        with pytest.raises(TaskValidationError):
            c.submit(big, node="edge")
        # nothing of them was recorded, and the next task goes through
        assert c.tasks() == []
        ok = c.submit(make_task("f"), node="edge")
        assert c.get(ok["task_id"])["status"] == "dispatched"
    assert len(bed.run(reg.dispatched())) == 1


def test_one_task_that_cannot_be_dispatched_fails_alone(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = bed.start_controller()
    reg = bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
    # what an older controller accepted: an oversized task, queued before a good one
    now = time.time()
    bad = make_task("f", task_id="too-big", params={"blob": "x" * ctl.max_payload})
    good = make_task("f", task_id="fine")
    for i, task in enumerate((bad, good)):
        ctl.store.add_task(
            task["credentials"]["task_id"],
            tenant="facilities",
            node="edge",
            where="edge",
            task=task,
            placement="queued earlier",
            submitted_at=now + i,
        )
    ctl.dispatcher.kick()
    with bed.client() as c:
        failed = c.wait("too-big", timeout=10)
        assert failed["status"] == "failed", failed
        assert failed["error_kind"] == "DispatchFailed"
        assert "exceeds the fabric's limit" in failed["error"]
        deadline = time.monotonic() + 10
        while c.get("fine")["status"] != "dispatched":
            assert time.monotonic() < deadline, "the good task was held up"
            time.sleep(0.05)
    assert [e["task"]["credentials"]["task_id"] for e in bed.run(reg.dispatched())] == ["fine"]
