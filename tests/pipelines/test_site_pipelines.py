"""A pipeline at a site keeps running while the site's uplink is cut, and every run's finale
reaches the controller exactly once when the link returns.

Real parts: a hub nats-server (domain ``hub``, leafnode listener), the site's leaf
nats-server (domain ``edge1``) behind a real TCP relay process (cut = the relay is stopped),
the controller (HTTP API, SQLite) connected to the hub, and two node agents (real wasmtime)
connected to the leaf with ``FADES_NATS_DOMAIN=hub`` and ``FADES_SITE=edge1``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from tests.pipelines.test_engine import FUNCS as ENGINE_FUNCS

from controller.conftest import Bed  # type: ignore[import-not-found]
from controller.test_api import artifact_of  # type: ignore[import-not-found]
from fades.bus.nats import NatsBus
from fades.errors import FadesError
from fades.fabric.connect import FabricSettings
from fades.fabric.leaf import HUB_DOMAIN, EmbeddedLeaf
from fades.fabric.server import EmbeddedNats
from fades.functions.keys import SigningKey
from fades.node.agent import NodeAgent
from fades.pipelines.protocol import StageEvent, bundle_stream

from .test_cli_pipeline import fades
from .test_service import wait_for

SITE = "edge1"
OUT = "site.p1.out"
#: the engine tests' functions, with the middle stage taking a second: a run is in flight
FUNCS = ENGINE_FUNCS | {
    "fb": """
import time

def main(data, params):
    time.sleep(1.0)
    return {"v": data["a"]["v"] + 1, "node": data["_pipeline"]["node"]}
""",
}


@pytest.fixture
def bed(hub: EmbeddedNats, tmp_path: Path, signing_key: SigningKey) -> Iterator[Bed]:
    """The controller bed on the hub (not the plain nats-server of tests/pipelines)."""
    with Bed(hub, tmp_path, signing_key) as b:
        yield b


def site_agent(bed: Bed, leaf: EmbeddedLeaf, name: str, home: Path) -> NodeAgent:
    """A node agent at the site: connected to the leaf, the hub reached through its domain."""
    settings = FabricSettings(url=leaf.url, domain=HUB_DOMAIN, site=leaf.site)
    agent = NodeAgent(name, home, settings, heartbeat_s=0.2, ingest=False, capacity=2)
    bed.run(agent.start())
    bed.agents.append(agent)
    return agent


def spec() -> dict[str, Any]:
    return {
        "name": "p1",
        "credentials": {"tenant": "facilities", "priority": 6},
        "run": {"mode": "automatic", "every_s": 1, "run_deadline_s": 20},
        "queue": {"max_runs": 200, "when_full": "refuse"},
        "stages": [
            {"name": "a", "function": {"artifact": "fa", "memory_mib": 32}, "node": "n1"},
            {"name": "b", "function": {"artifact": "fb", "memory_mib": 32}, "after": ["a"],
             "node": "n2"},
            {"name": "c", "function": {"artifact": "fc", "memory_mib": 32}, "after": ["b"],
             "node": "n1", "publish": OUT},
        ],
    }  # fmt: skip


def said(proc: Any) -> str:
    assert proc.returncode == 0, proc.stderr
    return " ".join(proc.stdout.split())


def test_a_site_pipeline_runs_through_an_uplink_cut_and_each_finale_arrives_once(
    bed: Bed,
    hub: EmbeddedNats,
    leaf: EmbeddedLeaf,
    prepare_home: Callable[..., Path],
    tmp_path: Path,
) -> None:
    homes = {n: prepare_home(n, functions=FUNCS, readings=False) for n in ("n1", "n2", "n3")}
    ctl = bed.start_controller(down_after=2.0)
    hub_bus: NatsBus = bed.run(NatsBus.connect(FabricSettings(url=hub.url), name="test-hub"))
    # every stage event as the controller's consumer takes it, before its own de-duplication
    raw: Counter[tuple[str, str, str]] = Counter()
    tracker = ctl.pipelines._tracker
    handle_many = tracker.handle_many

    async def counting(datas: list[bytes]) -> list[bool | None]:
        for d in datas:
            ev = StageEvent.decode(d)
            raw[(ev.run, ev.stage, ev.status)] += 1
        out: list[bool | None] = await handle_many(datas)
        return out

    tracker.handle_many = counting
    # what the finale publishes at the site (seen there whether or not the uplink is up)
    at_site: set[str] = set()

    async def listen() -> Any:
        nc = await nats.connect(leaf.url)

        async def got(msg: Any) -> None:
            at_site.add(json.loads(msg.data)["run"])

        await nc.subscribe(OUT, cb=got)
        await nc.flush()
        return nc

    site_nc = bed.run(listen())
    bed._listeners.append(site_nc)
    try:
        for n in ("n1", "n2"):
            site_agent(bed, leaf, n, homes[n])
        with bed.client() as c:
            wait_for(lambda: {"n1", "n2"} <= {n["name"] for n in c.nodes() if n["up"]},
                     timeout=60, what="the site's nodes up")  # fmt: skip
            for fn in FUNCS:
                c.upload(artifact_of(homes["n1"], fn))
            plan = c.plan_pipeline(spec())
            assert plan["queue_at"]["site"] == SITE and plan["queue_at"]["survives_uplink_cut"]
            file = tmp_path / "p1.json"
            file.write_text(json.dumps(spec()))
            assert (
                f"queue: at site {SITE} (its own JetStream): the pipeline keeps running while "
                "the site's uplink is down" in said(fades(bed, "plan", str(file)))
            )
            receipt = c.submit_pipeline(spec())
            assert receipt["queue_at"]["site"] == SITE
            # the bundle stream is in the site's domain, not in the hub's
            bed.run(hub_bus.in_domain(SITE).js.stream_info(bundle_stream("p1")))
            with pytest.raises(Exception, match="not found"):
                bed.run(hub_bus.js.stream_info(bundle_stream("p1")))

            def done() -> list[str]:
                return [r["run"] for r in c.pipeline_runs("p1", 1000) if r["status"] == "done"]

            wait_for(lambda: len(done()) >= 2, timeout=90, what="two runs done before the cut")
            version = c.pipeline("p1")["version"]

            # cut while the controller knows a run that has not ended: it ends at the site,
            # and the controller hears of it long after its run_deadline_s
            inflight = wait_for(lambda: [r["run"] for r in c.pipeline_runs("p1", 1000)
                                         if r["status"] == "running"],
                                timeout=60, what="a run in flight")  # fmt: skip
            leaf.cut_uplink()
            cut_at = time.time()
            # a new pipeline for the site while its nodes still look up: its queue cannot be
            # created there, and the refusal says why (once they look down: unplaceable)
            other = spec() | {"name": "p2"}
            with pytest.raises(FadesError) as refused:
                c.submit_pipeline(other)
            msg = str(refused.value)
            print(f"submit during the cut: {type(refused.value).__name__}: {msg}")
            assert f"its queue goes to site {SITE}, whose server does not answer" in msg or (
                "cannot place stage" in msg
            ), msg
            before = set(at_site)
            # the controller sees the site's nodes down, and leaves the site's plan alone
            wait_for(lambda: not {n["name"] for n in c.nodes() if n["up"]} & {"n1", "n2"},
                     timeout=60, what="the site's nodes down at the controller")  # fmt: skip
            # the site keeps running: new runs reach their finale while the link is down
            wait_for(lambda: len(at_site - before) >= 6 and time.time() - cut_at >= 25,
                     timeout=120, what="runs finished at the site during the cut")  # fmt: skip
            during = set(at_site - before)
            status = c.pipeline("p1")
            assert status["version"] == version, status["failovers"]
            assert status["queue_at"]["survives_uplink_cut"] is True
            assert status["queue_at"]["reachable"] is False
            assert all(q["queued"] is None for q in status["queues"])  # not waited on
            assert f"no node of site {SITE} is up" in said(fades(bed, "status", "p1"))
            assert not set(done()) & during  # none of them has reached the controller yet

            leaf.restore_uplink()
            restored = time.monotonic()
            # every run the site finished during the cut reaches the controller, done
            wait_for(lambda: during | set(inflight) <= set(done()), timeout=180,
                     what=f"the runs of the cut at the controller: {sorted(during)}")  # fmt: skip
            print(f"{len(during)} runs finished at the site during a {time.time() - cut_at:.0f} s "
                  f"cut reached the controller {time.monotonic() - restored:.1f} s after the "
                  "uplink was restored")  # fmt: skip
            runs = {r["run"]: r for r in c.pipeline_runs("p1", 1000)}
            for run in [*during, *inflight]:
                assert runs[run]["status"] == "done", runs[run]
                assert runs[run]["results"]["c"]["run"] == run
            finales = {run: n for (run, st, s), n in raw.items() if st == "c" and s == "done"}
            assert all(finales[run] == 1 for run in during), {r: finales.get(r) for r in during}
            assert all(n == 1 for n in finales.values()), finales
            failed = [r for r in runs.values() if r["status"] == "failed"]
            assert not failed, failed  # the deadline sweep waited for the site's drain

            # the nodes follow the plan again after the cut: a cancel stops their triggers
            wait_for(lambda: {"n1", "n2"} <= {n["name"] for n in c.nodes() if n["up"]},
                     timeout=60, what="the site's nodes up again")  # fmt: skip
            # moved off the site by a resubmit: the queue goes to the hub, the receipt says so
            bed.agent("n3", homes["n3"], capacity=2)  # connected to the hub, at no site
            wait_for(lambda: "n3" in {n["name"] for n in c.nodes() if n["up"]},
                     timeout=60, what="n3 up")  # fmt: skip
            moved = spec()
            for st in moved["stages"]:
                st["node"] = "n3"
            replaced = time.time()
            receipt = c.submit_pipeline(moved, replace=True)
            assert receipt["queue_at"]["site"] is None
            assert receipt["queue_moved"].startswith(f"the queue moved from site {SITE}; ")
            wait_for(lambda: [r for r in c.pipeline_runs("p1", 1000)
                              if r["status"] == "done" and r["started_at"] > replaced + 1],
                     timeout=90, what="a run done in the hub after the move")  # fmt: skip
            c.cancel_pipeline("p1")
            for a in bed.agents:
                wait_for(lambda a=a: not a.pipelines.triggers.timers and not a.pipelines.consumers,
                         timeout=60, what=f"{a.name} stopped the pipeline")  # fmt: skip
    finally:
        bed.run(hub_bus.close())


REACT = {
    "react": """
def main(data, params):
    return {"value": data["trigger"]["reading"]["value"], "node": data["_pipeline"]["node"]}
""",
}


def test_readings_at_a_cut_off_site_still_start_runs_that_reach_the_controller_once(
    bed: Bed, leaf: EmbeddedLeaf, prepare_home: Callable[..., Path]
) -> None:
    """An on_reading pipeline at the site: readings published at the leaf while the uplink
    is cut each start a run there; after the restore each run is recorded done once."""
    home = prepare_home("s1", functions=REACT, readings=False)
    ctl = bed.start_controller(down_after=2.0)
    raw: Counter[str] = Counter()
    tracker = ctl.pipelines._tracker
    handle_many = tracker.handle_many

    async def counting(datas: list[bytes]) -> list[bool | None]:
        for d in datas:
            ev = StageEvent.decode(d)
            if ev.status == "done":
                raw[ev.run] += 1
        out: list[bool | None] = await handle_many(datas)
        return out

    tracker.handle_many = counting
    agent = site_agent(bed, leaf, "s1", home)
    site_nc = bed.run(nats.connect(leaf.url))
    bed._listeners.append(site_nc)

    def reading(value: int) -> None:
        data = json.dumps({"value": value, "ts": time.time()}).encode()
        bed.run(site_nc.publish("sensors.s1.road.surface_temp", data))
        bed.run(site_nc.flush())

    with bed.client() as c:
        wait_for(lambda: "s1" in {n["name"] for n in c.nodes() if n["up"]}, timeout=60,
                 what="s1 up")  # fmt: skip
        c.upload(artifact_of(home, "react"))
        receipt = c.submit_pipeline(
            {
                "name": "ice",
                "credentials": {"tenant": "facilities", "priority": 6},
                "run": {"mode": "automatic", "on_reading": "sensors.*.road.surface_temp"},
                "stages": [{"name": "react", "function": {"artifact": "react", "memory_mib": 32}}],
            }
        )
        assert receipt["queue_at"]["site"] == SITE
        eng = agent.pipelines
        wait_for(lambda: "ice" in eng.triggers.listening, timeout=60, what="listening")

        def done() -> dict[int, str]:
            return {
                r["results"]["react"]["value"]: r["run"]
                for r in c.pipeline_runs("ice", 1000)
                if r["status"] == "done"
            }

        while not done():  # the trigger's subscription reached the leaf
            reading(0)
            time.sleep(0.5)
        leaf.cut_uplink()
        wait_for(lambda: "s1" not in {n["name"] for n in c.nodes() if n["up"]}, timeout=60,
                 what="s1 down at the controller")  # fmt: skip
        executed = eng.counters["executed"]
        for v in range(1, 6):
            reading(v)
            time.sleep(0.1)
        # each reading ran its stage at the site, with the hub out of reach
        wait_for(lambda: eng.counters["executed"] >= executed + 5, timeout=90,
                 what=f"five runs at the site: {eng.counters}")  # fmt: skip
        assert not set(done()) & {1, 2, 3, 4, 5}
        leaf.restore_uplink()
        wait_for(lambda: {1, 2, 3, 4, 5} <= set(done()), timeout=120,
                 what="the cut's runs at the controller")  # fmt: skip
        runs = done()
        assert all(raw[runs[v]] == 1 for v in range(1, 6)), raw
        assert all(n == 1 for n in raw.values()), raw
