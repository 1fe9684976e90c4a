"""The pipeline part of ``fades demo``: the building CO2 report across the demo's nodes, then
a node killed (-9) while the pipeline is live, and the failover.

It submits ``examples/pipelines/building-report.yaml`` through the controller's HTTP API:
a CO2 summary scattered to every node that holds CO2 readings, gathered into one report.
Then it kills the node that runs the gathering stage, starts a run at once, and shows the
controller re-planning: the report moves to another node (``substitute``), the dead node's
summary is skipped (its stage's failover is ``skip``) and the report lists it as missing.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from fades.cli.safe import markup
from fades.cluster import LocalCluster, find_examples
from fades.pipelines.spec import load_pipeline


def _plan_table(status: dict[str, Any], title: str) -> Table:
    table = Table("stage", "role", "node", "mode", "why", title=title)
    for r in status["plan"]:
        table.add_row(
            r["stage"], r["role"], r["node"], r["mode"], markup(r["reason"], 200, oneline=True)
        )
    return table


def _run_table(run: dict[str, Any]) -> Table:
    table = Table("stage", "instance", "node", "status", "hop ms", "compute ms", "bytes out",
                  title=f"run {run['run']}: {run['status']}")  # fmt: skip
    for s in run["stages"]:
        table.add_row(
            s["stage"], s.get("instance", ""), s["node"], s["status"],
            f"{(s.get('hop_s') or 0) * 1e3:.1f}", f"{(s.get('compute_s') or 0) * 1e3:.1f}",
            f"{s.get('bytes_out') or 0:,}",
        )  # fmt: skip
    return table


def _report_line(run: dict[str, Any]) -> str:
    rep = (run.get("results") or {}).get("report") or {}
    if not rep:
        return f"no report ({run.get('reason') or run['status']})"
    missing = f"; missing: {', '.join(rep['missing'])}" if rep.get("missing") else ""
    return (
        f"building mean {rep.get('building_mean')} ppm over {len(rep.get('rooms') or {})} rooms "
        f"from {', '.join(rep.get('nodes') or [])}; worst room {rep.get('worst_room')}; over "
        f"{rep.get('limit')} ppm: {', '.join(rep.get('over_limit') or []) or 'none'}{missing}"
    )


def run_pipeline_demo(cluster: LocalCluster, console: Console) -> dict[str, Any]:
    """Submit the building report, run it, kill a node, run it again through the failover."""
    client = cluster.client()
    console.rule("[bold]8. a pipeline across the nodes: the building CO2 report")
    spec = load_pipeline(find_examples(cluster.examples) / "pipelines" / "building-report.yaml")
    body = spec.to_dict()
    client.submit_pipeline(body, replace=True)
    status = client.pipeline(spec.name)
    console.print(_plan_table(status, "plan (summary scattered to every CO2 holder)"))
    first = client.pipeline_run(spec.name, "r000001", wait=60)
    console.print(_run_table(first))
    console.print(_report_line(first), markup=False)

    console.rule("[bold]9. kill -9 a node while the pipeline is live: failover")
    victim = next(r["node"] for r in status["plan"] if r["stage"] == "report")
    t_kill = time.time()
    cluster.stop_process(victim, kill=True)
    run = client.start_runs(spec.name, 1)["runs"][0]
    console.print(
        f"killed {victim} (it ran the report), then started {run} at once; the controller "
        f"marks a node down after {cluster.down_after_s:g} s without a heartbeat"
    )
    second = client.pipeline_run(spec.name, run, wait=60)
    took = time.time() - t_kill
    console.print(_plan_table(client.pipeline(spec.name), "plan after the failover"))
    console.print(_run_table(second))
    console.print(_report_line(second), markup=False)
    console.print(f"{run} ended {second['status']} {took:.1f} s after the kill")
    cluster.start_node(victim)
    cluster.wait_nodes([victim], timeout=60)
    console.print(f"{victim} restarted and rejoined")
    client.cancel_pipeline(spec.name)
    return {
        "first": first["status"],
        "victim": victim,
        "after_kill": second["status"],
        "kill_to_done_s": took,
        "report": (second.get("results") or {}).get("report"),
    }
