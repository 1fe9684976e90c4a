"""The controller's hot path: submits pin digests from memory (no key-value lookups per
submit, yet a new upload is pinned at once), and a burst of submits shares commits."""

from __future__ import annotations

import time
from typing import Any

from fades.functions.artifact import create
from fades.functions.keys import SigningKey

from .conftest import CORE_WASM, Bed, held
from .test_api import up


def test_submits_pin_from_the_watched_index_without_a_lookup_each(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    v1 = create("core", "f", CORE_WASM, key=signing_key, extra={"created": 1_000})
    with bed.client() as c:
        c.upload(v1.to_bytes())
    digests = ctl._digests
    assert digests is not None
    deadline = time.monotonic() + 60
    while not digests.ready and time.monotonic() < deadline:
        time.sleep(0.02)
    index = ctl.repository.index
    original = index.get
    gets: list[str] = []

    async def counting_get(key: str) -> Any:
        gets.append(key)
        return await original(key)

    index.get = counting_get  # type: ignore[method-assign]
    try:
        with bed.client() as c:
            receipts = c.submit_many([make_task("f") for _ in range(20)])
            assert all(r["accepted"] for r in receipts)
            assert gets == [], f"key-value lookups on submit: {gets[:5]}"
            hits = digests.hits
            # a newer version uploaded through this controller is pinned by the next submit
            v2 = create("core", "f", CORE_WASM, key=signing_key, extra={"created": 2_000})
            assert v2.digest != v1.digest
            c.upload(v2.to_bytes())
            tid = c.submit(make_task("f"))["task_id"]
            assert c.get(tid)["digest"] == v2.digest
            assert digests.hits > hits
    finally:
        index.get = original  # type: ignore[method-assign]


def test_a_burst_of_submits_shares_commits(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    ctl = bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        commits = ctl.recorder.commits
        groups, calls = commits.groups, commits.calls
        marks = ctl.dispatcher.mark_writes
        receipts = c.submit_many([make_task("f") for _ in range(100)])
    assert all(r["accepted"] for r in receipts)
    new_calls, new_groups = commits.calls - calls, commits.groups - groups
    assert new_calls >= 100  # a record per task (and the dispatched marks)
    assert new_groups < new_calls / 2, (new_groups, new_calls)
    # the tasks whose publish was acknowledged in the same loop turn are marked dispatched
    # with one write
    assert ctl.dispatcher.mark_writes - marks < 50, ctl.dispatcher.mark_writes - marks
    # every task is recorded and dispatched all the same
    with bed.client() as c:
        tasks = c.tasks(limit=200)
    assert len(tasks) == 100 and {t["status"] for t in tasks} == {"dispatched"}
