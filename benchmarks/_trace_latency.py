"""Where one task's time goes through a local cluster: a per-hop table, for bench_cluster.py.

Nothing here runs in the product: the hops are read from timestamps the parts already keep,
and from an observer on the fabric, all on one machine (one wall clock):

* the client: before its POST, when the POST answered, when its wait returned;
* the controller's database: ``submitted_at`` (the task recorded) and the outcome's
  ``stored_at`` (the outcome arrived at the controller, before its commit);
* the outcome itself: the node's ``accepted_at`` (the task held in ``tasks.db``),
  ``started_at`` and ``finished_at``;
* an observer subscribed to ``fades.task.>`` and ``fades.result.>`` on the hub (a plain
  NATS subscription beside the durable consumers): when the task's message and the result's
  message went over the fabric.

Tasks are sent one at a time, so every hop of a task lies between its POST and its answer.
:class:`Tracer` sends them one per call, so that several clusters (the old code and the new)
and the in-process baseline can take turns and see the same machine load.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the hops, in the order a task crosses them: (name, from event, to event)
HOPS: tuple[tuple[str, str, str], ...] = (
    ("client POST -> controller recorded the task", "post", "submitted"),
    ("controller recorded -> task message on the fabric", "submitted", "task_msg"),
    ("task message -> node holds the task (tasks.db)", "task_msg", "accepted"),
    ("node holds it -> sandbox run starts", "accepted", "started"),
    ("run starts -> run finished (the work)", "started", "finished"),
    ("run finished -> result message on the fabric", "finished", "result_msg"),
    ("result message -> controller has the outcome", "result_msg", "stored"),
    ("controller has the outcome -> client's wait returned", "stored", "returned"),
)


class Observer:
    """A plain NATS subscriber on the task and result subjects, in its own thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, str, str]] = []  # (time, subject, message id)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Observer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the trace observer did not connect to NATS")
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        import nats

        nc = await nats.connect(self.url.split(",")[0])
        self._stop = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            mid = (msg.headers or {}).get("Nats-Msg-Id", "")
            self.seen.append((time.time(), msg.subject, mid))

        await nc.subscribe("fades.task.>", cb=on_msg)
        await nc.subscribe("fades.result.>", cb=on_msg)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def first(self, prefix: str, task_id: str, after: float) -> float | None:
        """When the first message on ``prefix`` for ``task_id`` was seen after ``after``."""
        for t, subject, mid in list(self.seen):
            if t >= after and subject.startswith(prefix) and mid.startswith(task_id):
                return t
        return None


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(cluster: Any) -> dict[str, float]:
    """CPU seconds so far of the cluster's processes, nats-server and this client."""
    out: dict[str, float] = {}
    for label, proc in getattr(cluster, "procs", {}).items():
        try:
            out[label] = cpu_s(proc.pid)
        except (OSError, ValueError, IndexError):
            continue
    for i, server in enumerate(getattr(cluster.hub, "servers", [])):
        if server.proc is not None:
            out[f"nats{i + 1}"] = cpu_s(server.proc.pid)
    use = resource.getrusage(resource.RUSAGE_SELF)
    out["client (this process)"] = use.ru_utime + use.ru_stime
    return out


class Tracer:
    """Traces tasks sent one at a time through ``cluster``, one per :meth:`one` call (so
    several clusters can take turns under the same machine load).

    ``one_request``: each task with ``FadesClient.run`` (submit and wait in one request)
    instead of ``submit`` then ``wait``."""

    def __init__(
        self, cluster: Any, make_task: Callable[[], dict[str, Any]], *, one_request: bool = False
    ) -> None:
        self.cluster = cluster
        self.make_task = make_task
        self.one_request = one_request
        self.rows: list[dict[str, Any]] = []
        self.client = cluster.client()
        self.observer = Observer(cluster.hub.url)
        self.cpu: dict[str, float] = {}
        self.busy = 0.0  # seconds spent in one()

    def warm(self, n: int = 5) -> None:
        for _ in range(n):
            self.client.wait(self.client.submit(self.make_task())["task_id"], timeout=60)

    def __enter__(self) -> Tracer:
        self.observer.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.observer.__exit__()
        self.client.close()

    def one(self) -> None:
        """Send one task and wait for it; its client-side times are kept."""
        c0 = cpu_now(self.cluster)
        t0 = time.perf_counter()
        post = time.time()
        if self.one_request:
            rec = self.client.run(self.make_task(), timeout=60)
            tid = rec["task_id"]
            answered = returned = time.time()
        else:
            tid = self.client.submit(self.make_task())["task_id"]
            answered = time.time()
            rec = self.client.wait(tid, timeout=60)
            returned = time.time()
        self.busy += time.perf_counter() - t0
        c1 = cpu_now(self.cluster)
        for k, v in c0.items():
            self.cpu[k] = self.cpu.get(k, 0.0) + c1.get(k, v) - v
        if rec["status"] != "done":
            raise RuntimeError(f"task failed: {rec['error_kind']}: {rec['error']}")
        self.rows.append(
            {
                "tid": tid,
                "post": post,
                "answered": answered,
                "returned": returned,
                "accepted": rec["accepted_at"],
                "started": rec["started_at"],
                "finished": rec["finished_at"],
                "phases": dict(rec.get("timing") or {}),
            }
        )

    def samples_ms(self) -> list[float]:
        """End-to-end latency of each task (ms)."""
        return [(r["returned"] - r["post"]) * 1e3 for r in self.rows]

    def result(self) -> dict[str, Any]:
        """The median of each hop (ms), from the observer and the controller's database."""
        time.sleep(0.2)  # (the observer's last messages)
        rows = self.rows
        obs = self.observer
        for r in rows:
            r["task_msg"] = obs.first("fades.task.", r["tid"], r["post"]) or float("nan")
            r["result_msg"] = obs.first("fades.result.", r["tid"], r["post"]) or float("nan")
        db = sqlite3.connect(Path(self.cluster.controller_home) / "controller.db", timeout=30)
        try:
            for r in rows:
                tid = r["tid"]
                sub = db.execute("SELECT submitted_at FROM tasks_v2 WHERE id = ?", (tid,))
                got = db.execute("SELECT stored_at FROM outcomes WHERE task_id = ?", (tid,))
                one, two = sub.fetchone(), got.fetchone()
                r["submitted"] = float(one[0]) if one else float("nan")
                r["stored"] = float(two[0]) if two else float("nan")
        finally:
            db.close()
        hops: dict[str, float] = {}
        for name, a, b in HOPS:
            vals = [(r[b] - r[a]) * 1e3 for r in rows if r[a] == r[a] and r[b] == r[b]]
            hops[name] = statistics.median(vals) if vals else float("nan")
        n = len(rows)
        return {
            "tasks": n,
            "one_request": self.one_request,
            "hops_p50_ms": hops,
            "sum_of_hop_medians_ms": sum(v for v in hops.values() if v == v),
            "end_to_end_p50_ms": statistics.median(self.samples_ms()),
            "post_answer_p50_ms": statistics.median(
                (r["answered"] - r["post"]) * 1e3 for r in rows
            ),
            "wall_ms_per_task": self.busy / n * 1e3,
            "phases_p50_ms": phases_p50([r["phases"] for r in rows]),
            # CPU per task of each process, counted while its tasks ran (this process
            # includes the fabric observers; a controller's idle work is in its share)
            "cpu_ms_per_task": {k: v / n * 1e3 for k, v in self.cpu.items()},
        }


def phases_p50(rows: list[dict[str, float]]) -> dict[str, float]:
    """The median of each phase the node timed inside "the run" (ms): data retrieval,
    transfer, the sandbox's start, compute and result, and their total as the node saw it.
    "(outside the phases)" is "the run" hop minus that total: the claim's commit, reading
    the artifact, the hand-off to the sandbox process and back."""
    out: dict[str, float] = {}
    for key in ("retrieval", "transfer", "start", "compute", "result", "total"):
        vals = [r[key] * 1e3 for r in rows if key in r]
        if vals:
            out[key] = statistics.median(vals)
    return out


def node_hops(recs: list[tuple[float, float, float]]) -> dict[str, float]:
    """The node's own two hops (ms) from (accepted_at, started_at, finished_at) triples, with
    the same names as in :data:`HOPS` (an in-process node has only these)."""
    names = [h[0] for h in HOPS[3:5]]
    return {
        names[0]: statistics.median((s - a) * 1e3 for a, s, _ in recs),
        names[1]: statistics.median((f - s) * 1e3 for _, s, f in recs),
    }


def trace(
    cluster: Any,
    make_task: Callable[[], dict[str, Any]],
    n: int,
    *,
    warm: int = 5,
    one_request: bool = False,
) -> dict[str, Any]:
    """Send ``n`` tasks one at a time through ``cluster``; the median of each hop (ms)."""
    with Tracer(cluster, make_task, one_request=one_request) as tr:
        tr.warm(warm)
        for _ in range(n):
            tr.one()
        return tr.result()


def table(label: str, tr: dict[str, Any]) -> str:
    """The trace as a text table."""
    lines = [f"{label}: per-hop medians over {tr['tasks']} tasks (ms)"]
    for name, v in tr["hops_p50_ms"].items():
        lines.append(f"  {name:<55} {v:8.3f}")
    lines.append(f"  {'(sum of the medians)':<55} {tr['sum_of_hop_medians_ms']:8.3f}")
    lines.append(f"  {'end to end, p50':<55} {tr['end_to_end_p50_ms']:8.3f}")
    lines.append(f"  {'  of which the POST answered after':<55} {tr['post_answer_p50_ms']:8.3f}")
    ph = tr.get("phases_p50_ms") or {}
    if ph:
        lines.append("  inside the run: " + ", ".join(f"{k} {v:.3f}" for k, v in ph.items()))
    cpu = tr.get("cpu_ms_per_task") or {}
    if cpu:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        lines.append(f"  CPU ms per task: {parts} (wall {tr['wall_ms_per_task']:.2f} per task)")
    return "\n".join(lines)
