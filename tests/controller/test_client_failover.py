"""The client sends a submit to the next controller when the first stops answering (a read
timeout: here a real controller process under SIGSTOP). The submit carries a task id the
client chose, so the task is accepted once: a resend the cluster already holds answers with
its receipt, not an error."""

from __future__ import annotations

import os
import signal
import time

import pytest

from controller.conftest import pair_task  # type: ignore[import-not-found]
from fades.client import FadesClient
from fades.cluster import LocalCluster
from fades.errors import ControllerUnreachable, DuplicateTask


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
        b.wait(b.submit(pair_task(pair))["task_id"], timeout=120)
    with FadesClient(pair.urls, pair.token, timeout=3.0) as c, Stopped(pair, 1):
        t0 = time.monotonic()
        receipt = c.submit(pair_task(pair))  # no id given: the client chooses one
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
        first = b.submit(pair_task(pair, "resend-held-1"))  # the cluster holds this task
        b.wait("resend-held-1", timeout=120)
    with FadesClient(pair.urls, pair.token, timeout=3.0) as c, Stopped(pair, 1):
        again = c.submit(pair_task(pair, "resend-held-1"))  # lost answer, then a duplicate
        assert again["resent"] is True and again["task_id"] == "resend-held-1"
        assert again["node"] == first["node"]
        assert [t["task_id"] for t in c.tasks(limit=1000)].count("resend-held-1") == 1
        # the same id sent with no answer lost is still refused as a duplicate
        with pytest.raises(DuplicateTask):
            c.submit(pair_task(pair, "resend-held-1"))


def test_a_lone_controller_that_stops_answering_is_reported_not_retried(
    pair: LocalCluster,
) -> None:
    with (
        FadesClient(pair.urls[0], pair.token, timeout=2.0) as c,
        Stopped(pair, 1),
        pytest.raises(ControllerUnreachable, match="ReadTimeout"),
    ):
        c.submit(pair_task(pair))
