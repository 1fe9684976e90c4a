"""What the edge-vs-cloud experiment (:mod:`fades.bench.locality`) reports: the time
segments of one task, the median repetition, the goal, the JSON and figures, a text table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

SEGMENTS = ("retrieval", "transfer", "start", "compute", "other")
GOAL_RATIO = 10.0
GOAL_SIZE_MBIT = 1.5


def log(msg: str) -> None:
    print(msg, flush=True)


def segments(info: dict[str, Any]) -> dict[str, float]:
    """retrieval/transfer/start/compute as measured, other = the rest of the latency."""
    timing = info.get("timing") or {}
    total = timing.get("latency") or info.get("latency_s") or timing.get("total") or 0.0
    seg = {k: float(timing.get(k, 0.0)) for k in SEGMENTS[:-1]}
    seg["other"] = max(0.0, float(total) - sum(seg.values()))
    seg["total"] = float(total)
    return seg


def summarise(reps: list[dict[str, Any]]) -> dict[str, float]:
    """The representative repetition: the one with the median total (the lower one of the two
    middle ones for an even count), so that its segments add up to its total; plus medians
    of the client's wall time and the link bytes."""
    rep = sorted(reps, key=lambda r: r["segments"]["total"])[(len(reps) - 1) // 2]
    out = {k: float(rep["segments"][k]) for k in (*SEGMENTS, "total")}
    out["client_wall_s"] = statistics.median(r["client_wall_s"] for r in reps)
    out["uplink_bytes"] = statistics.median(r.get("uplink_bytes", 0) for r in reps)
    out["downlink_bytes"] = statistics.median(r.get("downlink_bytes", 0) for r in reps)
    out["n"] = len(reps)
    return out


def goal(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's target: edge >= 10x faster than cloud at 1.5 Mb over the capped uplink."""
    capped = res["runs"].get("capped", {})
    out: dict[str, Any] = {"target_ratio": GOAL_RATIO, "size_mbit": GOAL_SIZE_MBIT}
    if capped.get("status") != "ok":
        out.update(measured=None, met=None, why=capped.get("reason") or capped.get("error"))
        return out
    rows = capped["sizes"]
    row = min(rows, key=lambda r: abs(r["target_mbit"] - GOAL_SIZE_MBIT))
    ratio = row["ratio_cloud_over_edge"]
    out.update(measured=ratio, at_mbit=row["target_mbit"], met=ratio >= GOAL_RATIO)
    return out


def write(res: dict[str, Any], out: Path) -> None:
    from fades.bench.plots import plot_breakdown, plot_totals

    out.mkdir(parents=True, exist_ok=True)
    (out / "locality.json").write_text(json.dumps(res, indent=2) + "\n")
    plot_breakdown(res, out / "locality_breakdown.png")
    plot_totals(res, out / "locality_totals.png")
    log(f"wrote {out / 'locality.json'}, locality_breakdown.png, locality_totals.png")


def table(res: dict[str, Any]) -> str:
    """The measured numbers as a plain-text table."""
    lines = []
    for name, run_ in res["runs"].items():
        if run_.get("status") != "ok":
            lines.append(
                f"{name}: {run_.get('status')} ({run_.get('reason') or run_.get('error')})"
            )
            continue
        mb = run_.get("link", {}).get("measured_mbit", {})
        rates = ", ".join(f"{k} {v:.3g} Mbit/s" for k, v in mb.items())
        lines.append(
            f"{name}: plain TCP over the link: {rates}; run took {run_['duration_s']:.0f} s"
        )
        capped = "uplink_bytes" in run_["sizes"][0]["edge"]["reps"][0]
        head = f"  {'Mb':>5} {'blob B':>8} {'edge s':>7} {'cloud s':>8} {'ratio':>7} {'wall':>7}"
        head += f" {'up B edge':>9} {'up B cloud':>10}" if capped else ""
        lines.append(head + "   cloud retrieval/transfer/start/compute/other s")
        for r in run_["sizes"]:
            e, c = r["edge"]["median"], r["cloud"]["median"]
            parts = "/".join(f"{c[k]:.3f}" for k in SEGMENTS)
            line = (
                f"  {r['target_mbit']:>5g} {r['blob_bytes']:>8} {e['total']:>7.3f} "
                f"{c['total']:>8.3f} {r['ratio_cloud_over_edge']:>6.1f}x "
                f"{r['ratio_client_wall']:>6.1f}x"
            )
            if capped:
                line += f" {e['uplink_bytes']:>9.0f} {c['uplink_bytes']:>10.0f}"
            lines.append(line + "   " + parts)
    lines.append(
        "  (s: controller latency of the median repetition; ratio = cloud/edge; wall = the same "
        "ratio as the HTTP client saw it; up B = bytes through the uplink's token bucket)"
    )
    g = res.get("goal", {})
    if g.get("measured") is not None:
        lines.append(
            f"goal: edge >= {g['target_ratio']:g}x faster at {g['size_mbit']:g} Mb over the capped "
            f"link: measured {g['measured']:.1f}x ({'met' if g['met'] else 'NOT met'})"
        )
    else:
        lines.append(f"goal: not measured ({g.get('why')})")
    return "\n".join(lines)
