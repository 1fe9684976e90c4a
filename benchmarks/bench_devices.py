"""Actuator commands: how long a command takes end to end, and how soon its effect shows.

A one-node :class:`~fades.cluster.LocalCluster` with the simulated shop floor (real
nats-server with its MQTT gateway, controller and node processes, the device simulator over
MQTT). Measured in the same run:

1. **command round trip**: ``POST /v1/devices/edge1/light-machine1/commands`` until the
   answer ``applied`` (HTTP, auth, audit write ``pending``, NATS -> MQTT -> device -> MQTT ->
   NATS, audit write of the outcome), against the **baseline** ``GET /v1/devices`` over the
   same keep-alive connection, token and controller (no device hop, no audit write);
2. **the closed loop**: room1's CO2 as published by the sensor simulator before and after
   ``fan-room1 on``; the time until the reading has made half of its expected drop, against
   the model's own half-time (``tau * ln 2``, plus one sensor period).

Run ``python benchmarks/bench_devices.py [--quick]``. Writes
``benchmarks/results/devices.json`` and ``benchmarks/results/devices.png``.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import httpx
import matplotlib.pyplot as plt

from _common import RESULTS, log, parse_args, write_json
from fades.cluster import LocalCluster
from fades.devices.floor import FAN_REMOVES, MACHINE_CO2_PPM, OUTDOOR_CO2_PPM, TAU_S

SENSOR_RATE_S = 0.5


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def stats_ms(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50_ms": statistics.median(xs) * 1e3, "p95_ms": pct(xs, 95) * 1e3,
            "mean_ms": statistics.fmean(xs) * 1e3}  # fmt: skip


class Co2Watch:
    """room1's CO2 readings (ts, value) from the fabric, in a background thread."""

    def __init__(self, url: str) -> None:
        self.url, self.points = url, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import nats

        nc = await nats.connect(self.url)

        async def on(msg: Any) -> None:
            body = json.loads(msg.data)
            self.points.append((float(body["ts"]), float(body["value"])))

        await nc.subscribe("sensors.edge1.room1.co2", cb=on)
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()

    def __enter__(self) -> Co2Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def main(argv: list[str] | None = None) -> int:
    quick = parse_args(__doc__ or "", argv)
    reps = 30 if quick else 300
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fades-bench-devices-") as tmp:
        cluster = LocalCluster(Path(tmp) / "c", nodes=1, rooms_per_node=1, days=0.01,
                               devices=True, functions=False, sensor_rate_s=SENSOR_RATE_S,
                               heartbeat_s=0.5)  # fmt: skip
        cluster.prepare()
        cluster.start()
        try:
            headers = {"Authorization": f"Bearer {cluster.token}"}
            with httpx.Client(base_url=cluster.url, headers=headers, timeout=30) as http:
                deadline = time.monotonic() + 60
                while not any(d["device"] == "light-machine1" for d in
                              http.get("/v1/devices").json()):  # fmt: skip
                    if time.monotonic() > deadline:
                        raise SystemExit("the node's devices did not register")
                    time.sleep(0.2)
                base: list[float] = []
                cmd: list[float] = []
                outcomes: dict[str, int] = {}
                for i in range(reps):  # interleaved, so load drifts hit both alike
                    t0 = time.perf_counter()
                    http.get("/v1/devices").raise_for_status()
                    base.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    r = http.post("/v1/devices/edge1/light-machine1/commands",
                                  json={"command": "on" if i % 2 else "off"})  # fmt: skip
                    cmd.append(time.perf_counter() - t0)
                    outcome = r.json()["outcome"]
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                log(f"round trip: baseline p50 {statistics.median(base) * 1e3:.1f} ms, "
                    f"command p50 {statistics.median(cmd) * 1e3:.1f} ms")  # fmt: skip
                with Co2Watch(cluster.nats.url) as watch:
                    time.sleep(8)
                    t_on = time.time()
                    r = http.post("/v1/devices/edge1/fan-room1/commands", json={"command": "on"})
                    assert r.json()["outcome"] == "applied", r.text
                    time.sleep(20 if quick else 60)
                points = sorted(watch.points)
        finally:
            cluster.stop()
    before = [v for t, v in points if t < t_on]
    level = statistics.median(before)
    expected_drop = FAN_REMOVES * (level - OUTDOOR_CO2_PPM)
    half = next((t - t_on for t, v in points if t > t_on and v < level - expected_drop / 2),
                None)  # fmt: skip
    model_half = TAU_S * math.log(2) + SENSOR_RATE_S
    res: dict[str, Any] = {
        "meta": {
            "quick": quick,
            "reps": reps,
            "wall_s": time.perf_counter() - t_start,
            "python": sys.version.split()[0],
        },
        "round_trip": {
            "baseline_get_devices": stats_ms(base),
            "command_applied": stats_ms(cmd),
            "outcomes": outcomes,
            "ratio_p50": statistics.median(cmd) / statistics.median(base),
        },
        "closed_loop": {
            "co2_before_ppm": level,
            "machines_add_ppm": MACHINE_CO2_PPM,
            "expected_drop_ppm": expected_drop,
            "half_drop_s": half,
            "model_half_drop_s": model_half,
            "ratio_to_model": None if half is None else half / model_half,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "devices.json", res)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.boxplot([[x * 1e3 for x in base], [x * 1e3 for x in cmd]], showfliers=False)
    a1.set_xticks([1, 2], ["GET /v1/devices\n(baseline)", "command -> applied"])
    a1.set_ylabel("ms")
    a1.set_title(f"round trip ({reps} each, same run)")
    a2.plot([t - t_on for t, _ in points], [v for _, v in points], ".", ms=3)
    a2.axvline(0, color="k", lw=0.8)
    a2.axhline(level - expected_drop / 2, color="r", lw=0.8, ls="--", label="half the drop")
    a2.set_xlabel("seconds since 'fan-room1 on'")
    a2.set_ylabel("room1 CO2 (ppm)")
    a2.set_title("the fan lowers the room's CO2")
    a2.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "devices.png", dpi=110)
    log(json.dumps(res["round_trip"] | {"closed_loop": res["closed_loop"]}, indent=1))
    return 0 if outcomes.get("applied") == reps else 1


if __name__ == "__main__":
    raise SystemExit(main())
