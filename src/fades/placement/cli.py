"""``fades sim nimbus``: run the Nimbus simulator and write its JSON and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fades.errors import PlacementError
from fades.placement.config import InfraSize, load_config
from fades.placement.plots import plot_all
from fades.placement.simulator import simulate

__all__ = ["sim_app"]

sim_app = typer.Typer(help="Simulators.", no_args_is_help=True, add_completion=False)


@sim_app.callback()
def _group() -> None:
    """Simulators (a callback keeps ``nimbus`` a sub-command even while it is the only one)."""


def _parse_batches(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise typer.BadParameter(f"--batches must be integers separated by commas: {text}") from exc
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter("--batches needs positive device counts")
    return values


@sim_app.command("nimbus")
def nimbus(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file overriding any default.")
    ] = None,
    iterations: Annotated[
        int | None, typer.Option("--iterations", min=1, help="Repetitions (default 100).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Master seed.")] = None,
    batches: Annotated[
        str | None, typer.Option("--batches", help="Device counts, e.g. 500,1000,2000,4000.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("nimbus-sim"),
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Processes running iterations in parallel.")
    ] = 1,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny run: 2 iterations, small batches, 1-2 MT workers.")
    ] = False,
) -> None:
    """Simulate Nimbus placement over generated infrastructures; write JSON and PNGs."""
    overrides: dict[str, Any] = {}
    if quick:
        overrides.update(
            iterations=2,
            batches=(200, 500),
            infrastructures=(
                InfraSize(name="C2", t1=150, t2=50, t3=2).model_dump(),
                InfraSize(name="C3", t1=100, t2=25, t3=0).model_dump(),
            ),
            variants={"workers": (1, 2), "iterations": 1, "devices": 500},
        )
    explicit = {"iterations": iterations, "seed": seed, "batches": _parse_batches(batches)}
    overrides.update({k: v for k, v in explicit.items() if v is not None})
    try:
        cfg = load_config(config, **overrides)
    except PlacementError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = simulate(cfg, workers=workers, progress=progress)

    out.mkdir(parents=True, exist_ok=True)
    (out / "nimbus_results.json").write_text(json.dumps(result, indent=1))
    pngs = plot_all(result, out)

    table = Table(title=f"Nimbus ST, {cfg.iterations} iterations (seed {cfg.seed})")
    for col in ("infra", "devices", "edge %", "cloud %", "local %", "mean ms", "saved %"):
        table.add_column(col, justify="right")
    for c in result["cells"]:
        table.add_row(
            c["infra"],
            str(c["devices"]),
            f"{c['edge'] * 100:.1f}",
            f"{c['cloud'] * 100:.1f}",
            f"{c['local'] * 100:.1f}",
            f"{c['latency_ms']['mean']:.1f}",
            f"{c['saved_pct']:.1f}",
        )
    console.print(table)
    console.print(
        f"simulation {result['simulation_s']:.1f} s; wrote {out / 'nimbus_results.json'} "
        f"and {len(pngs)} figures"
    )


if __name__ == "__main__":
    sim_app()
