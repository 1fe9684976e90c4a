"""``GET /v1/results/stream``: each outcome once, resumable after a reconnect, tenant-scoped,
and a slow reader that never holds up submits (bounded buffer, then a 'behind' event)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest

from fades.functions.artifact import create
from fades.functions.keys import SigningKey
from fades.outcome import Outcome

from .conftest import CORE_WASM, FACILITIES, VISITOR, Bed, held
from .test_api import up


def setup(bed: Bed, signing_key: SigningKey) -> None:
    bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())


def finish(bed: Bed, tid: str, result: Any = 1, tenant: str = "facilities") -> None:
    out = Outcome(task_id=tid, tenant=tenant, node="edge", status="done", result=result)
    bed.publish_outcome("edge", out, f"{tid}.result")


def read_events(url: str, token: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    """(event, id, data) of every event until the server ends the stream."""
    from fades.client import _sse

    hdrs = {"Authorization": f"Bearer {token}"} | (headers or {})
    with httpx.stream(
        "GET", url + "/v1/results/stream", params=params, headers=hdrs, timeout=60
    ) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [(e, i, json.loads(d)) for e, i, d in _sse(resp.iter_lines())]


def test_each_outcome_once_then_resume_after_a_reconnect(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    setup(bed, signing_key)
    with bed.client() as c:
        ids = [r["task_id"] for r in c.submit_many([make_task("f") for _ in range(3)])]
        finish(bed, ids[0], 10)
        finish(bed, ids[0], 99)  # a redelivered copy: stored once, streamed once
        finish(bed, ids[1], 11)
        first = []
        for out in c.results(ids[:2], timeout=60):  # outcomes stored before it connected
            first.append(out)
        assert [(o["task_id"], o["result"]) for o in first] == [(ids[0], 10), (ids[1], 11)]
        last = first[-1]["event_id"]
        finish(bed, ids[2], 12)
        # resume after the last one seen: only the new outcome comes
        events = read_events(bed.url, FACILITIES, {"Last-Event-ID": str(last)}, task_id=ids)
        outcomes = [(d["task_id"], d["result"]) for e, _, d in events if e == "outcome"]
        assert outcomes == [(ids[2], 12)] and events[-1][0] == "end"
        # from the beginning: all three, once each, in order
        every = read_events(bed.url, FACILITIES, since=0, task_id=ids)
        got = [d["task_id"] for e, _, d in every if e == "outcome"]
        assert got == ids
        assert [i for e, i, _ in every if e == "outcome"] == sorted(
            i for e, i, _ in every if e == "outcome"
        )


def test_a_live_stream_gets_outcomes_as_they_are_stored_and_only_the_tenants(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    setup(bed, signing_key)
    with bed.client() as c, bed.client(VISITOR) as v:
        mine = c.submit(make_task("f"))["task_id"]
        theirs = v.submit(make_task("f", tenant="visitor"))["task_id"]
        finish(bed, theirs, 7, tenant="visitor")
        finish(bed, mine, 8)
        got = list(c.results([mine], timeout=60))
        assert [o["task_id"] for o in got] == [mine]
        # the visitor's stream holds only the visitor's outcome, even asked for ours
        events = read_events(bed.url, VISITOR, since=0, task_id=[theirs])
        assert [d["task_id"] for e, _, d in events if e == "outcome"] == [theirs]
        with pytest.raises(Exception, match=r"silent|no outcome"):
            list(v.results([mine], timeout=3))
    # streams the clients left are closed on the server too (nothing left subscribed)
    assert bed.controller is not None
    hub = bed.controller.recorder.listeners[0].__self__  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while hub.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.open_streams == 0
    assert httpx.get(bed.url + "/v1/results/stream", timeout=10).status_code == 401


def test_a_reader_that_does_not_read_never_blocks_submits_and_is_told_it_fell_behind(
    bed: Bed, make_task: Any, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fades.controller.stream as stream

    monkeypatch.setattr(stream, "STREAM_BUFFER", 3)
    setup(bed, signing_key)
    host, port = bed.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # a small window: slow reader
    sock.settimeout(60)
    sock.connect((host, int(port)))
    req = (
        "GET /v1/results/stream HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {FACILITIES}\r\nAccept: text/event-stream\r\n\r\n"
    )
    sock.sendall(req.encode())
    first = sock.recv(4096)  # the response head: the stream is open
    assert b"200" in first.split(b"\r\n", 1)[0]
    with bed.client() as c:
        receipts = c.submit_many([make_task("f") for _ in range(20)])
        ids = [r["task_id"] for r in receipts]
        assert all(r["accepted"] for r in receipts)
        # outcomes for all of them (big ones: more than the socket buffers hold) are
        # stored while the stream is not read
        for tid in ids:
            finish(bed, tid, "x" * 400_000)
        assert all(c.wait(t, timeout=60)["status"] == "done" for t in ids)
        assert c.submit(make_task("f"))["task_id"]  # still serving
    buf = first
    deadline = time.monotonic() + 120
    while not buf.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:  # the last chunk
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    sock.close()
    text = buf.decode()
    assert "event: behind" in text and "fell behind" in text
    behind = json.loads(text.split("event: behind\ndata: ", 1)[1].split("\n", 1)[0])
    delivered = text.count("event: outcome")
    assert 0 < delivered < len(ids)  # what the buffers held, then the 3 queued
    # resuming from the id it names delivers the rest, each once
    with bed.client() as c:
        rest = list(c.results(ids, since=behind["last_event_id"], timeout=60))
    early = ids[:delivered]
    assert sorted(o["task_id"] for o in rest) == sorted(set(ids) - set(early))


def test_a_resume_point_past_any_row_id_is_refused_and_the_stream_still_serves(
    bed: Bed, signing_key: SigningKey
) -> None:
    """``since`` (or ``Last-Event-ID``) beyond SQLite's largest row id is a 4xx naming the
    limit, not a stream that can never send anything."""
    setup(bed, signing_key)
    auth = {"Authorization": f"Bearer {FACILITIES}"}
    url = bed.url + "/v1/results/stream"
    huge = str(10**29)
    r = httpx.get(url, params={"since": huge}, headers=auth, timeout=10)
    assert r.status_code == 400 and "less than or equal" in r.text, r.text
    r = httpx.get(url, headers={**auth, "Last-Event-ID": huge}, timeout=10)
    assert r.status_code == 400 and "at most" in r.json()["detail"], r.text
    assert httpx.get(bed.url + "/healthz", timeout=10).status_code == 200  # still serving
