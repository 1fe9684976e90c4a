"""``POST /v1/tasks/batch`` over a real loopback socket: each task accepted or refused on its
own (with the reason a single submit would give), limits named, the controller serving
afterwards, and tenant scoping."""

from __future__ import annotations

from typing import Any

import httpx

from fades.functions.artifact import create
from fades.functions.keys import SigningKey

from .conftest import CORE_WASM, FACILITIES, VISITOR, Bed, held
from .test_api import up


def post_batch(bed: Bed, body: Any, token: str | None = FACILITIES, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        bed.url + "/v1/tasks/batch", json=body, params=params, headers=headers, timeout=30
    )


def setup(bed: Bed, signing_key: SigningKey) -> Any:
    bed.start_controller()
    reg = bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
    return reg


def test_a_batch_accepts_good_tasks_and_refuses_bad_ones_each_with_its_reason(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    reg = setup(bed, signing_key)
    tasks = [
        make_task("f", task_id="good-1"),
        "not a task",
        make_task("no-such-function", task_id="unknown-fn"),
        make_task("f", task_id="good-1"),  # a duplicate of the first
        make_task("f", tenant="visitor", task_id="not-mine"),
        {"credentials": {"tenant": "facilities", "task_id": "bad"}, "function": {}},
        make_task("f", task_id="good-2"),
    ]
    resp = post_batch(bed, {"tasks": tasks})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    res = body["results"]
    assert [r["index"] for r in res] == list(range(len(tasks)))
    assert body["accepted"] == 2 and body["refused"] == 5
    assert res[0]["accepted"] and res[0]["task_id"] == "good-1" and res[0]["node"] == "edge"
    assert res[6]["accepted"] and res[6]["task_id"] == "good-2"
    kinds = {r["index"]: (r["status"], r["error_kind"]) for r in res if not r["accepted"]}
    assert kinds[1] == (400, "TaskValidationError")
    assert kinds[2] == (404, "ArtifactError") and "no-such-function" in res[2]["detail"]
    assert kinds[3] == (409, "DuplicateTask") and res[3]["task_id"] == "good-1"
    assert kinds[4] == (403, "Forbidden")
    assert kinds[5][0] == 400 and res[5]["problems"]
    # exactly the accepted ones reached the node
    ids = {e["task"]["credentials"]["task_id"] for e in bed.run(reg.dispatched())}
    assert ids == {"good-1", "good-2"}
    # and the controller keeps serving: a single submit and another batch
    with bed.client() as c:
        assert c.submit(make_task("f", task_id="after"))["task_id"] == "after"
        again = c.submit_many([make_task("f", task_id=f"m{i}") for i in range(5)], batch=2)
    assert [r["index"] for r in again] == list(range(5)) and all(r["accepted"] for r in again)


def test_batch_limits_are_named_and_the_controller_serves_afterwards(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    setup(bed, signing_key)
    from fades.controller.batchapi import MAX_BATCH_TASKS

    too_many = post_batch(bed, {"tasks": [make_task("f")] * (MAX_BATCH_TASKS + 1)})
    assert too_many.status_code == 400
    assert f"at most {MAX_BATCH_TASKS} tasks" in too_many.json()["detail"]
    for body in ({"tasks": []}, {"tasks": "x"}, {}, [1, 2]):
        bad = post_batch(bed, body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["error_kind"] == "TaskValidationError"
    not_json = httpx.post(
        bed.url + "/v1/tasks/batch",
        content=b"{nope",
        headers={"Authorization": f"Bearer {FACILITIES}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["detail"]
    ok = post_batch(bed, {"tasks": [make_task("f", task_id="fine")]})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1


def test_batch_needs_a_token_and_submits_for_the_tokens_tenant_only(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    setup(bed, signing_key)
    assert post_batch(bed, {"tasks": [make_task("f")]}, token=None).status_code == 401
    assert post_batch(bed, {"tasks": [make_task("f")]}, token="wrong-token-xx").status_code == 401
    res = post_batch(
        bed, {"tasks": [make_task("f", tenant="visitor", task_id="v1"), make_task("f")]}, VISITOR
    ).json()["results"]
    assert res[0]["accepted"] and not res[1]["accepted"] and res[1]["status"] == 403
    with bed.client() as c:  # facilities does not see the visitor's task
        assert all(t["task_id"] != "v1" for t in c.tasks())
