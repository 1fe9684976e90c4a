"""An open result stream (``GET /v1/results/stream``) does not hold the controller up when
it stops: the stream ends and the controller exits by itself."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from fades.cluster import LocalCluster


def test_the_controller_stops_promptly_with_a_result_stream_open(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "up", nodes=1, days=0.02, functions=False, sensors=False)
    cluster.prepare()
    try:
        cluster.start()
        got: list[bytes] = []
        opened = threading.Event()

        def read() -> None:
            auth = {"Authorization": f"Bearer {cluster.token}"}
            try:
                with (
                    httpx.Client(base_url=cluster.url, headers=auth, timeout=None) as http,
                    http.stream("GET", "/v1/results/stream") as resp,
                ):
                    for chunk in resp.iter_bytes():
                        got.append(chunk)
                        if b"event: open" in b"".join(got):
                            opened.set()
            except httpx.HTTPError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(120), f"the stream did not open: {b''.join(got)!r}"
        proc = cluster.procs["controller1"]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
        assert code == 0, f"the controller exited with {code}"
        assert took < 10.0, f"the controller took {took:.1f} s to stop with a stream open"
        reader.join(timeout=30)
        assert not reader.is_alive()  # the stream ended with the controller
    finally:
        cluster.stop()
