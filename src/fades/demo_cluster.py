"""The cluster half of ``fades demo``: offloading across nodes, edge against cloud, bytes.

It starts a :class:`~fades.cluster.LocalCluster` (embedded NATS, the controller and three node
agents as separate processes, sensors streaming over MQTT), then drives it through the
controller's HTTP API like any client would.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fades.cli.safe import markup
from fades.cluster import LocalCluster

TIMING = ("retrieval", "transfer", "start", "compute", "total", "latency")


def _minmaxmean(rooms: list[str], seconds: float) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities"},
        "data": [{"name": "r", "select": {"location": rooms, "last_seconds": seconds}}],
        "function": {"artifact": "minmaxmean", "memory_mib": 128, "time_budget_ms": 30000},
    }


def _temps(result: Any) -> str:
    parts = []
    for room, sensors in sorted((result or {}).items()):
        t = sensors.get("temperature")
        if t:
            parts.append(f"{room} {t['min']:.1f}..{t['max']:.1f} °C ({t['count']} readings)")
    return "; ".join(parts)


def run_cluster_demo(*, home: Path, nodes: int, days: float, console: Console) -> dict[str, Any]:
    """Start a local cluster under ``home``, offload to it, compare edge and cloud, stop it."""
    console.rule(f"[bold]5. many nodes: a controller and {nodes} node agents over NATS")
    cluster = LocalCluster(
        home,
        nodes=nodes,
        days=days,
        sensors=True,
        say=lambda s: console.print(s, markup=False, highlight=False),
    )
    cluster.prepare()
    cluster.start()
    try:
        return _drive(cluster, console)
    finally:
        cluster.stop()
        console.print("cluster stopped (sensors, nodes, controller, NATS)")


def _drive(cluster: LocalCluster, console: Console) -> dict[str, Any]:
    client = cluster.client()
    table = Table("node", "up", "rooms", "readings held", "workers", title="node registry")
    for n in client.nodes():
        rows = sum(d["rows"] for d in n.get("data") or [])
        rooms = sorted({d["location"] for d in n.get("data") or []})
        table.add_row(
            n["name"], "yes" if n["up"] else "no", ", ".join(rooms), f"{rows:,}",
            str((n.get("load") or {}).get("capacity", "")),
        )  # fmt: skip
    console.print(table)

    console.rule("[bold]6. offloading by data locality")
    rooms = [r for name in cluster.names for r in cluster.rooms(name)]
    time.sleep(2.0)  # let a few live readings arrive over MQTT
    receipts = [(room, client.submit(_minmaxmean([room], 86400))) for room in rooms]
    recs = [(room, client.wait(r["task_id"], timeout=120)) for room, r in receipts]
    table = Table("room", "placed on", "status", "bytes read", "bytes up", "latency ms", "result")
    for room, rec in recs:
        status = (
            "[green]done[/]" if rec["status"] == "done" else f"[red]{markup(rec['error_kind'])}[/]"
        )
        table.add_row(
            room, rec["node"], status, f"{rec.get('bytes_read') or 0:,}",
            f"{rec.get('bytes_uplink') or 0:,}",
            f"{(rec.get('timing') or {}).get('latency', 0) * 1e3:.1f}",
            markup(_temps(rec.get("result")) or rec.get("error") or "", 400, oneline=True),
        )  # fmt: skip
    console.print(table)
    live = client.wait(client.submit(_minmaxmean([rooms[0]], 10))["task_id"], timeout=60)
    counts = {k: v.get("count") for k, v in (live.get("result") or {}).get(rooms[0], {}).items()}
    console.print(
        f"live data: readings of {rooms[0]} from the last 10 s, streamed over MQTT into "
        f"{live['node']}'s store: {counts}"
    )

    console.rule("[bold]7. the same task at the edge and in the cloud")
    node = cluster.names[0]
    # A window that has closed: readings keep streaming in, so "the last day" would differ
    # between the two runs by what arrived in between.
    until = datetime.now(UTC) - timedelta(seconds=5)
    task = _minmaxmean(cluster.rooms(node), 86400)
    task["data"][0]["select"] = {
        "location": cluster.rooms(node),
        "since": (until - timedelta(days=1)).isoformat(),
        "until": until.isoformat(),
    }
    edge = client.wait(client.submit(task, where="edge")["task_id"], timeout=120)
    cloud = client.wait(client.submit(task, where="cloud")["task_id"], timeout=120)
    table = Table("where", *[f"{k} ms" for k in TIMING], "bytes up the link", "same result")
    for label, rec in (("edge", edge), ("cloud", cloud)):
        t = rec.get("timing") or {}
        table.add_row(
            label, *[f"{t.get(k, 0) * 1e3:.1f}" for k in TIMING],
            f"{rec.get('bytes_uplink') or 0:,}",
            "yes" if edge.get("result") == cloud.get("result") else "no",
        )  # fmt: skip
    console.print(table)
    console.print(
        "on loopback the cloud only pays for moving the raw data; over a real uplink "
        "(0.574 Mbps in the FADES paper) that is what dominates: run 'fades bench locality'"
    )

    from fades.demo_pipeline import run_pipeline_demo

    pipeline = run_pipeline_demo(cluster, console)

    console.rule("[bold]cluster summary")
    all_recs = [rec for _, rec in recs] + [live, edge]
    kept = sum(r.get("bytes_read") or 0 for r in all_recs)
    sent = sum(r.get("bytes_uplink") or 0 for r in all_recs)
    raw = cloud.get("bytes_uplink") or 0
    console.print(
        f"edge tasks read {kept:,} bytes next to the data and sent {sent:,} bytes upstream "
        f"({kept / max(sent, 1):,.0f}x less); the one cloud run shipped {raw:,} raw bytes up "
        f"for a result the edge sent in {edge.get('bytes_uplink') or 0:,}"
    )
    return {
        "placed": {room: rec["node"] for room, rec in recs},
        "edge": edge,
        "cloud": cloud,
        "bytes_kept_at_edge": kept,
        "bytes_sent_upstream": sent,
        "cloud_raw_bytes": raw,
        "pipeline": pipeline,
    }
