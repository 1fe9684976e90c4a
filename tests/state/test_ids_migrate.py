"""The point of the detector, over real processes: a nats-server, ``fades controller start``
and two ``fades node start`` agents, each with a ``packets`` connector replaying the same
capture on the same clock (a mirrored link). 40 % into a (compressed) slow port scan
the stateful detector is moved from node a to node b with a live migration; node b raises
the slow-scan alert. A detector started fresh on node b at the same moment never does."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.state.test_ids_node import detector_task
from tests.state.test_migrate import Cluster, wait_for

from fades.functions.artifact import Artifact
from fades.functions.build import build_python
from fades.functions.keys import SigningKey
from fades.testbed.traffic import generate, write_jsonl

IDS = Path(__file__).resolve().parents[2] / "examples" / "functions" / "ids.py"
#: from writing the nodes' configuration to the first packet: room for three processes to
#: start on a busy 2-core machine
LEAD_S = 60.0


@pytest.fixture
def cluster(nats_server: Any, tmp_path: Path, signing_key: SigningKey) -> Iterator[Cluster]:
    c = Cluster(tmp_path, nats_server.url, signing_key)
    try:
        yield c
    finally:
        c.close()


def results(home: Path, task_id: str) -> list[dict[str, Any]]:
    """The results of a task's successful invocations on the node in ``home``."""
    db = sqlite3.connect(f"file:{home / 'tasks.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT result_json FROM invocations WHERE task_id = ? AND ok = 1 ORDER BY seq",
            (task_id,),
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [json.loads(r) for (r,) in rows]


def node_alerts(home: Path, task_id: str) -> list[dict[str, Any]]:
    return [a for r in results(home, task_id) for a in r["alerts"]]


def test_a_detector_migrated_mid_scan_still_sees_it_a_fresh_one_misses_it(
    cluster: Cluster,
    prepare_home: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
    tmp_path: Path,
) -> None:
    traffic = generate(
        9, attacks=["slow_scan"], duration_s=55, conn_rate=4, slow_interval_s=0.75,
        slow_start_s=2.0,
    )  # fmt: skip
    (scan,) = traffic.attacks
    capture = write_jsonl(traffic.packets, tmp_path / "capture.jsonl")
    start_at = time.time() + LEAD_S
    shift = start_at - traffic.packets[0].ts
    link = {"kind": "packets", "path": str(capture), "replay": True, "start_at": start_at}
    cluster.start_controller()
    for n in ("a", "b"):
        home = prepare_home(
            n, runtime=False, readings=False, node_yaml={"connectors": {"packets": link}}
        )
        cluster.start_node(n, home)
    src = tmp_path / "src" / "ids.py"
    src.parent.mkdir(exist_ok=True)
    src.write_text(IDS.read_text())
    with cluster.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(build_python(src, key=signing_key).to_bytes())
        wait_for("nodes up", lambda: {"a", "b"} <= {n["name"] for n in c.nodes() if n["up"]})
        tid = c.submit(detector_task("ids-moving", True), node="a")["task_id"]
        wait_for("the detector running on a", lambda: results(cluster.homes["a"], tid))
        assert time.time() < shift + scan.start, "the nodes started after the scan began"
        # 24 of 60 probes before the move: the fresh detector cannot reach 40
        middle = shift + scan.start + 0.4 * (scan.end - scan.start)
        wait_for("40 % of the scan", lambda: time.time() >= middle)
        assert node_alerts(cluster.homes["a"], tid) == []  # part of a slow scan: no alert yet
        receipt = c.migrate(tid, "b")
        fresh = c.submit(detector_task("ids-fresh", False), node="b")["task_id"]
        assert (receipt["source"], receipt["target"]) == ("a", "b")
        found = wait_for(
            "the slow-scan alert on node b",
            lambda: [a for a in node_alerts(cluster.homes["b"], tid) if a["kind"] == "slow_scan"],
        )
        assert found[0]["src"] == scan.src
        wait_for("the end of the scan", lambda: time.time() >= shift + scan.end + 2.0)
        seen = len(results(cluster.homes["b"], fresh))
        wait_for(
            "two more runs of the fresh detector",
            lambda: len(results(cluster.homes["b"], fresh)) >= seen + 2,
        )
        assert not [a for a in node_alerts(cluster.homes["b"], fresh) if a["kind"] == "slow_scan"]
        assert node_alerts(cluster.homes["a"], tid) == []  # the alert came from node b only
        for t in (tid, fresh):
            c.cancel(t)
