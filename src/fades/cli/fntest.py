"""``fades fn test FILE.py``: run a function once in a real sandbox on sample data.

No signing key, no install, no task file: :func:`fades.functions.trial.run_local` does the
work; this module turns options into its arguments and prints the outcome with the one
renderer (:func:`fades.cli.render.show_outcome`). Exit status: 0 if the function returned,
1 if it failed (error, traceback and logs shown), 2 for a usage error or source that does
not build (the same one-line error as ``fades fn build``).
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

# The node's defaults for a task (fades.functions.trial has the same; importing it here
# would load wasmtime and numpy into every ``fades`` run, even ``--help``).
DEFAULT_MEMORY_MIB = 64
DEFAULT_TIME_BUDGET_MS = 5000

__all__ = ["parse_params", "test"]


def parse_params(items: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; ``v`` is JSON (``3``, ``true``, ``[1,2]``), else taken as a string."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def test(
    source: Annotated[Path, typer.Argument(help="the function: a .py file (or .wat/.wasm)")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="a parameter KEY=VALUE (VALUE is JSON); repeatable"),
    ] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="sample data from this CSV file of readings")
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="sample data from this node folder's store (readings.db)"),
    ] = None,
    days: Annotated[float, typer.Option(min=0.001, max=30, help="days of testbed data")] = 1.0,
    rate: Annotated[
        float, typer.Option(min=1, help="seconds between testbed readings of one sensor")
    ] = 60.0,
    seed: Annotated[int, typer.Option(help="testbed random seed")] = 0,
    location: Annotated[
        list[str] | None,
        typer.Option("--location", "-l", help="only this room (e.g. room1); repeatable"),
    ] = None,
    sensor_type: Annotated[
        list[str] | None,
        typer.Option("--sensor-type", "-s", help="only this sensor type; repeatable"),
    ] = None,
    last_seconds: Annotated[
        float | None, typer.Option(min=0.001, help="only readings from the last N seconds")
    ] = None,
    name: Annotated[
        str, typer.Option(help="the dataset's name: the function reads data[NAME]")
    ] = "readings",
    allow_empty: Annotated[
        bool, typer.Option(help="run the function even when no rows match")
    ] = False,
    entry: Annotated[str, typer.Option(help="entry function of a Python source")] = "main",
    memory_mib: Annotated[
        int, typer.Option(min=1, max=4096, help="memory cap (MiB)")
    ] = DEFAULT_MEMORY_MIB,
    time_budget_ms: Annotated[
        int, typer.Option(min=1, max=3_600_000, help="time budget (ms)")
    ] = DEFAULT_TIME_BUDGET_MS,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
) -> None:
    """Run a function once in a real sandbox on sample data (no key, install or task file)."""
    from fades.cli.common import spinner
    from fades.cli.render import print_json, show_outcome
    from fades.functions.trial import Sample, run_local

    if csv is not None and home is not None:
        raise typer.BadParameter("give --csv or --home, not both", param_hint="--csv")
    params = parse_params(param or [])
    sample = Sample(
        source="csv" if csv is not None else "home" if home is not None else "testbed",
        path=csv if csv is not None else home,
        days=days,
        rate_s=rate,
        seed=seed,
        location=tuple(location or ()),
        sensor_type=tuple(sensor_type or ()),
        last_seconds=last_seconds,
        name=name,
        allow_empty=allow_empty,
    )
    # the spinner writes to stdout: never into --json, nor into a pipe or a file
    busy = not as_json and sys.stdout.isatty()
    with spinner(f"running {source.name} in a sandbox") if busy else nullcontext():
        outcome = run_local(
            source,
            sample=sample,
            params=params,
            entry=entry,
            memory_mib=memory_mib,
            time_budget_ms=time_budget_ms,
        )
    if as_json:
        print_json(outcome.model_dump(mode="json"))
    else:
        show_outcome(outcome, title=str(source))
    if not outcome.ok:
        raise typer.Exit(1)
