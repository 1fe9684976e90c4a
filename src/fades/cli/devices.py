"""``fades devices``: the cluster's sensors and actuators, commands, and the audit.

Talks to a controller (``--controller``/``$FADES_CONTROLLER``, ``--token``/``$FADES_TOKEN``).
What devices and nodes said is printed through :mod:`fades.cli.safe`; ``--json`` prints the
API's answer as is. A command that the device refused or that timed out exits 1.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from fades.cli.common import ControllerOpt, JsonOpt, TokenOpt, console
from fades.cli.render import print_json
from fades.cli.safe import markup

devices_app = typer.Typer(
    help="Sensors and actuators: list them, command an actuator, read the audit.",
    no_args_is_help=True,
)

_OUTCOME = {"applied": "green", "refused": "yellow", "timed_out": "red", "forbidden": "red"}


def _client(controller: str, token: str) -> Any:
    from fades.client import FadesClient

    return FadesClient(controller, token)


def _compact(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))[:200]
    except (TypeError, ValueError, RecursionError):
        return "(see --json)"


def _age(at: Any) -> str:
    return f"{max(0.0, time.time() - at):.0f} s ago" if isinstance(at, int | float) else "-"


@devices_app.command("list")
def list_devices(
    controller: ControllerOpt,
    token: TokenOpt,
    kind: Annotated[str | None, typer.Option(help="only 'sensor' or 'actuator' devices")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every device you may see: where it is, its topic, commands and last state."""
    if kind not in (None, "sensor", "actuator"):
        raise typer.BadParameter(f"--kind must be sensor or actuator, not {kind!r}")
    with _client(controller, token) as client:
        devices = [d for d in client.devices() if kind is None or d.get("kind") == kind]
    if json_out:
        print_json(devices)
        return
    table = Table("node", "device", "kind", "location", "type", "commands", "state", "seen",
                  "may command", title=f"{len(devices)} devices")  # fmt: skip
    for d in devices:
        table.add_row(
            markup(d.get("node"), 64, oneline=True),
            markup(d.get("device"), 64, oneline=True),
            markup(d.get("kind"), 16),
            markup(d.get("location"), 64, oneline=True),
            markup(d.get("type"), 64, oneline=True),
            markup(", ".join(map(str, d.get("commands") or [])) or "-", 200, oneline=True),
            markup(_compact(d.get("state")), 200, oneline=True),
            _age(d.get("state_at")),
            "yes" if d.get("may_command") else "no",
        )
    console.print(table)


@devices_app.command("command")
def command(
    target: Annotated[str, typer.Argument(help="NODE/DEVICE, e.g. edge1/fan-room1")],
    cmd: Annotated[str, typer.Argument(help="a command the device accepts, e.g. on")],
    controller: ControllerOpt,
    token: TokenOpt,
    args: Annotated[
        str | None, typer.Option("--args", help='JSON object of arguments, e.g. {"speed": 50}')
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Command an actuator and wait for its state report (5 s by default)."""
    node, sep, device = target.partition("/")
    if not sep or not node or not device or "/" in device:
        raise typer.BadParameter(f"expected NODE/DEVICE, e.g. edge1/fan-room1, not {target!r}")
    parsed: dict[str, Any] | None = None
    if args is not None:
        try:
            parsed = json.loads(args)
        except ValueError as exc:
            raise typer.BadParameter(f"--args is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise typer.BadParameter("--args must be a JSON object")
    with _client(controller, token) as client:
        got = client.command(node, device, cmd, parsed)
    if json_out:
        print_json(got)
    else:
        outcome = str(got.get("outcome"))
        colour = _OUTCOME.get(outcome, "white")
        line = (
            f"{markup(target, 130, oneline=True)} {markup(cmd, 32)}: [{colour}]{markup(outcome)}[/]"
        )
        if got.get("detail"):
            line += f" ({markup(got['detail'], 500, oneline=True)})"
        console.print(line)
        console.print(f"state {markup(_compact(got.get('state')), 500, oneline=True)}")
        console.print(f"command id {markup(got.get('command_id'), 64)}")
    if got.get("outcome") != "applied":
        raise typer.Exit(1)


@devices_app.command("audit")
def audit(
    controller: ControllerOpt,
    token: TokenOpt,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="newest N commands")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Your actuator commands, newest first: who, what, when, and the outcome."""
    with _client(controller, token) as client:
        rows = client.audit(limit)
    if json_out:
        print_json(rows)
        return
    table = Table("when (UTC)", "source", "device", "command", "args", "outcome", "detail",
                  title=f"audit: {len(rows)} newest commands")  # fmt: skip
    for r in rows:
        at = r.get("at")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if isinstance(at, float) else "-"
        outcome = str(r.get("outcome"))
        table.add_row(
            when,
            markup(r.get("source"), 16),
            markup(f"{r.get('node')}/{r.get('device')}", 130, oneline=True),
            markup(r.get("command"), 32),
            markup(_compact(r.get("args")), 200, oneline=True),
            f"[{_OUTCOME.get(outcome, 'white')}]{markup(outcome, 16)}[/]",
            markup(r.get("detail") or "", 300, oneline=True),
        )
    console.print(table)
