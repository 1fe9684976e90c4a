"""``fades bench``: experiments that reproduce the research papers' figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(
    help="Experiments that reproduce the research papers' figures.", no_args_is_help=True
)


def _sizes(text: str) -> list[float]:
    try:
        sizes = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated megabit values, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise typer.BadParameter("payload sizes must be positive")
    return sizes


@bench_app.command("locality")
def locality(
    sizes: Annotated[
        str, typer.Option(help="payloads in megabits (raw readings shipped), comma-separated")
    ] = "1.5,5,15,50",
    reps: Annotated[
        int,
        typer.Option(
            min=1,
            help="repetitions per size (cloud sizes slower than 15 s on the uplink run once)",
        ),
    ] = 3,
    out: Annotated[Path, typer.Option(help="folder for locality.json and the PNGs")] = Path(
        "benchmarks/results"
    ),
    no_cap: Annotated[
        bool, typer.Option("--no-cap", help="loopback only: no namespace, no capped link")
    ] = False,
    loopback: Annotated[
        bool, typer.Option(help="also run on loopback (uncapped) for comparison")
    ] = True,
    quick: Annotated[bool, typer.Option(help="sizes 1.5,5 Mb and 2 repetitions")] = False,
    up_mbit: Annotated[float, typer.Option(help="uplink cap (edge -> cloud), Mbit/s")] = 0.574,
    down_mbit: Annotated[float, typer.Option(help="downlink cap (cloud -> edge), Mbit/s")] = 45.38,
    keep: Annotated[bool, typer.Option(help="keep the work folder (logs, node data)")] = False,
) -> None:
    """Edge vs cloud by payload over a really capped link (FADES figures 5 and 6).

    Builds a network namespace for the cloud (nats-server, controller) joined to this host
    (the edge node and its data) by a veth pair capped with tc tbf, runs the same function at
    the edge and in the cloud for each payload, and writes locality.json plus two PNGs.
    Needs root for the capped link; without it the capped run is skipped and says why.
    """
    from fades.bench.locality import QUICK_SIZES, Settings, run
    from fades.bench.report import table

    chosen = list(QUICK_SIZES) if quick and sizes == "1.5,5,15,50" else _sizes(sizes)
    settings = Settings(
        sizes_mbit=chosen,
        reps=min(reps, 2) if quick else reps,
        out=out,
        cap=not no_cap,
        loopback=loopback or no_cap,
        up_mbit=up_mbit,
        down_mbit=down_mbit,
        keep=keep,
    )
    res = run(settings)
    typer.echo(table(res))
    typer.echo(f"took {res['duration_s']:.0f} s")
    if not res["ok"]:
        raise typer.Exit(1)
