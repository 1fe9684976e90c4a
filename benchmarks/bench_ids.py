"""The intrusion detector: detection against the labels, cost against native, and a move.

``examples/functions/ids.py`` over traces from ``fades.testbed.traffic`` (benign background,
SYN and UDP floods, SYN/connect/NULL/FIN/XMAS/UDP scans and a slow scan), one invocation per
second of traffic, measured against the SAME rules run natively on the host in the same run:

1. detection rate and false positives per attack kind, sandboxed and native, over several
   seeds (the sandbox must raise exactly the native alerts);
2. packets per second per core (CPU seconds of the process that runs the rules: the sandbox's
   worker process, a native subprocess), memory (peak RSS of each process, and its growth
   while detecting), and the size of the detector's captured state;
3. the move: in the middle of the slow scan (and at other points of it) the detector is
   checkpointed on node a and restored on node b through the node's StateKeeper over the
   SQLite checkpoint store (claim, save, load, restore); a detector restarted fresh at the
   same point is the baseline. Also the hand-over cost (capture, store, load, restore).

Run ``python benchmarks/bench_ids.py [--quick]``. Writes ``benchmarks/results/ids.json`` and
``benchmarks/results/ids.png``.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import RESULTS, log, parse_args, write_json
from fades.functions.artifact import Artifact, create
from fades.functions.build import build_runtime
from fades.functions.keys import SigningKey
from fades.guest import fades_sdk
from fades.sandbox import HostLimits, Limits, PythonSandbox
from fades.sandbox.procs import ProcSession
from fades.sandbox.wire import encode
from fades.state.keeper import StateKeeper
from fades.state.local import LocalCheckpoints
from fades.task import StateSpec
from fades.testbed.traffic import ATTACK_KINDS, Traffic, generate, score, to_dataset

IDS = Path(__file__).resolve().parents[1] / "examples" / "functions" / "ids.py"
LIMITS = Limits(128, 60_000)
BATCH_S = 1.0
TICK = os.sysconf("SC_CLK_TCK")


def blobs(traffic: Traffic) -> list[bytearray]:
    return [encode({"packets": to_dataset(b)}) for b in traffic.batches(BATCH_S)]


def native_module() -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "ids_native"}
    exec(compile(IDS.read_text(), str(IDS), "exec"), ns)
    return ns


def run_native(inputs: list[bytearray]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ns = native_module()
    alerts: list[dict[str, Any]] = []
    for blob in inputs:
        data, params = fades_sdk.decode(blob)
        alerts += ns["main"](data, params)["alerts"]
    return alerts, ns


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _status_kib(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


_NATIVE_RUNNER = textwrap.dedent(
    """
    import json, struct, sys, time
    from fades.guest import fades_sdk
    def kib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    ns = {"__name__": "ids_native"}
    exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), ns)
    raw = open(sys.argv[2], "rb").read()
    rss0 = kib("VmRSS")
    t0 = time.process_time(); w0 = time.perf_counter(); n = 0; pos = 0
    while pos < len(raw):
        (size,) = struct.unpack_from("<I", raw, pos); pos += 4
        data, params = fades_sdk.decode(memoryview(raw)[pos:pos + size]); pos += size
        n += ns["main"](data, params)["packets"]
    cpu = time.process_time() - t0; wall = time.perf_counter() - w0
    print(json.dumps({"packets": n, "cpu_s": cpu, "wall_s": wall,
                      "rss_before_kib": rss0, "hwm_kib": kib("VmHWM")}))
    """
)


def native_cost(inputs: list[bytearray], tmp: Path) -> dict[str, Any]:
    """The native rules in a subprocess of their own: CPU, wall and memory."""
    path = tmp / "blobs.bin"
    with path.open("wb") as f:
        for blob in inputs:
            f.write(struct.pack("<I", len(blob)) + bytes(blob))
    out = subprocess.run(
        [sys.executable, "-c", _NATIVE_RUNNER, str(IDS), str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    res: dict[str, Any] = json.loads(out.stdout)
    return res


def sandbox_cost(fn: Artifact, runtime: Artifact, inputs: list[bytearray]) -> dict[str, Any]:
    """The rules in a sandbox worker process (what a node runs): its CPU, wall, memory."""
    s = ProcSession(HostLimits(), fn, runtime, LIMITS)
    try:
        pid = s.worker.pid
        rss0 = _status_kib(pid, "VmRSS")
        cpu0, w0 = _proc_cpu_s(pid), time.perf_counter()
        n = 0
        alerts: list[dict[str, Any]] = []
        for blob in inputs:
            v = s.invoke(blob).value
            n += v["packets"]
            alerts += v["alerts"]
        wall = time.perf_counter() - w0
        cpu = _proc_cpu_s(pid) - cpu0
        hwm = _status_kib(pid, "VmHWM")
        state = s.snapshot()
    finally:
        s.close()
    return {
        "packets": n,
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_before_kib": rss0,
        "hwm_kib": hwm,
        "state_bytes": len(state),
        "alerts": alerts,
    }


def detection(sb: PythonSandbox, fn: Artifact, seeds: list[int]) -> dict[str, Any]:
    log(f"1. detection over seeds {seeds}")
    totals = {
        side: {k: {"attacks": 0, "detected": 0, "false_positives": 0} for k in ATTACK_KINDS}
        for side in ("native", "sandbox")
    }
    same = True
    for seed in seeds:
        traffic = generate(seed)
        inputs = blobs(traffic)
        native, _ = run_native(inputs)
        with sb.open(fn, LIMITS) as s:
            boxed = [a for blob in inputs for a in s.invoke(blob).value["alerts"]]
        same = same and boxed == native
        for side, alerts in (("native", native), ("sandbox", boxed)):
            for kind, row in score(traffic, alerts).items():
                for f in ("attacks", "detected", "false_positives"):
                    totals[side][kind][f] += int(row[f])
    for side in totals.values():
        for row in side.values():
            row["rate"] = row["detected"] / row["attacks"] if row["attacks"] else None
    for kind in ATTACK_KINDS:
        r = totals["sandbox"][kind]
        log(f"   {kind:13} {r['detected']}/{r['attacks']} detected, {r['false_positives']} FP")
    return {"seeds": seeds, "sandbox_alerts_equal_native": same, **totals}


def cost(fn: Artifact, runtime: Artifact, reps: int, tmp: Path) -> dict[str, Any]:
    log(f"2. cost: packets per CPU second, memory, state ({reps} runs each)")
    traffic = generate(0)
    inputs = blobs(traffic)
    _, ns = run_native(inputs)
    state_native = fades_capture_size(ns)
    nat = [native_cost(inputs, tmp) for _ in range(reps)]
    box = [sandbox_cost(fn, runtime, inputs) for _ in range(reps)]

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    n = len(traffic.packets)
    out = {
        "packets": n,
        "batches": len(inputs),
        "native": {
            "pps_per_core": n / med(nat, "cpu_s"),
            "pps_wall": n / med(nat, "wall_s"),
            "peak_rss_mib": med(nat, "hwm_kib") / 1024,
            "growth_mib": (med(nat, "hwm_kib") - med(nat, "rss_before_kib")) / 1024,
            "state_bytes": state_native,
        },
        "sandbox": {
            "pps_per_core": n / med(box, "cpu_s"),
            "pps_wall": n / med(box, "wall_s"),
            "peak_rss_mib": med(box, "hwm_kib") / 1024,
            "growth_mib": (med(box, "hwm_kib") - med(box, "rss_before_kib")) / 1024,
            "state_bytes": int(med(box, "state_bytes")),
        },
    }
    out["sandbox_over_native"] = {
        "cpu_per_packet": out["native"]["pps_per_core"] / out["sandbox"]["pps_per_core"],
        "peak_rss": out["sandbox"]["peak_rss_mib"] / out["native"]["peak_rss_mib"],
    }
    for side in ("native", "sandbox"):
        r = out[side]
        log(
            f"   {side:8} {r['pps_per_core']:9,.0f} pkt/s per core, peak RSS "
            f"{r['peak_rss_mib']:.1f} MiB (+{r['growth_mib']:.1f}), state {r['state_bytes']:,} B"
        )
    return out


def fades_capture_size(ns: dict[str, Any]) -> int:
    """The native detector's globals encoded as the sandbox encodes them (same encoder)."""
    from fades.guest import fades_capture

    return len(fades_capture.capture(ns, 8 << 20).encode())


def move(
    sb: PythonSandbox, fn: Artifact, seeds: list[int], points: list[float], tmp: Path
) -> dict[str, Any]:
    log(f"3. the move during the slow scan: seeds {seeds}, at {points} of the scan")
    rows = []
    for seed in seeds:
        traffic = generate(seed, attacks=["slow_scan"])
        (scan,) = traffic.attacks
        batches = [(b[0].ts, encode({"packets": to_dataset(b)})) for b in traffic.batches(1.0)]
        for frac in points:
            cut = scan.start + frac * (scan.end - scan.start)
            before = [blob for ts, blob in batches if ts < cut]
            after = [blob for ts, blob in batches if ts >= cut]
            store = LocalCheckpoints(tmp / f"state-{seed}-{frac}.db", b"k" * 32)
            spec = StateSpec(checkpoint="every")
            task = f"ids-{seed}-{frac}"
            a = StateKeeper(store, task, "node-a", fn.digest, spec)
            a.start()
            with sb.open(fn, LIMITS) as s:
                early = [x for blob in before for x in s.invoke(blob).value["alerts"]]
                t0 = time.perf_counter()
                a.save(s, len(before))
            t1 = time.perf_counter()
            b = StateKeeper(store, task, "node-b", fn.digest, spec)
            ckpt = b.start()
            assert ckpt is not None
            t2 = time.perf_counter()
            with sb.open(fn, LIMITS) as moved:
                moved.restore(ckpt.state)
                t3 = time.perf_counter()
                late = [x for blob in after for x in moved.invoke(blob).value["alerts"]]
            with sb.open(fn, LIMITS) as fresh:
                cold = [x for blob in after for x in fresh.invoke(blob).value["alerts"]]
            store.close()
            rows.append(
                {
                    "seed": seed,
                    "fraction": frac,
                    "probes_before": sum(
                        1
                        for p in traffic.packets
                        if p.src == scan.src and p.flags == "S" and p.ts < cut
                    ),
                    "moved_detected": score(traffic, early + late)["slow_scan"]["detected"],
                    "fresh_detected": score(traffic, early + cold)["slow_scan"]["detected"],
                    "state_bytes": len(ckpt.state),
                    "save_ms": (t1 - t0) * 1e3,
                    "load_ms": (t2 - t1) * 1e3,
                    "open_restore_ms": (t3 - t2) * 1e3,
                }
            )
    by_point = {
        str(f): {
            "moved_rate": statistics.mean(r["moved_detected"] for r in rows if r["fraction"] == f),
            "fresh_rate": statistics.mean(r["fresh_detected"] for r in rows if r["fraction"] == f),
        }
        for f in points
    }
    for f, r in by_point.items():
        log(f"   moved at {f}: moved detector {r['moved_rate']:.0%}, fresh {r['fresh_rate']:.0%}")
    mid = [r for r in rows if r["fraction"] == 0.5]
    summary = {
        k: statistics.median(r[k] for r in rows)
        for k in ("state_bytes", "save_ms", "load_ms", "open_restore_ms")
    }
    log(
        f"   hand-over: state {summary['state_bytes']:,.0f} B, save {summary['save_ms']:.1f} ms, "
        f"load {summary['load_ms']:.1f} ms, open+restore {summary['open_restore_ms']:.1f} ms "
        "(medians)"
    )
    return {
        "slow_ports": sum(1 for p in traffic.packets if p.src == scan.src and p.flags == "S"),
        "slow_scan_ports": native_module()["DEFAULTS"]["slow_scan_ports"],
        "rows": rows,
        "by_point": by_point,
        "middle": {
            "moved_detected": sum(r["moved_detected"] for r in mid),
            "fresh_detected": sum(r["fresh_detected"] for r in mid),
            "runs": len(mid),
        },
        "handover_median": summary,
    }


def plot(res: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    det = res["detection"]
    ax = axes[0]
    xs = range(len(ATTACK_KINDS))
    for i, side in enumerate(("native", "sandbox")):
        rates = [det[side][k]["rate"] or 0.0 for k in ATTACK_KINDS]
        ax.bar([x + (i - 0.5) * 0.38 for x in xs], rates, 0.38, label=f"{side} detection rate")
    for x, k in zip(xs, ATTACK_KINDS, strict=True):
        fp = det["sandbox"][k]["false_positives"], det["native"][k]["false_positives"]
        ax.annotate(f"FP {fp[0]}/{fp[1]}", (x, 1.02), ha="center", fontsize=7)
    ax.set_xticks(list(xs), ATTACK_KINDS, rotation=40, ha="right")
    ax.set_ylim(0, 1.35)
    ax.set_ylabel("attacks detected (share); FP: false alerts sandbox/native")
    ax.set_title(f"Detection per attack kind ({len(det['seeds'])} seeds)")
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    c = res["cost"]
    ax = axes[1]
    sides = ("native", "sandbox")
    ax.bar(sides, [c[s]["pps_per_core"] / 1000 for s in sides], color=["tab:gray", "tab:blue"])
    for i, s in enumerate(sides):
        ax.annotate(
            f"{c[s]['pps_per_core'] / 1000:.1f}k pkt/s\npeak RSS {c[s]['peak_rss_mib']:.0f} MiB"
            f"\nstate {c[s]['state_bytes'] / 1000:.1f} kB",
            (i, c[s]["pps_per_core"] / 1000),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("thousand packets per CPU second")
    ax.set_title(
        f"Same rules: sandbox costs {c['sandbox_over_native']['cpu_per_packet']:.1f}x native CPU"
    )
    ax.set_ylim(0, max(c[s]["pps_per_core"] for s in sides) / 1000 * 1.35)
    ax = axes[2]
    mv = res["move"]
    pts = sorted({r["probes_before"] for r in mv["rows"]})

    def rate(col: str, n: int) -> float:
        return statistics.mean(r[col] for r in mv["rows"] if r["probes_before"] == n)

    ax.plot(pts, [rate("moved_detected", n) for n in pts], "o-", label="moved (checkpoint+restore)")
    ax.plot(pts, [rate("fresh_detected", n) for n in pts], "s--", label="restarted fresh")
    need, total = mv["slow_scan_ports"], mv["slow_ports"]
    ax.axvspan(total - need, need, color="tab:red", alpha=0.08)
    ax.annotate(
        f"fewer than {need} probes on\neither side of the move:\nonly memory sees the scan",
        ((total - need + need) / 2, 0.45),
        ha="center",
        fontsize=8,
    )
    ax.set_xlabel(f"probes of the slow scan sent before the move (of {total}, one per 5 s)")
    ax.set_ylabel("slow scan detected (share of seeds)")
    ax.annotate(
        f">= {need} before:\nalerted\nbefore the move", (need + 1, 0.6), fontsize=8, ha="left"
    )
    ax.set_ylim(-0.05, 1.4)
    ax.set_title("A detector moved mid-scan")
    ax.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    quick = parse_args(__doc__ or "", argv)
    t0 = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate("bench-ids")
    runtime = build_runtime(key=key)
    fn = create("python", "ids", IDS.read_bytes(), key=key)
    sb = PythonSandbox(runtime)
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    points = [0.2, 0.4, 0.5, 0.6, 0.8] if quick else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    meta: dict[str, Any] = {
        "quick": quick,
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
        "batch_s": BATCH_S,
        "command": "python benchmarks/bench_ids.py" + (" --quick" if quick else ""),
    }
    with tempfile.TemporaryDirectory(prefix="fades-bench-ids-") as tmp:
        res = {
            "detection": detection(sb, fn, seeds),
            "cost": cost(fn, runtime, 2 if quick else 5, Path(tmp)),
            "move": move(sb, fn, seeds, points, Path(tmp)),
        }
    meta["load_avg_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - t0
    out = write_json(RESULTS / "ids.json", {"meta": meta, "ids": res})
    plot(res, RESULTS / "ids.png")
    log(f"wrote {out} and ids.png in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
