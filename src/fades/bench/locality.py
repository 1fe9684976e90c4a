"""Edge vs cloud by payload size over a really capped link (the FADES paper's figures 5 and 6).

One edge node holds the sensor data; the cloud (nats-server and the controller) sits behind
a :class:`~fades.bench.link.CappedLink`: 45.38 Mbit/s down, 0.574 Mbit/s up, the paper's
effective broadband rates. For each payload (megabits of raw readings, i.e. the FDS1 blob the
function reads) the same signed Python function runs

* at the **edge**: the controller sends the small task down the link, the node retrieves
  its own readings, runs the function, sends the small result up;
* in the **cloud**: the controller asks the node's broker for the raw blob, which crosses
  the 0.574 Mbit/s uplink through NATS, then runs the same function itself.

Times come from the controller's record of each task (``timing``; seconds):
retrieval, transfer, start and compute as measured by whoever ran the function, and "other"
= the rest of the controller's latency (submit -> result stored): dispatch down the link,
queueing, the result's way back. For the cloud, retrieval includes the network.

Layout: edge = the root network namespace (node agent, readings, this benchmark's HTTP
client); cloud = the link's namespace (``nats-server`` on ``10.213.x.2``, ``fades controller``).
The HTTP requests of the client cross the link too (a few hundred bytes each); they are not
part of the controller's latency. Functions are uploaded from inside the cloud namespace (the
function author's side), so the 19 MB Python runtime does not crawl up the uplink. The same
experiment is also run on loopback (no namespace, no caps) for comparison.

The data and the function are in :mod:`fades.bench.payloads`, what is reported in
:mod:`fades.bench.report`; the cluster (a :class:`~fades.cluster.LocalCluster`) and one task's
round trip in :mod:`fades.bench.locality_cluster`. This module is the experiment's driver: one
topology end to end, then the whole run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fades.bench.link import DOWN_MBIT, UP_MBIT, CappedLink, measure_tcp
from fades.bench.locality_cluster import (
    Plan,
    Topology,
    check_result,
    make_cluster,
    make_task,
    run_task,
    upload,
    wait_node_up,
)
from fades.bench.payloads import (
    FUNCTION_SRC,
    ROOM,
    SENSORS,
    calibrate,
    make_node_data,
)
from fades.bench.report import (
    goal,
    log,
    segments,
    summarise,
    write,
)
from fades.client import FadesClient
from fades.errors import FabricError, FadesError
from fades.functions.keys import SigningKey

DEFAULT_SIZES = (1.5, 5.0, 15.0, 50.0)
QUICK_SIZES = (1.5, 5.0)
#: Cloud repetitions whose blob needs longer than this on the uplink run only once.
CLOUD_REP_BUDGET_S = 15.0


# --- one topology ----------------------------------------------------------------------------
def run_topology(topo: Topology, plan: Plan, work: Path, node_src: Path) -> dict[str, Any]:
    """Start the cluster in ``topo``, run every size edge and cloud, return the numbers."""
    cluster = make_cluster(topo, plan, work, node_src)
    out: dict[str, Any] = {"status": "running"}
    link = topo.link
    t_start = time.perf_counter()

    def counters() -> tuple[int, int]:
        if link is None:
            return 0, 0
        st = link.stats()
        return st["up"].get("sent_bytes", 0), st["down"].get("sent_bytes", 0)

    try:
        if link is not None:
            log(f"[{topo.name}] measuring the link with plain TCP")
            out["link"] = link.describe()
            out["link"]["measured_mbit"] = {
                "up": link.measure("up", 100_000),
                "down": link.measure("down", 5_000_000),
            }
            log(
                f"[{topo.name}]   up {out['link']['measured_mbit']['up']:.3f} Mbit/s, "
                f"down {out['link']['measured_mbit']['down']:.2f} Mbit/s"
            )
        else:
            out["link"] = {
                "loopback": True,
                "measured_mbit": {
                    "up": measure_tcp(lambda c: c, "127.0.0.1", "up", 200_000_000),
                },
            }
        log(f"[{topo.name}] starting nats-server, controller, node agent")
        t0 = time.perf_counter()
        cluster.prepare()
        cluster.start()
        upload(cluster, topo, plan.artifacts)
        client = FadesClient(cluster.url, cluster.token, timeout=120)
        try:
            wait_node_up(client)
            out["startup_s"] = time.perf_counter() - t0
            log(f"[{topo.name}]   up in {out['startup_s']:.1f} s; warm-up (artifact fetch etc.)")
            smallest = plan.sizes[0]
            warm: dict[str, Any] = {}
            for where in ("edge", "cloud"):
                info = run_task(client, make_task(smallest, plan.fn_digest), where, timeout=900)
                check_result(info, smallest)
                warm[where] = {"segments": segments(info), "timing": info.get("timing")}
            out["warmup"] = warm
            rows = []
            for p in plan.sizes:
                up_s = p.blob_bytes * 8 / (plan.up_mbit * 1e6)
                cloud_reps = plan.reps if link is None or up_s <= CLOUD_REP_BUDGET_S else 1
                row: dict[str, Any] = {**p.to_dict(), "edge": {}, "cloud": {}}
                runs: dict[str, list[dict[str, Any]]] = {"edge": [], "cloud": []}
                for i in range(max(plan.reps, cloud_reps)):
                    for where, n in (("edge", plan.reps), ("cloud", cloud_reps)):
                        if i >= n:
                            continue
                        u0, d0 = counters()
                        timeout = 120 + 10 * up_s if where == "cloud" else 300
                        info = run_task(client, make_task(p, plan.fn_digest), where, timeout)
                        u1, d1 = counters()
                        check_result(info, p)
                        rec = {
                            "task_id": info["task_id"],
                            "segments": segments(info),
                            "timing": info.get("timing"),
                            "latency_s": info.get("latency_s"),
                            "client_wall_s": info["client_wall_s"],
                            "bytes_read": info.get("bytes_read"),
                            "bytes_returned": info.get("bytes_returned"),
                            "result": info.get("result"),
                        }
                        if link is not None:
                            rec["uplink_bytes"], rec["downlink_bytes"] = u1 - u0, d1 - d0
                        runs[where].append(rec)
                        s = rec["segments"]
                        log(
                            f"[{topo.name}] {p.target_mbit:5g} Mb {where:5s} #{i + 1}: "
                            f"total {s['total']:8.3f} s  (retrieval {s['retrieval']:.3f}, "
                            f"transfer {s['transfer']:.3f}, start {s['start']:.3f}, "
                            f"compute {s['compute']:.3f}, other {s['other']:.3f})"
                        )
                results = {
                    json.dumps(r["result"], sort_keys=True) for w in runs.values() for r in w
                }
                if len(results) != 1:
                    raise FadesError(f"edge and cloud results differ at {p.target_mbit} Mb")
                for where in ("edge", "cloud"):
                    row[where] = {"median": summarise(runs[where]), "reps": runs[where]}
                row["ratio_cloud_over_edge"] = (
                    row["cloud"]["median"]["total"] / row["edge"]["median"]["total"]
                )
                row["ratio_client_wall"] = (
                    row["cloud"]["median"]["client_wall_s"] / row["edge"]["median"]["client_wall_s"]
                )
                log(
                    f"[{topo.name}] {p.target_mbit:5g} Mb: edge "
                    f"{row['edge']['median']['total']:.3f} s, cloud "
                    f"{row['cloud']['median']['total']:.3f} s, "
                    f"ratio {row['ratio_cloud_over_edge']:.1f}x"
                )
                rows.append(row)
            out["sizes"] = rows
            if link is not None:
                out["link"]["tbf_counters"] = link.stats()
            out["status"] = "ok"
        finally:
            client.close()
    except Exception as exc:  # recorded in the JSON (httpx errors, a crashed process, ...)
        out["status"] = "failed"
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["logs"] = str(cluster.home / "logs")
        log(f"[{topo.name}] FAILED: {out['error']} (logs in {cluster.home / 'logs'})")
    finally:
        cluster.stop()
        out["duration_s"] = time.perf_counter() - t_start
    return out


# --- the whole experiment --------------------------------------------------------------------
@dataclass
class Settings:
    sizes_mbit: list[float] = field(default_factory=lambda: list(DEFAULT_SIZES))
    reps: int = 3
    out: Path = Path("benchmarks/results")
    cap: bool = True
    loopback: bool = True
    up_mbit: float = UP_MBIT
    down_mbit: float = DOWN_MBIT
    keep: bool = False


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the namespace and children are cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(settings: Settings) -> dict[str, Any]:
    """Run the experiment; writes ``locality.json`` and the PNGs into ``settings.out``."""
    from fades.functions.build import build_python, build_runtime

    sizes = sorted(settings.sizes_mbit)
    if not sizes or sizes[0] <= 0:
        raise ValueError("payload sizes must be positive megabit values")
    t_all = time.perf_counter()
    res: dict[str, Any] = {
        "benchmark": "locality",
        "reproduces": "FADES figures 5 (time breakdown by payload) and 6 (data locality)",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
        },
        "config": {
            "sizes_mbit": sizes,
            "reps": settings.reps,
            "cloud_rep_budget_s": CLOUD_REP_BUDGET_S,
            "up_mbit": settings.up_mbit,
            "down_mbit": settings.down_mbit,
            "sensors": [f"{ROOM}/{s}" for s in SENSORS],
            "function": "min, max, mean, count per sensor stream (Python, sandboxed)",
            "payload": "bytes of the FDS1 blob the function reads (1 Mb = 10^6 bits)",
            "total": "controller latency: submit at the controller -> result stored",
            "median": "per size and side, the repetition with the median total (lower median "
            "for an even count); its segments add up to its total",
            "other": "total minus retrieval, transfer, start and compute: dispatch down the "
            "link, queueing, the result's way back",
            "client_wall_s": "submit -> final GET answered, seen by the HTTP client in the edge "
            "namespace (its requests cross the link too)",
        },
        "runs": {},
    }
    work = Path(tempfile.mkdtemp(prefix="fades-locality-"))
    ok = True
    try:
        with _sigterm_as_exit():
            log(f"building node data for up to {sizes[-1]:g} Mb and the signed function")
            node_src = work / "node-src"
            node_src.mkdir(parents=True)
            key = SigningKey.generate("bench-locality")
            rows = make_node_data(node_src / "readings.db", sizes[-1])
            payloads = calibrate(node_src / "readings.db", sizes)
            res["config"]["node_readings"] = rows
            src = work / "locality_minmaxmean.py"
            src.write_text(FUNCTION_SRC)
            fn = build_python(src, key=key)
            runtime = build_runtime(key=key)
            arts = [work / "runtime.fart", work / "fn.fart"]
            arts[0].write_bytes(runtime.to_bytes())
            arts[1].write_bytes(fn.to_bytes())
            res["config"]["artifact_bytes"] = {"runtime": len(runtime), "function": len(fn)}
            res["payloads"] = [p.to_dict() for p in payloads]
            plan = Plan(payloads, settings.reps, fn.digest, arts, settings.up_mbit, key, rows)

            if settings.cap:
                reason = CappedLink.check()
                if reason is not None:
                    log(f"capped link SKIPPED: {reason}")
                    res["runs"]["capped"] = {"status": "skipped", "reason": reason}
                else:
                    try:
                        with CappedLink(
                            "fades-loc", up_mbit=settings.up_mbit, down_mbit=settings.down_mbit
                        ) as link:
                            topo = Topology("capped", link.cloud_ip, link.ns_cmd, link)
                            res["runs"]["capped"] = run_topology(topo, plan, work, node_src)
                    except FabricError as exc:  # the link itself could not be built
                        log(f"capped link SKIPPED: {exc}")
                        res["runs"]["capped"] = {"status": "skipped", "reason": str(exc)}
            if settings.loopback:
                topo = Topology("loopback", "127.0.0.1", lambda c: c)
                res["runs"]["loopback"] = run_topology(topo, plan, work, node_src)
    finally:
        failed = [n for n, r in res["runs"].items() if r.get("status") == "failed"]
        ok = not failed
        if settings.keep or failed:
            res["workdir"] = str(work)
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["duration_s"] = time.perf_counter() - t_all
    res["goal"] = goal(res)
    res["ok"] = ok
    write(res, settings.out)
    return res
