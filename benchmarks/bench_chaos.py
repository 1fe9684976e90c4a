"""The reliability figure: a workload on a local cluster while processes are killed -9.

Run ``python benchmarks/bench_chaos.py [--quick] [--seed N] [--hub 1|3] [--sites]
[--controllers N]``. Writes ``benchmarks/results/chaos.json`` and ``chaos.png`` (another
topology: ``chaos_hub3_c2.json`` and so on).

Full: 1000 tasks in batches, 100 runs of an on-demand pipeline whose three stages cross two
nodes, 3 stateful counters (persistent, checkpointed every invocation), and a fault every
few seconds (seeded): kill -9 a node agent, a controller or a hub NATS server and restart it,
or cut a site's uplink for a while (with ``--sites``). ``--quick``: 100 tasks, 10 runs,
1 counter, 4 faults. Counted from the outside (:mod:`fades.testbed.chaos`): accepted, lost
(must be 0), duplicated finales and stateful steps applied twice (must be 0), results later
than 30 s after submit.

Baseline, same run: the same workload on a fresh cluster of the same shape with no faults;
the JSON gives the chaos run's latency percentiles and wall time as ratios of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import RESULTS
from fades.cluster import LocalCluster
from fades.testbed.chaos import ChaosConfig, ChaosReport, run_chaos

COLORS = {"node": "#d62728", "controller": "#9467bd", "hub": "#ff7f0e", "uplink": "#1f77b4"}


def config(quick: bool, seed: int, faults: bool) -> ChaosConfig:
    if quick:
        cfg = ChaosConfig(duration_s=40.0, tasks=100, pipeline_runs=10, stateful=1,
                          stateful_invocations=40, stateful_period_s=1.0, faults=5,
                          fault_every_s=5.0)  # fmt: skip
    else:
        cfg = ChaosConfig(duration_s=180.0, tasks=1000, batch=10, pipeline_runs=100,
                          stateful=3, stateful_invocations=180, stateful_period_s=1.0,
                          faults=20, fault_every_s=5.0, settle_s=600.0)  # fmt: skip
    cfg.seed = seed
    if not faults:
        cfg.faults = 0
    return cfg


def one(home: Path, cfg: ChaosConfig, args: argparse.Namespace) -> ChaosReport:
    opts: dict[str, Any] = {"hub": args.hub, "controllers": args.controllers}
    if args.sites:
        opts["sites"] = True
    cluster = LocalCluster(home, nodes=3, days=0.05, sensors=False, heartbeat_s=0.5, capacity=4,
                           down_after_s=3.0, **opts)  # fmt: skip
    cluster.prepare()
    cluster.start()
    try:
        return run_chaos(cluster, cfg, say=lambda s: print(f"  {s}", flush=True))
    finally:
        cluster.stop()


def ratios(chaos: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in ("latency_p50_s", "latency_p99_s", "latency_max_s"):
        a, b = chaos["tasks"].get(key), base["tasks"].get(key)
        out[key.removeprefix("latency_").removesuffix("_s")] = a / b if a and b else None
    out["wall"] = chaos["wall_s"] / base["wall_s"] if base["wall_s"] else None
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, key, title in ((axes[0], "chaos", "with faults"), (axes[1], "baseline", "no faults")):
        rep = res[key]
        acc, done = rep["timeline"]["accepted"], rep["timeline"]["completed"]
        end = max([*acc, *done, 1.0])
        bins = np.arange(0, end + 1.0, 1.0)
        per_s, _ = np.histogram(done, bins=bins)
        ax.bar(bins[:-1], per_s, width=1.0, align="edge", color="#2a7", alpha=0.6,
               label="tasks completed per second")  # fmt: skip
        backlog = np.searchsorted(np.sort(acc), bins, "right") - np.searchsorted(
            np.sort(done), bins, "right"
        )
        ax2 = ax.twinx()
        ax2.plot(bins, backlog, color="#333", lw=1.2, label="backlog (accepted, not finished)")
        ax2.set_ylabel("backlog (tasks)")
        seen: set[str] = set()
        for f in rep["faults"]:
            c = COLORS.get(f["kind"], "k")
            lab = None if f["kind"] in seen else f"kill -9 / cut: {f['kind']}"
            seen.add(f["kind"])
            ax.axvline(f["at_s"], color=c, ls="--", lw=1.2, label=lab)
            ax.text(f["at_s"], ax.get_ylim()[1] * 0.95, f" {f['target']}", color=c,
                    fontsize=7, rotation=90, va="top")  # fmt: skip
        t = rep["tasks"]
        ax.set_title(
            f"{title}: {t['accepted']} accepted, {t['done']} done, lost {rep['lost']}, "
            f"duplicated {rep['duplicated']}, p99 {t['latency_p99_s'] or 0:.1f} s",
            fontsize=10,
        )
        ax.set_ylabel("completions / s")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    axes[1].set_xlabel("seconds since the workload started")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    # the default is the whole fleet (what make bench measures); --hub 1 --no-sites
    # --controllers 1 is the single-server cluster of earlier figures (chaos.json)
    ap.add_argument("--hub", type=int, default=3, help="hub NATS servers (1, 3 or 5)")
    ap.add_argument("--sites", action=argparse.BooleanOptionalAction, default=True,
                    help="a leaf NATS server per node (default: yes)")  # fmt: skip
    ap.add_argument("--controllers", type=int, default=2)
    args = ap.parse_args(argv)
    res: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": args.quick,
        "topology": {
            "nodes": 3,
            "hub": args.hub,
            "sites": args.sites,
            "controllers": args.controllers,
        },
        "load_avg_start": os.getloadavg(),
    }
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="fades-chaos-")
    try:
        for key, faults in (("baseline", False), ("chaos", True)):
            print(f"{key}: ...", flush=True)
            rep = one(Path(tmp) / key, config(args.quick, args.seed, faults), args)
            res[key] = rep.to_json()
            t, p = rep.tasks, rep.pipeline
            print(
                f"{key}: tasks {t['accepted']} accepted / {t['done']} done / lost "
                f"{t['lost']} / late {t['late']}; runs {p['done']} done / lost {p['lost']} / "
                f"duplicated finales {p['duplicated_finales']}; stateful "
                f"{[(s['invocations'], s['applied_twice'], s['redone']) for s in rep.stateful]}"
                f"; faults {len(rep.faults)}; wall {rep.wall_s:.0f} s",
                flush=True,
            )
    finally:
        clean = all(
            res.get(k, {}).get("lost", 0) == 0 and res.get(k, {}).get("duplicated", 0) == 0
            for k in ("baseline", "chaos")
        )
        if clean:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # what was lost can be traced in the processes' logs and databases
            print(f"kept the clusters' folders (logs, databases) in {tmp}", flush=True)
    res["ratio_vs_baseline"] = ratios(res["chaos"], res["baseline"])
    res["lost"], res["duplicated"] = res["chaos"]["lost"], res["chaos"]["duplicated"]
    res["wall_s"] = time.perf_counter() - t0
    res["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "chaos" + (
        ""
        if (args.hub, args.sites, args.controllers) == (1, False, 1)
        else f"_hub{args.hub}{'_sites' if args.sites else ''}_c{args.controllers}"
    )
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    plot(res, RESULTS / f"{name}.png")
    print(f"lost {res['lost']}, duplicated {res['duplicated']}; ratios {res['ratio_vs_baseline']}")
    print(f"wrote {RESULTS / name}.json and {name}.png")
    return 0 if res["lost"] == 0 and res["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
