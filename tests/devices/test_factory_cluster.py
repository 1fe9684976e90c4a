"""The Virtual Factory end to end: a real LocalCluster (nats-server with its MQTT gateway,
controller and node processes), the device simulator over real MQTT, the HTTP API.

One cluster serves the module: one node with the simulated shop floor, plus an actuator
(``valve-1``) that nothing simulates, so its commands time out.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.waiting import wait_until as _wait_for

from fades.cluster import LocalCluster
from fades.errors import CommandForbidden, UnknownCommand, UnknownDevice


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    home = tmp_path_factory.mktemp("factory") / "cluster"
    cluster = LocalCluster(
        home, nodes=1, rooms_per_node=1, days=0.01, devices=True, functions=False,
        sensor_rate_s=0.5, heartbeat_s=0.5,
    )  # fmt: skip
    cluster.prepare()
    path = cluster.node_home("edge1") / "devices.yaml"
    floor = yaml.safe_load(path.read_text())
    floor["actuators"].append(
        {"device": "valve-1", "location": "room1", "type": "valve",
         "commands": ["open", "close"], "tenants": ["facilities"]}
    )  # fmt: skip
    path.write_text(yaml.safe_dump(floor))
    cluster.start()
    try:
        client = cluster.client()
        # the first heartbeat carries the devices; the simulator reports state every 5 s
        _wait_for(lambda: any(d["state"] for d in client.devices()), 60, "an actuator's state")
        yield cluster
    finally:
        cluster.stop()


def _device(devices: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in devices if d["device"] == name)


def test_devices_are_listed_with_state_and_policy(factory: LocalCluster) -> None:
    devices = factory.client().devices()
    names = {d["device"] for d in devices}
    assert {"fan-room1", "conveyor-machine1", "light-machine1", "valve-1"} <= names
    assert {"machine1-vibration-1", "machine1-temperature-1", "room1-co2-1"} <= names
    fan = _device(devices, "fan-room1")
    assert fan["kind"] == "actuator" and fan["commands"] == ["on", "off"]
    assert fan["topic"] == "actuators/edge1/fan-room1/set" and fan["may_command"] is True
    assert fan["state"] == {"power": "off", "speed": 0} and fan["state_at"] > 0
    vib = _device(devices, "machine1-vibration-1")
    assert vib["kind"] == "sensor" and vib["unit"] == "mm/s" and vib["may_command"] is False
    assert vib["topic"] == "sensors/edge1/machine1/vibration"
    # the visitor may read temperatures only: no CO2 sensor, and commands nothing
    seen = factory.client(factory.visitor_token).devices()
    vnames = {d["device"] for d in seen}
    assert "room1-co2-1" not in vnames and "machine1-temperature-1" in vnames
    assert not any(d["may_command"] for d in seen)


def test_command_applied_changes_state_and_is_audited(factory: LocalCluster) -> None:
    client = factory.client()
    got = client.command("edge1", "light-machine1", "blink", {"hz": 2})
    assert got["outcome"] == "applied", got
    assert got["state"] == {"light": "blink", "hz": 2}
    assert _device(client.devices(), "light-machine1")["state"] == {"light": "blink", "hz": 2}
    entry = next(a for a in client.audit() if a["command_id"] == got["command_id"])
    assert entry | {"at": 0} == {
        "at": 0, "tenant": "facilities", "source": "api", "node": "edge1",
        "device": "light-machine1", "command": "blink", "args": {"hz": 2},
        "outcome": "applied", "detail": "", "command_id": got["command_id"],
    }  # fmt: skip
    # the device itself refuses a bad argument: outcome refused, with its reason
    bad = client.command("edge1", "light-machine1", "blink", {"hz": 50})
    assert bad["outcome"] == "refused" and "hz must be" in bad["detail"]
    assert bad["state"] == {"light": "blink", "hz": 2}
    metrics = httpx.get(f"{factory.url}/metrics").text
    assert 'fades_device_commands_total{outcome="applied",source="api"}' in metrics
    assert 'fades_device_commands_total{outcome="refused",source="api"}' in metrics


def test_tenant_without_permission_is_refused_and_audited(factory: LocalCluster) -> None:
    visitor = factory.client(factory.visitor_token)
    with pytest.raises(CommandForbidden, match=r"visitor.*may not command edge1/fan-room1"):
        visitor.command("edge1", "fan-room1", "on")
    refused = visitor.audit()[0]
    assert refused["outcome"] == "forbidden" and refused["device"] == "fan-room1"
    assert refused["tenant"] == "visitor" and refused["source"] == "api"
    # the facilities tenant's audit does not show it; the fan did not move
    assert all(a["tenant"] == "facilities" for a in factory.client().audit())
    assert _device(factory.client().devices(), "fan-room1")["state"]["power"] == "off"
    r = httpx.post(
        f"{factory.url}/v1/devices/edge1/fan-room1/commands",
        json={"command": "on"},
        headers={"Authorization": f"Bearer {factory.visitor_token}"},
    )
    assert r.status_code == 403 and r.json()["error_kind"] == "CommandForbidden"


def test_unknown_command_and_device(factory: LocalCluster) -> None:
    client = factory.client()
    with pytest.raises(UnknownCommand, match="does not accept 'explode'; allowed: start, stop"):
        client.command("edge1", "conveyor-machine1", "explode")
    r = httpx.post(
        f"{factory.url}/v1/devices/edge1/conveyor-machine1/commands",
        json={"command": "explode"},
        headers={"Authorization": f"Bearer {factory.token}"},
    )
    assert r.status_code == 400 and "allowed: start, stop" in r.json()["detail"]
    with pytest.raises(UnknownDevice, match="no device 'toaster'"):
        client.command("edge1", "toaster", "on")
    with pytest.raises(UnknownDevice, match="no node 'edge9'"):
        client.command("edge9", "fan-room1", "on")
    # the controller keeps serving
    assert client.command("edge1", "conveyor-machine1", "start")["outcome"] == "applied"


def test_device_that_does_not_answer_times_out(factory: LocalCluster) -> None:
    client = factory.client()
    t0 = time.monotonic()
    got = client.command("edge1", "valve-1", "open")
    assert got["outcome"] == "timed_out" and "within 5 s" in got["detail"]
    assert 4.5 <= time.monotonic() - t0 < 25
    assert client.audit()[0]["outcome"] == "timed_out"


def _readings(factory: LocalCluster, subject: str, seconds: float) -> list[float]:
    """Values published on ``subject`` (core NATS, from the MQTT gateway) for ``seconds``."""
    import nats

    async def main() -> list[float]:
        nc = await nats.connect(factory.nats.url)
        got: list[float] = []

        async def on(msg: Any) -> None:
            got.append(float(json.loads(msg.data)["value"]))

        await nc.subscribe(subject, cb=on)
        await asyncio.sleep(seconds)
        await nc.close()
        return got

    return asyncio.run(main())


def test_the_fan_lowers_the_rooms_co2_and_stopping_the_conveyor_calms_the_machine(
    factory: LocalCluster,
) -> None:
    client = factory.client()
    before = _readings(factory, "sensors.edge1.room1.co2", 3)
    vib_before = _readings(factory, "sensors.edge1.machine1.vibration", 3)
    assert before and vib_before
    assert client.command("edge1", "fan-room1", "on", {"speed": 100})["outcome"] == "applied"
    assert client.command("edge1", "conveyor-machine1", "stop")["outcome"] == "applied"
    base, vib = sum(before) / len(before), sum(vib_before) / len(vib_before)
    # tau 20 s: after about 30 s most of the machines' excess CO2 is gone
    _wait_for(
        lambda: (r := _readings(factory, "sensors.edge1.room1.co2", 2)) and max(r) < base - 250,
        120, f"CO2 below {base - 250:.0f} ppm (was {base:.0f})",
    )  # fmt: skip
    after = _readings(factory, "sensors.edge1.machine1.vibration", 3)
    assert max(after) < vib / 3, (vib_before, after)
    client.command("edge1", "fan-room1", "off")
    client.command("edge1", "conveyor-machine1", "start")


REPO = Path(__file__).resolve().parents[2]


def _upload_ventilation(factory: LocalCluster) -> None:
    from fades.functions.build import build_function, build_runtime

    client = factory.client()
    if any(f.get("name") == "ventilation" for f in client.functions()):
        return
    assert factory.key is not None
    client.upload(build_runtime(key=factory.key).to_bytes())
    fn = REPO / "examples" / "functions" / "ventilation.py"
    client.upload(build_function(fn, key=factory.key).to_bytes())


def test_a_pipeline_finale_actuates_the_fan(factory: LocalCluster) -> None:
    """examples/pipelines/ventilation.yaml, run once: the room's CO2 is high (the machines),
    so its finale returns the fan's command; the controller sends it, audited as pipeline."""
    client = factory.client()
    client.command("edge1", "fan-room1", "off")
    _upload_ventilation(factory)
    # the machines keep room1's CO2 above 900 ppm while the fan is off (an earlier test
    # ran it): wait until they are high again, and let the stage read only the last 5 s
    _wait_for(
        lambda: min(_readings(factory, "sensors.edge1.room1.co2", 2) or [0]) > 950,
        150, "room1's CO2 high again",
    )  # fmt: skip
    spec = yaml.safe_load((REPO / "examples" / "pipelines" / "ventilation.yaml").read_text())
    spec["run"] = {"mode": "on-demand", "runs": 1, "run_deadline_s": 120}
    spec["stages"][0]["data"][0]["select"]["last_seconds"] = 5
    receipt = client.submit_pipeline(spec)
    runs = client.wait_runs("ventilation", receipt["runs"], timeout=150)
    assert runs[0]["status"] == "done", runs
    assert runs[0]["results"]["ventilate"] == {"command": "on", "args": {"speed": 100}}, runs
    entry = _wait_for(
        lambda: next((a for a in client.audit() if a["source"] == "pipeline"), None),
        30, "the pipeline's command in the audit",
    )  # fmt: skip
    assert entry["device"] == "fan-room1" and entry["command"] == "on", entry
    assert entry["args"] == {"speed": 100} and entry["tenant"] == "facilities"
    _wait_for(lambda: client.audit()[0]["outcome"] != "pending", 30, "the command's outcome")
    assert next(a for a in client.audit() if a["source"] == "pipeline")["outcome"] == "applied"
    assert _device(client.devices(), "fan-room1")["state"]["power"] == "on"
    metrics = httpx.get(f"{factory.url}/metrics").text
    assert 'fades_device_commands_total{outcome="applied",source="pipeline"}' in metrics


def test_cli_lists_commands_and_audits(factory: LocalCluster) -> None:
    env = dict(os.environ, FADES_CONTROLLER=factory.url, FADES_TOKEN=factory.token,
               COLUMNS="200")  # fmt: skip

    def fades(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fades", "devices", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    listed = fades("list", "--kind", "actuator", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {d["kind"] for d in json.loads(listed.stdout)} == {"actuator"}
    done = fades("command", "edge1/light-machine1", "on")
    assert done.returncode == 0 and "applied" in done.stdout, done.stdout + done.stderr
    bad = fades("command", "edge1/light-machine1", "explode")
    assert bad.returncode == 2 and "allowed: on, off, blink" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    timed = fades("command", "edge1/valve-1", "close")
    assert timed.returncode == 1 and "timed_out" in timed.stdout
    audit = fades("audit", "--json", "--limit", "2")
    rows = json.loads(audit.stdout)
    assert [(r["device"], r["outcome"]) for r in rows] == [
        ("valve-1", "timed_out"), ("light-machine1", "applied")
    ]  # fmt: skip
    table = fades("audit")
    assert table.returncode == 0 and "light-machine1" in table.stdout


def test_a_pipeline_of_a_tenant_without_permission_is_refused_and_audited(
    factory: LocalCluster,
) -> None:
    """The visitor's pipeline (reading temperatures, which it may) returns a fan command:
    refused by the fan's declaration, recorded in the visitor's audit as from its pipeline."""
    _upload_ventilation(factory)
    visitor = factory.client(factory.visitor_token)
    spec = {
        "name": "sneaky-fan",
        "credentials": {"tenant": "visitor"},
        "run": {"mode": "on-demand", "runs": 1, "run_deadline_s": 120},
        "stages": [{
            "name": "always",
            "function": {"artifact": "ventilation", "memory_mib": 32, "time_budget_ms": 5000,
                         "params": {"high": -1000}},
            "data": [{"name": "co2", "select": {"location": "room1",
                                                "sensor_type": "temperature",
                                                "last_seconds": 60}}],
            "actuate": {"device": "edge1/fan-room1"},
        }],
    }  # fmt: skip
    receipt = visitor.submit_pipeline(spec)
    runs = visitor.wait_runs("sneaky-fan", receipt["runs"], timeout=150)
    assert runs[0]["status"] == "done", runs
    entry = _wait_for(
        lambda: next((a for a in visitor.audit() if a["source"] == "pipeline"), None),
        30, "the refused command in the visitor's audit",
    )  # fmt: skip
    assert entry["outcome"] == "forbidden" and entry["device"] == "fan-room1"
    assert "may not command" in entry["detail"]
    assert entry["command_id"].startswith("p-sneaky-fan-")
