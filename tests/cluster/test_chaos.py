"""A bounded chaos run on a real local cluster (select with ``-k chaos``).

A real nats-server, ``fades controller start`` and three ``fades node start`` processes; a
workload of 100 tasks, 5 pipeline runs and a stateful counter while node agents, the
controller and the hub's NATS server are killed with SIGKILL and restarted (and a site's
uplink cut, when the cluster has sites). Everything accepted must finish, no pipeline run's
finale may be recorded twice, and no step of the counter may be applied twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fades.cluster import LocalCluster
from fades.testbed.chaos import FAULTS, ChaosConfig, run_chaos


@pytest.fixture
def chaos_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(
        tmp_path / "chaos", nodes=3, days=0.02, sensors=False, heartbeat_s=0.5, down_after_s=3.0
    )
    cluster.prepare()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_chaos_loses_nothing_accepted_and_records_no_finale_twice(
    chaos_cluster: LocalCluster,
) -> None:
    cluster = chaos_cluster
    kinds = tuple(k for k, (offered, _) in FAULTS.items() if offered(cluster))
    cfg = ChaosConfig(
        tasks=100, pipeline_runs=5, stateful=1, stateful_invocations=30, faults=4,
        fault_every_s=4.0, settle_s=300.0, kinds=kinds, seed=12,
    )  # fmt: skip
    pids = {label: p.pid for label, p in cluster.procs.items()}
    report = run_chaos(cluster, cfg, say=print)

    # the faults happened, to real processes, and each healed
    assert len(report.faults) == 4
    assert {f.kind for f in report.faults} >= {"node", "controller", "hub"} & set(kinds)
    for f in report.faults:
        assert f.error is None, f
        if f.kind in ("node", "controller", "hub"):
            assert f.pid is not None and f.new_pid is not None and f.new_pid != f.pid, f
    for label, proc in cluster.procs.items():  # every process is alive at the end
        assert proc.poll() is None, label
    killed = {f.pid for f in report.faults}
    assert killed & set(pids.values()), "no process of the original cluster was killed"

    t, p = report.tasks, report.pipeline
    assert t["accepted"] > 0 and t["accepted"] + t["refused"] == 100, t
    assert t["lost"] == 0, f"accepted and never finished: {t['lost_ids']}"
    assert t["done"] + t["failed"] == t["accepted"], t
    assert p["lost"] == 0 and p["recorded"] >= p["started"] >= 1, p
    assert p["duplicated_finales"] == 0, p["duplicated_runs"]
    (counter,) = report.stateful
    assert counter["status"] == "done", counter
    assert counter["invocations"] == counter["last_count"] == 30, counter
    assert counter["applied_twice"] == 0 and counter["gaps"] == [], counter
    assert report.lost == 0 and report.duplicated == 0

    # and the cluster still serves a good request afterwards
    client = cluster.client()
    room = cluster.rooms(cluster.names[0])[0]
    task = {
        "credentials": {"tenant": "facilities"},
        "data": [{"name": "t", "select": {"location": room, "sensor_type": "temperature"}}],
        "function": {"artifact": "mean_core", "memory_mib": 16},
    }
    rec = client.wait(client.submit(task)["task_id"], timeout=120)
    assert rec["status"] == "done", rec
