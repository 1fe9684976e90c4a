"""A synchronous Python client for the controller's HTTP API (httpx).

::

    with FadesClient("http://127.0.0.1:8080", token) as fc:
        fc.upload("mean.fart")
        tid = fc.submit(task)["task_id"]
        print(fc.outcome(tid, timeout=60).result)

        ids = [r["task_id"] for r in fc.submit_many(tasks) if r["accepted"]]
        for out in fc.results(ids, timeout=300):   # each outcome once, as it arrives
            print(out["task_id"], out["status"], out["result"])

A task as :meth:`FadesClient.get` returns it is the task's :class:`~fades.outcome.Outcome`
(its fields empty until the task ends) plus the controller's fields (``where``,
``placement``, ``submitted_at``, ``latency_s``, ``bytes_uplink``); :meth:`FadesClient.outcome`
waits for the end and returns the parsed ``Outcome``.

Refusals are raised as the controller's error class (``NoPlacement``, ``Forbidden``,
``DuplicateTask`` ...), with its message; anything unrecognised as ``ControllerError``. When
the controller cannot be reached at all, :class:`~fades.errors.ControllerUnreachable`.

Several controllers serving one cluster can be named at once (``"http://a:8080,http://b:8080"``
or a list, as ``FADES_CONTROLLER`` does): a request that cannot *connect* goes to the next one
(and the client stays there). A read request that loses its connection or its answer
mid-way (a read timeout) is also sent to the next, and so is a single submit: it carries its
task id (chosen here when the task names none), so if the silent controller had recorded it
the next one answers ``DuplicateTask`` and :meth:`FadesClient.submit` returns the task's
receipt marked ``"resent": true``. Other writes that lose their answer raise
``ControllerUnreachable``. An HTTP error answer is never retried elsewhere.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx

from fades import errors
from fades.errors import ControllerError, ControllerUnreachable, TaskValidationError
from fades.outcome import Outcome

#: longest single ``?wait=`` the controller honours (seconds)
_WAIT_STEP_S = 30.0
#: most tasks per batch request (the controller's limit)
BATCH_SIZE = 1000


def _with_id(task: Mapping[str, Any]) -> dict[str, Any]:
    """``task`` with a random 16-hex ``credentials.task_id`` if it names none."""
    body = dict(task)
    creds = body.get("credentials")
    if isinstance(creds, Mapping) and "task_id" not in creds:
        body["credentials"] = {**creds, "task_id": uuid.uuid4().hex[:16]}
    return body


def _sse(lines: Iterable[str]) -> Iterator[tuple[str, int | None, str]]:
    """``(event, id, data)`` of each server-sent event in ``lines``."""
    event: str = "message"
    eid: int | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, eid, "\n".join(data)
            event, eid, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id" and value.isdigit():
                eid = int(value)
            elif name == "data":
                data.append(value)


class FadesClient:
    """Talks to the controllers of one cluster with one bearer token.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080``; several controllers of the same cluster
            comma-separated (or a list): the next is used when one cannot be reached.
        token: a bearer token from the controller's tokens file.
        timeout: seconds for each HTTP request (a ``wait`` adds its own wait).
    """

    def __init__(self, base_url: str | Sequence[str], token: str, *, timeout: float = 30.0) -> None:
        given = base_url.split(",") if isinstance(base_url, str) else list(base_url)
        self.urls = [u.strip().rstrip("/") for u in given if u.strip()]
        if not self.urls:
            raise ValueError("no controller URL given")
        self.timeout = timeout
        self._token = token
        self._at = 0
        self._clients: dict[str, httpx.Client] = {}
        self._resent = False  # the last call was sent again after losing an answer

    @property
    def base_url(self) -> str:
        """The controller this client talks to now."""
        return self.urls[self._at]

    @property
    def _http(self) -> httpx.Client:
        url = self.base_url
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
            )
        return client

    def _next(self) -> None:
        """Talk to the next controller from now on."""
        self._at = (self._at + 1) % len(self.urls)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> FadesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, resend: bool = False, **kwargs: Any) -> Any:
        """``resend``: the request may be sent again to the next controller after losing its
        answer (a read timeout, a dropped connection): it is idempotent (GET) or refused as
        a duplicate the second time (a submit carrying its task id)."""
        tried: list[str] = []
        self._resent = False
        while True:
            try:
                resp = self._http.request(method, path, **kwargs)
                break
            except httpx.TransportError as exc:
                tried.append(f"{self.base_url}: {type(exc).__name__}: {exc}")
                unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if len(tried) >= len(self.urls) or not (unsent or resend or method == "GET"):
                    raise ControllerUnreachable(
                        "cannot reach the controller at " + "; ".join(tried)
                    ) from None
                self._resent = self._resent or not unsent
                self._next()
        if resp.is_success:
            return resp.json()
        self._raise(resp)

    def _raise(self, resp: httpx.Response) -> NoReturn:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        detail = body.get("detail") or f"HTTP {resp.status_code}: {resp.text[:200]}"
        cls = errors.error_class(body.get("error_kind"), ControllerError)
        if issubclass(cls, TaskValidationError):
            problems = [(p["field"], p["reason"]) for p in body.get("problems") or []]
            raise cls(str(detail), problems=problems)
        try:
            error = cls(str(detail), status=resp.status_code)
        except TypeError:  # an error class with its own constructor
            error = ControllerError(f"{body.get('error_kind')}: {detail}", status=resp.status_code)
        raise error

    # --- tasks -------------------------------------------------------------------------------
    def submit(
        self, task: Mapping[str, Any], node: str | None = None, where: str = "edge"
    ) -> dict[str, Any]:
        """Submit a task; returns the receipt (task_id, node, where, status, placement).

        A task without ``credentials.task_id`` gets one chosen here, so that a submit whose
        answer is lost (a controller that stops answering: read timeout) can be sent to the
        next controller: if the first had recorded it, the second answers ``DuplicateTask``
        and the receipt is read back from the task (with ``"resent": true``)."""
        params = {"where": where} | ({"node": node} if node else {})
        body = _with_id(task)
        creds = body.get("credentials")
        tid = creds.get("task_id") if isinstance(creds, Mapping) else None
        resend = isinstance(tid, str) and len(self.urls) > 1
        try:
            result: dict[str, Any] = self._call(
                "POST", "/v1/tasks", json=body, params=params, resend=resend
            )
        except errors.DuplicateTask:
            if not (resend and self._resent):
                raise
            # the controller that lost its answer recorded it: the task is accepted once
            rec = self.get(str(tid))
            keys = ("task_id", "node", "where", "status", "placement")
            return {k: rec.get(k) for k in keys} | {"task_id": tid, "resent": True}
        return result

    def submit_many(
        self,
        tasks: Iterable[Mapping[str, Any]],
        node: str | None = None,
        where: str = "edge",
        *,
        batch: int = BATCH_SIZE,
    ) -> list[dict[str, Any]]:
        """Submit many tasks, ``batch`` per request (``POST /v1/tasks/batch``); one result per
        task, in order: ``{"accepted": true, "task_id", "node", "where", "placement", ...}`` or
        ``{"accepted": false, "task_id", "status", "error_kind", "detail", ...}``. A refused
        task does not refuse the others."""
        if not 1 <= batch <= BATCH_SIZE:
            raise ValueError(f"batch must be from 1 to {BATCH_SIZE}, not {batch}")
        params = {"where": where} | ({"node": node} if node else {})
        items = [dict(t) for t in tasks]
        out: list[dict[str, Any]] = []
        for i in range(0, len(items), batch):
            body = {"tasks": items[i : i + batch]}
            answer = self._call("POST", "/v1/tasks/batch", json=body, params=params)
            for r in answer["results"]:
                r["index"] = int(r["index"]) + i
                out.append(r)
        return out

    def results(
        self,
        task_ids: Iterable[str] | None = None,
        *,
        since: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Outcomes of your tasks as they are stored (``GET /v1/results/stream``), each once.

        With ``task_ids`` the iterator ends once each of them was yielded (those that ended
        before the call come first); without, it yields every new outcome until ``timeout``.
        It reconnects by itself (resuming after the last outcome seen) when the connection
        drops or the stream says it fell behind. Each item is an outcome as a dict, with
        ``event_id``.

        Raises:
            ControllerError: no outcome (nor keep-alive) for ``timeout`` seconds, or the
                stream cannot be opened.
        """
        want = list(dict.fromkeys(task_ids)) if task_ids is not None else None
        remaining = set(want) if want is not None else None
        # a long filter goes client-side: the URL stays short
        send_ids = want if want is not None and sum(len(t) + 9 for t in want) <= 6000 else None
        last = since
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while remaining is None or remaining:
            params: dict[str, Any] = {}
            if send_ids is not None:
                params["task_id"] = send_ids
            headers = {}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            elif want is not None:
                params["since"] = 0  # the filter is client-side: start from the beginning
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            read = min(self.timeout, left) if left is not None else max(self.timeout, 60.0)
            try:
                with self._http.stream(
                    "GET",
                    "/v1/results/stream",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout, read=read),
                ) as resp:
                    if not resp.is_success:
                        resp.read()
                        self._raise(resp)
                    failures = 0
                    for event, eid, data in _sse(resp.iter_lines()):
                        if eid is not None:
                            last = eid
                        if event == "outcome":
                            item = json.loads(data)
                            item["event_id"] = eid
                            if remaining is None or item.get("task_id") in remaining:
                                if remaining is not None:
                                    remaining.discard(item["task_id"])
                                yield item
                                if remaining is not None and not remaining:
                                    return
                        elif event in ("open", "behind") and last is None:
                            last = json.loads(data).get("last_event_id")
                        elif event == "end" and send_ids is not None:
                            return
                    if deadline is not None and time.monotonic() >= deadline:
                        raise ControllerError(f"no outcome within {timeout:g} s")
            except httpx.ReadTimeout:
                if deadline is None or time.monotonic() >= deadline:
                    raise ControllerError(
                        f"the result stream was silent for {read:g} s"
                        + ("" if remaining is None else f" ({len(remaining)} outcomes missing)")
                    ) from None
            except httpx.TransportError as exc:
                failures += 1
                self._next()  # another controller, if there are several (same event ids)
                if failures > 3 * len(self.urls):
                    raise ControllerUnreachable(
                        f"cannot reach the controller at {self.base_url}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                time.sleep(0.2 * failures)

    def get(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        """A task's status, result and timing; ``wait`` blocks up to that many seconds."""
        result: dict[str, Any] = self._call(
            "GET",
            f"/v1/tasks/{task_id}",
            params={"wait": wait} if wait else None,
            timeout=self.timeout + wait,
        )
        return result

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task: ``task_id``, ``node``, ``status`` and ``detail`` of what happened.

        Raises:
            TaskNotFound: no such task of this tenant; TaskNotCancellable: it already ended;
            NodeUnavailable: its node did not answer.
        """
        result: dict[str, Any] = self._call("POST", f"/v1/tasks/{task_id}/cancel")
        return result

    def migrate(self, task_id: str, to: str, *, timeout: float = 120.0) -> dict[str, Any]:
        """Move a running stateful task to node ``to``, live; returns the receipt (source,
        target, seq, downtime_s, total_s, state_bytes, artifact_bytes, forced, detail).

        Raises:
            TaskNotFound, UnknownNode, MigrationFailed (it cannot move, and keeps running
            where it was), NodeUnavailable (the target is down or did not answer).
        """
        result: dict[str, Any] = self._call(
            "POST", f"/v1/tasks/{task_id}/migrate", json={"to": to}, timeout=timeout
        )
        return result

    def drain(self, node: str) -> dict[str, Any]:
        """Stop placing work on ``node`` and move its stateful tasks off it; returns the
        progress (``state``, ``total``, ``moved``, ``failed``, ``tasks``)."""
        result: dict[str, Any] = self._call("POST", f"/v1/nodes/{node}/drain")
        return result

    def drain_status(self, node: str) -> dict[str, Any]:
        """How far draining ``node`` has come."""
        result: dict[str, Any] = self._call("GET", f"/v1/nodes/{node}/drain")
        return result

    def undrain(self, node: str) -> dict[str, Any]:
        """Place work on ``node`` again."""
        result: dict[str, Any] = self._call("DELETE", f"/v1/nodes/{node}/drain")
        return result

    def run(
        self,
        task: Mapping[str, Any],
        node: str | None = None,
        where: str = "edge",
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Submit a task and wait for it in one request (as :meth:`submit` then :meth:`wait`,
        one HTTP round trip less); the task once ended, or as it stands after ``timeout``.

        A task without ``credentials.task_id`` gets one chosen here; with several controller
        URLs a run whose answer is lost is sent to the next one, and a ``DuplicateTask``
        there (the first had recorded it) turns into a wait for that task."""
        deadline = time.monotonic() + timeout
        body = _with_id(task)
        tid = (
            body["credentials"].get("task_id")
            if isinstance(body.get("credentials"), dict)
            else None
        )
        step = max(0.0, min(timeout, _WAIT_STEP_S))
        params: dict[str, Any] = {"where": where, "wait": step} | ({"node": node} if node else {})
        resend = isinstance(tid, str) and len(self.urls) > 1
        try:
            info: dict[str, Any] = self._call(
                "POST",
                "/v1/tasks/run",
                json=body,
                params=params,
                resend=resend,
                timeout=self.timeout + step,
            )
        except errors.DuplicateTask:
            if not (resend and self._resent):
                raise
            info = {"task_id": tid, "status": "accepted"}
        if info["status"] in ("done", "failed", "local"):
            return info
        return self.wait(str(info["task_id"]), max(0.0, deadline - time.monotonic()))

    def wait(self, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The task once done or failed (or ``local``: placed on its device), or as it stands
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            info = self.get(task_id, wait=max(0.0, min(remaining, _WAIT_STEP_S)))
            if info["status"] in ("done", "failed", "local") or remaining <= 0:
                return info

    def outcome(self, task_id: str, timeout: float = 60.0) -> Outcome:
        """The task's outcome once it ended.

        Raises:
            ControllerError: it did not end within ``timeout`` seconds.
        """
        info = self.wait(task_id, timeout)
        if info.get("status") not in ("done", "failed"):
            raise ControllerError(
                f"task {task_id} is still {info.get('status')} after {timeout:g} s",
                task_id=task_id,
            )
        return Outcome.model_validate(info)

    def tasks(self, limit: int = 100) -> list[dict[str, Any]]:
        """Your tasks, newest first."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/tasks", params={"limit": limit})
        return result

    # --- nodes and functions -----------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/nodes")
        return result

    def functions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/functions")
        return result

    def upload(
        self, artifact: bytes | str | Path, *, allow_rollback: bool = False
    ) -> dict[str, Any]:
        """Upload a signed artifact (bytes, or the path of a ``.fart`` file);
        ``allow_rollback`` lets an older version become current again."""
        if isinstance(artifact, bytes):
            data = artifact
        else:
            try:
                data = Path(artifact).read_bytes()
            except OSError as exc:
                raise errors.ArtifactFormatError(
                    f"cannot read {artifact}: {exc.strerror}"
                ) from None
        result: dict[str, Any] = self._call(
            "POST",
            "/v1/functions",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            params={"allow_rollback": "true"} if allow_rollback else None,
        )
        return result

    # --- pipelines ---------------------------------------------------------------------------
    def plan_pipeline(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Where each stage of ``spec`` would run now, and why (``rows``); nothing deployed."""
        result: dict[str, Any] = self._call("POST", "/v1/pipelines/plan", json=dict(spec))
        return result

    def submit_pipeline(self, spec: Mapping[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Deploy a pipeline: ``pipeline``, ``version``, ``rows`` (the plan) and, for an
        on-demand one, the ``runs`` it started (``refused``: runs a full queue refused)."""
        params = {"replace": "true"} if replace else None
        result: dict[str, Any] = self._call("POST", "/v1/pipelines", json=dict(spec), params=params)
        return result

    def pipelines(self) -> list[dict[str, Any]]:
        """Your pipelines, newest first, with run counts."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/pipelines")
        return result

    def pipeline(self, name: str) -> dict[str, Any]:
        """A pipeline's state, plan, run counts and queue depths."""
        result: dict[str, Any] = self._call("GET", f"/v1/pipelines/{name}")
        return result

    def pipeline_runs(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """A pipeline's runs, newest first."""
        result: list[dict[str, Any]] = self._call(
            "GET", f"/v1/pipelines/{name}/runs", params={"limit": limit}
        )
        return result

    def pipeline_run(self, name: str, run: str, wait: float = 0) -> dict[str, Any]:
        """One run and its timeline (``stages``); ``wait`` blocks up to that many seconds
        (at most 60) for it to end."""
        result: dict[str, Any] = self._call(
            "GET",
            f"/v1/pipelines/{name}/runs/{run}",
            params={"wait": wait} if wait else None,
            timeout=self.timeout + wait,
        )
        return result

    def start_runs(self, name: str, count: int = 1) -> dict[str, Any]:
        """Start ``count`` more runs of an active pipeline: ``runs`` (ids) and ``refused``."""
        result: dict[str, Any] = self._call(
            "POST", f"/v1/pipelines/{name}/runs", json={"count": count}
        )
        return result

    def wait_runs(self, name: str, runs: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Each of ``runs`` once it ended, or as it stands after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        out = []
        for run in runs:
            while True:
                remaining = deadline - time.monotonic()
                info = self.pipeline_run(name, run, wait=max(0.0, min(remaining, _WAIT_STEP_S)))
                if info["status"] != "running" or remaining <= 0:
                    out.append(info)
                    break
        return out

    def cancel_pipeline(self, name: str) -> dict[str, Any]:
        """Stop a pipeline (its running runs end cancelled)."""
        result: dict[str, Any] = self._call("POST", f"/v1/pipelines/{name}/cancel")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/healthz")
        return result

    # --- devices (fades.devices) -----------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        """Sensors and actuators you may see, with each actuator's last state."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/devices")
        return result

    def command(
        self, node: str, device: str, command: str, args: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Command an actuator: ``command_id``, ``outcome`` (applied, refused, timed_out),
        ``state`` and ``detail``."""
        body: dict[str, Any] = {"command": command} | ({"args": dict(args)} if args else {})
        result: dict[str, Any] = self._call(
            "POST", f"/v1/devices/{node}/{device}/commands", json=body
        )
        return result

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """Your actuator commands, refusals included, newest first."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/audit", params={"limit": limit})
        return result
