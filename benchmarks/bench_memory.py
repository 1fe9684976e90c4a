"""Single-node benchmark 5: the most readings processable against the memory cap.

16..512 MiB (the FADES paper's figure 4, for our sandbox), by binary search, for the core
module and Python.

Run ``python benchmarks/bench_memory.py [--quick]`` (``make bench`` runs it through
``run_all.py``). Writes ``benchmarks/results/single_node_memory.json`` and its PNG.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import (
    BYTES_PER_READING,
    MIB,
    RESULTS,
    Bench,
    dataset,
    head,
    log,
    parse_args,
    readings_for_bytes,
    session,
    write_result,
)
from fades.broker.base import Dataset
from fades.errors import SandboxError
from fades.functions.artifact import Artifact
from fades.sandbox.base import Limits
from fades.sandbox.python import MIN_MEMORY_MIB, PythonSession
from fades.sandbox.wire import encode


def bench_memory(
    b: Bench, caps: list[int], rel_tol: float, pool: Dataset | None = None
) -> dict[str, Any]:
    log(f"5. largest dataset vs memory cap ({caps} MiB)")
    need = readings_for_bytes(max(caps) * MIB) + 1000
    pool = pool if pool is not None and len(pool) >= need else dataset(need, seed=5)
    rows: list[dict[str, Any]] = []

    def ok(art: Artifact, n: int, cap: int, bypass: bool = False) -> tuple[bool, str]:
        blob = encode({"d": head(pool, n)})
        try:
            if bypass:  # the Python runtime below MIN_MEMORY_MIB, skipping the floor check
                with PythonSession(b.python, art, Limits(cap, 120_000)) as s:
                    r = s.invoke(blob)
            else:
                r = b.sandbox(art).run(art, blob, Limits(cap, 120_000))
        except SandboxError as exc:
            return False, f"{exc.kind}: {exc}"
        finally:
            del blob
        return r.value["count"] == n, ""

    tiny = encode({"d": head(pool, 1)})

    def bypass_floor(cap: int) -> str:
        """Start the runtime under ``cap`` without the MIN_MEMORY_MIB check: what happens."""
        try:
            with PythonSession(b.python, b.py_mean, Limits(cap, 10_000)) as s:
                s.invoke(tiny)
        except SandboxError as exc:
            return f"{exc.kind}: {exc}"[:200]
        return "ran"

    floor = MIN_MEMORY_MIB
    for mib in range(MIN_MEMORY_MIB, 0, -1):  # the real smallest cap the runtime starts in
        if bypass_floor(mib) != "ran":
            break
        floor = mib
    log(f"   Python runtime starts with {floor} MiB (MIN_MEMORY_MIB {MIN_MEMORY_MIB})")
    for cap in caps:
        row: dict[str, Any] = {"cap_mib": cap}
        for kind, art in (("core", b.core_mean), ("python", b.py_mean)):
            t0 = time.perf_counter()
            bypass = kind == "python" and cap < MIN_MEMORY_MIB
            refused = ok(art, 1, cap)[1] if bypass else ""
            lo, hi, probes, last_err = 0, readings_for_bytes(cap * MIB) + 1, 0, ""
            good, last_err = ok(art, 1, cap, bypass)
            probes += 1
            if good:
                lo = 1
                while hi - lo > max(1, int(rel_tol * lo)):
                    mid = (lo + hi) // 2
                    good, err = ok(art, mid, cap, bypass)
                    probes += 1
                    if good:
                        lo = mid
                    else:
                        hi, last_err = mid, err
            if bypass:  # what the node does at this cap: refuse; what the runtime could do
                row[kind] = {
                    "max_readings": 0,
                    "refused": refused[:200],
                    "max_readings_without_floor_check": lo,
                    "probes": probes,
                }
                log(
                    f"   {cap:4d} MiB {kind}: refused (floor {MIN_MEMORY_MIB} MiB); "
                    f"{lo:,} readings without the floor check"
                )
                continue
            row[kind] = {
                "max_readings": lo,
                "blob_bytes": len(encode({"d": head(pool, 1)})) + (lo - 1) * BYTES_PER_READING,
                "fraction_of_cap": lo * BYTES_PER_READING / (cap * MIB),
                "first_failure": last_err[:200],
                "probes": probes,
                "search_s": time.perf_counter() - t0,
            }
            log(
                f"   {cap:4d} MiB {kind}: {lo:,} readings "
                f"({row[kind]['fraction_of_cap']:.0%} of the cap as input, {probes} probes)"
            )
        rows.append(row)
    return {
        "rows": rows,
        "bytes_per_reading": BYTES_PER_READING,
        "relative_tolerance": rel_tol,
        "python_min_memory_mib_declared": MIN_MEMORY_MIB,
        "python_min_memory_mib_measured": floor,
    }


def plot_memory(mem: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    caps = [r["cap_mib"] for r in mem["rows"]]
    for kind, color in (("core", "tab:orange"), ("python", "tab:blue")):
        pts = [(r["cap_mib"], r[kind]["max_readings"]) for r in mem["rows"]]
        ax.plot(
            [c for c, n in pts if n > 0],
            [n for c, n in pts if n > 0],
            "o-",
            color=color,
            label=f"{kind} mean",
        )
        for r in mem["rows"]:
            d = r[kind]
            if d["max_readings"] == 0 and d.get("max_readings_without_floor_check"):
                c, n = r["cap_mib"], d["max_readings_without_floor_check"]
                ax.plot([c], [n], "o", mfc="none", color=color)
                ax.annotate(
                    f"{kind} refused at {c} MiB\n(floor {mem['python_min_memory_mib_declared']}"
                    f" MiB); hollow: without\nthe floor check",
                    (c, n),
                    xytext=(10, 4),
                    textcoords="offset points",
                    fontsize=7,
                    color=color,
                )
    ideal = [c * MIB / BYTES_PER_READING for c in caps]
    ax.plot(caps, ideal, ":", color="grey", label=f"cap / {BYTES_PER_READING} B per reading")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(caps, [str(c) for c in caps])
    ax.set_xlabel("sandbox memory cap, MiB")
    ax.set_ylabel("largest dataset processed, readings")
    ax.set_title("Largest dataset vs memory cap (cf. FADES fig. 4)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    q = parse_args(__doc__ or "", argv)
    with session(q) as (b, meta):
        res = bench_memory(
            b, [16, 32, 64] if q else [16, 32, 64, 128, 256, 512], 0.02 if q else 0.005
        )
    out = write_result("memory", res, meta)
    plot_memory(res, RESULTS / "single_node_memory_cap.png")
    log(f"wrote {out} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
