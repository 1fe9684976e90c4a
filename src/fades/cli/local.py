"""``fades demo`` and ``fades up``: the guided demo and a local cluster on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fades.cli.common import console, progress_bar, spinner


def demo(
    home: Annotated[
        Path | None, typer.Option(help="demo node folder (default: ./.fades/demo)")
    ] = None,
    days: Annotated[float, typer.Option(help="days of testbed data")] = 7.0,
    rate: Annotated[float, typer.Option(help="seconds between readings")] = 30.0,
    examples: Annotated[Path | None, typer.Option(help="folder with functions/ and tasks/")] = None,
    nodes: Annotated[
        int, typer.Option(min=0, max=16, help="node agents in the cluster part (0: skip it)")
    ] = 3,
) -> None:
    """The main job: one node end to end, then offloading across a local cluster."""
    from fades.demo import run_demo

    run_demo(
        home=home or Path(".fades") / "demo",
        days=days,
        rate=rate,
        examples=examples,
        console=console,
        progress=progress_bar,
        spinner=spinner,
        cluster_nodes=nodes,
    )


def up(
    nodes: Annotated[int, typer.Option(min=1, max=32, help="node agents to start")] = 3,
    home: Annotated[
        Path | None, typer.Option(help="cluster folder, made fresh (default: ./.fades/up)")
    ] = None,
    days: Annotated[float, typer.Option(help="days of history per node")] = 1.0,
    sensors: Annotated[
        bool, typer.Option(help="stream live readings over MQTT for every node's rooms")
    ] = True,
    duration: Annotated[
        float | None, typer.Option(help="stop by itself after this many seconds")
    ] = None,
) -> None:
    """A local cluster: embedded NATS, the controller and N node agents. Ctrl-C stops it all."""
    from fades.cluster import run_up

    run_up(
        home or Path(".fades") / "up",
        nodes=nodes,
        duration=duration,
        sensors=sensors,
        days=days,
        say=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
    )
