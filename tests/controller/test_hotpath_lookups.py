"""The controller's hot path, part two: a batch's duplicate checks share one query, the
envelope written without pydantic is the same message and still measured against the
fabric's limit, and the dispatcher's sweep leaves alone the tasks its submits are
publishing."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from fades.controller.dispatch import HEADER_ROOM, envelope
from fades.controller.store import ControllerStore, PendingTask
from fades.fabric.protocol import TaskEnvelope
from fades.functions.artifact import create
from fades.functions.keys import SigningKey

from .conftest import CORE_WASM, Bed, held
from .test_api import up


def _ready(bed: Bed, signing_key: SigningKey) -> Any:
    ctl = bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
    return ctl


def test_a_batch_asks_about_duplicates_in_one_query_and_still_refuses_them(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = _ready(bed, signing_key)
    with bed.client() as c:
        first = c.submit(make_task("f", task_id="seen-before"))
        assert first["task_id"] == "seen-before"
        lookups = ctl._exists
        assert lookups is not None
        queries = lookups.queries
        batch = [make_task("f", task_id=f"b{i:03d}") for i in range(100)]
        batch += [make_task("f", task_id="seen-before"), make_task("f", task_id="b007")]
        results = c.submit_many(batch)
        # every duplicate check of the batch was answered by a handful of queries, not 102
        assert lookups.queries - queries <= 3, lookups.queries - queries
        assert [r["accepted"] for r in results[:100]] == [True] * 100
        assert results[100]["accepted"] is False and results[100]["status"] == 409
        assert "seen-before" in results[100]["detail"]
        # the same id twice in one batch: accepted once only (the database's key)
        assert results[101]["accepted"] is False and results[101]["status"] == 409
        assert len({t["task_id"] for t in c.tasks(limit=500)}) == 101
        # and the controller keeps serving
        assert c.submit(make_task("f", task_id="after"))["task_id"] == "after"


def test_a_task_too_big_for_the_fabric_is_still_refused_with_the_limit(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = _ready(bed, signing_key)
    ctl.max_payload = HEADER_ROOM + 4000  # a fabric that carries 4000-byte tasks
    with bed.client() as c:
        # just over: the envelope, measured exactly, is refused
        big = make_task("f", params={"pad": "x" * 3800})
        resp = c._http.post("/v1/tasks", json=big)
        assert resp.status_code == 413, resp.text
        assert "at most 4000 bytes per task" in resp.json()["detail"]
        # just under: accepted
        near = make_task("f", params={"pad": "x" * 2600})
        assert c.submit(near)["node"] == "edge"
        assert c.submit(make_task("f"))["node"] == "edge"


def test_the_sweep_skips_tasks_being_published_without_reading_them(tmp_path: Any) -> None:
    store = ControllerStore(tmp_path / "c.db")
    for i in range(3):
        store.add_task(
            f"t{i}",
            tenant="a",
            node="n",
            where="edge",
            task={"i": i},
            placement="p",
            submitted_at=time.time(),
        )
    assert [p.id for p in store.pending("edge")] == ["t0", "t1", "t2"]
    assert [p.id for p in store.pending("edge", {("a", "t1"), ("b", "t2")})] == ["t0", "t2"]
    assert store.existing([("a", "t0"), ("a", "zz"), ("b", "t1"), ("a", "t2")]) == {
        ("a", "t0"),
        ("a", "t2"),
    }
    store.close()


def test_the_envelope_written_directly_is_the_task_envelope(tmp_path: Any) -> None:
    task = {
        "credentials": {"tenant": "a", "task_id": "t1"},
        "function": {"artifact": "f", "params": {"x": 1.5, "s": "é\u2028", "n": None}},
    }
    digest = "sha256:" + "ab" * 32
    p = PendingTask("a", "t1", "t1.00ff", "edge", "edge", task, 1_700_000_000.25, digest)
    env = TaskEnvelope.decode(envelope(p))
    want = TaskEnvelope(
        task={
            "credentials": {"tenant": "a", "task_id": "t1.00ff"},
            "function": {"artifact": digest, "params": {"x": 1.5, "s": "é\u2028", "n": None}},
        },
        submitted_at=1_700_000_000.25,
        digest=digest,
    )
    assert env == want
    assert len(envelope(p)) <= len(want.encode()) + 64
    with pytest.raises(ValueError, match="digest"):
        envelope(dataclasses.replace(p, digest="sha256:nope"))
    with pytest.raises(ValueError):
        envelope(dataclasses.replace(p, task={**task, "x": float("nan")}))
