"""The cost of a checkpoint of a stateful function, against an invocation in the same run.

Run ``python benchmarks/bench_state.py [--quick]``. Writes ``results/single_node_state.json``
and ``results/state_checkpoint.png``. All in-process sandboxes (the node's worker process
adds one pipe round trip to each figure), real wasmtime, one run:

1. baseline: one invocation of a live persistent Python counter (and of a core counter);
2. capture: ``session.snapshot()`` of the counter, of a 10 KB and a ~100 KB dict state, and
   of the core counter (changed memory chunks + globals);
3. store: ``save()`` of the counter's checkpoint into SQLite (``state.db``), the in-memory
   bus's KV and a real nats-server's ``fades_state`` bucket (if nats-server is installed);
4. restore: ``restore()`` into a fresh session, against opening that session.

Each figure is a median (p50) and p99 over repetitions; ratios are to the invocation.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, log, parse_args, session, summary, write_result
from fades.broker.base import Dataset
from fades.functions.artifact import create
from fades.sandbox import Limits
from fades.sandbox.core import CoreSession
from fades.sandbox.wire import encode
from fades.state.base import Checkpoint
from fades.state.kv import KvCheckpoints
from fades.state.local import LocalCheckpoints

COUNTER = """
count = 0
def main(data, params):
    global count
    count += 1
    return count
"""

DICT_STATE = """
table = {{f"sensor-{{i}}": [i, i * 0.5, "ok"] for i in range({n})}}
def main(data, params):
    table["sensor-0"][0] += 1
    return len(table)
"""

CORE_COUNTER = """
(module
  (import "fades" "result_f64" (func $res (param i32 i32 f64)))
  (memory (export "memory") 2)
  (global $calls (export "calls") (mut i32) (i32.const 0))
  (data (i32.const 16) "count")
  (func (export "fades_alloc") (param $n i32) (result i32) (i32.const 8192))
  (func (export "fades_run") (param $p i32) (param $n i32) (result i32)
    (i64.store (i32.const 1024) (i64.add (i64.load (i32.const 1024)) (i64.const 1)))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (call $res (i32.const 16) (i32.const 5) (f64.convert_i64_u (i64.load (i32.const 1024))))
    (i32.const 0))
)
"""

LIMITS = Limits(32, 10_000)


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def save_times(store: Any, state: bytes, reps: int) -> list[float]:
    """Seconds per ``save()`` of ``state``, each with the lease the previous one returned."""
    lease = store.claim("bench", "node")
    out = []
    for seq in range(1, reps + 1):
        ckpt = Checkpoint("bench", "d" * 64, "node", seq, state, time.time())
        t0 = time.perf_counter()
        lease = store.save(lease, ckpt)
        out.append(time.perf_counter() - t0)
    return out


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def stores(tmp: Path, lt: LoopThread) -> tuple[dict[str, Any], list[Callable[[], None]]]:
    key = b"k" * 32
    out: dict[str, Any] = {"sqlite": LocalCheckpoints(tmp / "state.db", key)}
    closers: list[Callable[[], None]] = []
    from fades.bus.memory import MemoryBus

    mem_bus = MemoryBus()
    out["kv_memory"] = lt.run(KvCheckpoints.open(mem_bus, key))
    try:
        from fades.bus.nats import NatsBus
        from fades.fabric import EmbeddedNats

        server = EmbeddedNats(tmp / "nats", name="bench-state", mqtt=False).start(timeout=120)
        closers.append(server.stop)
        bus = lt.run(NatsBus.connect(server.url, name="bench-state", timeout=30))
        closers.insert(0, lambda: lt.run(bus.close()))
        out["kv_nats"] = lt.run(KvCheckpoints.open(bus, key))
    except Exception as exc:  # no nats-server here: say so in the result
        log(f"  (no real NATS: {exc})")
    return out, closers


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quick = parse_args(__doc__ or "", argv)
    reps = 30 if quick else 300
    res: dict[str, Any] = {"reps": reps}
    with session(quick) as (b, meta):
        blob = encode({"t": Dataset.from_records([1.0], [2.0], ["temperature"], ["r"], ["d"])})
        fns = {
            "counter": COUNTER,
            "dict_10kb": DICT_STATE.format(n=300),
            "dict_100kb": DICT_STATE.format(n=3000),
        }
        arts = {
            n: create("python", n, textwrap.dedent(s).encode(), key=b.key) for n, s in fns.items()
        }
        # 1 + 2: invocation baseline and capture, per state size
        capture: dict[str, Any] = {}
        for name, art in arts.items():
            with b.python.open(art, LIMITS) as s:
                s.invoke(blob)
                inv = timed(lambda s=s: s.invoke(blob), reps)  # type: ignore[misc]
                snap = timed(s.snapshot, reps)
                size = len(s.snapshot())
            capture[name] = {
                "invoke_ms": summary(inv, 1e3),
                "snapshot_ms": summary(snap, 1e3),
                "state_bytes": size,
                "snapshot_over_invoke_p50": summary(snap)["p50"] / summary(inv)["p50"],
            }
            log(f"  {name}: state {size} B, invoke p50 {capture[name]['invoke_ms']['p50']:.3f} "
                f"ms, snapshot p50 {capture[name]['snapshot_ms']['p50']:.3f} ms")  # fmt: skip
        core = create("core", "core_counter", bytes(wasmtime.wat2wasm(CORE_COUNTER)), key=b.key)
        with CoreSession(core, LIMITS) as cs:
            cs.invoke(blob)
            inv = timed(lambda: cs.invoke(blob), reps)
            snap = timed(cs.snapshot, reps)
            core_state = cs.snapshot()
        capture["core_counter"] = {
            "invoke_ms": summary(inv, 1e3),
            "snapshot_ms": summary(snap, 1e3),
            "state_bytes": len(core_state),
            "snapshot_over_invoke_p50": summary(snap)["p50"] / summary(inv)["p50"],
        }
        log(f"  core_counter: state {len(core_state)} B, snapshot p50 "
            f"{capture['core_counter']['snapshot_ms']['p50']:.3f} ms")  # fmt: skip
        res["capture"] = capture
        # 3: storing the counter's checkpoint
        with b.python.open(arts["counter"], LIMITS) as s:
            s.invoke(blob)
            state = s.snapshot()
        lt = LoopThread()
        store_res: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as tmp:
            backends, closers = stores(Path(tmp), lt)
            base = capture["counter"]["invoke_ms"]["p50"]
            for name, st in backends.items():
                t = save_times(st, state, reps)
                store_res[name] = {"save_ms": summary(t, 1e3)}
                store_res[name]["checkpoint_over_invoke_p50"] = (
                    capture["counter"]["snapshot_ms"]["p50"] + store_res[name]["save_ms"]["p50"]
                ) / base
                log(f"  save to {name}: p50 {store_res[name]['save_ms']['p50']:.3f} ms")
            for close in closers:
                close()
        lt.stop()
        res["store"] = store_res
        # 4: restore into a fresh session, against a fresh session alone
        fresh, rest = [], []
        for _ in range(reps):  # the same sessions: open (baseline), then restore into it
            t0 = time.perf_counter()
            s = b.python.open(arts["counter"], LIMITS)
            t1 = time.perf_counter()
            s.restore(state)
            t2 = time.perf_counter()
            s.close()
            fresh.append(t1 - t0)
            rest.append(t2 - t1)
        res["restore"] = {
            "fresh_session_ms": summary(fresh, 1e3),
            "restore_ms": summary(rest, 1e3),
            "restore_over_fresh_p50": summary(rest)["p50"] / summary(fresh)["p50"],
        }
        log(f"  restore: fresh session p50 {res['restore']['fresh_session_ms']['p50']:.3f} ms, "
            f"restore into it p50 {res['restore']['restore_ms']['p50']:.3f} ms")  # fmt: skip
    path = write_result("state", res, meta)
    plot(res, RESULTS / "state_checkpoint.png")
    log(f"wrote {path}")
    return res


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels, values, colors = [], [], []
    cap = res["capture"]
    labels.append("invoke\n(counter)")
    values.append(cap["counter"]["invoke_ms"]["p50"])
    colors.append("grey")
    for name in ("counter", "dict_10kb", "dict_100kb", "core_counter"):
        labels.append(f"snapshot\n{name}\n({cap[name]['state_bytes']} B)")
        values.append(cap[name]["snapshot_ms"]["p50"])
        colors.append("tab:blue")
    for name, r in res["store"].items():
        labels.append(f"save\n{name}")
        values.append(r["save_ms"]["p50"])
        colors.append("tab:orange")
    labels.append("restore\n(counter)")
    values.append(res["restore"]["restore_ms"]["p50"])
    colors.append("tab:green")
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("p50 (ms)")
    ax.set_title("Checkpoint cost against one invocation (same run)")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
