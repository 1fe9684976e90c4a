"""The Nimbus simulator: repeated, seeded runs over infrastructures and device batches.

One iteration draws a fresh infrastructure for every configured size and a fresh device
batch for every batch size, and places the batch with ST-Nimbus. Per (infrastructure,
batch) cell the simulator keeps histograms of task latency and of the energy saved per
second, the edge / cloud / local shares and the solver time. A second experiment compares
ST, MT and 2PMT for several worker counts (paper Figs. 12/13, thesis Figs. 4.29/4.30).

Iterations are independent, so they can run in several processes; each iteration's random
stream is derived from ``(seed, iteration)`` and results do not depend on the process count.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from fades.placement.config import InfraSize, SimConfig
from fades.placement.generator import generate_devices, generate_infrastructure
from fades.placement.model import LOCAL, Allocation, Devices, FloatArray, Infrastructure
from fades.placement.nimbus import NimbusParams
from fades.placement.variants import SolverPool, solve_2pmt, solve_mt, solve_st

__all__ = [
    "ENERGY_BINS",
    "LATENCY_BINS",
    "Progress",
    "params_from",
    "run_iteration",
    "run_variants",
    "simulate",
]

#: Histogram edges of per-frame task latency (ms).
LATENCY_BINS: FloatArray = np.arange(0.0, 301.0, 1.0)
#: Histogram edges of energy saved per device per second (mJ/s).
ENERGY_BINS: FloatArray = np.arange(0.0, 5001.0, 10.0)

#: ``progress(phase, done, total)``.
Progress = Callable[[str, int, int], None]


def params_from(cfg: SimConfig) -> NimbusParams:
    n = cfg.nimbus
    return NimbusParams(alpha=n.alpha, beta=n.beta, kappa=n.kappa)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _hist(values: FloatArray, bins: FloatArray) -> list[int]:
    clipped = np.clip(values, bins[0], bins[-1] - 1e-9)
    counts, _ = np.histogram(clipped, bins=bins)
    return [int(c) for c in counts]


def _cell(al: Allocation, infra: Infrastructure, devices: Devices, fps: float) -> dict[str, Any]:
    saved_per_s = al.saved_mj * fps
    edge = al.target >= 0
    tiers = np.bincount(infra.tier[al.target[edge]], minlength=3) if edge.any() else np.zeros(3)
    return {
        "edge": al.fraction("edge"),
        "cloud": al.fraction("cloud"),
        "local": al.fraction("local"),
        "tiers": [int(t) for t in tiers],
        "latency_hist": _hist(al.latency_ms, LATENCY_BINS),
        "offloaded_latency_hist": _hist(al.latency_ms[al.target != LOCAL], LATENCY_BINS),
        "saved_hist": _hist(saved_per_s, ENERGY_BINS),
        "saved_pct": float(np.mean(al.saved_mj / devices.local_mj) * 100.0),
        "mean_latency_ms": al.mean_latency_ms,
        "convergence_s": al.convergence_s,
        "violations": int(
            np.sum(al.latency_ms[al.target != LOCAL] > devices.eps_t_ms[al.target != LOCAL])
        ),
    }


def run_iteration(cfg: SimConfig, iteration: int) -> list[dict[str, Any]]:
    """One iteration: every infrastructure size x every batch size, ST-Nimbus."""
    params = params_from(cfg)
    out: list[dict[str, Any]] = []
    for s, size in enumerate(cfg.infrastructures):
        infra = generate_infrastructure(size, cfg.nimbus, _rng(cfg.seed, iteration, s))
        for b, n in enumerate(cfg.batches):
            devices = generate_devices(n, infra, cfg.nimbus, _rng(cfg.seed, iteration, s, b, 1))
            al = solve_st(infra, devices, params, rng=_rng(cfg.seed, iteration, s, b, 2))
            cell = _cell(al, infra, devices, cfg.nimbus.fps)
            cell.update(infra=size.name, devices=n)
            out.append(cell)
    return out


def _quantiles(hist: FloatArray, bins: FloatArray) -> dict[str, float]:
    total = float(hist.sum())
    if total == 0:
        return {k: float("nan") for k in ("mean", "p5", "p25", "p50", "p75", "p95")}
    centers = (bins[:-1] + bins[1:]) / 2
    cdf = np.cumsum(hist) / total
    out = {"mean": float(np.sum(hist * centers) / total)}
    for q in (5, 25, 50, 75, 95):
        out[f"p{q}"] = float(centers[int(np.searchsorted(cdf, q / 100.0))])
    return out


def _aggregate(cfg: SimConfig, cells: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    sizes: dict[str, InfraSize] = {s.name: s for s in cfg.infrastructures}
    out = []
    for k in range(len(cells[0])):
        runs = [it[k] for it in cells]
        name, n = runs[0]["infra"], runs[0]["devices"]
        lat = np.sum([r["latency_hist"] for r in runs], axis=0).astype(np.float64)
        off = np.sum([r["offloaded_latency_hist"] for r in runs], axis=0).astype(np.float64)
        sav = np.sum([r["saved_hist"] for r in runs], axis=0).astype(np.float64)
        conv = np.array([r["convergence_s"] for r in runs])
        size = sizes[name]
        out.append(
            {
                "infra": name,
                "t1": size.t1,
                "t2": size.t2,
                "t3": size.t3,
                "devices": n,
                "edge": float(np.mean([r["edge"] for r in runs])),
                "edge_sd": float(np.std([r["edge"] for r in runs])),
                "cloud": float(np.mean([r["cloud"] for r in runs])),
                "local": float(np.mean([r["local"] for r in runs])),
                "tier_share": (
                    np.sum([r["tiers"] for r in runs], axis=0) / (n * len(runs))
                ).tolist(),
                "latency_ms": _quantiles(lat, LATENCY_BINS),
                "offloaded_latency_ms": _quantiles(off, LATENCY_BINS),
                "saved_mj_per_s": _quantiles(sav, ENERGY_BINS),
                "saved_pct": float(np.mean([r["saved_pct"] for r in runs])),
                "convergence_s": {"mean": float(conv.mean()), "max": float(conv.max())},
                "violations": int(sum(r["violations"] for r in runs)),
                "latency_hist": [int(v) for v in lat],
                "saved_hist": [int(v) for v in sav],
            }
        )
    return out


def run_variants(
    cfg: SimConfig, progress: Progress | None = None, pools: bool = True
) -> dict[str, Any]:
    """ST vs MT vs 2PMT for every worker count in ``cfg.variants``."""
    vc = cfg.variants
    params = params_from(cfg)
    problems = []
    for it in range(vc.iterations):
        infra = generate_infrastructure(vc.infrastructure, cfg.nimbus, _rng(cfg.seed, 7, it))
        devices = generate_devices(
            vc.devices, infra, cfg.nimbus, _rng(cfg.seed, 7, it, 1), fps=vc.fps
        )
        problems.append((infra, devices))
    total = vc.iterations * (1 + 2 * len(vc.workers))
    done = 0
    st_time, st_ratio = [], []
    for it, (infra, devices) in enumerate(problems):
        al = solve_st(infra, devices, params, rng=it)
        st_time.append(al.convergence_s)
        st_ratio.append(al.edge_ratio)
        done += 1
        if progress:
            progress("variants", done, total)
    rows: dict[str, list[dict[str, float]]] = {"MT": [], "2PMT": []}
    for w in vc.workers:
        pool = SolverPool(w) if (w > 1 and pools) else None
        startup = pool.startup_s if pool else 0.0
        try:
            for name, fn in (("MT", solve_mt), ("2PMT", solve_2pmt)):
                times, ratios, slices, stage2, recovered = [], [], [], [], []
                for it, (infra, devices) in enumerate(problems):
                    al = fn(infra, devices, w, params, seed=it, pool=pool)
                    times.append(al.convergence_s)
                    ratios.append(al.edge_ratio)
                    slices.append(al.extra.get("max_slice_s", al.convergence_s))
                    stage2.append(al.extra.get("stage2_s", 0.0))
                    recovered.append(al.extra.get("recovered", 0.0))
                    done += 1
                    if progress:
                        progress("variants", done, total)
                rows[name].append(
                    {
                        "workers": float(w),
                        "convergence_s": float(np.mean(times)),
                        "max_slice_s": float(np.mean(slices)),
                        "stage2_s": float(np.mean(stage2)),
                        "edge_ratio": float(np.mean(ratios)),
                        "recovered_devices": float(np.mean(recovered)),
                        "pool_startup_s": startup,
                    }
                )
        finally:
            if pool:
                pool.close()
    return {
        "infrastructure": vc.infrastructure.model_dump(),
        "devices": vc.devices,
        "fps": vc.fps,
        "iterations": vc.iterations,
        "ST": {"convergence_s": float(np.mean(st_time)), "edge_ratio": float(np.mean(st_ratio))},
        "MT": rows["MT"],
        "2PMT": rows["2PMT"],
    }


def _trends(cfg: SimConfig, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's headline claims, checked against this run."""
    fastest = min(p.local_ms for p in cfg.nimbus.phones)
    worst_mean = max(c["latency_ms"]["mean"] for c in cells)
    worst_saved = min(c["saved_pct"] for c in cells)
    largest = max(cfg.batches)
    by_infra = {c["infra"]: c for c in cells if c["devices"] == largest}
    monotone = True
    for size in cfg.infrastructures:
        row = sorted((c for c in cells if c["infra"] == size.name), key=lambda c: c["devices"])
        edges = [c["edge"] for c in row]
        monotone &= all(a >= b - 1e-9 for a, b in itertools.pairwise(edges))
    return {
        "fastest_phone_ms": fastest,
        "worst_cell_mean_latency_ms": worst_mean,
        "speedup_vs_fastest_phone_worst_cell": fastest / worst_mean if worst_mean else None,
        "worst_cell_energy_saved_pct": worst_saved,
        "edge_share_at_largest_batch": {k: v["edge"] for k, v in by_infra.items()},
        "edge_share_falls_with_devices": monotone,
        "constraint_violations": int(sum(c["violations"] for c in cells)),
    }


def simulate(
    cfg: SimConfig,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    variants: bool = True,
) -> dict[str, Any]:
    """Run the whole simulation and return a JSON-serialisable result."""
    t0 = time.perf_counter()
    results: list[list[dict[str, Any]] | None] = [None] * cfg.iterations
    if workers > 1 and cfg.iterations > 1:
        # forkserver: never fork a parent that runs threads (the CLI's progress bar does).
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            futs = {ex.submit(run_iteration, cfg, it): it for it in range(cfg.iterations)}
            for done, fut in enumerate(as_completed(futs), start=1):
                results[futs[fut]] = fut.result()
                if progress:
                    progress("iterations", done, cfg.iterations)
    else:
        for it in range(cfg.iterations):
            results[it] = run_iteration(cfg, it)
            if progress:
                progress("iterations", it + 1, cfg.iterations)
    sim_s = time.perf_counter() - t0
    cells = _aggregate(cfg, [r for r in results if r is not None])
    out: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "workers": workers,
        "latency_bins_ms": LATENCY_BINS.tolist(),
        "energy_bins_mj_per_s": ENERGY_BINS.tolist(),
        "local_ms": {p.name: p.local_ms for p in cfg.nimbus.phones},
        "cells": cells,
        "trends": _trends(cfg, cells),
        "simulation_s": sim_s,
    }
    if variants:
        t1 = time.perf_counter()
        out["variants"] = run_variants(cfg, progress)
        out["variants_s"] = time.perf_counter() - t1
    return out
