"""Plots of ``bench_pipelines.py``: completion-time ECDF of the topologies, the slope per
function, and the costs (hop and hand-over, the capped link, failover). Not a benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np

from _common import pct


def ecdf_plot(series: dict[str, list[float]], native: dict[str, list[float]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, xs in series.items():
        x = np.sort(np.asarray(xs) * 1000)
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=f"{name} (pipeline)")
    for name, xs in native.items():
        x = np.sort(np.asarray(xs) * 1000)
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", ls=":", label=f"{name} native")
    ax.set_xscale("log")
    ax.set_xlabel("completion time, trigger to finale (ms, log)")
    ax.set_ylabel("ECDF")
    ax.set_title("Pipeline completion time, 250 KB bundles between functions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def slope_plot(points: dict[int, list[float]], fit: tuple[float, float], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted(points)
    for k in ks:
        ys = np.asarray(points[k]) * 1000
        ax.scatter([k] * len(ys), ys, s=6, alpha=0.3, color="tab:blue")
    ax.plot(ks, [pct(points[k], 50) * 1000 for k in ks], "o", color="tab:red", label="p50")
    xs = np.linspace(min(ks), max(ks), 10)
    ax.plot(xs, (fit[0] * xs + fit[1]) * 1000, "--", color="tab:red",
            label=f"fit: {fit[0] * 1000:.1f} ms per function")  # fmt: skip
    ax.set_xlabel("functions in the chain (round-robin over 3 nodes)")
    ax.set_ylabel("completion time (ms)")
    ax.set_title("Completion time grows linearly with the functions")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def costs_plot(res: dict[str, Any], path: Path) -> None:
    """Hop, hand-over and stage costs; the capped link; failover times (from the result)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    hops_ = res.get("hops", {})
    labels = ["cross-node hop", "hand-over"]
    vals = [
        hops_.get("cross_node_hop_ms", {}).get("p50", 0),
        hops_.get("handover_ms", {}).get("p50", 0),
    ]
    axes[0].bar(labels, vals, color=["tab:blue", "tab:green"])
    axes[0].axhline(2.0, ls="--", color="tab:blue", lw=1, label="hop target 2 ms")
    axes[0].axhline(0.3, ls=":", color="tab:green", lw=1, label="hand-over target 0.3 ms")
    axes[0].set_ylabel("p50 (ms)")
    axes[0].set_title("Between stages (small bundles)")
    axes[0].legend(fontsize=8)
    cap = res.get("capped_link", {})
    if "compact" in cap:
        names = ["compact 64 B", "raw 250 KB"]
        ms = [cap["compact"]["completion_ms"]["p50"], cap["raw"]["completion_ms"]["p50"]]
        axes[1].bar(names, ms, color=["tab:green", "tab:red"])
        axes[1].set_yscale("log")
    axes[1].set_ylabel("completion p50 (ms, log)")
    axes[1].set_title("A -> B -> C, B behind 0.574 Mbit/s")
    fo = res.get("failover", {}).get("kill_to_first_substitute_run_s", {}).get("all") or []
    if fo:
        axes[2].hist(fo, bins=20, color="tab:purple")
        axes[2].axvline(res["failover"]["down_after_s"], ls="--", color="k", lw=1,
                        label="down_after")  # fmt: skip
        axes[2].legend(fontsize=8)
    axes[2].set_xlabel("kill -9 to first run done on the substitute (s)")
    axes[2].set_title("Failover")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
