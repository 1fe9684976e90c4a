"""``fades task``: run a task on this node, or submit it to a controller.

Both print the task's outcome with :func:`fades.cli.render.show_outcome` (or ``--json``);
the exit status is 1 when the task ran and failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fades.cli.common import ControllerOpt, HomeOpt, JsonOpt, TokenOpt, console, home_dir
from fades.cli.render import print_json, show_outcome
from fades.cli.safe import markup

task_app = typer.Typer(help="Offload tasks to this node.", no_args_is_help=True)

TaskFileArg = Annotated[Path, typer.Argument(help="task in YAML or JSON")]


@task_app.command("run")
def run(
    task_file: TaskFileArg,
    json_out: JsonOpt = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 300.0,
    home: HomeOpt = None,
) -> None:
    """Offload one task to this node and print its result and timing breakdown."""
    from fades.node import Node
    from fades.task import load_task

    task = load_task(task_file)
    with Node(home_dir(home)) as node:
        rec = node.orchestrator.run(task, timeout=timeout)
    if json_out:
        print_json(rec.to_dict())
    else:
        show_outcome(rec.to_dict(), title=str(task_file))
    if rec.status != "done":
        raise typer.Exit(1)


@task_app.command("submit")
def submit(
    task_file: TaskFileArg,
    controller: ControllerOpt,
    token: TokenOpt,
    node: Annotated[
        str | None, typer.Option(help="run on this node (default: placed by data locality)")
    ] = None,
    cloud: Annotated[
        bool, typer.Option("--cloud", help="run in the cloud on data pulled from the node")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="wait for the result and show it")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 300.0,
    json_out: JsonOpt = False,
) -> None:
    """Submit a task to the controller (to a named node, auto-placed, or to the cloud)."""
    from fades.client import FadesClient
    from fades.task import load_task

    with FadesClient(controller, token) as client:
        task = load_task(task_file).model_dump(mode="json")
        receipt = client.submit(task, node=node, where="cloud" if cloud else "edge")
        info = client.wait(receipt["task_id"], timeout=timeout) if wait else None
    if json_out:
        print_json(info or receipt)
    else:
        console.print(
            f"task {markup(receipt.get('task_id'))} accepted: {markup(receipt.get('where'))} "
            f"on node [bold]{markup(receipt.get('node'))}[/] ({markup(receipt.get('placement'))})",
            highlight=False,
            soft_wrap=True,
        )
        if info is not None:
            show_outcome(info, title=str(task_file))
    if info is not None and info.get("status") != "done":
        raise typer.Exit(1)
