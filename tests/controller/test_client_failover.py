"""The client sends a submit to the next controller when the first stops answering (a read
timeout: here a real controller process under SIGSTOP). The submit carries a task id the
client chose, so the task is accepted once: a resend the cluster already holds answers with
its receipt, not an error."""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fades.client import FadesClient
from fades.cluster import LocalCluster
from fades.errors import ControllerUnreachable, DuplicateTask


def _task(cluster: LocalCluster, task_id: str | None = None) -> dict[str, Any]:
    creds: dict[str, Any] = {"tenant": "facilities"}
    if task_id is not None:
        creds["task_id"] = task_id
    room = cluster.rooms("edge1")[0]
    return {
        "credentials": creds,
        "data": [{"name": "t", "select": {"location": room, "sensor_type": "temperature"}}],
        "function": {"artifact": "mean_core", "time_budget_ms": 20000},
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    home = tmp_path_factory.mktemp("failover") / "cluster"
    cluster = LocalCluster(
        home, nodes=1, days=0.02, sensors=False, heartbeat_s=0.3, down_after_s=3.0, controllers=2
    )
    cluster.prepare()
    # finalise what earlier tests left (closed event loops' tasks) now: a finaliser that runs
    # inside ast.parse (building the cluster's functions) trips CPython 3.11's AST recursion
    # check ("AST constructor recursion depth mismatch")
    gc.collect()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Stopped:
    """Controller ``i`` frozen (SIGSTOP) inside the block: it accepts connections (the
    kernel does) but never answers."""

    def __init__(self, cluster: LocalCluster, i: int) -> None:
        self.pid = cluster.procs[f"controller{i}"].pid

    def __enter__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


def test_a_submit_goes_to_the_next_controller_when_the_first_stops_answering(
    pair: LocalCluster,
) -> None:
    with FadesClient(pair.urls[1], pair.token) as b:  # both up and serving first
        b.wait(b.submit(_task(pair))["task_id"], timeout=120)
    with FadesClient(pair.urls, pair.token, timeout=3.0) as c, Stopped(pair, 1):
        t0 = time.monotonic()
        receipt = c.submit(_task(pair))  # no id given: the client chooses one
        assert time.monotonic() - t0 < 60
        tid = receipt["task_id"]
        assert receipt["node"] == "edge1" and not receipt.get("resent")
        assert c.base_url == pair.urls[1]  # and it stays with the one that answers
        assert c.wait(tid, timeout=120)["status"] == "done"
    with FadesClient(pair.urls[0], pair.token) as a:  # the thawed one knows it too, once
        assert a.wait(tid, timeout=120)["status"] == "done"
        assert [t["task_id"] for t in a.tasks(limit=1000)].count(tid) == 1


def test_a_resent_submit_the_cluster_already_holds_answers_with_its_receipt(
    pair: LocalCluster,
) -> None:
    with FadesClient(pair.urls[1], pair.token) as b:
        first = b.submit(_task(pair, "resend-held-1"))  # the cluster holds this task
        b.wait("resend-held-1", timeout=120)
    with FadesClient(pair.urls, pair.token, timeout=3.0) as c, Stopped(pair, 1):
        again = c.submit(_task(pair, "resend-held-1"))  # lost answer, then a duplicate
        assert again["resent"] is True and again["task_id"] == "resend-held-1"
        assert again["node"] == first["node"]
        assert [t["task_id"] for t in c.tasks(limit=1000)].count("resend-held-1") == 1
        # the same id sent with no answer lost is still refused as a duplicate
        with pytest.raises(DuplicateTask):
            c.submit(_task(pair, "resend-held-1"))


def test_a_lone_controller_that_stops_answering_is_reported_not_retried(
    pair: LocalCluster,
) -> None:
    with (
        FadesClient(pair.urls[0], pair.token, timeout=2.0) as c,
        Stopped(pair, 1),
        pytest.raises(ControllerUnreachable, match="ReadTimeout"),
    ):
        c.submit(_task(pair))
