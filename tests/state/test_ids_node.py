"""The detector on a real node: packets come from the ``packets`` connector replaying a
capture as a live link, the detector runs as a persistent task in a worker process, and the
node restarts 40 % into a (compressed) slow scan. The stateful task resumes from its
checkpoint and raises the slow-scan alert; the same task without ``state`` starts over after
the restart and never sees enough of the scan. Also: the connector's errors name the line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fades.broker.connectors import open_connector
from fades.errors import ConnectorError
from fades.task import Selector
from fades.testbed.traffic import generate, write_jsonl

IDS = (Path(__file__).resolve().parents[2] / "examples" / "functions" / "ids.py").read_text()
#: the detector's windows for a compressed scan: 60 probes, one every 0.75 s (not 5 s)
PARAMS = {"window_s": 1.0, "slow_window_s": 120.0}


def wait_for(
    what: str, cond: Callable[[], Any], timeout: float = 120.0, why: Callable[[], Any] = str
) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {why()}"
        time.sleep(0.05)
    return got


def story(orc: Any, task_id: str) -> list[Any]:
    """What each invocation of a task did (for a failure message)."""
    return [
        (inv["seq"], inv["ok"], inv["error"] if not inv["ok"] else inv["result"]["packets"],
         None if not inv["ok"] else inv["result"]["packets_seen"])
        for inv in orc.invocations(task_id)
    ] + [orc.get(task_id).status, orc.get(task_id).error]  # fmt: skip


def detector_task(task_id: str, stateful: bool) -> dict[str, Any]:
    fn: dict[str, Any] = {
        "artifact": "ids",
        "memory_mib": 64,
        "mode": "persistent",
        "period_s": 1.0,
        "max_duration_s": 600,
        "params": PARAMS,
    }
    if stateful:
        fn["state"] = {"checkpoint": "every"}
    return {
        "credentials": {"tenant": "facilities", "task_id": task_id},
        "data": [
            {
                "name": "packets",
                "connector": "packets",
                "select": {"last_seconds": 1.0},
                "allow_empty": True,
            }
        ],
        "function": fn,
    }


def alerts(orc: Any, task_id: str) -> list[dict[str, Any]]:
    return [a for inv in orc.invocations(task_id) if inv["ok"] for a in inv["result"]["alerts"]]


def test_a_stateful_detector_sees_the_slow_scan_across_a_restart(
    tmp_path: Path, prepare_home: Callable[..., Path], open_node: Callable[..., Any]
) -> None:
    traffic = generate(
        5, attacks=["slow_scan"], duration_s=55, conn_rate=4, slow_interval_s=0.75,
        slow_start_s=4.0,
    )  # fmt: skip
    (scan,) = traffic.attacks
    capture = write_jsonl(traffic.packets, tmp_path / "capture.jsonl")
    start_at = time.time() + 3.0  # the link starts when both tasks are running
    home = prepare_home(
        functions={"ids": IDS},
        readings=False,
        node_yaml={
            "capacity": 2,
            "connectors": {
                "packets": {
                    "kind": "packets",
                    "path": str(capture),
                    "replay": True,
                    "start_at": start_at,
                }
            },
        },
    )
    shift = start_at - traffic.packets[0].ts
    # 24 probes before the restart (below the 40 that make a scan), 36 after: the fresh task
    # cannot reach 40, the stateful one has about 12 s of slack for the restart
    middle = shift + scan.start + 0.4 * (scan.end - scan.start)
    node = open_node(home)
    node.orchestrator.submit(detector_task("ids-state", True))
    node.orchestrator.submit(detector_task("ids-plain", False))
    wait_for("40 % of the scan", lambda: time.time() >= middle)
    for tid in ("ids-state", "ids-plain"):
        assert not alerts(node.orchestrator, tid)  # part of a slow scan is not yet a scan
    node.close()  # both stay running and resume on the next start
    restarted_at = time.time()
    node = open_node(home)
    orc = node.orchestrator
    found = wait_for(
        "the stateful detector's slow-scan alert",
        lambda: [a for a in alerts(orc, "ids-state") if a["kind"] == "slow_scan"],
        why=lambda: story(orc, "ids-state"),
    )
    assert found[0]["src"] == scan.src and found[0]["ts"] - shift > 0
    assert found[0]["ts"] >= restarted_at - 1.0  # raised after the restart, from kept state
    end = shift + scan.end + 2.0  # the whole scan has been served to both
    wait_for("the end of the scan", lambda: time.time() >= end)
    seen = len(orc.invocations("ids-plain"))
    wait_for(
        "two invocations of the plain task after the scan",
        lambda: len(orc.invocations("ids-plain")) >= seen + 2,
    )
    assert not [a for a in alerts(orc, "ids-plain") if a["kind"] == "slow_scan"]
    states = orc.invocations("ids-state")
    assert [inv["seq"] for inv in states] == list(range(len(states)))  # the sequence continued
    for tid in ("ids-state", "ids-plain"):
        orc.cancel(tid)


def test_the_packet_connector_refuses_a_bad_capture_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = '{"ts": 1, "src": "a", "dst": "b", "sport": 1, "dport": 2, "proto": "tcp", "flags": "S"}'
    bad.write_text(good + "\n" + good.replace('"tcp"', '"icmp"') + "\n")
    with pytest.raises(ConnectorError, match=r"bad.jsonl, line 2: proto must be 'tcp' or 'udp'"):
        open_connector("packets", path=str(bad))
    bad.write_text(good + "\nnot json\n")
    with pytest.raises(ConnectorError, match="line 2: not JSON"):
        open_connector("packets", path=str(bad))
    with pytest.raises(ConnectorError, match="cannot read packet capture"):
        open_connector("packets", path=str(tmp_path / "missing.jsonl"))
    bad.write_text(good + "\n" + good + "\n")
    with pytest.raises(ConnectorError, match="more than max_packets=1"):
        open_connector("packets", path=str(bad), max_packets=1)
    conn = open_connector("packets", path=str(bad))  # a good capture still opens
    ds = conn.fetch(Selector(location="a"))
    assert len(ds) == 2 and ds.labels["sensor_type"] == ["tcp:S"]
    assert list(ds.value) == [2 * 65536 + 1] * 2
