"""Figures of ``fades bench locality``: the breakdown (figure 5) and locality (figure 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import blended_transform_factory

SEGMENT_COLORS = {
    "retrieval": "#4c72b0",
    "transfer": "#dd8452",
    "start": "#55a868",
    "compute": "#c44e52",
    "other": "#b0b0b0",
}
WHERE_STYLE = {"edge": {"hatch": ""}, "cloud": {"hatch": "///"}}


def _ok_runs(res: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(n, r) for n, r in res.get("runs", {}).items() if r.get("status") == "ok"]


def _title(name: str, run: dict[str, Any]) -> str:
    if name == "capped":
        link = run.get("link", {})
        return (
            f"capped link: {link.get('down_mbit', 0):g} Mbit/s down, "
            f"{link.get('up_mbit', 0):g} Mbit/s up"
        )
    return "loopback (no cap)"


def _seconds(t: float) -> str:
    if t < 1:
        return f"{t * 1000:.0f} ms" if t >= 0.01 else f"{t * 1000:.1f} ms"
    return f"{t:.2f} s" if t < 10 else f"{t:.0f} s"


def _empty(path: Path, res: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.axis("off")
    why = "; ".join(
        f"{n}: {r.get('status')} ({r.get('reason') or r.get('error')})"
        for n, r in res.get("runs", {}).items()
    )
    ax.text(0.5, 0.5, f"no measurements\n{why}", ha="center", va="center", wrap=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_breakdown(res: dict[str, Any], path: Path) -> None:
    """Stacked bars per payload: edge and cloud, retrieval/transfer/start/compute/other."""
    runs = _ok_runs(res)
    if not runs:
        _empty(path, res)
        return
    fig, axes = plt.subplots(
        2,
        len(runs),
        figsize=(6.5 * len(runs), 7.6),
        squeeze=False,
        constrained_layout=True,
        gridspec_kw={"height_ratios": [3, 1.25]},
    )
    width = 0.38
    for col, (name, run) in enumerate(runs):
        ax, share = axes[0][col], axes[1][col]
        rows = run["sizes"]
        smallest = float("inf")
        for g, row in enumerate(rows):
            for k, where in enumerate(("edge", "cloud")):
                med = row[where]["median"]
                x = g + (k - 0.5) * width * 1.08
                bottom = 0.0
                for seg, color in SEGMENT_COLORS.items():
                    h = med[seg]
                    if h > 0:
                        smallest = min(smallest, h)
                    style = {"color": color, "edgecolor": "black", "linewidth": 0.5}
                    ax.bar(x, h, width, bottom=bottom, **style, **WHERE_STYLE[where])
                    frac = 100 * h / med["total"] if med["total"] > 0 else 0.0
                    share.bar(
                        x, frac, width, bottom=100 * bottom / med["total"] if med["total"] else 0,
                        **style, **WHERE_STYLE[where],
                    )  # fmt: skip
                    bottom += h
                label = _seconds(med["total"])
                ax.text(x, med["total"] * 1.08, label, ha="center", va="bottom", fontsize=8)
            top = max(row["edge"]["median"]["total"], row["cloud"]["median"]["total"])
            ax.text(
                g, top * 2.2, f"cloud/edge\n{row['ratio_cloud_over_edge']:.1f}x",
                ha="center", va="bottom", fontsize=8, fontweight="bold",
            )  # fmt: skip
        ax.set_yscale("log")
        lo = min(smallest, min(r["edge"]["median"]["total"] for r in rows)) / 3
        hi = max(r["cloud"]["median"]["total"] for r in rows)
        hi = max(hi, max(r["edge"]["median"]["total"] for r in rows))
        ax.set_ylim(max(lo, 1e-4), hi * 12)
        ticks = [g + d * width * 1.08 for g in range(len(rows)) for d in (-0.5, 0.5)]
        ax.set_xticks(ticks, ["edge", "cloud"] * len(rows), fontsize=8)
        share.set_xticks(ticks, ["edge", "cloud"] * len(rows), fontsize=8)
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        for g, row in enumerate(rows):
            ax.text(
                g, -0.06, f"{row['target_mbit']:g} Mb ({row['blob_bytes'] / 1e6:.2f} MB)",
                transform=trans, ha="center", va="top", fontsize=9,
            )  # fmt: skip
        share.set_ylim(0, 100)
        share.set_ylabel("share of total (%)")
        share.grid(axis="y", alpha=0.25)
        ax.set_ylabel("time (s, log scale)")
        ax.set_title(_title(name, run), fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.25)
    handles = [Patch(facecolor=c, edgecolor="black", label=s) for s, c in SEGMENT_COLORS.items()]
    handles += [
        Patch(facecolor="white", edgecolor="black", label="edge (task goes to the data)"),
        Patch(facecolor="white", edgecolor="black", hatch="///", label="cloud (data goes up)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=7, fontsize=8)
    fig.suptitle(
        "Edge vs cloud by payload: time breakdown (FADES figure 5); payload = raw readings shipped"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_totals(res: dict[str, Any], path: Path) -> None:
    """Total time against payload, edge and cloud, capped and loopback (figure 6)."""
    runs = _ok_runs(res)
    if not runs:
        _empty(path, res)
        return
    fig, ax = plt.subplots(figsize=(8, 5.4), constrained_layout=True)
    colors = {"edge": "#2a9d8f", "cloud": "#e76f51"}
    for name, run in runs:
        rows = run["sizes"]
        xs = [r["blob_bytes"] * 8 / 1e6 for r in rows]
        style = "-" if name == "capped" else "--"
        for where in ("edge", "cloud"):
            ys = [r[where]["median"]["total"] for r in rows]
            lo = [
                y - min(x["segments"]["total"] for x in r[where]["reps"])
                for y, r in zip(ys, rows, strict=True)
            ]
            hi = [
                max(x["segments"]["total"] for x in r[where]["reps"]) - y
                for y, r in zip(ys, rows, strict=True)
            ]
            ax.errorbar(
                xs, ys, yerr=[lo, hi], fmt=style, marker="o" if where == "edge" else "s",
                color=colors[where], alpha=1.0 if name == "capped" else 0.55, capsize=3,
                label=f"{where}, {'capped link' if name == 'capped' else 'loopback'}",
            )  # fmt: skip
        if name == "capped":
            up = run["link"]["up_mbit"]
            ax.plot(
                xs, [x / up for x in xs], ":", color="gray",
                label=f"payload / uplink rate ({up:g} Mbit/s)",
            )  # fmt: skip
            for x, r in zip(xs, rows, strict=True):
                ax.annotate(
                    f"{r['ratio_cloud_over_edge']:.1f}x",
                    (x, (r["edge"]["median"]["total"] * r["cloud"]["median"]["total"]) ** 0.5),
                    xytext=(6, 0), textcoords="offset points", ha="left", fontsize=9,
                    fontweight="bold",
                )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({r["blob_bytes"] * 8 / 1e6 for _, run in runs for r in run["sizes"]})
    ax.set_xticks(sizes, [f"{x:.3g}" for x in sizes])
    ax.set_xlim(sizes[0] / 1.25, sizes[-1] * 1.6)  # room for the ratio labels
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("payload (Mb of raw readings, FDS1 blob)")
    ax.set_ylabel("total time at the controller (s)")
    ax.set_title("Data locality: edge vs cloud total time (FADES figure 6); bold: cloud/edge")
    ax.grid(which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
