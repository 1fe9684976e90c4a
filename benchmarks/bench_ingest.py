"""Sensor ingest rate: readings per second from NATS (the MQTT gateway's subjects) into the
node's SQLite store.

Run ``python benchmarks/bench_ingest.py [--quick] [-n N]`` (``make bench`` runs it through
``run_all.py``). A plain NATS publisher in another process sends N readings (default
200,000; ``--quick`` 20,000) as fast as it can; the clock runs from the first reading the
:class:`~fades.sensors.ingest.Ingestor` receives to the last one committed to SQLite.
Writes ``benchmarks/results/ingest.json``. Target: at least 5,000 readings/s (a node with
a few hundred sensors at one reading per second uses a few percent of that).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import RESULTS, write_json
from fades.broker import SQLiteConnector
from fades.fabric import EmbeddedNats, connect
from fades.sensors.ingest import Ingestor

TARGET_RATE = 5_000.0

PUBLISHER = r"""
import asyncio, json, sys, time
import nats

async def main(url: str, node: str, n: int) -> None:
    nc = await nats.connect(url)
    t0 = time.time() - n * 1e-3
    rooms = [f"sensors.{node}.room{r}.temperature" for r in range(1, 6)]
    msgs = [
        (rooms[i % 5], json.dumps({"ts": t0 + i * 1e-3, "value": 20 + (i % 97) / 10,
                                   "device": f"room{i % 5 + 1}-temperature",
                                   "unit": "°C"}).encode())
        for i in range(n)
    ]
    for subject, data in msgs:
        await nc.publish(subject, data)
    await nc.flush()
    await nc.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def _until(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the ingest did not keep up in time")
        await asyncio.sleep(0.01)


def measure(server: EmbeddedNats, store: SQLiteConnector, n: int) -> dict[str, Any]:
    """Readings per second the ingest path sustains for ``n`` readings."""
    out: dict[str, Any] = {"readings": n}

    async def main() -> None:
        nc = await connect(server.url)
        ingest = await Ingestor(nc, store, "edge1", batch_s=0.2).start()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PUBLISHER, server.url, "edge1", str(n)
            )
            await _until(lambda: ingest.stats["received"] > 0, timeout=60)
            t0 = time.perf_counter()
            await _until(lambda: ingest.stats["written"] >= n, timeout=600)
            out["seconds"] = time.perf_counter() - t0
            await proc.wait()
        finally:
            await ingest.stop()
            await nc.close()
        out["rejected"] = ingest.stats["rejected"]

    asyncio.run(main())
    out["rate"] = n / out["seconds"]
    out["stored"] = store.count()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 readings")
    ap.add_argument("-n", type=int, default=None, help="readings (default 200,000)")
    args = ap.parse_args(argv)
    n = args.n or (20_000 if args.quick else 200_000)
    with tempfile.TemporaryDirectory() as d, EmbeddedNats(Path(d) / "nats") as server:
        store = SQLiteConnector(Path(d) / "readings.db")
        try:
            res = measure(server, store, n)
        finally:
            store.close()
    ok = res["stored"] == n and res["rejected"] == 0
    res["target_rate"] = TARGET_RATE
    res["meets_target"] = res["rate"] >= TARGET_RATE
    write_json(RESULTS / "ingest.json", res)
    print(
        f"ingest: {n:,} readings in {res['seconds']:.2f} s = {res['rate']:,.0f} readings/s "
        f"(target {TARGET_RATE:,.0f}/s: {'met' if res['meets_target'] else 'MISSED'}); "
        f"stored {res['stored']:,}, rejected {res['rejected']}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
