"""Actuator commands from the controller: policy, send, wait for the state report, audit.

A command for ``<node>/<device>`` is checked against the device's declaration (the node's
registry entry: is it an actuator, does it accept that command, may this tenant command it),
written to the audit table as ``pending``, and sent on the NATS subject
``actuators.<node>.<device>.set`` (the MQTT topic ``actuators/<node>/<device>/set``)::

    {"command_id": "c-1f2e...", "command": "on", "args": {}, "tenant": "facilities",
     "source": "api", "at": 1767225600.0}

The device answers on ``actuators.<node>.<device>.state``::

    {"command_id": "c-1f2e...", "outcome": "applied", "state": {"power": "on"}, "detail": ""}

(``outcome`` ``refused`` with a ``detail`` when it will not; a report without a command id
just updates the state, and devices repeat their state now and then). The controller waits
up to :data:`COMMAND_TIMEOUT_S` for the report with the command's id; without one the
outcome is ``timed_out``. Every command ends in the audit with its outcome (``applied``,
``refused``, ``timed_out``, or ``forbidden`` for a tenant the declaration does not allow),
and counts in ``fades_device_commands_total{outcome,source}`` on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter

from fades.aiostop import cancel_all, wait_for
from fades.devices.actuate import command_id, command_of
from fades.devices.registry import find_device, visible_devices
from fades.devices.spec import actuator_subject
from fades.errors import BadRequest, CommandForbidden, FadesError, UnknownCommand

if TYPE_CHECKING:
    from fades.controller.service import Controller
    from fades.pipelines.protocol import StageEvent
    from fades.pipelines.spec import PipelineSpec

log = logging.getLogger("fades.devices")

#: seconds the controller waits for a device's state report (FADES_COMMAND_TIMEOUT_S)
COMMAND_TIMEOUT_S = 5.0
#: largest ``args`` of a command, as compact JSON
MAX_ARGS_BYTES = 4096
#: largest state report read (bigger ones are ignored)
MAX_REPORT_BYTES = 64 * 1024
#: longest ``detail`` kept from a device
MAX_DETAIL = 500

Source = Literal["api", "console", "pipeline"]
SOURCES = ("api", "console", "pipeline")


def command_timeout() -> float:
    raw = os.environ.get("FADES_COMMAND_TIMEOUT_S")
    if raw is None:
        return COMMAND_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and 0 < value <= 300):
        raise ValueError(f"FADES_COMMAND_TIMEOUT_S must be seconds in (0, 300], not {raw!r}")
    return value


def check_args(args: Any) -> dict[str, Any]:
    """A command's ``args``: a JSON object of at most :data:`MAX_ARGS_BYTES`."""
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise BadRequest(f"args must be a JSON object, not {type(args).__name__}")
    try:
        size = len(json.dumps(args, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"args must be plain JSON: {exc}") from None
    if size > MAX_ARGS_BYTES:
        raise BadRequest(f"args are {size:,} bytes of JSON, more than {MAX_ARGS_BYTES:,}")
    return args


class DeviceService:
    """The controller's side of devices: the list, commands, state and the audit."""

    def __init__(self, controller: Controller, timeout_s: float | None = None) -> None:
        self.controller = controller
        self.timeout_s = timeout_s if timeout_s is not None else command_timeout()
        #: (node, device) -> (state, epoch seconds of the report)
        self.states: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.commands = Counter(
            "fades_device_commands",
            "Actuator commands by outcome (applied, refused, timed_out, forbidden) and source",
            ["outcome", "source"],
            registry=controller.metrics.registry,
        )
        self.started = False

    async def start(self) -> None:
        """Listen to every actuator's state reports."""
        if not self.started:
            await self.controller.bus.subscribe("actuators.*.*.state", self._on_state)
            self.started = True

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        await cancel_all(tasks)
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
        self.started = False

    # --- state reports -----------------------------------------------------------------------
    async def _on_state(self, subject: str, data: bytes) -> None:
        parts = subject.split(".")
        if len(parts) != 4 or len(data) > MAX_REPORT_BYTES:
            return
        try:
            report = json.loads(data)
        except ValueError:
            log.debug("ignoring a state report on %s that is not JSON", subject)
            return
        if not isinstance(report, dict) or not isinstance(report.get("state"), dict):
            return
        node, device = parts[1], parts[2]
        self.states[(node, device)] = (report["state"], time.time())
        cid = report.get("command_id")
        fut = self._waiting.get(cid) if isinstance(cid, str) else None
        if fut is not None and not fut.done():
            fut.set_result(report)

    # --- queries -----------------------------------------------------------------------------
    def devices(self, tenant: str) -> list[dict[str, Any]]:
        """The devices ``tenant`` may see, with their last reported state."""
        out = []
        for dev, _ in visible_devices(self.controller.registry, tenant):
            state, at = self.states.get((dev.node, dev.device), (None, None))
            out.append(
                {
                    "node": dev.node,
                    "device": dev.device,
                    "kind": dev.kind,
                    "location": dev.location,
                    "type": dev.type,
                    "topic": dev.topic,
                    "unit": dev.unit,
                    "commands": list(dev.commands),
                    "state": state,
                    "state_at": at,
                    "may_command": dev.may_command(tenant),
                }
            )
        return out

    async def audit(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        return list(await asyncio.to_thread(self.controller.store.audit, tenant, limit))

    # --- commands ----------------------------------------------------------------------------
    async def command(
        self,
        tenant: str,
        node: str,
        device: str,
        command: str,
        args: Any = None,
        *,
        source: Source = "api",
        command_id: str | None = None,
    ) -> dict[str, Any]:
        """Send one command and wait for its outcome.

        Returns ``{"command_id", "outcome", "state", "detail"}``; ``outcome`` is ``applied``,
        ``refused`` or ``timed_out``. A repeated ``command_id`` (a pipeline event delivered
        twice) is not sent again: its recorded outcome is returned.

        Raises:
            UnknownDevice: no such node or device (HTTP 404).
            UnknownCommand: not an actuator, or a command it does not accept (HTTP 400).
            CommandForbidden: the tenant may not command it (HTTP 403; audited).
            BadRequest: malformed ``args``.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        dev = find_device(self.controller.registry, node, device)
        if dev.kind != "actuator":
            raise UnknownCommand(f"{node}/{device} is a sensor; it takes no commands")
        if command not in dev.commands:
            raise UnknownCommand(
                f"{node}/{device} does not accept {command!r}; allowed: {', '.join(dev.commands)}"
            )
        args = check_args(args)
        cid = command_id or f"c-{uuid.uuid4().hex[:20]}"
        store = self.controller.store
        row = dict(at=time.time(), tenant=tenant, source=source, node=node, device=device,
                   command=command, args=args)  # fmt: skip
        if not dev.may_command(tenant):
            detail = f"tenant {tenant!r} may not command {node}/{device}"
            await asyncio.to_thread(store.add_audit, cid, **row, outcome="forbidden", detail=detail)
            self.commands.labels("forbidden", source).inc()
            raise CommandForbidden(detail)
        fresh = await asyncio.to_thread(store.add_audit, cid, **row, outcome="pending")
        if not fresh:
            return await asyncio.to_thread(self._recorded, tenant, cid)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        message = {"command_id": cid, "command": command, "args": args, "tenant": tenant,
                   "source": source, "at": row["at"]}  # fmt: skip
        try:
            try:
                await self.controller.bus.send(
                    actuator_subject(node, device, "set"), json.dumps(message).encode()
                )
                report = await wait_for(fut, self.timeout_s)
            except TimeoutError:
                report = None
                detail = f"no state report from {node}/{device} within {self.timeout_s:g} s"
                if not self.controller.registry.is_up(node):
                    detail += f" (node {node} is down)"
            except FadesError as exc:  # the fabric refused the send
                report, detail = None, f"not sent: {exc}"
        finally:
            self._waiting.pop(cid, None)
        if report is None:
            outcome = "timed_out"
            state = self.states.get((node, device), (None, 0.0))[0]
        else:
            outcome = "refused" if report.get("outcome") == "refused" else "applied"
            state = report["state"]
            detail = str(report.get("detail") or "")[:MAX_DETAIL]
        await asyncio.to_thread(store.finish_audit, cid, outcome, detail)
        self.commands.labels(outcome, source).inc()
        log.info("command %s %s/%s %s by %s (%s): %s", cid, node, device, command, tenant,
                 source, outcome)  # fmt: skip
        return {"command_id": cid, "outcome": outcome, "state": state, "detail": detail}

    def _recorded(self, tenant: str, cid: str) -> dict[str, Any]:
        for r in self.controller.store.audit(tenant, 10_000):
            if r["command_id"] == cid:
                state = self.states.get((r["node"], r["device"]), (None, 0.0))[0]
                return {"command_id": cid, "outcome": r["outcome"], "state": state,
                        "detail": r["detail"]}  # fmt: skip
        return {"command_id": cid, "outcome": "pending", "state": None, "detail": ""}

    # --- pipelines -------------------------------------------------------------------------
    def actuate(self, ev: StageEvent, spec: PipelineSpec) -> None:
        """A recorded ``done`` event of a stage with ``actuate``: send its command (in the
        background; the outcome goes to the audit)."""
        target = getattr(spec.stage(ev.stage), "actuate", None) if ev.status == "done" else None
        if target is None:
            return
        try:
            cmd = command_of(ev.result)
        except ValueError as exc:
            log.warning("pipeline %s stage %s did not return a command: %s", ev.pipeline,
                        ev.stage, exc)  # fmt: skip
            return
        if cmd is None:
            return

        async def send() -> None:
            try:
                await self.command(spec.tenant, target.node, target.name, cmd[0], cmd[1],
                                   source="pipeline", command_id=command_id(ev))  # fmt: skip
            except FadesError as exc:  # refused before sending; forbidden ones are audited
                log.warning("pipeline %s stage %s: command %s/%s %s not sent: %s", ev.pipeline,
                            ev.stage, target.node, target.name, cmd[0], exc)  # fmt: skip

        self.spawn(send())

    def spawn(self, coro: Any) -> None:
        """Run a command in the background (pipelines), kept until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
