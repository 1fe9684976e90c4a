"""Single-node benchmark 6: artifact bytes of each example Python function.

Against the runtime artifact. Target <= 64 KiB per Python function; the seeds' unikernel image
was about 5 MB.

Run ``python benchmarks/bench_artifacts.py [--quick]`` (``make bench`` runs it through
``run_all.py``). Writes ``benchmarks/results/single_node_artifacts.json`` and its PNG.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import (
    EXAMPLES,
    RESULTS,
    SEED_UNIKERNEL_BYTES,
    Bench,
    _human,
    log,
    parse_args,
    session,
    verdict,
    write_result,
)
from fades.functions.build import build_python
from fades.sandbox import engine


def bench_artifacts(b: Bench) -> dict[str, Any]:
    log("6. artifact bytes")
    funcs = {}
    for src in sorted(EXAMPLES.glob("*.py")):
        art = build_python(src, key=b.key)
        funcs[art.name] = {
            "bytes": len(art),
            "payload_bytes": len(art.payload),
            "target": verdict(len(art) / 1024, 64.0, higher_is_better=False),
        }
    rt = len(b.runtime)
    compiled = engine.cache_path("component", b.runtime.payload_sha256)
    out = {
        "python_functions": funcs,
        "core_mean_bytes": len(b.core_mean),
        "runtime_bytes": rt,
        "runtime_compiled_cache_bytes": compiled.stat().st_size if compiled.exists() else None,
        "seed_unikernel_image_bytes": SEED_UNIKERNEL_BYTES,
        "all_met": all(f["target"]["met"] for f in funcs.values()),
        "largest_function_vs_runtime": max(f["bytes"] for f in funcs.values()) / rt,
        "largest_function_vs_unikernel": max(f["bytes"] for f in funcs.values())
        / SEED_UNIKERNEL_BYTES,
    }
    for name, f in funcs.items():
        log(f"   {name}: {f['bytes']:,} B")
    log(f"   runtime {rt:,} B, core mean {len(b.core_mean):,} B")
    return out


def plot_artifacts(art: dict[str, Any], path: Path) -> None:
    items = [(f"{n}.py", f["bytes"], "tab:blue") for n, f in art["python_functions"].items()]
    items += [
        ("mean_core.wat\n(core)", art["core_mean_bytes"], "tab:orange"),
        ("seed unikernel\nimage", art["seed_unikernel_image_bytes"], "grey"),
        ("Python runtime\n(once per node)", art["runtime_bytes"], "tab:purple"),
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(items))
    bars = ax.bar(x, [v for _, v, _ in items], color=[c for _, _, c in items])
    ax.bar_label(bars, labels=[_human(v) for _, v, _ in items], fontsize=8)
    ax.axhline(64 * 1024, ls="--", color="red", lw=1, label="target 64 KiB per Python function")
    ax.set_yscale("log")
    ax.set_xticks(x, [n for n, _, _ in items], fontsize=8)
    ax.set_ylabel("artifact bytes (log)")
    ax.set_title("What travels to a node per function")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    q = parse_args(__doc__ or "", argv)
    with session(q) as (b, meta):
        res = bench_artifacts(b)
    out = write_result("artifacts", res, meta)
    plot_artifacts(res, RESULTS / "single_node_artifacts.png")
    log(f"wrote {out} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
