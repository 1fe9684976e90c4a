"""Issue 16, class 7 at the HTTP API: every malformed request gets a 4xx naming what is wrong,
never a 500, and the keep-alive connection stays usable after it (tested on one raw socket
and on one httpx.Client); a client that cannot reach the controller says so."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from fades.client import FadesClient
from fades.errors import ControllerError, ControllerUnreachable
from fades.functions.artifact import create
from fades.functions.keys import SigningKey

from .conftest import CORE_WASM, FACILITIES, Bed, held
from .test_api import up


class RawHttp:
    """One TCP connection, HTTP/1.1 keep-alive, requests written by hand."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=20)
        self.buf = b""

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        head = {"Host": "x", "Authorization": f"Bearer {FACILITIES}"} | (headers or {})
        head.setdefault("Content-Length", str(len(body)))
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
        self.sock.sendall("\r\n".join(lines).encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = raw_head.decode().split("\r\n")
        got = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        length = int(got.get("content-length", "0"))
        while len(self.buf) < length:
            self._more()
        payload, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), json.loads(payload) if payload else {}, got

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def deep(n: int) -> bytes:
    return b'{"credentials": ' + b"[" * n + b"]" * n + b"}"


BAD_TASKS: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("not JSON", b"{nope", {}, 400, "not valid JSON"),
    ("binary", bytes(range(256)) * 4, {}, 400, "not UTF-8"),
    ("an array", b"[1, 2]", {}, 400, "must be a JSON object"),
    ("empty", b"", {}, 400, "must be a JSON object"),
    ("100,000 deep", deep(100_000), {}, 400, "deeper than 64 levels"),
    ("100 deep", deep(100), {}, 400, "deeper than 64 levels"),
    ("NaN", b'{"credentials": NaN}', {}, 400, "NaN is not a JSON number"),
    ("text/plain", b"{}", {"Content-Type": "text/plain"}, 415, "application/json"),
    ("form", b"a=b", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "not"),
    ("absurd length", b"{}", {"Content-Length": "99999999999"}, 413, "limit of 1048576"),
]


def test_bad_requests_get_a_4xx_and_the_connection_stays_usable(
    bed: Bed, make_task: Any, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctl = bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    conn = RawHttp(bed.url)
    try:
        ok, _, _ = conn.request("GET", "/v1/nodes")
        assert ok == 200
        for what, body, headers, code, words in BAD_TASKS:
            if what == "absurd length":  # the server must not wait for 100 GB: a fresh socket
                side = RawHttp(bed.url)
                status, reply, _ = side.request("POST", "/v1/tasks", body, headers)
                side.close()
            else:
                hdrs = {"Content-Type": "application/json"} | headers
                status, reply, _ = conn.request("POST", "/v1/tasks", body, hdrs)
            assert status == code, (what, status, reply)
            assert words in reply["detail"] and reply["error_kind"] != "internal", (what, reply)
            status, _, _ = conn.request("GET", "/v1/tasks")
            assert status == 200, f"connection unusable after {what}"

        good = json.dumps(make_task("nope")).encode()
        queries = [
            ("GET", "/v1/tasks/x?wait=nan", 400, "wait must be a number"),
            ("GET", "/v1/tasks/x?wait=1e999", 400, "wait must be a number"),
            ("GET", "/v1/tasks/x?wait=-1", 400, "wait must be a number"),
            ("GET", "/v1/tasks?limit=1e99", 400, "limit"),
            ("GET", "/v1/tasks?limit=-5", 400, "limit"),
            ("GET", "/v1/tasks/" + "x" * 5000, 400, "task_id"),
            ("POST", "/v1/tasks?where=moon", 400, "where"),
            ("POST", "/v1/tasks?node=" + "n" * 5000, 400, "node"),
            ("GET", "/v1/nope", 404, "Not Found"),
            ("DELETE", "/v1/tasks", 405, "Method Not Allowed"),
        ]
        for method, path, code, words in queries:
            status, reply, _ = conn.request(method, path, good if method == "POST" else b"")
            assert status == code and words in reply["detail"], (path, status, reply)
            assert conn.request("GET", "/v1/tasks")[0] == 200

        # uploads: wrong type, not an artifact, too large (declared)
        art = create("core", "f", CORE_WASM, key=signing_key).to_bytes()
        uploads = [
            (art, {"Content-Type": "application/json"}, 415, "application/octet-stream"),
            (b"\x00" * 100, {}, 422, "not a fades artifact"),
            (b"PK\x03\x04" + b"\x00" * 50, {"Content-Type": "application/octet-stream"}, 422, ""),
        ]
        for body, headers, code, words in uploads:
            status, reply, _ = conn.request("POST", "/v1/functions", body, headers)
            assert status == code and words in reply["detail"], (status, reply)
            assert conn.request("GET", "/v1/tasks")[0] == 200
        assert conn.request("POST", "/v1/functions", art)[0] == 201

        # a bug in a route is a 500 that names no internals, and the connection survives it
        def boom() -> Any:
            raise RuntimeError("secret internals")

        monkeypatch.setattr(ctl, "nodes", boom)
        status, reply, _ = conn.request("GET", "/v1/nodes")
        assert status == 500 and reply["error_kind"] == "internal"
        assert "secret" not in reply["detail"]
        monkeypatch.undo()
        status, reply, _ = conn.request("POST", "/v1/tasks", json.dumps(make_task("f")).encode())
        assert status == 202, reply  # and a good task after all of it
    finally:
        conn.close()

    # the same with one httpx.Client: a bad request, then a good one
    with httpx.Client(base_url=bed.url, headers={"Authorization": f"Bearer {FACILITIES}"}) as c:
        assert c.post("/v1/tasks", content=deep(50_000)).status_code == 400
        assert c.post("/v1/tasks", json=make_task("f")).status_code == 202


def test_the_client_says_when_it_cannot_reach_the_controller() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    with FadesClient(f"http://127.0.0.1:{port}", "token-123456", timeout=5) as c:
        with pytest.raises(
            ControllerUnreachable, match=f"cannot reach the controller at http://127.0.0.1:{port}"
        ):
            c.tasks()
        with pytest.raises(ControllerUnreachable):
            c.health()
    assert not issubclass(ControllerUnreachable, ControllerError)


def test_absurd_numbers_in_a_task_are_a_4xx(
    bed: Bed, make_task: Any, signing_key: SigningKey
) -> None:
    bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
    conn = RawHttp(bed.url)
    try:
        for value in (1e12, -1, 1e308):
            select = {"location": "room1", "last_seconds": value}
            task = make_task("f", data=[{"name": "t", "select": select}])
            status, reply, _ = conn.request("POST", "/v1/tasks", json.dumps(task).encode())
            assert 400 <= status < 500, (value, status, reply)
            assert conn.request("GET", "/v1/tasks")[0] == 200
        status, _, _ = conn.request("POST", "/v1/tasks", json.dumps(make_task("f")).encode())
        assert status == 202
    finally:
        conn.close()


def test_long_polls_leave_nothing_behind(bed: Bed, make_task: Any, signing_key: SigningKey) -> None:
    from fades.errors import TaskNotFound

    ctl = bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        for i in range(50):  # unknown ids
            with pytest.raises(TaskNotFound):
                c.get(f"nope-{i}", wait=0.05)
        tid = c.submit(make_task("f"), node="edge")["task_id"]  # never finishes here
        assert c.get(tid, wait=0.2)["status"] == "dispatched"
    assert ctl.recorder.waiting_count == 0
