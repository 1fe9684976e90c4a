"""A controller stops promptly while a client holds a streaming response open: shared by the
result-stream and console-feed tests (the HTTP server waits for open responses, so a stream
that does not end with the controller holds its shutdown until it is killed)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from fades.cluster import LocalCluster


def assert_stops_with_stream_open(
    tmp_path: Path, path: str, ready: bytes, *, cookie: str | None = None, what: str
) -> None:
    """Start a one-node cluster, open ``GET path`` (bearer token, or the token in cookie
    ``cookie``), wait until its body holds ``ready``, SIGTERM the controller: it must exit
    with 0 within 10 s, and the stream must end with it. ``what`` names the stream."""
    cluster = LocalCluster(tmp_path / "up", nodes=1, days=0.02, functions=False, sensors=False)
    cluster.prepare()
    try:
        cluster.start()
        got: list[bytes] = []
        opened = threading.Event()
        auth = {"cookies": {cookie: cluster.token}} if cookie else {}
        headers = {} if cookie else {"Authorization": f"Bearer {cluster.token}"}

        def read() -> None:
            try:
                with (
                    httpx.Client(base_url=cluster.url, headers=headers, timeout=None, **auth) as h,
                    h.stream("GET", path) as resp,
                ):
                    for chunk in resp.iter_bytes():
                        got.append(chunk)
                        if ready in b"".join(got):
                            opened.set()
            except httpx.HTTPError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(120), f"{what} did not open: {b''.join(got)!r}"
        proc = cluster.procs["controller1"]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
        assert code == 0, f"the controller exited with {code}"
        assert took < 10.0, f"the controller took {took:.1f} s to stop with {what} open"
        reader.join(timeout=30)
        assert not reader.is_alive()  # the stream ended with the controller
    finally:
        cluster.stop()
