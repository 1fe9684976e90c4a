"""Waiting from the command line for tasks a controller runs: ``fades task submit --wait``
and ``fades task get --wait``.

What goes on stdout is the task (a table, or ``--json``); the notices (still going when the
wait gave up, Ctrl-C stopped the wait) go on stderr, so that ``--json`` output stays JSON.
Ctrl-C stops the wait, never the task (exit status 130).
"""

from __future__ import annotations

from typing import Any

import typer

from fades.cli.common import err
from fades.cli.safe import markup


def run_one(
    client: Any, task: dict[str, Any], node: str | None, where: str, timeout: float
) -> dict[str, Any]:
    """``submit --wait --json`` of one task: submitted and waited for in one request
    (``POST /v1/tasks/run``); the notices as :func:`wait_one`'s, on stderr."""
    task_id = markup(task["credentials"]["task_id"])
    try:
        info: dict[str, Any] = client.run(task, node=node, where=where, timeout=timeout)
    except KeyboardInterrupt:
        err.print(
            f"stopped waiting; task {task_id} goes on if the controller accepted it: "
            f"'fades task get {task_id}'",
            highlight=False,
        )
        raise typer.Exit(130) from None
    still_going(info, timeout)
    return info


def still_going(info: dict[str, Any], timeout: float) -> None:
    """Say on stderr (stdout may be JSON) that the wait gave up before the task ended."""
    if info.get("status") in ("accepted", "dispatched"):
        task_id = markup(info.get("task_id"))
        err.print(
            f"[yellow]task {task_id} is still {markup(info.get('status'))} after "
            f"{timeout:g} s[/]; it goes on: 'fades task get {task_id}'",
            highlight=False,
            soft_wrap=True,
        )


def wait_one(client: Any, task_id: str, timeout: float) -> dict[str, Any]:
    """The task once it ended, or as it stands after ``timeout`` (said on stderr, so that
    ``--json`` output stays JSON); Ctrl-C stops waiting, not the task."""
    try:
        info: dict[str, Any] = client.wait(task_id, timeout=timeout)
    except KeyboardInterrupt:
        err.print(
            f"stopped waiting; task {markup(task_id)} goes on: 'fades task get {markup(task_id)}'",
            highlight=False,
        )
        raise typer.Exit(130) from None
    still_going(info, timeout)
    return info
