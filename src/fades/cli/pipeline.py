"""``fades pipeline``: plan, submit and watch pipelines at a controller.

A spec file is validated here first (a malformed one prints its problems, each naming its
stage, and exits 2, as ``fades task`` does), then sent to the controller, which pins the
functions and plans the stages on the nodes it knows. Everything the controller or a node
said is printed through :mod:`fades.cli.safe`; ``--json`` prints the API's answer as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fades.cli.common import ControllerOpt, JsonOpt, TokenOpt, console
from fades.cli.render import print_json
from fades.cli.safe import markup, result_text
from fades.errors import PipelineNotFound

pipeline_app = typer.Typer(
    help="Pipelines of functions across nodes: plan, submit, watch, cancel.",
    no_args_is_help=True,
)

SpecArg = Annotated[Path, typer.Argument(help="pipeline spec in YAML or JSON")]
NameArg = Annotated[str, typer.Argument(help="the pipeline's name")]
WaitTimeout = Annotated[float, typer.Option(help="seconds to wait with --wait")]


def _client(controller: str, token: str) -> Any:
    from fades.client import FadesClient

    return FadesClient(controller, token)


def _spec(path: Path) -> dict[str, Any]:
    from fades.pipelines.spec import load_pipeline

    return load_pipeline(path).to_dict()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ms(value: Any) -> str:
    return f"{value * 1e3:.1f}" if isinstance(value, (int, float)) else "-"


def _plan_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    queued = any("queued" in r for r in rows)
    cols = ["stage", "role", "instance", "node", "mode", "why"] + (["queued"] if queued else [])
    table = Table(*cols, title=markup(title) if title else None)
    colour = {"run": "green", "skip": "yellow", "wait": "red"}
    for r in rows:
        mode = str(r.get("mode"))
        cells = [
            markup(r.get("stage"), 64, oneline=True),
            markup(r.get("role"), 16),
            markup("" if r.get("instance") == "_" else r.get("instance"), 64, oneline=True),
            markup(r.get("node"), 64, oneline=True),
            f"[{colour.get(mode, 'white')}]{markup(mode, 8)}[/]",
            markup(r.get("reason"), 300, oneline=True),
        ]
        if queued:
            cells.append(markup("-" if r.get("queued") is None else r.get("queued")))
        table.add_row(*cells)
    return table


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))[:1000]
    except (TypeError, ValueError, RecursionError):
        return "(see --json)"


def _runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table("run", "status", "took ms", "result or reason")
    colour = {"done": "green", "running": "yellow"}
    for r in runs:
        status = str(r.get("status"))
        shown = r.get("reason") or ""
        if not shown and r.get("results"):
            shown = _compact(r["results"])
        took = r.get("duration_s")
        table.add_row(
            markup(r.get("run"), 32),
            f"[{colour.get(status, 'red')}]{markup(status, 16)}[/]",
            _ms(took),
            markup(shown, 300, oneline=True),
        )
    return table


def _timeline(info: dict[str, Any]) -> None:
    status = str(info.get("status"))
    colour = {"done": "green", "running": "yellow"}.get(status, "red")
    console.print(
        f"run [bold]{markup(info.get('run'))}[/] of {markup(info.get('pipeline'))}: "
        f"[{colour}]{markup(status)}[/] after {_ms(info.get('duration_s'))} ms",
        highlight=False,
        soft_wrap=True,
    )
    if info.get("reason"):
        console.print(f"  {markup(info['reason'])}", highlight=False, soft_wrap=True)
    table = Table(
        "stage",
        "node",
        "status",
        "at ms",
        "queue",
        "start",
        "compute",
        "hop",
        "bytes in/out",
        title="timeline (ms)",
    )
    for s in info.get("stages") or []:
        stage = str(s.get("stage"))
        if s.get("instance") not in (None, "_"):
            stage += f"/{s['instance']}"
        status = str(s.get("status"))
        if s.get("error"):
            status += f": {s.get('error_kind') or 'error'}: {s['error']}"
        table.add_row(
            markup(stage, 64, oneline=True),
            markup(s.get("node"), 64, oneline=True),
            markup(status, 200, oneline=True),
            _ms(s.get("since_start_s")),
            _ms(s.get("queue_s")),
            _ms(s.get("start_s")),
            _ms(s.get("compute_s")),
            _ms(s.get("hop_s")),
            f"{int(s.get('bytes_in') or 0):,}/{int(s.get('bytes_out') or 0):,}",
        )
    console.print(table)
    if info.get("results"):
        console.print("finale result:", highlight=False)
        console.print(markup(result_text(info["results"])), highlight=False)


def _finish(client: Any, name: str, runs: list[str], timeout: float, json_out: bool) -> None:
    """Wait for ``runs``, print them, exit 1 unless all are done."""
    ended = client.wait_runs(name, runs, timeout=timeout)
    if json_out:
        print_json(ended)
    else:
        console.print(_runs_table(ended))
    if any(r.get("status") != "done" for r in ended):
        raise typer.Exit(1)


@pipeline_app.command("plan")
def plan(
    spec_file: SpecArg, controller: ControllerOpt, token: TokenOpt, json_out: JsonOpt = False
) -> None:
    """Show where each stage would run now, and why. Nothing is deployed."""
    spec = _spec(spec_file)
    with _client(controller, token) as client:
        answer = client.plan_pipeline(spec)
    if json_out:
        print_json(answer)
        return
    console.print(_plan_table(answer.get("rows") or [], f"plan of {answer.get('pipeline')}"))
    _queue_at(answer)


def _queue_at(info: dict[str, Any]) -> None:
    """Where the pipeline's queue lives, and so whether it survives an uplink cut."""
    at = info.get("queue_at")
    if isinstance(at, dict) and at.get("where"):
        console.print(f"  queue: {markup(at['where'], 400)}", highlight=False, soft_wrap=True)
    for warning in info.get("warnings") or []:
        console.print(f"  [yellow]warning: {markup(warning, 400)}[/]", highlight=False)


@pipeline_app.command("submit")
def submit(
    spec_file: SpecArg,
    controller: ControllerOpt,
    token: TokenOpt,
    replace: Annotated[
        bool, typer.Option("--replace", help="replace an active pipeline of that name")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait for the runs it starts (on-demand) and show them")
    ] = False,
    timeout: WaitTimeout = 300.0,
    json_out: JsonOpt = False,
) -> None:
    """Deploy a pipeline; an on-demand one starts its runs."""
    spec = _spec(spec_file)
    with _client(controller, token) as client:
        receipt = client.submit_pipeline(spec, replace=replace)
        if json_out and not wait:
            print_json(receipt)
            return
        if not json_out:
            name, runs = receipt.get("pipeline"), receipt.get("runs") or []
            console.print(
                f"pipeline [bold]{markup(name)}[/] version {markup(receipt.get('version'))} "
                f"deployed; {len(runs)} run(s) started",
                highlight=False,
                soft_wrap=True,
            )
            if receipt.get("detail"):
                console.print(f"  [yellow]{markup(receipt['detail'])}[/]", highlight=False)
            console.print(_plan_table(receipt.get("rows") or []))
            _queue_at(receipt)
            if receipt.get("queue_moved"):
                console.print(
                    f"  [yellow]{markup(receipt['queue_moved'], 400)}[/]", highlight=False
                )
        if wait and receipt.get("runs"):
            _finish(client, receipt["pipeline"], receipt["runs"], timeout, json_out)


@pipeline_app.command("run")
def run(
    name: NameArg,
    controller: ControllerOpt,
    token: TokenOpt,
    count: Annotated[int, typer.Option(help="how many runs to start")] = 1,
    wait: Annotated[bool, typer.Option("--wait", help="wait for them and show them")] = False,
    timeout: WaitTimeout = 300.0,
    json_out: JsonOpt = False,
) -> None:
    """Start more runs of an active pipeline."""
    with _client(controller, token) as client:
        try:
            started = client.start_runs(name, count)
        except PipelineNotFound as exc:
            if Path(name).suffix.lower() in (".yaml", ".yml", ".json") or Path(name).is_file():
                raise PipelineNotFound(
                    f"{exc}: 'fades pipeline run' takes the name of a submitted pipeline; "
                    f"to deploy the file, 'fades pipeline submit {name}'"
                ) from None
            raise
        if wait and started.get("runs"):
            _finish(client, name, started["runs"], timeout, json_out)
            return
    if json_out:
        print_json(started)
        return
    console.print(
        f"{len(started.get('runs') or [])} run(s) of {markup(name)} started: "
        f"{markup(', '.join(started.get('runs') or []), 400)}",
        highlight=False,
        soft_wrap=True,
    )
    if started.get("detail"):
        console.print(f"  [yellow]{markup(started['detail'])}[/]", highlight=False)


@pipeline_app.command("list")
def list_pipelines(controller: ControllerOpt, token: TokenOpt, json_out: JsonOpt = False) -> None:
    """Your pipelines, newest first."""
    with _client(controller, token) as client:
        rows = client.pipelines()
    if json_out:
        print_json(rows)
        return
    table = Table("pipeline", "state", "version", "mode", "stages", "done", "failed", "running")
    for r in rows:
        runs = r.get("runs") or {}
        table.add_row(
            markup(r.get("pipeline"), 64),
            markup(r.get("state"), 16),
            markup(r.get("version")),
            markup(r.get("mode"), 16),
            markup(r.get("stages")),
            *(markup(runs.get(s, 0)) for s in ("done", "failed", "running")),
        )
    console.print(table)


@pipeline_app.command("status")
def status(
    name: NameArg, controller: ControllerOpt, token: TokenOpt, json_out: JsonOpt = False
) -> None:
    """A pipeline's state, plan (each stage's node and mode), runs and queue depths."""
    with _client(controller, token) as client:
        info = client.pipeline(name)
    if json_out:
        print_json(info)
        return
    runs = info.get("runs") or {}
    counts = ", ".join(f"{markup(k)} {markup(v)}" for k, v in runs.items())
    queue = info.get("queue") or {}
    console.print(
        f"pipeline [bold]{markup(info.get('pipeline'))}[/] (version {markup(info.get('version'))})"
        f": {markup(info.get('state'))}; runs: {counts}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"  queue: at most {markup(queue.get('max_runs'))} runs per stage and "
        f"{_int(queue.get('max_bytes')):,} bytes for the whole pipeline; when full: "
        f"{markup(queue.get('when_full'))}",
        highlight=False,
    )
    if info.get("reason"):
        console.print(f"  {markup(info['reason'])}", highlight=False, soft_wrap=True)
    depth = {(q.get("stage"), q.get("instance")): q.get("queued") for q in info.get("queues", [])}
    rows = [
        r | {"queued": depth.get((r.get("stage"), r.get("instance")))}
        for r in info.get("plan") or []
    ]
    console.print(_plan_table(rows))
    _queue_at(info)
    for f in info.get("failovers") or []:
        console.print(
            f"  re-planned (version {markup(f.get('version'))}): {markup(f.get('moved'), 400)}",
            highlight=False,
            soft_wrap=True,
        )


@pipeline_app.command("runs")
def runs(
    name: NameArg,
    controller: ControllerOpt,
    token: TokenOpt,
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="show this run's timeline")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many runs, newest first")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """A pipeline's runs, or one run's timeline (node, queue, start, compute, hop, bytes)."""
    with _client(controller, token) as client:
        info: Any = (
            client.pipeline_run(name, run_id) if run_id else client.pipeline_runs(name, limit)
        )
    if json_out:
        print_json(info)
    elif run_id:
        _timeline(info)
    else:
        console.print(_runs_table(info))


@pipeline_app.command("cancel")
def cancel(name: NameArg, controller: ControllerOpt, token: TokenOpt) -> None:
    """Stop a pipeline: its nodes stop its stages and triggers; running runs end cancelled."""
    with _client(controller, token) as client:
        client.cancel_pipeline(name)
    console.print(f"pipeline {markup(name)}: cancelled", highlight=False)
