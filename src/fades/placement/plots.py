"""Figures of a simulation result (the JSON written by ``fades sim nimbus``).

* ``nimbus_latency.png`` - task latency per infrastructure and batch against the local
  inference time of each phone class (paper Fig. 6 left).
* ``nimbus_energy.png`` - energy saved per device per second (paper Fig. 6 right).
* ``nimbus_fractions.png`` - share of devices served by edge, cloud and local as the batch
  grows, one panel per infrastructure (paper Fig. 7).
* ``nimbus_variants.png`` - convergence time and allocation ratio of MT and 2PMT against the
  worker count (thesis Figs. 4.29/4.30).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

__all__ = ["plot_all", "plot_energy", "plot_fractions", "plot_latency", "plot_variants"]

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _box_stats(hist: list[int], bins: list[float], label: str) -> dict[str, Any]:
    h = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(bins)
    centers = (edges[:-1] + edges[1:]) / 2
    total = h.sum()
    if total == 0:
        return {"label": label, "med": 0, "q1": 0, "q3": 0, "whislo": 0, "whishi": 0, "fliers": []}
    cdf = np.cumsum(h) / total

    def q(p: float) -> float:
        return float(centers[int(np.searchsorted(cdf, p))])

    return {
        "label": label,
        "med": q(0.5),
        "q1": q(0.25),
        "q3": q(0.75),
        "whislo": q(0.05),
        "whishi": q(0.95),
        "mean": float(np.sum(h * centers) / total),
        "fliers": [],
    }


def _grouped_boxes(ax: Axes, result: dict[str, Any], hist_key: str, bins_key: str) -> list[str]:
    cells = result["cells"]
    infras = list(dict.fromkeys(c["infra"] for c in cells))
    batches = sorted({c["devices"] for c in cells})
    width = 0.8 / max(len(infras), 1)
    for k, name in enumerate(infras):
        stats, pos = [], []
        for b, n in enumerate(batches):
            cell = next((c for c in cells if c["infra"] == name and c["devices"] == n), None)
            if cell is None:
                continue
            stats.append(_box_stats(cell[hist_key], result[bins_key], ""))
            pos.append(b - 0.4 + width * (k + 0.5))
        bp = ax.bxp(stats, positions=pos, widths=width * 0.85, patch_artist=True, showmeans=True)
        for patch in bp["boxes"]:
            patch.set_facecolor(_COLORS[k % len(_COLORS)])
            patch.set_alpha(0.75)
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([str(n) for n in batches])
    ax.set_xlabel("mobile devices in the batch")
    return infras


def _legend(ax: Axes, result: dict[str, Any], infras: list[str], **kw: Any) -> None:
    cells = {c["infra"]: c for c in result["cells"]}
    handles = [
        Rectangle((0, 0), 1, 1, color=_COLORS[k % len(_COLORS)], alpha=0.75)
        for k in range(len(infras))
    ]
    labels = [f"{n} ({cells[n]['t1']}/{cells[n]['t2']}/{cells[n]['t3']} T1/T2/T3)" for n in infras]
    ax.legend(handles, labels, fontsize=8, **kw)


def plot_latency(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.8))
    infras = _grouped_boxes(ax, result, "latency_hist", "latency_bins_ms")
    for k, (name, ms) in enumerate(result["local_ms"].items()):
        ax.axhline(ms, color="grey", ls=("--", ":", "-.")[k % 3], lw=1)
        ax.text(
            ax.get_xlim()[1],
            ms,
            f" local: {name.split(' ')[0]} {ms:.0f} ms",
            fontsize=7,
            va="center",
            ha="left",
        )
    eps = 1000.0 / result["config"]["nimbus"]["fps"]
    ax.axhline(eps, color="red", lw=1)
    ax.text(ax.get_xlim()[1], eps, f" eps_t {eps:.1f} ms", fontsize=7, va="center", color="red")
    ax.set_ylabel("per-frame task latency (ms)")
    ax.set_ylim(0, max(200.0, max(result["local_ms"].values()) * 1.1))
    ax.set_title(
        f"Nimbus task latency vs local execution ({result['iterations']} iterations; "
        "box 25-75%, whiskers 5-95%, triangle = mean)",
        fontsize=9,
    )
    _legend(ax, result, infras, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_energy(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.8))
    infras = _grouped_boxes(ax, result, "saved_hist", "energy_bins_mj_per_s")
    ax.set_ylabel("energy saved per device (mJ per second)")
    ax.set_title("Energy saved against local inference (0 for devices that stay local)", fontsize=9)
    _legend(ax, result, infras, loc="lower left")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fractions(result: dict[str, Any], path: Path) -> None:
    cells = result["cells"]
    infras = list(dict.fromkeys(c["infra"] for c in cells))
    fig, axes = plt.subplots(1, len(infras), figsize=(3.2 * len(infras), 3.8), sharey=True)
    axes_list = np.atleast_1d(axes).tolist()
    for ax, name in zip(axes_list, infras, strict=True):
        row = sorted((c for c in cells if c["infra"] == name), key=lambda c: c["devices"])
        x = np.arange(len(row))
        bottom = np.zeros(len(row))
        for kind, color in (("edge", "#2ca02c"), ("cloud", "#1f77b4"), ("local", "#d62728")):
            vals = np.array([c[kind] for c in row]) * 100
            ax.bar(x, vals, bottom=bottom, color=color, label=kind, width=0.7)
            bottom += vals
        for xi, c in zip(x, row, strict=True):
            ax.text(
                xi,
                c["edge"] * 100 / 2,
                f"{c['edge'] * 100:.0f}%",
                ha="center",
                fontsize=7,
                color="white",
            )
        ax.set_xticks(x)
        ax.set_xticklabels([str(c["devices"]) for c in row])
        ax.set_title(f"{name}: {row[0]['t1']}/{row[0]['t2']}/{row[0]['t3']} T1/T2/T3", fontsize=9)
        ax.set_xlabel("mobile devices")
    axes_list[0].set_ylabel("devices served (%)")
    axes_list[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Where tasks run as the batch grows (Nimbus ST)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_variants(result: dict[str, Any], path: Path) -> None:
    var = result["variants"]
    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(10, 4))
    st = var["ST"]
    for name, color in (("MT", "#1f77b4"), ("2PMT", "#ff7f0e")):
        rows = var[name]
        w = [r["workers"] for r in rows]
        ax_t.plot(
            w,
            [r["convergence_s"] * 1e3 for r in rows],
            "o-",
            color=color,
            label=f"{name} wall time",
        )
        ax_t.plot(
            w,
            [r["max_slice_s"] * 1e3 for r in rows],
            "s--",
            color=color,
            alpha=0.6,
            label=f"{name} slowest slice",
        )
        ax_r.plot(w, [r["edge_ratio"] * 100 for r in rows], "o-", color=color, label=name)
    ax_t.axhline(st["convergence_s"] * 1e3, color="k", ls=":", label="ST")
    ax_r.axhline(st["edge_ratio"] * 100, color="k", ls=":", label="ST")
    ax_t.set_xlabel("solver processes")
    ax_r.set_xlabel("solver processes")
    ax_t.set_ylabel("convergence time (ms, pool start-up excluded)")
    ax_r.set_ylabel("devices allocated to the edge (%)")
    ax_t.set_ylim(bottom=0)
    ax_t.legend(fontsize=7)
    ax_r.legend(fontsize=8)
    inf = var["infrastructure"]
    fig.suptitle(
        f"MT and 2PMT Nimbus: {inf['t1']}/{inf['t2']}/{inf['t3']} T1/T2/T3, "
        f"{var['devices']} devices, {var['fps']:g} fps, {var['iterations']} iterations",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_all(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write every figure for ``result`` into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (
        ("nimbus_latency.png", plot_latency),
        ("nimbus_energy.png", plot_energy),
        ("nimbus_fractions.png", plot_fractions),
    ):
        fn(result, out_dir / name)
        written.append(out_dir / name)
    if "variants" in result:
        plot_variants(result, out_dir / "nimbus_variants.png")
        written.append(out_dir / "nimbus_variants.png")
    return written
