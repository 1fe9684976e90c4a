"""The function that runs is the one pinned at submit, and the controller never touches its
database on the event loop."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fades.controller.store import ControllerStore
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.outcome import Outcome

from .conftest import CORE_WASM, Bed, held
from .test_api import up


def version(key: SigningKey, value: int, created: int) -> Artifact:
    source = f"def main(data, params):\n    return {value}\n".encode()
    return create("python", "ver", source, key=key, extra={"created": created})


def test_the_digest_pinned_at_submit_runs_even_after_a_newer_upload(
    bed: Bed,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
) -> None:
    bed.start_controller()
    reg = bed.register("late", [held("room1")])
    up(bed, "late")
    v1, v2 = version(signing_key, 1, 1_000), version(signing_key, 2, 2_000)
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(v1.to_bytes())
        tid = c.submit(make_task("ver", memory_mib=32), node="late")["task_id"]
        assert c.get(tid)["digest"] == v1.digest
        # a new version is uploaded before the node has even seen the task
        c.upload(v2.to_bytes())
        [env] = bed.run(reg.dispatched())
        assert env["digest"] == v1.digest and env["task"]["function"]["artifact"] == v1.digest
        # the node comes (back) and takes the task from its stream: it runs v1
        bed.run(reg.stop(clean=False))
        bed.agent("late", prepare_home("late"))
        info = c.wait(tid, timeout=60)
        assert info["status"] == "done", info
        assert info["result"] == 1 and info["digest"] == v1.digest
        # a task submitted now pins (and runs) v2
        later = c.wait(c.submit(make_task("ver", memory_mib=32), node="late")["task_id"], 60)
        assert later["result"] == 2 and later["digest"] == v2.digest


def test_the_cloud_path_runs_the_pinned_digest(
    bed: Bed,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
) -> None:
    v1, v2 = version(signing_key, 1, 1_000), version(signing_key, 2, 2_000)
    ctl = bed.start_controller()
    bed.agent("edge", prepare_home("edge"))
    up(bed, "edge")
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(v1.to_bytes())
        c.upload(v2.to_bytes())
    # a cloud task accepted while v1 was current, cut short by a crash
    bed.stop_controller()
    task = make_task("ver", task_id="k1", memory_mib=32)
    store = ControllerStore(ctl.home / "controller.db")
    store.add_task(
        "k1",
        tenant="facilities",
        node="edge",
        where="cloud",
        task=task,
        placement="before the crash",
        submitted_at=0.0,
        digest=v1.digest,
    )
    store.close()
    bed.start_controller()
    with bed.client() as c:
        out = c.outcome("k1", timeout=60)
    assert out.status == "done" and out.result == 1 and out.digest == v1.digest


def test_the_store_is_never_called_on_the_event_loop(
    bed: Bed, make_task: Any, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    for name in (
        "add_task",
        "add_outcome",
        "mark_dispatched",
        "get",
        "list",
        "existing",
        "pending",
    ):
        original = getattr(ControllerStore, name)

        def spy(
            self: ControllerStore, *a: Any, _o: Any = original, _n: str = name, **k: Any
        ) -> Any:
            calls.append((_n, threading.get_ident()))
            return _o(self, *a, **k)

        monkeypatch.setattr(ControllerStore, name, spy)
    bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        tid = c.submit(make_task("f"), node="edge")["task_id"]
        done = Outcome(task_id=tid, tenant="facilities", node="edge", status="done", result=3)
        bed.publish_outcome("edge", done, f"{tid}.result")
        assert c.wait(tid, timeout=60)["result"] == 3
        assert [t["task_id"] for t in c.tasks()] == [tid]
    names = {n for n, _ in calls}
    assert {"add_task", "add_outcome", "mark_dispatched", "get", "list", "existing"} <= names
    # a lone write or an indexed read runs on the loop when the store is free (it never
    # waits for the store: test_lone_commit.py); listing and the dispatch sweep never do
    on_loop = [n for n, ident in calls if ident == bed.thread.ident]
    assert not {"list", "pending"} & set(on_loop), f"store calls on the event loop: {on_loop}"
