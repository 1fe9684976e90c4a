"""An open console page does not hold the controller up when it stops: its live feed ends,
and the controller exits by itself (the HTTP server waits for open responses)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from fades.cluster import LocalCluster

from .conftest import wait_for


def test_the_controller_stops_promptly_with_a_console_feed_open(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "up", nodes=1, days=0.02, functions=False, sensors=False)
    cluster.prepare()
    try:
        cluster.start()
        got: list[bytes] = []

        def feed() -> None:
            cookies = {"fades_console": cluster.token}
            try:
                with (
                    httpx.Client(base_url=cluster.url, cookies=cookies, timeout=None) as http,
                    http.stream("GET", "/console/events") as resp,
                ):
                    for chunk in resp.iter_bytes():
                        got.append(chunk)
            except httpx.HTTPError:
                pass

        reader = threading.Thread(target=feed, daemon=True)
        reader.start()
        wait_for(lambda: b"event: fleet" in b"".join(got), what="the live feed")
        proc = cluster.procs["controller1"]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
        assert code == 0, f"the controller exited with {code}"
        assert took < 10.0, f"the controller took {took:.1f} s to stop with a console open"
        reader.join(timeout=30)
        assert not reader.is_alive()  # the feed ended with the controller
    finally:
        cluster.stop()
