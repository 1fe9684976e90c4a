"""Live migration of a stateful counter between two nodes, against checkpointing a process.

Run ``python benchmarks/bench_migration.py [--quick] [--n N]``. Writes
``benchmarks/results/migration.json`` and ``migration.png``. Every part is a real process:
nats-server, the controller and two node agents (:class:`fades.cluster.LocalCluster`); the
client drives ``POST /v1/tasks/{id}/migrate`` over loopback.

1. **fades**: a stateful counter (``checkpoint: every``, invoked every 10 ms) moved back and
   forth ``N`` times (200; 20 with ``--quick``). Per move: downtime (end of the last
   invocation on the source to the end of the first on the target, node clocks of one
   machine), total (request to that first output, including the target's preparation),
   hand-over (total minus preparation), state bytes, bytes the target downloaded. After the
   run, every node's invocation log is checked: no sequence number twice, none skipped, and
   each result equals its sequence number plus one.
2. **Baseline, same run**: the same counter as a plain Python process checkpointed with
   CRIU (``criu dump --shell-job`` then ``criu restore``): image size and dump + restore
   time. Where CRIU cannot run on this kernel (the run records its error), the baseline is
   the part of a process checkpoint CRIU cannot avoid: the process's private memory, copied
   out of ``/proc/PID/mem`` to an image file while the process is stopped, and read back
   (a lower bound of CRIU's dump + restore: no page-table walk, no file or socket state).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

RESULTS = Path(os.environ.get("FADES_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")

COUNTER_FN = """
COUNT = 0

def main(data, params):
    global COUNT
    COUNT += 1
    return {"count": COUNT}
"""

COUNTER_PROC = """
import sys, time
count = 0
while True:
    count += 1
    sys.stdout.write(f"{count}\\n")
    sys.stdout.flush()
    time.sleep(0.01)
"""

TARGETS = {"downtime_p50_ms": 10.0, "total_p50_ms": 50.0, "state_bytes": 1024}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if xs else float("nan")


def stats_ms(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50_ms": pct(xs, 50) * 1e3,
        "p99_ms": pct(xs, 99) * 1e3,
        "mean_ms": (statistics.fmean(xs) * 1e3) if xs else float("nan"),
        "max_ms": (max(xs) * 1e3) if xs else float("nan"),
    }


def log(msg: str) -> None:
    print(msg, flush=True)


# --- fades -----------------------------------------------------------------------------------
def run_fades(n: int, tmp: Path) -> dict[str, Any]:
    from fades.cluster import LocalCluster
    from fades.functions.build import build_python

    # the nodes must verify each other's checkpoints (this cluster has no fabric token)
    os.environ.setdefault("FADES_STATE_KEY", "bench-migration-shared-state-key-0123456789")

    cluster = LocalCluster(
        tmp / "cluster",
        nodes=2,
        rooms_per_node=1,
        days=0.01,
        sensors=False,
        ingest=False,
        heartbeat_s=0.5,
        down_after_s=10.0,
        capacity=2,
        say=log,
    )
    cluster.prepare()
    cluster.start()
    try:
        src = tmp / "counter.py"
        src.write_text(COUNTER_FN)
        assert cluster.key is not None
        art = build_python(src, key=cluster.key)
        runtime_bytes = 0
        with cluster.client() as c:
            c.upload(art.to_bytes())
            for f in c.functions():
                if f["kind"] == "runtime":
                    runtime_bytes = int(f["size"])
            task = {
                "credentials": {"tenant": "facilities"},
                "data": [],
                "inputs": {"tick": 1},
                "function": {
                    "artifact": "counter",
                    "memory_mib": 64,
                    "mode": "persistent",
                    "period_s": 0.01,
                    "state": {"checkpoint": "every"},
                },
            }
            a, b = cluster.names
            tid = c.submit(task, node=a)["task_id"]
            _wait_invocations(cluster.node_home(a), tid, 5)
            receipts: list[dict[str, Any]] = []
            where = a
            for i in range(n):
                to = b if where == a else a
                receipts.append(c.migrate(tid, to))
                where = to
                if (i + 1) % 20 == 0:
                    log(f"  {i + 1}/{n} migrations")
            last = receipts[-1]["seq"] or 0
            _wait_invocations(cluster.node_home(where), tid, last + 3)
            c.cancel(tid)
        continuity = _check(cluster, tid)
    finally:
        cluster.stop()
    down = [r["downtime_s"] for r in receipts if r["downtime_s"] is not None]
    total = [r["total_s"] for r in receipts]
    prep = [r["prepare_s"] for r in receipts]
    hand = [t - p for t, p in zip(total, prep, strict=True)]
    return {
        "migrations": len(receipts),
        "forced": sum(1 for r in receipts if r["forced"]),
        "downtime": stats_ms(down),
        "total": stats_ms(total),
        "prepare": stats_ms(prep),
        "handover": stats_ms(hand),
        "state_bytes": {
            "max": max(r["state_bytes"] for r in receipts),
            "median": statistics.median(r["state_bytes"] for r in receipts),
        },
        "artifact_bytes": {
            "function": len(art.to_bytes()),
            "runtime": runtime_bytes,
            "first_move": receipts[0]["artifact_bytes"],
            "later_moves_max": max((r["artifact_bytes"] for r in receipts[2:]), default=0),
        },
        "phases_p50_ms": {
            k: pct([r["phases"][k] for r in receipts if r.get("phases")], 50) * 1e3
            for k in ("stop", "relay", "start")
        },
        "continuity": continuity,
        "raw_downtime_s": down,
        "raw_total_s": total,
    }


def _invocations(home: Path, tid: str) -> list[tuple[int, int]]:
    db = sqlite3.connect(f"file:{home / 'tasks.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT seq, result_json FROM invocations WHERE task_id=? AND ok=1", (tid,)
        ).fetchall()
    finally:
        db.close()
    return [(int(s), int(json.loads(r)["count"])) for s, r in rows]


def _wait_invocations(home: Path, tid: str, seq: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError):
            inv = _invocations(home, tid)
            if inv and max(s for s, _ in inv) >= seq:
                return
        time.sleep(0.02)
    raise RuntimeError(f"task {tid} did not reach invocation {seq} on {home.name}")


def _check(cluster: Any, tid: str) -> dict[str, Any]:
    seen = [x for name in cluster.names for x in _invocations(cluster.node_home(name), tid)]
    seqs = sorted(s for s, _ in seen)
    return {
        "invocations": len(seqs),
        "duplicates": len(seqs) - len(set(seqs)),
        "skipped": (max(seqs) + 1 - len(set(seqs))) if seqs else 0,
        "state_mismatches": sum(1 for s, c in seen if c != s + 1),
    }


# --- CRIU ------------------------------------------------------------------------------------
def run_criu(n: int, tmp: Path) -> dict[str, Any]:
    src = tmp / "counter_proc.py"
    src.write_text(COUNTER_PROC)
    out: dict[str, Any] = {"criu": shutil.which("criu"), "runs": 0}
    if out["criu"] is None:
        out["error"] = "criu is not installed (apt-get install -y criu)"
    else:
        ver = subprocess.run(["criu", "--version"], capture_output=True, text=True)
        out["version"] = ver.stdout.strip().splitlines()[0] if ver.stdout else ""
        times, sizes, err = _criu_cycles(src, tmp, n)
        if err is not None:
            out["error"] = err
        if times:
            out.update(runs=len(times), dump_restore=stats_ms(times), image_bytes=max(sizes))
    if "error" in out:
        out["podman"] = (
            "not tried: 'podman container checkpoint' drives this same CRIU, which stops at "
            "its kernel feature check on this kernel (the error above)"
        )
    low_t, low_b = _lower_bound(src, tmp, n)
    out["lower_bound"] = {
        "what": "private memory of the stopped counter process copied out of /proc/PID/mem "
        "to an image file and read back (no page tables, files or sockets): what any "
        "process checkpoint must at least move",
        "dump_restore": stats_ms(low_t),
        "image_bytes": low_b,
    }
    return out


def _criu_cycles(src: Path, tmp: Path, n: int) -> tuple[list[float], list[int], str | None]:
    times: list[float] = []
    sizes: list[int] = []
    proc = subprocess.Popen(
        [sys.executable, str(src)],
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid = proc.pid
    try:
        time.sleep(0.3)
        for i in range(n):
            img = tmp / f"criu-{i}"
            img.mkdir()
            t0 = time.perf_counter()
            dump = subprocess.run(
                ["criu", "dump", "-t", str(pid), "-D", str(img), "--shell-job", "-o", "dump.log"],
                capture_output=True,
                text=True,
            )
            if dump.returncode != 0:
                return times, sizes, "criu dump failed: " + _criu_error(img / "dump.log", dump)
            rest = subprocess.run(
                ["criu", "restore", "-D", str(img), "--shell-job", "-d", "-o", "restore.log"],
                capture_output=True,
                text=True,
            )
            dt = time.perf_counter() - t0
            if rest.returncode != 0:
                return (
                    times,
                    sizes,
                    "criu restore failed: " + _criu_error(img / "restore.log", rest),
                )
            times.append(dt)
            sizes.append(sum(f.stat().st_size for f in img.iterdir() if f.suffix == ".img"))
            shutil.rmtree(img)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(5)
    return times, sizes, None


def _criu_error(logfile: Path, res: subprocess.CompletedProcess[str]) -> str:
    text = logfile.read_text(errors="replace") if logfile.exists() else res.stderr
    errors = [line.strip() for line in text.splitlines() if "Error" in line]
    return "; ".join(errors[:3]) or f"exit {res.returncode}"


_MAP = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$")


def _lower_bound(src: Path, tmp: Path, n: int) -> tuple[list[float], int]:
    proc = subprocess.Popen(
        [sys.executable, str(src)], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    times: list[float] = []
    size = 0
    try:
        time.sleep(0.3)
        image = tmp / "lower-bound.img"
        for _ in range(n):
            t0 = time.perf_counter()
            os.kill(proc.pid, signal.SIGSTOP)
            size = 0
            with (
                open(f"/proc/{proc.pid}/maps") as maps,
                open(f"/proc/{proc.pid}/pagemap", "rb", 0) as pagemap,
                open(f"/proc/{proc.pid}/mem", "rb", 0) as mem,
                open(image, "wb") as img,
            ):
                for line in maps:
                    m = _MAP.match(line)
                    if m is None or "w" not in m[3] or "p" not in m[3]:
                        continue
                    if m[5].strip() in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                        continue
                    size += _copy_present(int(m[1], 16), int(m[2], 16), pagemap, mem, img)
                img.flush()
                os.fsync(img.fileno())
            os.kill(proc.pid, signal.SIGCONT)
            with open(image, "rb") as img:  # the restore side reads the image back
                while img.read(1 << 20):
                    pass
            times.append(time.perf_counter() - t0)
    finally:
        proc.kill()
        proc.wait(5)
    return times, size


def _copy_present(lo: int, hi: int, pagemap: Any, mem: Any, img: Any) -> int:
    """Copy the resident pages of ``[lo, hi)`` (as a checkpoint does); bytes copied."""
    page = os.sysconf("SC_PAGE_SIZE")
    pagemap.seek(lo // page * 8)
    entries = np.frombuffer(pagemap.read((hi - lo) // page * 8), dtype=np.uint64)
    present = np.nonzero(entries & np.uint64(1 << 63))[0]
    copied = 0
    for i in present:
        with contextlib.suppress(OSError):
            mem.seek(lo + int(i) * page)
            img.write(mem.read(page))
            copied += page
    return copied


# --- report ----------------------------------------------------------------------------------
def plot(res: dict[str, Any], path: Path) -> None:
    f = res["fades"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for key, label in (("raw_downtime_s", "downtime"), ("raw_total_s", "total")):
        xs = np.sort(np.asarray(f[key]) * 1e3)
        if len(xs):
            ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"fades {label}")
    base = res["baseline"]
    ref = base.get("dump_restore") or base["lower_bound"]["dump_restore"]
    name = "CRIU dump+restore" if base.get("dump_restore") else "process copy (CRIU lower bound)"
    ax.axvline(ref["p50_ms"], color="k", ls="--", label=f"{name} p50")
    ax.set_xscale("log")
    ax.set_xlabel("ms (log)")
    ax.set_ylabel("fraction of migrations")
    ax.set_title(f"{f['migrations']} live migrations of a stateful counter")
    ax.legend(fontsize=8)
    ax = axes[1]
    img = base.get("image_bytes") or base["lower_bound"]["image_bytes"]
    labels = ["fades state", "fades function\nartifact", name.replace(" (", "\n(")]
    vals = [f["state_bytes"]["max"], f["artifact_bytes"]["function"], img]
    ax.bar(labels, vals, color=["tab:blue", "tab:cyan", "tab:gray"])
    ax.set_yscale("log")
    ax.set_ylabel("bytes (log)")
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    ax.set_title("what moves per migration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 migrations instead of 200")
    ap.add_argument("--n", type=int, default=None, help="number of migrations")
    args = ap.parse_args(argv)
    n = args.n or (20 if args.quick else 200)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fades-bench-mig-") as d:
        tmp = Path(d)
        log(f"fades: {n} live migrations")
        fades = run_fades(n, tmp)
        log("baseline: CRIU on an equivalent Python counter process")
        base = run_criu(min(n, 50), tmp)
    ref = base.get("dump_restore") or base["lower_bound"]["dump_restore"]
    img = base.get("image_bytes") or base["lower_bound"]["image_bytes"]
    res: dict[str, Any] = {
        "fades": fades,
        "baseline": base,
        "ratios": {
            "downtime_p50_vs_baseline": fades["downtime"]["p50_ms"] / ref["p50_ms"],
            "total_p50_vs_baseline": fades["total"]["p50_ms"] / ref["p50_ms"],
            "state_bytes_vs_image": fades["state_bytes"]["max"] / img,
        },
        "targets": {
            "downtime_p50_ms": {
                "target": TARGETS["downtime_p50_ms"],
                "value": fades["downtime"]["p50_ms"],
                "met": fades["downtime"]["p50_ms"] <= TARGETS["downtime_p50_ms"],
            },
            "total_p50_ms": {
                "target": TARGETS["total_p50_ms"],
                "value": fades["total"]["p50_ms"],
                "met": fades["total"]["p50_ms"] <= TARGETS["total_p50_ms"],
            },
            "state_bytes": {
                "target": TARGETS["state_bytes"],
                "value": fades["state_bytes"]["max"],
                "met": fades["state_bytes"]["max"] <= TARGETS["state_bytes"],
            },
        },
        "meta": {
            "quick": args.quick,
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
            "wall_s": time.time() - t0,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "migration.json").write_text(json.dumps(res, indent=2))
    plot(res, RESULTS / "migration.png")
    f = fades
    log(
        f"downtime p50 {f['downtime']['p50_ms']:.1f} ms p99 {f['downtime']['p99_ms']:.1f} ms; "
        f"total p50 {f['total']['p50_ms']:.1f} ms (hand-over {f['handover']['p50_ms']:.1f}); "
        f"state {f['state_bytes']['max']} B; baseline p50 {ref['p50_ms']:.1f} ms, {img:,} B; "
        f"continuity {f['continuity']}; phases p50 ms {f['phases_p50_ms']}"
    )
    log(f"results in {RESULTS / 'migration.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
