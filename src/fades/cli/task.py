"""``fades task``: run a task on this node, or submit it to a controller.

Both print the task's outcome with :func:`fades.cli.render.show_outcome` (or ``--json``).
Exit status of every ``fades task`` command (docs/cli.md):

- 0: everything asked for was accepted (and, with ``--wait``, ended done);
- 1: something was accepted or ran, but not everything ended well: a task that ran and
  failed, one still running when ``--wait`` gave up, or some tasks of a batch refused while
  others were accepted (those go on: do not resubmit the whole batch);
- 2: nothing was accepted: a bad command line, a task file that does not load, a controller
  that cannot be reached, or a controller that refused every task (fix it and resubmit);
- 130: Ctrl-C while waiting (the accepted tasks go on).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fades.cli.common import ControllerOpt, HomeOpt, JsonOpt, TokenOpt, console, err, node_folder
from fades.cli.render import print_json, show_outcome
from fades.cli.safe import markup
from fades.cli.waiting import run_one, wait_one

task_app = typer.Typer(
    help="Run tasks on this node, or submit them to the controller.", no_args_is_help=True
)

ENDED_WELL = ("done", "local")  # a task's statuses that exit 0 (local: placed on its device)
TaskFileArg = Annotated[Path, typer.Argument(help="task in YAML or JSON")]


@task_app.command("run")
def run(
    task_file: TaskFileArg,
    json_out: JsonOpt = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 300.0,
    home: HomeOpt = None,
) -> None:
    """Offload one task to this node and print its result and timing breakdown.

    Ctrl-C cancels the task (a persistent one after its current invocation), says so and
    exits 130."""
    task_id: str | None = None
    try:
        from fades.node import Node
        from fades.task import load_task

        task = load_task(task_file)
        h = node_folder(home)
        with Node(h) as node:
            # one_shot: this process is the node that runs the task, so a persistent task
            # ends (cancelled) with it and is never revived by a later, unrelated run on the
            # folder; on Ctrl-C run() cancels it and closing the node waits for that
            try:
                rec = node.orchestrator.run(task, timeout=timeout, one_shot=True)
            except KeyboardInterrupt:
                task_id = task.id if node.orchestrator.exists(task.id) else None
                raise
            note = invocation_note(node.orchestrator, rec)
    except KeyboardInterrupt:
        if task_id is not None:
            err.print(
                f"interrupted: task {markup(task_id)} cancelled; nothing left running "
                f"(see 'fades task get {markup(task_id)}')",
                highlight=False,
                soft_wrap=True,
            )
        else:
            err.print("interrupted before the task was accepted; nothing was started")
        raise typer.Exit(130) from None
    if json_out:
        print_json(rec.to_dict())
    else:
        show_outcome(rec.to_dict(), title=str(task_file))
    if note is not None:
        err.print(markup(note[0]), highlight=False, soft_wrap=True)
    if rec.status != "done" or (note is not None and note[1]):
        raise typer.Exit(1)


def invocation_note(orc: Any, rec: Any) -> tuple[str, bool] | None:
    """For a persistent task some of whose invocations failed: one line naming how many and
    the last failure's error (its summary has only counts), and whether every one failed.
    None for any other task (an ephemeral function's own result is never read as one)."""
    result, task_id = rec.result, rec.id
    if (rec.task.get("function") or {}).get("mode") != "persistent":
        return None
    if not isinstance(result, dict) or not isinstance(result.get("invocations"), int):
        return None
    failed = result.get("failed")
    if not isinstance(failed, int) or failed <= 0:
        return None
    bad = [i for i in orc.invocations(task_id) if not i["ok"]]
    last = f"; the last (invocation {bad[-1]['seq']}): {bad[-1]['error']}" if bad else ""
    line = f"{failed} of {result['invocations']} invocation(s) failed{last}"
    return line, failed >= result["invocations"]


@task_app.command("submit")
def submit(
    task_files: Annotated[list[Path], typer.Argument(help="tasks in YAML or JSON (one or many)")],
    controller: ControllerOpt,
    token: TokenOpt,
    node: Annotated[
        str | None, typer.Option(help="run on this node (default: placed by data locality)")
    ] = None,
    cloud: Annotated[
        bool, typer.Option("--cloud", help="run in the cloud on data pulled from the node")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait for the results and show them")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 300.0,
    json_out: JsonOpt = False,
) -> None:
    """Submit tasks to the controller (to a named node, auto-placed, or to the cloud).

    One file: one request. Several: one batch request per 1000 tasks and, with --wait, one
    result stream for all their outcomes. Exit status 2 if nothing was accepted (every task
    refused), 1 if some were accepted but a task was refused, failed or was still running
    when --wait gave up, 0 otherwise."""
    from fades.client import FadesClient
    from fades.task import load_task

    where = "cloud" if cloud else "edge"
    tasks = [load_task(f).model_dump(mode="json") for f in task_files]
    with FadesClient(controller, token) as client:
        if len(tasks) == 1 and wait and json_out:  # nothing to show before the end
            ran = run_one(client, tasks[0], node, where, timeout)
            print_json(ran)
            if ran.get("status") not in ENDED_WELL:
                raise typer.Exit(1)
            return
        if len(tasks) == 1:
            receipt = client.submit(tasks[0], node=node, where=where)
            if not json_out:
                _show_receipt(receipt)
            info = wait_one(client, receipt["task_id"], timeout) if wait else None
            if json_out:
                print_json(info or receipt)
            elif info is not None:
                show_outcome(info, title=str(task_files[0]))
            if info is not None and info.get("status") not in ENDED_WELL:
                raise typer.Exit(1)
            return
        receipts = client.submit_many(tasks, node=node, where=where)
        ids = [r["task_id"] for r in receipts if r.get("accepted")]
        try:
            outcomes = (
                {o["task_id"]: o for o in client.results(ids, timeout=timeout)} if wait else {}
            )
        except KeyboardInterrupt:
            err.print(
                f"stopped waiting; the {len(ids)} accepted task(s) go on: see 'fades task list'",
                highlight=False,
            )
            raise typer.Exit(130) from None
    _show_many(task_files, receipts, outcomes, json_out)
    status = batch_status(receipts, outcomes, waited=wait)
    if status:
        raise typer.Exit(status)


def batch_status(
    receipts: list[dict[str, Any]], outcomes: dict[str, dict[str, Any]], *, waited: bool
) -> int:
    """The exit status of a batch submit: 2 when no task was accepted (as for one refused
    file), 1 when some were but one was refused, failed or had not ended when the wait gave
    up, else 0."""
    accepted = [r for r in receipts if r.get("accepted")]
    if not accepted:
        return 2
    if len(accepted) < len(receipts):
        return 1
    if waited:
        for r in accepted:
            out = outcomes.get(r["task_id"])
            if r.get("status") != "local" and (out is None or out.get("status") != "done"):
                return 1
    return 0


def _show_receipt(receipt: dict[str, Any]) -> None:
    if receipt.get("status") == "local":
        head = f"run locally on device [bold]{markup(receipt.get('node'))}[/]"
    elif receipt.get("queued"):  # its node is offline (when_offline: queue)
        console.print(
            f"task {markup(receipt.get('task_id'))} [yellow]queued[/]: "
            f"{markup(receipt.get('queued'))}",
            highlight=False,
            soft_wrap=True,
        )
        return
    else:
        where, on = markup(receipt.get("where")), markup(receipt.get("node"))
        head = f"accepted: {where} on node [bold]{on}[/]"
    console.print(
        f"task {markup(receipt.get('task_id'))} {head} ({markup(receipt.get('placement'))})",
        highlight=False,
        soft_wrap=True,
    )


def _show_many(
    files: list[Path],
    receipts: list[dict[str, Any]],
    outcomes: dict[str, dict[str, Any]],
    js: bool,
) -> None:
    rows = []
    for f, r in zip(files, receipts, strict=True):
        row = {"file": str(f)} | r
        if r.get("accepted") and r.get("task_id") in outcomes:
            row["outcome"] = outcomes[r["task_id"]]
        rows.append(row)
    if js:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("file", "task", "node", "status", "result or reason")
    for row in rows:
        out = row.get("outcome")
        if not row.get("accepted"):
            status, detail = "[red]refused[/]", f"{row.get('error_kind')}: {row.get('detail')}"
        elif out is None and row.get("queued"):
            status, detail = "[yellow]queued[/]", str(row["queued"])
        elif out is None:
            status, detail = "accepted", str(row.get("placement", ""))
        elif out.get("status") == "done":
            status, detail = "[green]done[/]", json.dumps(out.get("result"))[:80]
        else:
            status, detail = "[red]failed[/]", f"{out.get('error_kind')}: {out.get('error')}"
        table.add_row(
            markup(row["file"]),
            markup(row.get("task_id") or ""),
            markup(row.get("node") or ""),
            status,
            markup(detail),
        )
    console.print(table)


RemoteOpt = Annotated[
    str | None,
    typer.Option(
        "--controller",
        envvar="FADES_CONTROLLER",
        help="ask this controller ($FADES_CONTROLLER); without it, this node's folder",
    ),
]
OptionalTokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="FADES_TOKEN", help="bearer token ($FADES_TOKEN)")
]
TaskIdArg = Annotated[str, typer.Argument(help="the task's id")]


def _client(controller: str, token: str | None) -> Any:
    from fades.client import FadesClient
    from fades.errors import Unauthorized

    if not token:
        raise Unauthorized(f"a token is needed for {controller}: pass --token or set FADES_TOKEN")
    return FadesClient(controller, token)


def _task(task_id: str, controller: str | None, token: str | None, home: Path | None) -> Any:
    """One task as a dict: the controller's view with ``controller``, else the node folder's."""
    if controller:
        with _client(controller, token) as client:
            return client.get(task_id)
    from fades.node import Node

    with Node(node_folder(home), autostart=False) as node:
        rec = node.orchestrator.get(task_id)
        info = rec.to_dict()
        note = invocation_note(node.orchestrator, rec)
    if note is not None:
        err.print(markup(note[0]), highlight=False, soft_wrap=True)
    return info


@task_app.command("get")
def get(
    task_id: TaskIdArg,
    controller: RemoteOpt = None,
    token: OptionalTokenOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    wait: Annotated[bool, typer.Option("--wait", help="wait until it ends (controller)")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 300.0,
) -> None:
    """Show one task: status, result or error with its traceback and output, timing."""
    if wait and not controller:
        raise typer.BadParameter(
            "needs --controller URL (or FADES_CONTROLLER)", param_hint="--wait"
        )
    if wait:
        with _client(str(controller), token) as client:
            info = wait_one(client, task_id, timeout)
    else:
        info = _task(task_id, controller, token, home)
    if json_out:
        print_json(info)
    else:
        show_outcome(info)
        show_decision(info)
    if wait and info.get("status") not in ENDED_WELL:
        raise typer.Exit(1)


def _num(v: Any, digits: int = 1) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "-"


def show_decision(info: dict[str, Any]) -> None:
    """Print why the task went where it went: the placer's candidates and the rejected."""
    from rich.table import Table

    if info.get("placement"):
        console.print(f"  placement: {markup(info['placement'])}", highlight=False, soft_wrap=True)
    if info.get("status") == "local":
        console.print("  [yellow]run locally[/]: the placer sent this task back to its device")
    d = info.get("decision")
    if not isinstance(d, dict):
        return
    found = d.get("candidates")
    cands: list[Any] = found if isinstance(found, list) else []
    budget = f"budget {_num(d.get('eps_t_ms'))} ms" if d.get("eps_t_ms") is not None else ""
    table = Table(
        "", "site", "where", "latency ms", "energy mJ", "score", "why",
        title=f"placement decision ({markup(d.get('placer'))}{', ' + budget if budget else ''})",
    )  # fmt: skip
    for c in cands[:30]:
        if not isinstance(c, dict):
            continue
        chosen = c.get("target") == d.get("target") and c.get("where") == d.get("where")
        why = c.get("note") or ("" if c.get("within_budget", True) else "over budget")
        if "load" in c:
            why = why or f"load {_num(c.get('load'), 2)}"
        table.add_row(
            "[green]*[/]" if chosen else "",
            markup(c.get("target"), 40),
            markup(c.get("where")),
            _num(c.get("latency_ms")),
            _num(c.get("energy_mj")),
            _num(c.get("score"), 3),
            markup(why, 80),
        )
    refused = d.get("rejected")
    rejected: list[Any] = refused if isinstance(refused, list) else []
    for r in rejected[:30]:
        if isinstance(r, dict):
            reason = markup(r.get("reason"), 80)
            table.add_row("x", markup(r.get("target"), 40), "", "", "", "", f"rejected: {reason}")
    if d.get("rejected_more"):
        table.add_row("x", f"... {_num(d['rejected_more'], 0)} more", "", "", "", "", "rejected")
    console.print(table)
    for key in ("hysteresis", "fallback"):
        if d.get(key):
            console.print(f"  {key}: {markup(d[key])}", highlight=False, soft_wrap=True)


@task_app.command("logs")
def logs(
    task_id: TaskIdArg,
    controller: RemoteOpt = None,
    token: OptionalTokenOpt = None,
    home: HomeOpt = None,
) -> None:
    """Print a task's captured function output (stdout and stderr) and traceback."""
    from rich.markup import escape

    from fades.cli.safe import tail

    info = _task(task_id, controller, token, home)
    shown = [key for key in ("logs", "traceback") if info.get(key)]
    for key in shown:
        console.print(escape(tail(str(info[key]))), highlight=False, soft_wrap=True)
    if not shown:
        status = markup(info.get("status"), 32)
        console.print(f"task {markup(task_id)} ({status}): no output or traceback captured")


@task_app.command("list")
def list_tasks(
    controller: RemoteOpt = None,
    token: OptionalTokenOpt = None,
    home: HomeOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """List tasks, newest first (this node's, or your tenant's at the controller)."""
    from rich.table import Table

    if controller:
        with _client(controller, token) as client:
            rows: list[dict[str, Any]] = client.tasks(limit=limit)
    else:
        from fades.node import Node

        with Node(node_folder(home), autostart=False) as node:
            rows = [rec.to_dict() for rec in node.orchestrator.store.list(limit=limit)]
    if json_out:
        print_json(rows)
        return
    table = Table("task", "tenant", "status", "node", "error")
    for r in rows:
        table.add_row(
            markup(r.get("task_id") or r.get("id")),
            markup(r.get("tenant")),
            markup(r.get("status")),
            markup(r.get("node") or ""),
            markup(r.get("error_kind") or ""),
        )
    console.print(table)


@task_app.command("cancel")
def cancel(
    task_id: TaskIdArg,
    controller: RemoteOpt = None,
    token: OptionalTokenOpt = None,
    home: HomeOpt = None,
) -> None:
    """Cancel a task: one not started never runs, a persistent one stops after its current
    invocation."""
    if controller:
        with _client(controller, token) as client:
            client.cancel(task_id)
    else:
        from fades.node import Node

        with Node(node_folder(home), autostart=False) as node:
            node.orchestrator.cancel(task_id)
    console.print(f"task {markup(task_id)}: cancel requested", highlight=False)


def nodes(
    controller: ControllerOpt,
    token: TokenOpt,
    json_out: JsonOpt = False,
) -> None:
    """The cluster's nodes as the controller's registry sees them."""
    from rich.table import Table

    with _client(controller, token) as client:
        rows: list[dict[str, Any]] = client.nodes()
    if json_out:
        print_json(rows)
        return
    table = Table("node", "up", "heartbeat age s", "running", "queued", "data", "runtimes")
    for r in rows:
        load = r.get("load") or {}
        held = sorted({f"{d.get('location')}/{d.get('sensor_type')}" for d in r.get("data") or []})
        table.add_row(
            markup(r.get("name")),
            ("[green]up[/]" + (" [yellow]draining[/]" if r.get("draining") else ""))
            if r.get("up")
            else f"[red]down[/] {markup(r.get('down_reason') or '')}",
            f"{float(r.get('heartbeat_age_s') or 0):.1f}",
            markup(load.get("running", "")),
            markup(load.get("queued", "")),
            markup(", ".join(held[:6]) + (" …" if len(held) > 6 else "")),
            markup(", ".join(r.get("runtimes") or [])),
        )
    console.print(table)
