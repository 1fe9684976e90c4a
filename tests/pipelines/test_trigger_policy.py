"""An ``on_reading`` trigger is held to the node's access policy (found by the hostile review).

The trigger hands the reading itself to the start stage (``data["trigger"]``), so a tenant the
policy lets read temperature only read the CO2 readings of the room through a pipeline whose
pattern was ``sensors.edge1.room1.co2`` (seen on a `fades up` cluster with the visitor
token). Now a reading the tenant may not read starts no run, and is counted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.waiting import await_until as wait_for

from fades.fabric import EmbeddedNats

from .test_engine import TENANT, agents, harness, make_plan, run, stage

ECHO = """
def main(data, params):
    return {"subject": data["trigger"]["subject"]}
"""

POLICY = {"tenants": {TENANT: {"locations": "*", "sensor_types": ["temperature"]}}}


def test_a_reading_the_tenant_may_not_read_starts_no_run(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {"n1": prepare_home("n1", functions={"echo": ECHO}, readings=False, policy=POLICY)}

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes) as ags:
            plan = make_plan(
                "peek", [stage("a", "echo")], {"a": "n1"},
                run={"mode": "automatic", "on_reading": "sensors.n1.room1.>"},
            )  # fmt: skip
            await h.put_plan(plan)
            engine = ags["n1"].pipelines
            await wait_for(lambda: "peek" in engine.triggers.listening, 30, "listening")
            # the forbidden reading first, then an allowed one (one connection: in order)
            for _ in range(100):  # until the subscription is live on the server
                reading = json.dumps({"ts": time.time(), "value": 419.0}).encode()
                await h.bus.send("sensors.n1.room1.co2", reading)
                await h.bus.send("sensors.n1.room1.temperature", reading)
                if h.events.of(stage="a", status="done"):
                    break
                await asyncio.sleep(0.2)
            ok = await h.events.wait("allowed run", stage="a", status="done")
            assert ok.result == {"subject": "sensors.n1.room1.temperature"}
            assert all(
                e.result != {"subject": "sensors.n1.room1.co2"} for e in h.events.of(stage="a")
            )
            assert engine.counters.get("trigger_refused", 0) >= 1

    run(main(), timeout=240)
