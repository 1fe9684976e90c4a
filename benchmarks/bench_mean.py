"""Single-node benchmark 3: the mean over 1 M readings, sandboxed against native.

Sandboxed Python (``sum(v)/len(v)`` over the zero-copy view), sandboxed Python with the SDK's
helper (``Dataset.mean()``) and the WAT core module against native CPython running
``sum(v)/len(v)`` on the same blob (native with the helper is reported too). The helper
answers from the value column's statistics the node computes natively when it lays out the
input (``fades.sandbox.wire.column_stats``); that cost, timed in the same run, is added to the
helper's compute and end-to-end figures (sandboxed and native). ``python_helper_before`` is
the helper on a blob without the statistics (the previous way: one pass over the view in the
sandbox). Targets: sandboxed <= 4x native (compute-only and end-to-end); with the helper
<= 2x end to end.

Run ``python benchmarks/bench_mean.py [--quick]`` (``make bench`` runs it through
``run_all.py``). Writes ``benchmarks/results/single_node_mean_1m.json`` and its PNG.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import (
    MEAN_SRC,
    MIB,
    RESULTS,
    Bench,
    dataset,
    log,
    parse_args,
    session,
    summary,
    verdict,
    write_result,
)
from fades.functions.build import build_python
from fades.guest import fades_sdk
from fades.sandbox.base import Limits
from fades.sandbox.wire import column_stats, encode


def native_function(source: str) -> Callable[[Any, Any], Any]:
    ns: dict[str, Any] = {"__name__": "fades_function"}
    exec(compile(source, "<function>", "exec"), ns)
    fn: Callable[[Any, Any], Any] = ns["main"]
    return fn


HELPER_SRC = '''"""Mean of the first dataset's values with the SDK's helper."""


def main(data, params):
    ds = next(iter(data.values()))
    return {"mean": ds.mean(), "count": ds.count()}
'''


def bench_mean(b: Bench, n: int, reps: int) -> dict[str, Any]:
    log(f"3. mean over {n:,} readings")
    data_set = dataset(n)
    blob = encode({"d": data_set})
    blob_before = encode({"d": data_set}, stats=False)
    cap = int(len(blob) / MIB) + 64
    fn = native_function(MEAN_SRC)
    helper_fn = native_function(HELPER_SRC)
    src = b.tmp / "src" / "bench_mean_helper.py"
    src.write_text(HELPER_SRC)
    py_helper = build_python(src, key=b.key)
    native_c, native_e2e, vals = [], [], []
    nh_c, nh_e2e = [], []
    py_c, py_e2e, py_wall = [], [], []
    ph_c, ph_e2e, ph_wall = [], [], []
    co_c, co_e2e, co_wall = [], [], []
    pb_c, pb_e2e, pb_wall = [], [], []
    stats_s = []
    for _ in range(reps):
        t0 = time.perf_counter()
        column_stats(data_set.value)
        stats_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        data, params = fades_sdk.decode(blob)
        t1 = time.perf_counter()
        res = helper_fn(data, params)
        t2 = time.perf_counter()
        json.dumps(res)
        nh_c.append(t2 - t1 + stats_s[-1])
        nh_e2e.append(time.perf_counter() - t0 + stats_s[-1])
        vals.append(res["mean"])
        t0 = time.perf_counter()
        data, params = fades_sdk.decode(blob)
        t1 = time.perf_counter()
        res = fn(data, params)
        t2 = time.perf_counter()
        json.dumps(res)
        t3 = time.perf_counter()
        native_c.append(t2 - t1)
        native_e2e.append(t3 - t0)
        vals.append(res["mean"])
        for art, comp, e2e, wall, input_blob, extra in (
            (b.py_mean, py_c, py_e2e, py_wall, blob, 0.0),
            (py_helper, ph_c, ph_e2e, ph_wall, blob, stats_s[-1]),
            (py_helper, pb_c, pb_e2e, pb_wall, blob_before, 0.0),
            (b.core_mean, co_c, co_e2e, co_wall, blob, 0.0),
        ):
            t0 = time.perf_counter()
            r = b.sandbox(art).run(art, input_blob, Limits(cap, 60_000))
            wall.append(time.perf_counter() - t0 + extra)
            comp.append(r.timing["compute"] + extra)  # the node's statistics count as compute
            e2e.append(sum(r.timing.values()) + extra)
            vals.append(r.value["mean"])
    spread = max(vals) - min(vals)
    nat_c, nat_e = statistics.median(native_c), statistics.median(native_e2e)
    out: dict[str, Any] = {
        "readings": n,
        "blob_bytes": len(blob),
        "results_agree": spread < 1e-9 * max(1.0, abs(vals[0])),
        "native_ms": {"compute": summary(native_c, 1e3), "end_to_end": summary(native_e2e, 1e3)},
        "native_helper_ms": {"compute": summary(nh_c, 1e3), "end_to_end": summary(nh_e2e, 1e3)},
        "host_stats_ms": summary(stats_s, 1e3),
    }
    for name, comp, e2e, wall in (
        ("python", py_c, py_e2e, py_wall),
        ("python_helper", ph_c, ph_e2e, ph_wall),
        ("python_helper_before", pb_c, pb_e2e, pb_wall),
        ("core", co_c, co_e2e, co_wall),
    ):
        rc = statistics.median(comp) / nat_c
        re = statistics.median(e2e) / nat_e
        out[name] = {
            "compute_ms": summary(comp, 1e3),
            "end_to_end_ms": summary(e2e, 1e3),
            "wall_ms": summary(wall, 1e3),
            "ratio_compute": rc,
            "ratio_end_to_end": re,
            "target_compute": verdict(rc, 4.0, higher_is_better=False),
            "target_end_to_end": verdict(
                re, 2.0 if name.startswith("python_helper") else 4.0, higher_is_better=False
            ),
        }
        log(f"   {name}: compute {rc:.2f}x native, end-to-end {re:.2f}x native")
    return out


def plot_mean(mean: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.8))
    groups = ("compute", "end_to_end")
    x = np.arange(len(groups))
    w = 0.16
    helper, before = mean["python_helper"], mean["python_helper_before"]
    series = (
        ("native CPython, sum(v)/len(v) (baseline)", mean["native_ms"]["compute"]["p50"],
         mean["native_ms"]["end_to_end"]),
        ("sandboxed Python, sum(v)/len(v)", mean["python"]["compute_ms"]["p50"],
         mean["python"]["end_to_end_ms"]),
        ("sandboxed ds.mean(), before (pass in the sandbox)", before["compute_ms"]["p50"],
         before["end_to_end_ms"]),
        ("sandboxed ds.mean(), after (node's column statistics, cost included)",
         helper["compute_ms"]["p50"], helper["end_to_end_ms"]),
        ("core module (WAT)", mean["core"]["compute_ms"]["p50"], mean["core"]["end_to_end_ms"]),
    )  # fmt: skip
    colors = ("grey", "tab:blue", "lightgreen", "tab:green", "tab:orange")
    for i, ((label, comp, e2e), color) in enumerate(zip(series, colors, strict=True)):
        vals = [comp, e2e["p50"]]
        bars = ax.bar(x + (i - 2) * w, vals, w, label=label, color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, ["compute only", "end to end\n(transfer+start+compute+result)"])
    ax.set_ylabel("p50, ms")
    ax.set_title(
        f"Mean over {mean['readings']:,} readings: ds.mean() {before['ratio_end_to_end']:.2f}x "
        f"-> {helper['ratio_end_to_end']:.2f}x native end to end "
        f"(sum(v)/len(v): {mean['python']['ratio_end_to_end']:.2f}x)",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    q = parse_args(__doc__ or "", argv)
    with session(q) as (b, meta):
        res = bench_mean(b, 1_000_000, 3 if q else 9)
    out = write_result("mean_1m", res, meta)
    plot_mean(res, RESULTS / "single_node_mean_1m.png")
    log(f"wrote {out} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
