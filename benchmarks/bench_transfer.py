"""Single-node benchmark 2: broker -> sandbox transfer throughput.

1 MB..100 MB FDS1 blobs, into a Python function (host write + guest read) and into a core
module (memory write). Baseline: a native ``memmove`` of the same bytes. Target >= 500 MB/s
(Python at 100 MB: >= 1.5 GB/s). ``python`` is the runtime's data path as a function sees
it: the function touches every column (ts, values, three code columns), which the runtime
reads on first use, so all the bytes cross. ``python_untouched`` is a function that only
takes ``len()`` (the header and metadata cross; the rest stays in the file).
``python_before`` / ``python_after`` / ``python_columns`` are measured alike in the same run:
the host's write (a new file per task / the kept file overwritten in place / in place) plus
the guest's read (a whole-file read into a zeroed bytearray / ``readall``, the runtime's
previous read / every column on first use, the runtime's read now), each timed by the
function itself.

Run ``python benchmarks/bench_transfer.py [--quick]`` (``make bench`` runs it through
``run_all.py``). Writes ``benchmarks/results/single_node_transfer.json`` and its PNG.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import (
    MB,
    MIB,
    RESULTS,
    Bench,
    dataset,
    head,
    log,
    parse_args,
    pct,
    readings_for_bytes,
    session,
    summary,
    verdict,
    write_result,
)
from fades.functions.artifact import create
from fades.sandbox.base import Limits, write_input
from fades.sandbox.wire import encode

#: The guest's read before and after the data-path change, each run as a function that
#: times its own read of the input (both are the instance's second read, after the
#: runtime's own: a like-for-like comparison).
OLD_READ_SRC = """
import time, os
def main(data, params):
    t0 = time.perf_counter()
    with open("/input/data.fds", "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        buf = bytearray(size)
        view, pos = memoryview(buf), 0
        while pos < size:
            pos += f.readinto(view[pos:])
    return time.perf_counter() - t0
"""
NEW_READ_SRC = """
import time
def main(data, params):
    t0 = time.perf_counter()
    with open("/input/data.fds", "rb", buffering=0) as f:
        f.readall()
    return time.perf_counter() - t0
"""


EVERY_COLUMN_SRC = """
def main(data, params):
    ds = next(iter(data.values()))
    cols = [ds.ts, ds.values] + [ds.codes(c) for c in ("sensor_type", "location", "device")]
    return sum(c.nbytes for c in cols)
"""


#: every column read on first use, timed by the function itself (like NEW_READ_SRC)
COLUMNS_READ_SRC = """
import time
def main(data, params):
    t0 = time.perf_counter()
    ds = next(iter(data.values()))
    cols = [ds.ts, ds.values] + [ds.codes(c) for c in ("sensor_type", "location", "device")]
    return time.perf_counter() - t0
"""


def _old_host_write(blob: bytes | bytearray) -> float:
    """The host's write before the change: a new file (fresh RAM-backed pages) each time."""
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    d = tempfile.mkdtemp(prefix="fades-old-", dir=shm)
    try:
        t0 = time.perf_counter()
        with open(Path(d) / "data.fds", "wb") as f:
            f.write(blob)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _new_host_write(path: Path, blob: bytes | bytearray) -> float:
    """The host's write now: the kept input file overwritten in place."""
    t0 = time.perf_counter()
    write_input(str(path), blob)
    return time.perf_counter() - t0


def bench_transfer(b: Bench, sizes_mb: list[int], reps: int) -> dict[str, Any]:
    log("2. broker -> sandbox transfer")
    big = dataset(readings_for_bytes(max(sizes_mb) * MB))
    old_reader = create("python", "old_read", OLD_READ_SRC.encode(), key=b.key)
    new_reader = create("python", "new_read", NEW_READ_SRC.encode(), key=b.key)
    every = create("python", "every_column", EVERY_COLUMN_SRC.encode(), key=b.key)
    col_reader = create("python", "columns_read", COLUMNS_READ_SRC.encode(), key=b.key)
    kept = b.tmp / "kept-input.fds"
    rows = []
    for size in sizes_mb:
        blob = encode({"d": head(big, readings_for_bytes(size * MB))})
        nbytes = len(blob)
        cap = 2 * int(nbytes / MIB) + 64
        memmove, py, core, before, after, untouched, columns = [], [], [], [], [], [], []
        _new_host_write(kept, blob)
        b.python.run(b.py_len, blob, Limits(cap, 60_000))  # the kept input file exists
        for _ in range(reps):
            dst = bytearray(nbytes)  # fresh pages, as the sandboxes get
            t0 = time.perf_counter()
            dst[:] = blob
            memmove.append(time.perf_counter() - t0)
            del dst
            r = b.python.run(every, blob, Limits(cap, 60_000))
            py.append(r.timing["transfer"])
            r = b.python.run(b.py_len, blob, Limits(cap, 60_000))
            untouched.append(r.timing["transfer"])
            r = b.core.run(b.core_mean, blob, Limits(cap, 60_000))
            core.append(r.timing["transfer"])
            # host write + guest read, the previous way and this one, measured alike
            old = b.python.run(old_reader, blob, Limits(cap, 60_000))
            before.append(_old_host_write(blob) + float(old.value))
            new = b.python.run(new_reader, blob, Limits(cap, 60_000))
            after.append(_new_host_write(kept, blob) + float(new.value))
            col = b.python.run(col_reader, blob, Limits(cap, 60_000))
            columns.append(_new_host_write(kept, blob) + float(col.value))
        row: dict[str, Any] = {"size_mb": nbytes / MB, "bytes": nbytes}
        for name, xs in (
            ("native_memmove", memmove),
            ("python", py),
            ("python_untouched", untouched),
            ("python_before", before),
            ("python_after", after),
            ("python_columns", columns),
            ("core", core),
        ):
            row[name] = {
                "mb_per_s_p50": nbytes / MB / statistics.median(xs),
                "mb_per_s_p10": nbytes / MB / pct(xs, 90),
                "seconds": summary(xs),
            }
        for name in (
            "python", "python_untouched", "python_before", "python_after", "python_columns", "core"
        ):  # fmt: skip
            mbs = row[name]["mb_per_s_p50"]
            row[name]["target"] = verdict(mbs, 500.0, higher_is_better=True)
            row[name]["fraction_of_memmove"] = mbs / row["native_memmove"]["mb_per_s_p50"]
        row["python"]["target_1500"] = verdict(
            row["python"]["mb_per_s_p50"], 1500.0, higher_is_better=True
        )
        row["python_after"]["speedup_vs_before"] = (
            row["python_after"]["mb_per_s_p50"] / row["python_before"]["mb_per_s_p50"]
        )
        row["python_columns"]["speedup_vs_readall"] = (
            row["python_columns"]["mb_per_s_p50"] / row["python_after"]["mb_per_s_p50"]
        )
        rows.append(row)
        log(
            f"   {nbytes / MB:7.1f} MB: python {row['python']['mb_per_s_p50']:7.0f} MB/s "
            f"(alike: columns {row['python_columns']['mb_per_s_p50']:5.0f}, "
            f"readall {row['python_after']['mb_per_s_p50']:5.0f}, new file + zeroed "
            f"{row['python_before']['mb_per_s_p50']:5.0f}, untouched "
            f"{row['python_untouched']['mb_per_s_p50']:5.0f}), "
            f"core {row['core']['mb_per_s_p50']:7.0f} MB/s, "
            f"memmove {row['native_memmove']['mb_per_s_p50']:7.0f} MB/s"
        )
    return {
        "rows": rows,
        "all_met": {k: all(r[k]["target"]["met"] for r in rows) for k in ("python", "core")},
        "min_mb_per_s": {k: min(r[k]["mb_per_s_p50"] for r in rows) for k in ("python", "core")},
    }


def plot_transfer(tr: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    sizes = [r["size_mb"] for r in tr["rows"]]
    for name, color, label in (
        ("native_memmove", "grey", "native memmove (baseline)"),
        ("python_before", "lightsteelblue", "Python: new file + zeroed buffer (2 rounds ago)"),
        ("python_after", "cornflowerblue", "Python: in place + readall (previous runtime)"),
        ("python_columns", "navy", "Python: in place + every column on first use (now)"),
        ("python", "tab:blue", "Python function touching every column (runtime's timing)"),
        ("python_untouched", "tab:cyan", "Python function touching no column (len only)"),
        ("core", "tab:orange", "core module (memory write)"),
    ):
        ax.plot(
            sizes, [r[name]["mb_per_s_p50"] for r in tr["rows"]], "o-", color=color, label=label
        )
    ax.axhline(500, ls="--", color="red", lw=1, label="target 500 MB/s")
    ax.axhline(1500, ls=":", color="tab:blue", lw=1, label="Python target 1.5 GB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FDS1 blob size, MB")
    ax.set_ylabel("throughput p50, MB/s (log)")
    ax.set_title("Broker -> sandbox transfer")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    q = parse_args(__doc__ or "", argv)
    with session(q) as (b, meta):
        res = bench_transfer(b, [1, 10, 100] if q else [1, 3, 10, 30, 100], 3 if q else 7)
    out = write_result("transfer", res, meta)
    plot_transfer(res, RESULTS / "single_node_transfer.png")
    log(f"wrote {out} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
