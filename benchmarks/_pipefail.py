"""Failover of a pipeline when a node is killed (-9) mid-stream: the part of
``bench_pipelines.py`` that needs the controller (not a benchmark on its own).

A real controller (HTTP API, registry, failover re-planning) runs in a background event loop;
three node agents run as their own processes (``fades node start``). The pipeline reads
``room1`` on ``n1`` (stage ``a``), then ``room2``, which ``n2`` and ``n3`` both hold (stage
``b``), then ``c`` (no data, co-located with ``b``). Runs are started one after the other
through the HTTP API; once some went through the node holding ``b``, that node's process is
SIGKILLed; the controller marks it down after ``down_after`` without a heartbeat and
re-plans ``b`` and ``c`` onto the other holder, which carries on from the durable bundles.
The killed node is restarted and rejoins, and the next repetition kills the node that holds
``b`` then. Per repetition: runs lost (started, never done), finales duplicated (more than one
``done`` event of the finale for a run, read from the events stream) and the time from the
kill to the first run completed on the substitute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fades.broker import SQLiteConnector
from fades.bus.nats import NatsBus
from fades.client import FadesClient
from fades.controller import Controller
from fades.controller.server import serve
from fades.fabric import EmbeddedNats
from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey, TrustStore, public_pem
from fades.functions.store import FunctionStore
from fades.pipelines.protocol import StageEvent, ensure_events_stream
from fades.testbed import populate

T = TypeVar("T")
TOKEN = "token-bench-pipelines-0123"
FADES = str(Path(sys.executable).parent / "fades")
HEARTBEAT_S = 0.3
DOWN_AFTER_S = 1.2

SPEC: dict[str, Any] = {
    "name": "failover",
    "credentials": {"tenant": "bench", "priority": 5},
    "run": {"mode": "on-demand", "runs": 1, "run_deadline_s": 300},
    "queue": {"max_runs": 10_000, "when_full": "refuse"},
    "stages": [
        {
            "name": "a",
            "function": {"artifact": "relay", "memory_mib": 64},
            "data": [{"name": "t", "select": {"location": "room1", "sensor_type": "co2"}}],
        },
        {
            "name": "b",
            "after": ["a"],
            "function": {"artifact": "relay", "memory_mib": 64},
            "data": [{"name": "t", "select": {"location": "room2", "sensor_type": "co2"}}],
        },
        {"name": "c", "after": ["b"], "function": {"artifact": "relay", "memory_mib": 64}},
    ],
}


class FailoverBed:
    """nats-server, an in-process controller, node-agent processes, an events reader."""

    def __init__(self, root: Path, key: SigningKey, runtime: Artifact, relay: Artifact) -> None:
        self.root, self.key, self.runtime, self.relay = root, key, runtime, relay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nats = EmbeddedNats(root / "nats", name="bench-failover")
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.events: list[StageEvent] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def home(self, name: str, room: int) -> Path:
        home = self.root / name
        (home / "trusted").mkdir(parents=True, exist_ok=True)
        (home / "trusted" / f"{self.key.id}.pub").write_bytes(public_pem(self.key.public))
        store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
        store.add(self.runtime)
        db = SQLiteConnector(home / "readings.db")
        try:
            start = datetime.now(UTC) - timedelta(days=0.05)
            populate(db, 0.05, 60.0, 1, start, rooms=1, first_room=room, sensor_types=["co2"])
        finally:
            db.close()
        return home

    def start(self) -> FailoverBed:
        self.nats.start(timeout=120.0)
        home = self.root / "controller"
        (home / "trusted").mkdir(parents=True, exist_ok=True)
        (home / "trusted" / f"{self.key.id}.pub").write_bytes(public_pem(self.key.public))
        self.ctl = Controller(home, nats=self.nats.url, tokens={TOKEN: "bench"},
                              down_after=DOWN_AFTER_S, cloud_capacity=1)  # fmt: skip
        ready: asyncio.Future[str] = self.loop.create_future()
        self._stop = asyncio.Event()

        async def go() -> None:
            self._serving = asyncio.ensure_future(
                serve(self.ctl, "127.0.0.1", 0, on_ready=ready.set_result, stop=self._stop)
            )
            await asyncio.wait({self._serving, ready}, return_when=asyncio.FIRST_COMPLETED)
            if self._serving.done():
                await self._serving

        self.run(go())
        self.url = ready.result()
        self.run(self._reader())
        self.homes = {"n1": self.home("n1", 1), "n2": self.home("n2", 2), "n3": self.home("n3", 2)}
        for n in self.homes:
            self.spawn(n)
        with self.client() as c:
            c.upload(self.relay.to_bytes())
            self.wait(lambda: {"n1", "n2", "n3"} <= {n["name"] for n in c.nodes() if n["up"]})
        return self

    async def _reader(self) -> None:
        # the events stream is a work queue that the controller consumes: listen beside it
        self.bus = await NatsBus.connect(self.nats.url, name="bench-failover-events")
        await ensure_events_stream(self.bus)

        async def listener(subject: str, data: bytes) -> None:
            self.events.append(StageEvent.decode(data))

        await self.bus.subscribe("fades.pevent.>", listener)

    def spawn(self, name: str) -> None:
        proc = subprocess.Popen(
            [FADES, "node", "start", "--name", name, "--nats", self.nats.url,
             "--data", str(self.homes[name]), "--heartbeat", str(HEARTBEAT_S), "--no-ingest"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != f"node {name} ready":
            proc.kill()
            raise RuntimeError(f"node {name} did not start: {line!r}")
        self.procs[name] = proc

    def client(self) -> FadesClient:
        return FadesClient(self.url, TOKEN, timeout=30.0)

    @staticmethod
    def wait(check: Any, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.05)
        raise TimeoutError("condition not met in time")

    def where(self, c: FadesClient, stage: str) -> str:
        rows = c.pipeline(SPEC["name"])["plan"]
        return str(next(r["node"] for r in rows if r["stage"] == stage and r["mode"] == "run"))

    def finales_done(self, run: str) -> list[StageEvent]:
        return [e for e in self.events if e.run == run and e.stage == "c" and e.status == "done"]

    def repetition(self, c: FadesClient, before: int = 3, after: int = 3) -> dict[str, Any]:
        victim = self.where(c, "b")
        started: list[str] = []

        def more() -> str:
            run = str(c.start_runs(SPEC["name"], 1)["runs"][0])
            started.append(run)
            return run

        for _ in range(before):  # some runs through the victim first
            run = more()
            self.wait(lambda run=run: self.finales_done(run), 60)
        proc = self.procs[victim]
        t_kill = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        first: float | None = None
        substitute = None
        while first is None or len(started) < before + after:
            more()
            time.sleep(0.1)
            late = [e for e in self.events if e.stage == "c" and e.status == "done"
                    and e.at > t_kill and e.node != victim and e.run in started]  # fmt: skip
            if late and first is None:
                ev = min(late, key=lambda e: e.at)
                first, substitute = ev.at - t_kill, ev.node
            if time.time() - t_kill > 120:
                break
        ends = c.wait_runs(SPEC["name"], started, timeout=120)
        time.sleep(0.5)  # a duplicate would arrive by now
        lost = [r["run"] for r in ends if r["status"] != "done"]
        dup = [r for r in started if len(self.finales_done(r)) > 1]
        self.spawn(victim)  # it rejoins
        self.wait(lambda: victim in {n["name"] for n in c.nodes() if n["up"]})
        return {
            "victim": victim,
            "substitute": substitute,
            "runs": len(started),
            "lost": len(lost),
            "duplicated_finales": len(dup),
            "kill_to_first_substitute_run_s": first,
        }

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            with contextlib.suppress(Exception):
                p.wait(15)
            if p.poll() is None:
                p.kill()
        with contextlib.suppress(Exception):
            self.run(self.bus.close())
        with contextlib.suppress(Exception):
            self._stop.set()
            self.run(self._serving)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.nats.stop()


def failover(root: Path, key: SigningKey, runtime: Artifact, relay: Artifact, reps: int,
             log: Any) -> dict[str, Any]:  # fmt: skip
    bed = FailoverBed(root, key, runtime, relay).start()
    try:
        with bed.client() as c:
            c.submit_pipeline(SPEC)
            bed.wait(lambda: bed.finales_done("r000001"), 120)
            out = []
            for i in range(reps):
                rep = bed.repetition(c)
                out.append(rep)
                took = rep["kill_to_first_substitute_run_s"] or float("nan")
                log(
                    f"   kill {i + 1}/{reps}: {rep['victim']} -> {rep['substitute']}, first run "
                    f"on the substitute {took:.2f} s after the kill; lost {rep['lost']}, "
                    f"duplicated {rep['duplicated_finales']}"
                )
    finally:
        bed.close()
    times = [
        r["kill_to_first_substitute_run_s"] for r in out if r["kill_to_first_substitute_run_s"]
    ]
    return {
        "repetitions": reps,
        "heartbeat_s": HEARTBEAT_S,
        "down_after_s": DOWN_AFTER_S,
        "runs": sum(r["runs"] for r in out),
        "runs_lost": sum(r["lost"] for r in out),
        "duplicated_finales": sum(r["duplicated_finales"] for r in out),
        "kill_to_first_substitute_run_s": {
            "p50": statistics.median(times) if times else None,
            "max": max(times) if times else None,
            "all": times,
        },
        "per_repetition": out,
    }
