"""What an open console page costs the controller: ``python -m tests.console.measure_cost``.

On one real three-node cluster (with the simulated shop floor), measures the controller
process's CPU time over the same window with no console open (the baseline), then with
``--pages`` live feeds open, and the bytes each feed sends. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from fades.cluster import LocalCluster


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _window(pid: int, seconds: float) -> float:
    c0 = _cpu_s(pid)
    time.sleep(seconds)
    return _cpu_s(pid) - c0


def measure(pages: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp) / "up", nodes=3, days=0.05, devices=True)
        cluster.prepare()
        with cluster:
            pid = cluster.procs["controller1"].pid
            time.sleep(5)  # let start-up work settle
            idle = _window(pid, seconds)
            stop = threading.Event()
            sent = [0] * pages

            def feed(i: int) -> None:
                cookies = {"fades_console": cluster.token}
                with (
                    httpx.Client(base_url=cluster.url, cookies=cookies, timeout=None) as http,
                    http.stream("GET", "/console/events") as resp,
                ):
                    for chunk in resp.iter_bytes():
                        sent[i] += len(chunk)
                        if stop.is_set():
                            return

            threads = [threading.Thread(target=feed, args=(i,), daemon=True) for i in range(pages)]
            for t in threads:
                t.start()
            time.sleep(5)
            b0 = sum(sent)
            busy = _window(pid, seconds)
            b1 = sum(sent)
            stop.set()
    return {
        "seconds": seconds,
        "pages": pages,
        "controller_cpu_s_idle": round(idle, 3),
        "controller_cpu_s_with_pages": round(busy, 3),
        "cpu_share_per_page": round((busy - idle) / seconds / pages, 4),
        "bytes_per_s_per_page": round((b1 - b0) / seconds / pages),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.pages, args.seconds)))
