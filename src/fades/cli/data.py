"""``fades data``: generate, load and summarise the node's local sensor data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fades.cli.common import HomeOpt, console, node_folder, progress_bar
from fades.cli.safe import markup

data_app = typer.Typer(help="The node's local sensor data.", no_args_is_help=True)


@contextmanager
def readings(home: Path | None, *, create: bool = False) -> Iterator[tuple[Path, Any]]:
    """The node's SQLite store, opened and closed around a command; ``create``: a command
    that adds data may set a new node folder up, the others need an existing one."""
    from fades.broker import SQLiteConnector

    h = node_folder(home, create=create)
    store = SQLiteConnector(h / "readings.db")
    try:
        yield h / "readings.db", store
    finally:
        store.close()


@data_app.command("generate")
def generate(
    days: Annotated[float, typer.Option(help="days of readings")] = 2.0,
    rate: Annotated[float, typer.Option(help="seconds between readings of one sensor")] = 10.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same values)")] = 0,
    replace: Annotated[
        bool, typer.Option("--replace", help="first delete every reading of the testbed's sensors")
    ] = False,
    testbed: Annotated[
        str, typer.Option(help="'office' (five rooms) or 'road' (lampposts, black ice)")
    ] = "office",
    segments: Annotated[int, typer.Option(help="road: segments")] = 3,
    lampposts: Annotated[int, typer.Option(help="road: lampposts per segment")] = 4,
    lamp: Annotated[
        list[str] | None,
        typer.Option("--lamp", help="road: only this lamppost (e.g. seg1-lamp2); repeatable"),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Generate a testbed into the node's SQLite store: the five-room office, or a road of
    lampposts (with its icing episodes written to road_truth.json beside the readings).

    Running it again replaces the readings of the range it covers (it never doubles them).
    """
    from datetime import UTC, datetime, timedelta

    from fades.errors import DatasetError
    from fades.testbed import populate

    for value, flag in ((days, "--days"), (rate, "--rate")):
        if not value > 0:  # (also refuses NaN) before a progress bar of nothing is drawn
            raise typer.BadParameter(f"must be more than 0, not {value:g}", param_hint=flag)
    # The readings end now, so that tasks asking for "the last N seconds" find them.
    start = datetime.now(UTC) - timedelta(days=days)
    if testbed == "road":
        from fades.testbed.road import RoadSim, populate_road, write_truth

        sim = RoadSim(days, seed, start, segments=segments, lampposts=lampposts)
        with readings(home, create=True) as (path, store):
            n = populate_road(store, sim, rate, lamp or None)
            truth = write_truth(path.parent, sim)
            console.print(
                f"wrote {n:,} readings to {path} ({store.count():,} in total); "
                f"icing episodes in {truth}",
                markup=False,
            )
        return
    if testbed != "office":
        raise DatasetError(f"unknown testbed {testbed!r}; known: office, road")
    with readings(home, create=True) as (path, store):
        with progress_bar() as (progress, task_bar):
            n = populate(
                store,
                days,
                rate,
                seed,
                start,
                progress=lambda d, t: progress(task_bar, d, t),
                replace=replace,
            )
        console.print(f"wrote {n:,} readings to {path} ({store.count():,} in total)", markup=False)


@data_app.command("clear")
def clear(
    location: Annotated[
        list[str] | None, typer.Option("--location", "-l", help="only this location")
    ] = None,
    sensor_type: Annotated[
        list[str] | None, typer.Option("--sensor-type", "-s", help="only this sensor type")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="needed to delete every reading (no filter given)")
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Delete readings from the node's store (all of them only with --yes)."""
    from fades.errors import FadesError

    if not (location or sensor_type or yes):
        raise FadesError("this deletes every reading: pass --yes, or --location/--sensor-type")
    with readings(home) as (path, store):
        n = store.clear(location=location or None, sensor_type=sensor_type or None)
        console.print(f"deleted {n:,} readings from {path} ({store.count():,} left)", markup=False)


@data_app.command("load")
def load(
    dataset: Annotated[str, typer.Argument(help="'river-occupancy' or a CSV file of readings")],
    location: Annotated[str, typer.Option(help="location for the river data set")] = "lab",
    home: HomeOpt = None,
) -> None:
    """Load a real data set into the node's store."""
    from fades.broker import CSVConnector

    with readings(home, create=True) as (path, store):
        if dataset == "river-occupancy":
            from fades.testbed import load_river_occupancy

            n = load_river_occupancy(store, location=location)
        else:
            if not Path(dataset).exists():
                raise typer.BadParameter(
                    f"no data set or CSV file named {dataset!r}: give 'river-occupancy' "
                    "(a real data set) or the path of a CSV file of readings",
                    param_hint="DATASET",
                )
            n = store.write(CSVConnector(dataset).load())
        console.print(f"loaded {n:,} readings into {path}", markup=False)


@data_app.command("info")
def info(home: HomeOpt = None) -> None:
    """Summarise the data this node holds (names came from sensors: printed escaped)."""
    from datetime import UTC, datetime

    def fmt(ts: float | None) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"

    with readings(home) as (_, store):
        table = Table("location", "sensor type", "unit", "rows", "from", "to")
        for s in store.describe():
            table.add_row(
                markup(s.location, 200, oneline=True),
                markup(s.sensor_type, 200, oneline=True),
                markup(s.unit, 200, oneline=True),
                f"{s.rows:,}",
                fmt(s.first_ts),
                fmt(s.last_ts),
            )
        console.print(table)
