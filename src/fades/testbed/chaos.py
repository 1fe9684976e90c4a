"""A bounded chaos run: a workload on a :class:`~fades.cluster.LocalCluster` while processes
die, then a count of what was accepted, finished, lost or done twice.

The workload (:class:`ChaosConfig`): ephemeral tasks submitted in batches with their own task
ids (a batch cut off by a dying controller is sent again; ``DuplicateTask`` then means the
first copy was stored), runs of an on-demand pipeline whose stages cross two nodes, and a few
stateful counters (persistent, checkpointed after every invocation, a fixed number of
invocations). Meanwhile a fault loop, seeded, picks one fault kind every ``fault_every_s``
seconds among those the cluster offers (:data:`FAULTS`): kill -9 a node agent, a controller
or a hub NATS server and restart it, or cut a site's uplink for ``outage_s`` seconds.

Everything is counted from the outside: task and run states through the HTTP API, the
pipeline's runs through the CLI (``fades pipeline runs --json``), processes by their PIDs,
and the stateful counters' invocations from each node's own ``tasks.db`` (read-only).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fades.client import FadesClient
from fades.cluster import LocalCluster
from fades.errors import ControllerUnreachable, DuplicateTask, FadesError, NoPlacement
from fades.testbed.chaos_count import FINALE, PIPELINE, settle_runs, settle_stateful, settle_tasks
from fades.testbed.chaos_faults import FAULTS, FaultRecord

__all__ = ["FAULTS", "ChaosConfig", "ChaosReport", "ChaosRun", "FaultRecord", "run_chaos"]

#: seconds after the last fault during which tasks refused for a down node are sent again
RESUBMIT_S = 60.0
#: seconds one API call keeps trying while no controller answers (a restart takes seconds)
CALL_S = 180.0

FIN_SRC = """
import random

def main(data, params):
    b = data["b"]
    return {"b": b, "nonce": random.getrandbits(48)}
"""

COUNTER_SRC = """
COUNT = 0

def main(data, params):
    global COUNT
    COUNT += 1
    return {"count": COUNT}
"""


@dataclass
class ChaosConfig:
    """One chaos run. Sizes, pacing, faults and bounds."""

    #: the workload's batches are spread evenly over this many seconds; faults too
    duration_s: float = 30.0
    tasks: int = 100
    batch: int = 10
    pipeline_runs: int = 5
    runs_per_start: int = 1
    stateful: int = 1
    stateful_invocations: int = 40
    stateful_period_s: float = 0.5
    faults: int = 4
    fault_every_s: float = 5.0
    kinds: tuple[str, ...] = ("node", "controller", "hub", "uplink")
    outage_s: float = 5.0
    late_after_s: float = 30.0
    settle_s: float = 240.0
    seed: int = 1


@dataclass
class ChaosReport:
    config: dict[str, Any]
    wall_s: float = 0.0
    settle_s: float = 0.0
    tasks: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    stateful: list[dict[str, Any]] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    #: seconds since start: submits (accepted), completions (task outcome stored)
    timeline: dict[str, list[float]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return (
            int(self.tasks.get("lost", 0))
            + int(self.pipeline.get("lost", 0))
            + sum(1 for s in self.stateful if s["status"] not in ("done", "failed"))
        )

    @property
    def duplicated(self) -> int:
        return int(self.pipeline.get("duplicated_finales", 0)) + sum(
            int(s["applied_twice"]) for s in self.stateful
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["lost"], out["duplicated"] = self.lost, self.duplicated
        return out


# --- the run --------------------------------------------------------------------------------
class ChaosRun:
    """Drive one chaos run on a started cluster; :meth:`run` returns the report."""

    def __init__(self, cluster: LocalCluster, cfg: ChaosConfig, say: Callable[[str], None]):
        self.cluster, self.cfg, self.say = cluster, cfg, say
        self.rng = random.Random(cfg.seed)
        self.kinds = [k for k in cfg.kinds if k in FAULTS and FAULTS[k][0](cluster)]
        if not self.kinds:
            raise ValueError(f"none of the fault kinds {cfg.kinds} is available on this cluster")
        self.urls: list[str] = list(getattr(cluster, "urls", None) or [cluster.url])
        self.t0 = time.monotonic()
        self.report = ChaosReport(config=asdict(cfg) | {"kinds_enabled": self.kinds})
        self.accepted: dict[str, float] = {}  # task id -> seconds since start
        self.refused: dict[str, str] = {}
        self.runs_started: list[str] = []
        self.counters: list[str] = []
        self._asked = 0  # runs asked for after the first
        self.refusals = 0  # refusals, counting each try
        self.last_retried = False
        self.resubmit: list[dict[str, Any]] = []
        self._faulting = threading.Event()  # set while the fault loop runs

    def now(self) -> float:
        return time.monotonic() - self.t0

    # one client call that survives a controller restart (tries every URL, then waits)
    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + CALL_S
        i = 0
        while True:
            url = self.urls[i % len(self.urls)]
            with FadesClient(url, self.cluster.token, timeout=30.0) as client:
                try:
                    result = getattr(client, method)(*args, **kwargs)
                    #: the call was sent more than once (an earlier try may have been kept)
                    self.last_retried = i > 0
                    return result
                except ControllerUnreachable:
                    if time.monotonic() > deadline:
                        raise
            i += 1
            time.sleep(0.2)

    def _setup(self) -> None:
        from fades.functions.build import build_python

        assert self.cluster.key is not None
        src = self.cluster.home / "chaos-functions"
        src.mkdir(exist_ok=True)
        for name, text in (("chaos_fin", FIN_SRC), ("chaos_counter", COUNTER_SRC)):
            (src / f"{name}.py").write_text(text)
            art = build_python(src / f"{name}.py", key=self.cluster.key).to_bytes()
            self.call("upload", art)
        # warm every node (its sandboxes compiled) so latencies measure the run, not a start
        for name in self.cluster.names:
            room = self.cluster.rooms(name)[0]
            receipt = self.call("submit", _mean_task(f"chaos-warm-{name}", room))
            self.call("wait", receipt["task_id"], timeout=120)
        a, b = (
            self.cluster.rooms(self.cluster.names[0])[0],
            self.cluster.rooms(self.cluster.names[-1])[0],
        )
        spec = {
            "name": PIPELINE,
            "credentials": {"tenant": "facilities", "priority": 5},
            "run": {"mode": "on-demand", "runs": 1},
            "stages": [
                _stage("a", "mean_core", [], a),
                _stage("b", "mean_core", ["a"], b),
                {"name": FINALE, "after": ["b"], "function": {"artifact": "chaos_fin"}},
            ],
        }
        receipt = self.call("submit_pipeline", spec, replace=True)
        self.runs_started += receipt["runs"]
        for k in range(self.cfg.stateful):
            task = {
                "credentials": {"tenant": "facilities", "task_id": f"chaos-state-{k}"},
                "inputs": {"counter": k},  # no data: any up node can take it over
                "function": {
                    "artifact": "chaos_counter",
                    "mode": "persistent",
                    "period_s": self.cfg.stateful_period_s,
                    "invocations": self.cfg.stateful_invocations,
                    "state": {"checkpoint": "every"},
                },
            }
            tid = f"chaos-state-{k}"
            self._submit_batch([task])
            if tid in self.refused:  # before any fault: a setup mistake, not a finding
                raise FadesError(f"the stateful task was refused: {self.refused.pop(tid)}")
            self.counters.append(tid)

    def _submit_batch(self, tasks: list[dict[str, Any]]) -> None:
        """Submit, and again after a lost answer: a duplicate then proves the first was kept."""
        retry = False
        while True:
            try:
                results = self.call("submit_many", tasks)
                retry = retry or self.last_retried
                break
            except FadesError as exc:  # e.g. a 5xx from a controller going down
                self.say(f"submit failed ({type(exc).__name__}: {exc}); again")
                retry = True
                time.sleep(0.5)
        for t, r in zip(tasks, results, strict=True):
            tid = t["credentials"]["task_id"]
            again = retry or tid in self.refused
            if r["accepted"] or (again and r.get("error_kind") == DuplicateTask.__name__):
                self.accepted.setdefault(tid, self.now())
                self.refused.pop(tid, None)
            else:
                self.refused[tid] = f"{r.get('error_kind')}: {r.get('detail')}"
                self.refusals += 1
                if r.get("error_kind") == NoPlacement.__name__:  # its node is down: later
                    self.resubmit.append(t)

    def _start_runs(self, count: int) -> None:
        try:
            got = self.call("start_runs", PIPELINE, count)
            self.runs_started += got["runs"]
        except FadesError as exc:  # answer lost: the final read finds what did start
            self.say(f"start_runs failed ({type(exc).__name__}: {exc})")

    def _workload(self) -> None:
        rooms = [r for n in self.cluster.names for r in self.cluster.rooms(n)]
        n = 0
        extra = max(0, self.cfg.pipeline_runs - len(self.runs_started))
        batches = max(1, -(-self.cfg.tasks // self.cfg.batch))
        for b in range(batches):
            tasks, self.resubmit = self.resubmit, []
            for _ in range(min(self.cfg.batch, self.cfg.tasks - n)):
                tasks.append(_mean_task(f"chaos-t{n:06d}", rooms[n % len(rooms)]))
                n += 1
            self._submit_batch(tasks)
            want = (b + 1) * extra // batches - self._asked
            while want > 0:
                k = min(self.cfg.runs_per_start, want)
                self._start_runs(k)
                self._asked += k
                want -= k
            # the next batch at its place in the schedule (later if this one was slow)
            time.sleep(max(0.0, (b + 1) * self.cfg.duration_s / batches - self.now()))
        # tasks refused while their node was down: again, until the faults are over
        quiet_until: float | None = None
        while self.resubmit:
            if not self._faulting.is_set():  # faults over: the node is back soon
                quiet_until = quiet_until or time.monotonic() + RESUBMIT_S
                if time.monotonic() > quiet_until:
                    break
            time.sleep(1.0)
            tasks, self.resubmit = self.resubmit, []
            self._submit_batch(tasks)

    def _faults(self) -> None:
        try:
            self._fault_loop()
        finally:
            self._faulting.clear()

    def _fault_loop(self) -> None:
        order: list[str] = []
        for _ in range(self.cfg.faults):
            time.sleep(self.rng.uniform(0.5, 1.5) * self.cfg.fault_every_s)
            if not order:  # every kind once per round, in a seeded random order
                order = self.rng.sample(self.kinds, len(self.kinds))
            kind = order.pop()
            rec = FaultRecord(kind, "", self.now(), back_s=self.cfg.outage_s)
            rec.back_s = self.cfg.outage_s if kind == "uplink" else None
            try:
                FAULTS[kind][1](self.cluster, self.rng, rec)
            except Exception as exc:  # recorded: a fault that could not heal is a finding
                rec.error = f"{type(exc).__name__}: {exc}"[:500]
            self.report.faults.append(rec)
            self.say(f"fault {kind} {rec.target} at {rec.at_s:.1f} s: back {rec.back_s} s")

    def run(self) -> ChaosReport:
        self._setup()
        self.t0 = time.monotonic()  # the timeline starts with the workload
        faults = threading.Thread(target=self._faults, name="chaos-faults", daemon=True)
        self._faulting.set()
        faults.start()
        self._workload()
        faults.join(timeout=self.cfg.duration_s + 300)
        t_settle = time.monotonic()
        self._count(t_settle + self.cfg.settle_s)
        self.report.settle_s = time.monotonic() - t_settle
        self.report.wall_s = self.now()
        return self.report

    def _count(self, deadline: float) -> None:
        settle_tasks(self, deadline)
        settle_runs(self, deadline)
        settle_stateful(self, deadline)


def _stage(name: str, fn: str, after: list[str], room: str) -> dict[str, Any]:
    sel = {"location": room, "sensor_type": "temperature", "last": 20}
    return {
        "name": name,
        "after": after,
        "function": {"artifact": fn, "memory_mib": 16},
        "data": [{"name": "t", "select": sel}],
    }


def _mean_task(task_id: str, room: str) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities", "task_id": task_id},
        "data": [
            {"name": "t", "select": {"location": room, "sensor_type": "temperature", "last": 50}}
        ],
        "function": {"artifact": "mean_core", "memory_mib": 16, "time_budget_ms": 20000},
    }


def run_chaos(
    cluster: LocalCluster, cfg: ChaosConfig, say: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    """Run ``cfg`` on a started ``cluster`` and count what happened."""
    return ChaosRun(cluster, cfg, say).run()
