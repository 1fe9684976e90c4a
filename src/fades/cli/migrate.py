"""Moving stateful tasks from the command line: ``fades task migrate ID --to NODE`` and
``fades nodes drain NAME`` (plus ``fades nodes undrain NAME``).

``task migrate`` is registered on the ``task`` group of :mod:`fades.cli.task`; ``nodes``
becomes a group whose bare form still lists the nodes (``fades nodes --controller URL``).
Both talk to the controller (``--controller``/``$FADES_CONTROLLER``, ``--token``/
``$FADES_TOKEN``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from fades.cli.common import ControllerOpt, JsonOpt, TokenOpt, console
from fades.cli.render import print_json
from fades.cli.safe import markup
from fades.cli.task import OptionalTokenOpt, TaskIdArg, _client, task_app
from fades.cli.task import nodes as list_nodes

__all__ = ["nodes_app", "task_app"]


@task_app.command("migrate")
def migrate(
    task_id: TaskIdArg,
    to: Annotated[str, typer.Option("--to", help="the node to move it to")],
    controller: ControllerOpt,
    token: TokenOpt,
    json_out: JsonOpt = False,
) -> None:
    """Move a running stateful task to another node, live: it stops at an invocation
    boundary, its state travels in a checkpoint, and it continues on NODE."""
    with _client(controller, token) as client:
        r: dict[str, Any] = client.migrate(task_id, to)
    if json_out:
        print_json(r)
        return
    down = r.get("downtime_s")
    console.print(
        f"task {markup(task_id)} moved {markup(r.get('source'))} -> "
        f"[bold]{markup(r.get('target'))}[/] at invocation {markup(r.get('seq'))}: "
        f"downtime {_ms(down)}, total {_ms(r.get('total_s'))}, "
        f"state {markup(r.get('state_bytes'))} B, downloaded {markup(r.get('artifact_bytes'))} B",
        highlight=False,
        soft_wrap=True,
    )
    if r.get("forced"):
        console.print(f"[yellow]{markup(r.get('detail'))}[/]", highlight=False, soft_wrap=True)


def _ms(value: Any) -> str:
    return f"{float(value) * 1000:.1f} ms" if isinstance(value, (int, float)) else "-"


ListControllerOpt = Annotated[
    str | None,
    typer.Option(
        "--controller", envvar="FADES_CONTROLLER", help="controller URL ($FADES_CONTROLLER)"
    ),
]

nodes_app = typer.Typer(
    help="The cluster's nodes (the controller's registry); drain one before maintenance.",
    invoke_without_command=True,
)


@nodes_app.callback()
def nodes(
    ctx: typer.Context,
    controller: ListControllerOpt = None,
    token: OptionalTokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The cluster's nodes as the controller's registry sees them."""
    if ctx.invoked_subcommand is not None:
        return
    if not controller:
        raise typer.BadParameter("pass --controller URL or set FADES_CONTROLLER")
    list_nodes(controller, token or "", json_out)


@nodes_app.command("drain")
def drain(
    name: Annotated[str, typer.Argument(help="the node to drain")],
    controller: ControllerOpt,
    token: TokenOpt,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="follow the progress until done")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to follow it")] = 600.0,
    json_out: JsonOpt = False,
) -> None:
    """Place no new work on NAME and move every stateful task off it, with progress."""
    from rich.progress import Progress

    with _client(controller, token) as client:
        status: dict[str, Any] = client.drain(name)
        if wait and status.get("state") != "finished" and status.get("total"):
            deadline = time.monotonic() + timeout
            with Progress(console=console, transient=json_out) as bar:
                job = bar.add_task(f"draining {markup(name)}", total=status.get("total") or 0)
                while time.monotonic() < deadline:
                    status = client.drain_status(name)
                    bar.update(job, completed=status["moved"] + status["failed"])
                    if status.get("state") == "finished":
                        break
                    time.sleep(0.5)
    if json_out:
        print_json(status)
        return
    console.print(
        f"node {markup(name)}: {markup(status.get('state'))}; {status.get('moved')} of "
        f"{status.get('total')} stateful task(s) moved, {status.get('failed')} failed; "
        "no new work is placed on it",
        highlight=False,
        soft_wrap=True,
    )
    for t in status.get("tasks") or []:
        if t.get("status") == "failed":
            console.print(
                f"  {markup(t.get('task_id'))}: [red]{markup(t.get('error'))}[/]",
                highlight=False,
                soft_wrap=True,
            )
    if status.get("failed"):
        raise typer.Exit(1)


@nodes_app.command("undrain")
def undrain(
    name: Annotated[str, typer.Argument(help="the node")],
    controller: ControllerOpt,
    token: TokenOpt,
) -> None:
    """Place work on NAME again after a drain."""
    with _client(controller, token) as client:
        client.undrain(name)
    console.print(f"node {markup(name)} takes work again", highlight=False)
