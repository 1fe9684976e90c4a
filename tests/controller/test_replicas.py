"""Several controllers over one NATS: each a real ``fades controller start`` process with its
own ``controller.db``, a replica of the controller log (FADES_CTL_LOG on). Any controller
answers about any task; killing one with SIGKILL loses nothing it accepted, and it catches
up from the log when it comes back.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.conftest import pair_task  # type: ignore[import-not-found]
from fades.client import FadesClient
from fades.cluster import LocalCluster
from fades.errors import ControllerUnreachable, DuplicateTask, NameTaken
from fades.functions.build import build_python

FN = """
def main(data, params):
    return {"n": len(data["t"])}
"""


def _clients(cluster: LocalCluster, token: str | None = None) -> tuple[FadesClient, FadesClient]:
    tok = token or cluster.token
    return FadesClient(cluster.urls[0], tok), FadesClient(cluster.urls[1], tok)


def test_two_controllers_serve_the_same_tasks(pair: LocalCluster) -> None:
    assert len(pair.urls) == 2 and pair.urls[0] != pair.urls[1]
    a, b = _clients(pair)
    with a, b:
        tid = a.submit(pair_task(pair))["task_id"]
        rec = b.wait(tid, timeout=60)  # a long-poll on B wakes for A's task
        assert rec["status"] == "done" and rec["result"]["count"] > 0, rec
        assert a.get(tid)["result"] == rec["result"]
        tid2 = b.submit(pair_task(pair))["task_id"]
        assert a.wait(tid2, timeout=60)["status"] == "done"
        # the result stream gives each outcome the same event id on both controllers
        ids_a = {o["task_id"]: o["event_id"] for o in a.results([tid, tid2], since=0, timeout=30)}
        ids_b = {o["task_id"]: o["event_id"] for o in b.results([tid, tid2], since=0, timeout=30)}
        assert ids_a == ids_b and len(ids_a) == 2
        assert {t["task_id"] for t in b.tasks()} >= {tid, tid2}


def test_a_duplicate_task_id_is_refused_by_the_other_controller(pair: LocalCluster) -> None:
    a, b = _clients(pair)
    with a, b:
        a.submit(pair_task(pair, "dup-across-1"))
        with pytest.raises(DuplicateTask):
            b.submit(pair_task(pair, "dup-across-1"))
        # both at once: exactly one is accepted, decided by the log's order
        outcomes: list[str] = []

        def send(c: FadesClient) -> None:
            try:
                c.submit(pair_task(pair, "dup-across-2"))
                outcomes.append("accepted")
            except DuplicateTask:
                outcomes.append("duplicate")

        threads = [threading.Thread(target=send, args=(c,)) for c in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes) == ["accepted", "duplicate"]
        # and both keep serving
        assert b.wait("dup-across-1", timeout=60)["status"] == "done"


def test_a_function_name_owned_on_one_controller_is_enforced_on_the_other(
    pair: LocalCluster, tmp_path: Path
) -> None:
    src = tmp_path / "owned_by_facilities.py"
    src.write_text(FN)
    assert pair.key is not None
    art = build_python(src, key=pair.key).to_bytes()
    a, _ = _clients(pair)
    _, b_visitor = _clients(pair, pair.visitor_token)
    with a, b_visitor:
        a.upload(art)
        with pytest.raises(NameTaken, match="facilities"):
            b_visitor.upload(art)
        assert a.submit(pair_task(pair))["task_id"]  # still serving


def test_a_pipeline_submitted_on_one_controller_runs_from_the_other(pair: LocalCluster) -> None:
    from fades.cluster import find_examples
    from fades.pipelines.spec import load_pipeline

    spec = load_pipeline(find_examples(pair.examples) / "pipelines" / "building-report.yaml")
    a, b = _clients(pair)
    with a, b:
        a.submit_pipeline(spec.to_dict(), replace=True)
        assert spec.name in {p["pipeline"] for p in b.pipelines()}
        runs = b.start_runs(spec.name, 2)["runs"]
        ended = a.wait_runs(spec.name, runs, timeout=120)
        assert [r["status"] for r in ended] == ["done", "done"], ended
        assert {r["run"] for r in b.pipeline_runs(spec.name)} >= set(runs)
        # one run's events land on either controller; both hold the same run
        one_a, one_b = a.pipeline_run(spec.name, runs[0]), b.pipeline_run(spec.name, runs[0])
        assert one_a["status"] == one_b["status"] == "done"
        assert one_a["results"] == one_b["results"] and one_a["results"]


def test_a_client_with_both_urls_moves_on_when_one_cannot_be_reached(pair: LocalCluster) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    with FadesClient(f"{dead},{pair.urls[1]}", pair.token) as c:
        tid = c.submit(pair_task(pair))["task_id"]
        assert c.base_url == pair.urls[1]
        assert c.wait(tid, timeout=60)["status"] == "done"
    with FadesClient(dead, pair.token) as c, pytest.raises(ControllerUnreachable):
        c.tasks()


def test_killing_a_controller_loses_no_accepted_task_and_it_catches_up(
    pair: LocalCluster,
) -> None:
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter(url: str) -> None:
        with FadesClient(url, pair.token, timeout=20) as c:
            while not stop.is_set():
                try:
                    tid = c.submit(pair_task(pair))["task_id"]
                except ControllerUnreachable:
                    time.sleep(0.05)  # A is dead: its submitter keeps trying in vain
                    continue
                with lock:
                    accepted.append(tid)

    threads = [threading.Thread(target=submitter, args=(u,)) for u in pair.urls]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(accepted) < 20:
            assert time.monotonic() < deadline, f"only {len(accepted)} tasks accepted"
            time.sleep(0.05)
        proc = pair.procs["controller1"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = len(accepted)
        deadline = time.monotonic() + 60
        while len(accepted) < before + 20:  # B keeps accepting after A's death
            assert time.monotonic() < deadline, "the surviving controller stopped accepting"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    _, b = _clients(pair)
    with b:
        # outcomes A held un-acked come back to B after the results consumer's ack wait
        for tid in accepted:
            rec = b.wait(tid, timeout=120)
            assert rec["status"] == "done", rec
    # A comes back and catches up from the log: it answers for every task
    pair.procs.pop("controller1", None)
    pair.start_controller(1)
    pair.wait_controller(i=1, timeout=120)
    a, _ = _clients(pair)
    with a:
        for tid in accepted:
            assert a.get(tid)["status"] == "done"
        tid = a.submit(pair_task(pair))["task_id"]
        assert a.wait(tid, timeout=60)["status"] == "done"


def test_the_lead_moves_to_another_controller_when_the_leader_dies(nats_server: Any) -> None:
    """Two leases on a real NATS: one leads; when it dies without letting go (its renewals
    stop), the other takes the lead within the lease; a clean stop hands it over at once."""
    import asyncio

    from fades.bus.nats import NatsBus
    from fades.controller.leader import LEASE_S, RENEW_S, Leadership

    async def main() -> None:
        buses = [await NatsBus.connect(nats_server.url) for _ in range(3)]
        elected: list[str] = []
        a = Leadership(buses[0], "a", lambda: elected.append("a"))
        b = Leadership(buses[1], "b", lambda: elected.append("b"))
        await a.start()
        await b.start()
        try:
            await asyncio.sleep(2 * RENEW_S)
            assert a.is_leader and not b.is_leader and elected == ["a"]
            assert a._task is not None
            a._task.cancel()  # "a" dies: no more renewals, the key is left to expire
            t0 = time.monotonic()
            while not b.is_leader:
                assert time.monotonic() - t0 < LEASE_S + 4 * RENEW_S + 5, "no takeover"
                await asyncio.sleep(0.1)
            assert elected == ["a", "b"]
            c = Leadership(buses[2], "c", lambda: elected.append("c"))
            await c.start()
            assert not c.is_leader
            await b.stop()  # a clean stop lets go at once
            t0 = time.monotonic()
            while not c.is_leader:
                assert time.monotonic() - t0 < 3 * RENEW_S + 5, "no handover after a clean stop"
                await asyncio.sleep(0.1)
            await c.stop()
        finally:
            for bus in buses:
                await bus.close()

    asyncio.run(main())


def test_a_batch_is_marked_dispatched_on_every_controller(pair: LocalCluster) -> None:
    """The dispatched marks of a batch travel through the controller log as grouped
    operations (``mark_dispatched_many``); the other controller applies them too."""
    import sqlite3

    a, b = _clients(pair)
    with a, b:
        receipts = a.submit_many([pair_task(pair) for _ in range(40)])
        ids = [r["task_id"] for r in receipts if r["accepted"]]
        assert len(ids) == 40, receipts[:3]
        for tid in ids:
            assert b.wait(tid, timeout=120)["status"] == "done"
    for i in (1, 2):
        db = sqlite3.connect(pair.controller_home_of(i) / "controller.db")
        try:
            marks = ",".join("?" * len(ids))
            rows = db.execute(
                f"SELECT id, dispatched_at FROM tasks_v2 WHERE id IN ({marks})", ids
            ).fetchall()
        finally:
            db.close()
        assert len(rows) == 40
        assert all(at is not None for _, at in rows), f"controller {i}: not marked dispatched"
