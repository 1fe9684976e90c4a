"""Benchmarks of the Nimbus placement package.

Run ``python benchmarks/bench_placement.py [--quick]``. Writes
``benchmarks/results/placement.json`` and ``benchmarks/results/placement_*.png``.

Measured, all in the same run so ratios are comparable on a noisy machine:

1. ST time to place 4000 devices on the largest default infrastructure (C0: 350/200/10).
2. MT with 2 worker processes against ST on the same instances: speed-up with a warm pool
   and with the pool start-up included, and the allocation-ratio loss.
3. 2PMT with 2 workers: the share of MT's allocation loss it recovers (also for 4 and 8
   workers on the paper's variant setting, 100/50/2 nodes, 1000 devices, 10 fps).
4. Optimality gap of Nimbus and each baseline against the exact ``milp`` optimum on small
   instances, for total latency (with and without a cloud) and for the number of
   edge-served devices.
5. Time of the full simulation (100 iterations x 4 batch sizes x 4 infrastructures). With
   ``--quick`` only 10 iterations run and the full time is extrapolated linearly (said so in
   the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fades.placement.baselines import RULE_BASELINES, run_baseline, solve_exact, total_latency
from fades.placement.config import InfraSize, SimConfig, load_config
from fades.placement.generator import generate_devices, generate_infrastructure
from fades.placement.model import Allocation
from fades.placement.nimbus import solve
from fades.placement.plots import plot_energy, plot_fractions, plot_latency, plot_variants
from fades.placement.simulator import params_from, run_variants, simulate
from fades.placement.variants import SolverPool, solve_2pmt, solve_mt, solve_st

RESULTS = Path(__file__).resolve().parent / "results"


def _edge(al: Allocation) -> int:
    return int(np.sum(al.target >= 0))


def bench_st(cfg: SimConfig, reps: int) -> dict[str, Any]:
    size = max(cfg.infrastructures, key=lambda s: s.t1 + s.t2 + s.t3)
    params = params_from(cfg)
    times, ratios = [], []
    for r in range(reps):
        infra = generate_infrastructure(size, cfg.nimbus, 100 + r)
        devices = generate_devices(4000, infra, cfg.nimbus, 200 + r)
        al = solve_st(infra, devices, params, rng=r)
        times.append(al.convergence_s)
        ratios.append(al.edge_ratio)
    return {
        "infrastructure": size.model_dump(),
        "nodes": size.t1 + size.t2 + size.t3,
        "access_points": size.t1 * cfg.nimbus.aps_per_t1,
        "devices": 4000,
        "repetitions": reps,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "min_s": min(times),
        "edge_ratio": float(np.mean(ratios)),
        "target_s": 1.0,
        "meets_target": max(times) < 1.0,
    }


def bench_mt(
    cfg: SimConfig, size: InfraSize, n: int, fps: float | None, reps: int, workers: int = 2
) -> dict[str, Any]:
    params = params_from(cfg)
    st_t, mt_t, mt_cold, two_t, st_e, mt_e, two_e = [], [], [], [], [], [], []
    startups = []
    with SolverPool(workers) as pool:
        startups.append(pool.startup_s)
        for r in range(reps):
            infra = generate_infrastructure(size, cfg.nimbus, 300 + r)
            devices = generate_devices(n, infra, cfg.nimbus, 400 + r, fps=fps)
            st = solve_st(infra, devices, params, rng=r)
            mt = solve_mt(infra, devices, workers, params, seed=r, pool=pool)
            two = solve_2pmt(infra, devices, workers, params, seed=r, pool=pool)
            st_t.append(st.convergence_s)
            mt_t.append(mt.convergence_s)
            two_t.append(two.convergence_s)
            st_e.append(st.edge_ratio)
            mt_e.append(mt.edge_ratio)
            two_e.append(two.edge_ratio)
    # Cold runs: a fresh pool per solve, start-up included.
    for r in range(min(reps, 3)):
        infra = generate_infrastructure(size, cfg.nimbus, 300 + r)
        devices = generate_devices(n, infra, cfg.nimbus, 400 + r, fps=fps)
        t0 = time.perf_counter()
        solve_mt(infra, devices, workers, params, seed=r)
        mt_cold.append(time.perf_counter() - t0)
    st_med, mt_med, two_med = (statistics.median(x) for x in (st_t, mt_t, two_t))
    loss = float(np.mean(st_e) - np.mean(mt_e))
    gain = float(np.mean(two_e) - np.mean(mt_e))
    return {
        "infrastructure": size.model_dump(),
        "devices": n,
        "fps": fps or cfg.nimbus.fps,
        "workers": workers,
        "repetitions": reps,
        "st_median_s": st_med,
        "mt_median_s": mt_med,
        "mt_cold_median_s": statistics.median(mt_cold),
        "pool_startup_s": startups[0],
        "speedup_warm": st_med / mt_med,
        "speedup_cold": st_med / statistics.median(mt_cold),
        "st_edge_ratio": float(np.mean(st_e)),
        "mt_edge_ratio": float(np.mean(mt_e)),
        "allocation_ratio_loss_pp": loss * 100,
        "2pmt_median_s": two_med,
        "2pmt_speedup_warm": st_med / two_med,
        "2pmt_edge_ratio": float(np.mean(two_e)),
        "2pmt_recovered_pp": gain * 100,
        "2pmt_recovered_share_of_loss": (gain / loss) if loss > 1e-12 else None,
    }


def bench_gap(cfg: SimConfig, instances: int) -> dict[str, Any]:
    rng = np.random.default_rng(42)
    methods = ["nimbus", *RULE_BASELINES]
    lat_gap: dict[str, list[float]] = {m: [] for m in methods}
    edge_gap: dict[str, list[float]] = {m: [] for m in methods}
    vs_nimbus: dict[str, list[float]] = {m: [] for m in RULE_BASELINES}
    exact_s = []
    for k in range(instances):
        size = InfraSize(
            name="small",
            t1=int(rng.integers(2, 5)),
            t2=int(rng.integers(1, 4)),
            t3=int(rng.integers(0, 2)),
        )
        infra = generate_infrastructure(size, cfg.nimbus, 1000 + k)
        n = int(rng.integers(20, 61))
        devices = generate_devices(n, infra, cfg.nimbus, 2000 + k)
        t0 = time.perf_counter()
        opt_lat = total_latency(solve_exact(infra, devices))
        opt_edge = _edge(solve_exact(infra, devices, objective="edge"))
        exact_s.append(time.perf_counter() - t0)
        results = {"nimbus": solve(infra, devices, params_from(cfg), rng=k)}
        for b in RULE_BASELINES:
            results[b] = run_baseline(b, infra, devices, rng=k)
        for m, al in results.items():
            lat_gap[m].append((total_latency(al) - opt_lat) / opt_lat * 100)
            edge_gap[m].append((opt_edge - _edge(al)) / n * 100)
        for b in RULE_BASELINES:
            vs_nimbus[b].append(
                (total_latency(results["nimbus"]) - total_latency(results[b]))
                / total_latency(results[b])
                * 100
            )

    def summary(v: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(v)), "worst": float(np.max(v)), "best": float(np.min(v))}

    return {
        "instances": instances,
        "sizes": "T1 2-4, T2 1-3, T3 0-1, 20-60 devices, default parameters",
        "exact_solve_s_mean": float(np.mean(exact_s)),
        "latency_gap_pct_vs_milp": {m: summary(v) for m, v in lat_gap.items()},
        "edge_gap_pp_vs_milp": {m: summary(v) for m, v in edge_gap.items()},
        "nimbus_latency_vs_baseline_pct": {m: summary(v) for m, v in vs_nimbus.items()},
        "notes": (
            "latency gap: (total latency - optimum) / optimum, optimum may use the cloud where "
            "an edge node is feasible; edge gap: optimum's edge-served devices minus the "
            "method's, in percentage points of the batch; negative nimbus-vs-baseline = "
            "nimbus lower latency"
        ),
    }


def bench_sim(cfg: SimConfig, quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    workers = min(2, os.cpu_count() or 1)
    iterations = 10 if quick else cfg.iterations
    run_cfg = load_config(None, iterations=iterations)
    result = simulate(run_cfg, workers=workers, variants=False)
    sim_s = result["simulation_s"]
    full = sim_s * cfg.iterations / iterations
    info = {
        "iterations_run": iterations,
        "batches": list(run_cfg.batches),
        "infrastructures": [s.name for s in run_cfg.infrastructures],
        "processes": workers,
        "measured_s": sim_s,
        "full_100x4x4_s": full,
        "extrapolated": quick,
        "trends": result["trends"],
    }
    return info, result


def plot_gap(gap: dict[str, Any], gap_nc: dict[str, Any], path: Path) -> None:
    methods = list(gap["latency_gap_pct_vs_milp"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    x = np.arange(len(methods))
    panels = (
        (gap, "latency_gap_pct_vs_milp", "total-latency gap to milp (%)\n(cloud available)"),
        (gap_nc, "latency_gap_pct_vs_milp", "total-latency gap to milp (%)\n(no cloud)"),
        (gap, "edge_gap_pp_vs_milp", "edge-served devices below\nthe edge-maximising milp (pp)"),
    )
    for ax, (g, key, label) in zip(axes, panels, strict=True):
        mean = [g[key][m]["mean"] for m in methods]
        worst = [g[key][m]["worst"] for m in methods]
        ax.bar(x - 0.2, mean, 0.4, label="mean", color="#1f77b4")
        ax.bar(x + 0.2, worst, 0.4, label="worst", color="#d62728")
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=20)
        ax.set_ylabel(label, fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Optimality gap on {gap['instances']} small instances (T1 2-4, T2 1-3, T3 0-1, "
        "20-60 devices); exact = scipy milp",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; scaled simulation")
    args = ap.parse_args()
    cfg = SimConfig()
    reps = 3 if args.quick else 7
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "loadavg_start": list(os.getloadavg()),
        },
        "quick": args.quick,
    }
    print("ST 4000 devices ...", flush=True)
    out["st_4000"] = bench_st(cfg, reps)
    print(f"  median {out['st_4000']['median_s']:.3f} s", flush=True)
    print("MT/2PMT (2 workers) ...", flush=True)
    largest = max(cfg.infrastructures, key=lambda s: s.t1 + s.t2 + s.t3)
    out["mt_2_workers_largest"] = bench_mt(cfg, largest, 4000, None, reps)
    out["mt_2_workers_variant_setting"] = bench_mt(
        cfg, cfg.variants.infrastructure, cfg.variants.devices, cfg.variants.fps, reps
    )
    print("variants sweep ...", flush=True)
    var_cfg = load_config(None, variants={"iterations": 3 if args.quick else 10})
    out["variants_sweep"] = run_variants(var_cfg)
    print("optimality gap ...", flush=True)
    out["optimality_gap"] = bench_gap(cfg, 15 if args.quick else 40)
    # The same instances without any datacenter: isolates the edge placement itself from
    # the published edge-first policy (Nimbus never prefers a faster cloud to a feasible node).
    no_cloud = load_config(None, nimbus={"cloud": {"count": 0}})
    out["optimality_gap_no_cloud"] = bench_gap(no_cloud, 15 if args.quick else 40)
    print("simulation ...", flush=True)
    out["simulation"], sim_result = bench_sim(cfg, args.quick)
    print(f"  full simulation {out['simulation']['full_100x4x4_s']:.1f} s", flush=True)
    out["bench_s"] = time.perf_counter() - t0
    out["machine"]["loadavg_end"] = list(os.getloadavg())

    (RESULTS / "placement.json").write_text(json.dumps(out, indent=1))
    plot_gap(out["optimality_gap"], out["optimality_gap_no_cloud"], RESULTS / "placement_gap.png")
    plot_variants({"variants": out["variants_sweep"]}, RESULTS / "placement_variants.png")
    plot_latency(sim_result, RESULTS / "placement_sim_latency.png")
    plot_energy(sim_result, RESULTS / "placement_sim_energy.png")
    plot_fractions(sim_result, RESULTS / "placement_sim_fractions.png")
    print(json.dumps({k: v for k, v in out.items() if k != "variants_sweep"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
