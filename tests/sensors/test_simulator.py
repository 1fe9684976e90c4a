"""The MQTT sensor simulator against a real nats-server's MQTT gateway."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fades.errors import FabricError
from fades.fabric import EmbeddedNats, connect
from fades.fabric.server import free_port
from fades.sensors.simulator import SensorSimulator, parse_hostport
from fades.testbed import SENSOR_TYPES, UNITS, LiveOffice


def wait_until(cond: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)


async def collect(url: str, subject: str, work: Any) -> list[tuple[str, bytes]]:
    """Subscribe to ``subject``, run the blocking ``work()`` (which returns how many readings
    it published) in a thread, wait until that many arrived (or 15 s), return what came."""
    nc = await connect(url)
    got: list[tuple[str, bytes]] = []

    async def on_msg(msg: Any) -> None:
        got.append((msg.subject, msg.data))

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    published = await asyncio.to_thread(work)
    deadline = time.monotonic() + 15  # the gateway forwards asynchronously
    while len(got) < published and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await nc.flush()
    await nc.close()
    return got


@pytest.mark.parametrize("qos", [0, 1])
def test_readings_arrive_on_nats_subjects_with_the_payload_schema(
    nats_server: EmbeddedNats, qos: int
) -> None:
    sim = SensorSimulator(
        "127.0.0.1",
        nats_server.mqtt_port or 0,
        "edge1",
        rooms=2,
        first_room=3,
        rate_s=0.25,
        qos=qos,
        seed=7,
    )
    counts: list[int] = []

    def work() -> int:
        counts.append(sim.run(1.0))
        return counts[0]

    t0 = time.time()
    got = asyncio.run(collect(nats_server.url, "sensors.>", work))
    t1 = time.time()
    published = counts[0]
    assert published == len(got)
    # 14 devices, 4 readings each per second (the last one may fall on either side)
    assert 14 * 3 <= published <= 14 * 5
    expected = {f"sensors.edge1.room{r}.{t}" for r in (3, 4) for t in SENSOR_TYPES}
    assert {s for s, _ in got} == expected
    office = LiveOffice(2, 3, seed=7)
    for subject, data in got:
        _, _node, room, stype = subject.split(".")
        body = json.loads(data)
        assert set(body) == {"ts", "value", "device", "unit"}
        assert body["device"] == f"{room}-{stype}-1" and body["unit"] == UNITS[stype]
        assert t0 - 0.3 <= body["ts"] <= t1
        assert body["value"] == office.value(room, stype, body["ts"])  # deterministic
    per_device: dict[str, list[float]] = {}
    for subject, data in got:
        per_device.setdefault(subject, []).append(json.loads(data)["ts"])
    for ts in per_device.values():
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert all(abs(g - 0.25) < 2e-3 for g in gaps), gaps  # on the device's grid (ms)


def test_background_thread_survives_a_broker_restart(nats_server: EmbeddedNats) -> None:
    sim = SensorSimulator("127.0.0.1", nats_server.mqtt_port or 0, "edge1", rooms=1, rate_s=0.1)
    sim.start()
    try:
        assert sim.running and sim.connected
        wait_until(lambda: sim.stats["published"] > 0, "a first reading published")
        nats_server.stop()
        wait_until(lambda: sim.stats["disconnects"] >= 1, "the simulator saw the broker go")
        nats_server.start()  # same ports, same store

        async def after_restart() -> int:
            nc = await connect(nats_server.url)
            got: list[str] = []

            async def on_msg(msg: Any) -> None:
                got.append(msg.subject)

            await nc.subscribe("sensors.edge1.>", cb=on_msg)
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await nc.close()
            return len(got)

        assert asyncio.run(after_restart()) > 0
        assert sim.stats["connects"] >= 2 and sim.stats["disconnects"] >= 1
    finally:
        sim.stop()
    assert not sim.running and not sim.connected


def test_an_unreachable_broker_is_a_clear_error() -> None:
    sim = SensorSimulator("127.0.0.1", free_port(), "edge1", connect_timeout_s=0.3)
    with pytest.raises(FabricError, match="cannot reach the MQTT broker"):
        sim.start()
    with pytest.raises(FabricError, match="rate"):
        SensorSimulator("127.0.0.1", 1883, "edge1", rate_s=0)
    with pytest.raises(FabricError, match="not valid"):
        SensorSimulator("127.0.0.1", 1883, "edge.1")


def test_mqtt_addresses() -> None:
    assert parse_hostport("127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert parse_hostport("mqtt://broker") == ("broker", 1883)
    assert parse_hostport("[::1]:9") == ("::1", 9)
    with pytest.raises(FabricError, match="HOST:PORT"):
        parse_hostport("host:notaport")


FADES = str(Path(sys.executable).with_name("fades"))


def fades_cmd(*args: str) -> list[str]:
    return [FADES, *args]


def test_cli_simulate_publishes_for_its_duration_and_exits_0(nats_server: EmbeddedNats) -> None:
    out: dict[str, Any] = {}

    def work() -> int:
        out["proc"] = proc = subprocess.run(
            fades_cmd(
                "sensors",
                "simulate",
                "--mqtt",
                f"127.0.0.1:{nats_server.mqtt_port}",
                "--node",
                "edge2",
                "--rooms",
                "1",
                "--first-room",
                "2",
                "--rate",
                "0.5",
                "--duration",
                "2",
            ),
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "COLUMNS": "200"},
        )
        return (
            int(proc.stdout.split("published ")[1].split()[0]) if "published " in proc.stdout else 0
        )

    got = asyncio.run(collect(nats_server.url, "sensors.edge2.>", work))
    proc = out["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "simulating 7 sensors of node edge2 (room2)" in proc.stdout
    published = int(proc.stdout.split("published ")[1].split()[0])
    assert published == len(got) and 7 * 3 <= published <= 7 * 5
    assert {s.split(".")[2] for s, _ in got} == {"room2"}


def test_cli_simulate_names_an_unreachable_broker() -> None:
    proc = subprocess.run(
        fades_cmd(
            "sensors",
            "simulate",
            "--mqtt",
            f"127.0.0.1:{free_port()}",
            "--node",
            "edge1",
            "--connect-timeout",
            "0.3",
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "cannot reach the MQTT broker" in proc.stderr


def test_cli_simulate_stops_cleanly_on_sigint(nats_server: EmbeddedNats) -> None:
    import signal

    proc = subprocess.Popen(
        fades_cmd(
            "sensors",
            "simulate",
            "--mqtt",
            f"127.0.0.1:{nats_server.mqtt_port}",
            "--node",
            "edge1",
            "--rate",
            "0.2",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once connected
        assert "simulating 14 sensors" in first
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert int(stdout.split("published ")[1].split()[0]) > 0
