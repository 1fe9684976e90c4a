"""``fades demo``: one node end to end, then a local cluster, on embedded defaults.

It builds an office testbed, signs and installs the example functions, runs the example
tasks concurrently, and prints results with their timing breakdowns. Then it shows what the
node refuses (a tampered artifact, a tenant reading beyond its policy) and survives (a
function that never returns), and a summary of bytes kept at the edge. Last, it starts a
cluster (NATS, a controller, three node agents, MQTT sensors) and offloads across it: see
:mod:`fades.demo_cluster`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from fades.cli.safe import markup
from fades.cluster import find_examples
from fades.errors import FadesError
from fades.functions.artifact import parse
from fades.functions.build import build_function, build_runtime
from fades.functions.keys import SigningKey, install_trusted
from fades.node import Node
from fades.task import load_task

MARKER = ".fades-demo"
DEMO_POLICY = {
    "tenants": {
        "facilities": {"locations": "*", "sensor_types": "*"},
        "visitor": {"locations": ["room1"], "sensor_types": ["temperature"]},
    }
}

ProgressCM = Callable[[], AbstractContextManager[tuple[Callable[[Any, int, int], None], Any]]]
SpinnerCM = Callable[[str], AbstractContextManager[None]]


def _fresh_home(home: Path) -> None:
    if home.exists():
        if not (home / MARKER).exists():
            raise FadesError(
                f"{home} exists and was not made by 'fades demo'; choose another --home"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("made by fades demo; safe to delete\n")


def run_demo(
    *,
    home: Path,
    days: float,
    rate: float,
    examples: Path | None,
    console: Console,
    progress: ProgressCM,
    spinner: SpinnerCM,
    cluster_nodes: int = 3,
) -> dict[str, Any]:
    ex = find_examples(examples)
    _fresh_home(home)
    console.rule("[bold]1. a node, its key and its data")
    key = SigningKey.generate("signing")
    _, pub = key.save(home / "keys")
    install_trusted(home / "trusted", pub)
    (home / "policy.yaml").write_text(yaml.safe_dump(DEMO_POLICY))
    console.print(f"node folder {home}; signing key {key.id} (trusted by the node)")

    from fades.broker import SQLiteConnector
    from fades.testbed import load_river_occupancy, populate

    store = SQLiteConnector(home / "readings.db")
    start = datetime.now(UTC) - timedelta(days=days)
    with progress() as (update, bar):
        n = populate(
            store, days, rate, seed=7, start=start, progress=lambda d, t: update(bar, d, t)
        )
    river = load_river_occupancy(store, location="lab")
    console.print(
        f"office testbed: {n:,} readings (5 rooms, {days:g} days every {rate:g} s); "
        f"river occupancy data set: {river:,} readings at 'lab'"
    )
    store.close()

    console.rule("[bold]2. signed functions")
    with spinner("Python runtime (componentize-py; cached after the first build)"):
        runtime = build_runtime(key=key)
    arts = [runtime]
    for src in sorted((ex / "functions").iterdir()):
        if src.suffix in (".py", ".wat", ".wasm"):
            arts.append(build_function(src, key=key))
    table = Table("artifact", "kind", "bytes", "digest")
    with Node(home, autostart=False) as node:
        for art in arts:
            node.functions.add(art.to_bytes())
            table.add_row(art.name, art.kind, f"{len(art):,}", art.digest[:23] + "…")
    console.print(table)
    console.print(
        f"a node that holds the runtime ({len(runtime) / 2**20:.1f} MiB, once per fades "
        f"version) receives only the small function artifact for each new function"
    )

    console.rule("[bold]3. offloaded tasks")
    records: list[dict[str, Any]] = []
    with Node(home) as node:
        orc = node.orchestrator
        t0 = time.perf_counter()
        ids = []
        for path in sorted((ex / "tasks").glob("*.yaml")):
            ids.append((path.stem, orc.submit(load_task(path))))
        for name, tid in ids:
            rec = orc.wait(tid, timeout=300).to_dict()
            rec["name"] = name
            records.append(rec)
        wall = time.perf_counter() - t0
        _show_results(console, records)
        console.print(f"{len(records)} tasks in {wall:.2f} s on {orc.capacity} workers")

        console.rule("[bold]4. what the node refuses, and what it survives")
        _show_refusals(console, node, key, ex)
    total_read = sum(r.get("bytes_read") or 0 for r in records)
    total_ret = sum(r.get("bytes_returned") or 0 for r in records)
    console.rule("[bold]summary of the single node")
    console.print(
        f"bytes read next to the data: {total_read:,}; bytes sent back: {total_ret:,} "
        f"({total_read / max(total_ret, 1):,.0f}x less leaves the edge)"
    )
    out: dict[str, Any] = {
        "records": records,
        "bytes_read": total_read,
        "bytes_returned": total_ret,
    }
    if cluster_nodes:
        from fades.demo_cluster import run_cluster_demo

        out["cluster"] = run_cluster_demo(
            home=home / "cluster", nodes=cluster_nodes, days=min(days, 1.0), console=console
        )
    return out


def _show_results(console: Console, records: list[dict[str, Any]]) -> None:
    table = Table(
        "task", "status", "retrieval", "transfer", "start", "compute", "result", "total",
        "bytes in", "bytes out", title="timing breakdown (ms)",
    )  # fmt: skip
    for r in records:
        t = r.get("timing") or {}
        cells = [f"{t.get(k, 0) * 1e3:.1f}" for k in
                 ("retrieval", "transfer", "start", "compute", "result", "total")]  # fmt: skip
        status = "[green]done[/]" if r["status"] == "done" else f"[red]{r['status']}[/]"
        table.add_row(
            r["name"], status, *cells, f"{r.get('bytes_read') or 0:,}",
            f"{r.get('bytes_returned') or 0:,}",
        )  # fmt: skip
    console.print(table)
    for r in records:
        console.print(f"[bold]{r['name']}[/]: {_summary(r)}")


def _summary(rec: dict[str, Any]) -> str:
    """One line about a record, as rich markup (what the function returned is escaped)."""
    if rec["status"] != "done":
        return f"[red]{markup(rec['error_kind'])}: {markup(rec['error'], oneline=True)}[/]"
    return markup(_describe(rec["name"], rec["result"]), 400, oneline=True)


def _describe(name: str, res: Any) -> str:
    if name == "occupancy":
        rooms = res["rooms"]
        occ = ", ".join(f"{k} {v['occupied_fraction']:.0%}" for k, v in rooms.items())
        acc = res.get("accuracy")
        if acc is None:
            return f"occupied share {occ}"
        return f"occupied share {occ}; accuracy against the ground truth {acc:.1%}"
    if name == "aqi":
        return ", ".join(f"{k} {v['index']:.0f} ({v['category']})" for k, v in res.items())
    if name == "minmaxmean":
        parts = []
        for room, sensors in res.items():
            temp = sensors.get("temperature")
            if temp:
                parts.append(f"{room} temperature {temp['min']:.1f}..{temp['max']:.1f} °C")
        return "; ".join(parts)
    text = str(res)
    return text if len(text) < 160 else text[:157] + "..."


def _show_refusals(console: Console, node: Node, key: SigningKey, ex: Path) -> None:
    orc = node.orchestrator
    # a tampered artifact
    art = build_function(ex / "functions" / "aqi.py", key=key, name="aqi-tampered")
    raw = bytearray(art.to_bytes())
    raw[-5] ^= 0x01
    try:
        node.functions.add(parse(bytes(raw)))
        console.print("[red]tampered artifact was accepted (this is a bug)[/]")
    except FadesError as exc:
        console.print(f"tampered artifact refused: [yellow]{exc.kind}[/]: {markup(exc)}")
    # a tenant asking beyond its policy
    task = {
        "credentials": {"tenant": "visitor"},
        "data": [{"name": "co2", "select": {"location": "room1", "sensor_type": "co2"}}],
        "function": {"artifact": "aqi"},
    }
    try:
        orc.submit(task)
        console.print("[red]policy violation was accepted (this is a bug)[/]")
    except FadesError as exc:
        console.print(f"access refused: [yellow]{exc.kind}[/]: {markup(exc)}")
    # a function that never returns, then a normal task on the same node
    src = node.home / "spin.py"
    src.write_text("def main(data, params):\n    while True:\n        pass\n")
    node.functions.add(build_function(src, key=key))
    spin = orc.run(
        {
            "credentials": {"tenant": "facilities"},
            "data": [{"name": "t", "select": {"location": "room1", "last": 10}}],
            "function": {"artifact": "spin", "time_budget_ms": 300},
        },
        timeout=60,
    )
    console.print(f"runaway function: [yellow]{spin.error_kind}[/]: {markup(spin.error)}")
    after = orc.run(
        {
            "credentials": {"tenant": "facilities"},
            "data": [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}],
            "function": {"artifact": "mean_core", "memory_mib": 16},
        },
        timeout=60,
    )
    console.print(
        f"next task on the same node: {after.status}, result {markup(after.result, 400)}",
        highlight=False,
    )
