"""``fades sensors``: simulated IoT sensors over MQTT (the testbed's rooms, in real time)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import Annotated

import typer

from fades.cli.common import console, report
from fades.cli.safe import markup

sensors_app = typer.Typer(help="Simulated IoT sensors over MQTT.", no_args_is_help=True)


@sensors_app.command("simulate")
def simulate(
    mqtt: Annotated[
        str, typer.Option("--mqtt", help="MQTT broker HOST:PORT (the NATS MQTT gateway)")
    ],
    node: Annotated[str, typer.Option("--node", help="node whose rooms these sensors are in")],
    rooms: Annotated[int, typer.Option(help="number of rooms", min=1)] = 2,
    first_room: Annotated[int, typer.Option("--first-room", help="first room number", min=1)] = 1,
    rate: Annotated[float, typer.Option(help="seconds between two readings of a device")] = 1.0,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: until Ctrl-C)")
    ] = None,
    qos: Annotated[int, typer.Option(help="MQTT QoS (0, 1 or 2)", min=0, max=2)] = 0,
    seed: Annotated[int, typer.Option(help="seed of the testbed models", min=0)] = 0,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="seconds to wait for the broker")
    ] = 5.0,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="FADES_NATS_TOKEN",
            help="the broker's NATS token, sent as the MQTT password ($FADES_NATS_TOKEN; "
            "a 'fades up' cluster keeps it in FOLDER/nats.token)",
        ),
    ] = None,
) -> None:
    """Publish the testbed's sensors of NODE's rooms over MQTT, in real time.

    Every room has one device per sensor type; each publishes one reading every RATE seconds
    to sensors/NODE/roomK/TYPE as JSON {"ts", "value", "device", "unit"}.
    """
    from fades.sensors.simulator import SensorSimulator, parse_hostport

    host, port = parse_hostport(mqtt)
    sim = SensorSimulator(
        host,
        port,
        node,
        rooms=rooms,
        first_room=first_room,
        rate_s=rate,
        qos=qos,
        seed=seed,
        connect_timeout_s=connect_timeout,
        password=token,
    )
    sim.connect()

    rooms_s = ", ".join(sim.office.rooms)
    console.print(
        f"simulating {len(sim.devices)} sensors of node {markup(node)} ({markup(rooms_s)}) -> "
        f"{markup(sim.url)}, "
        f"one reading per sensor every {rate:g} s (qos {qos})"
        + (f" for {duration:g} s" if duration is not None else "; Ctrl-C stops"),
        soft_wrap=True,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    live = sys.stderr.isatty()

    def progress(count: int) -> None:
        if live:
            elapsed = max(time.monotonic() - started, 1e-9)
            state = "" if sim.connected else "  [broker away, reconnecting]"
            sys.stderr.write(
                f"\r{count} readings published in {elapsed:.1f} s ({count / elapsed:.1f}/s)"
                f"{state}\x1b[K"
            )
            sys.stderr.flush()

    result: list[int] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(sim.run(duration, stop=stop, progress=progress))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=target, name="fades-sim", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        worker.join(10.0)
    if live:
        sys.stderr.write("\n")
    if failure:
        report(failure[0])
        raise typer.Exit(1)
    count = result[0] if result else sim.stats["published"]
    elapsed = time.monotonic() - started
    dropped = sim.stats["dropped"]
    console.print(
        f"published {count} readings in {elapsed:.1f} s"
        + (f" ({dropped} dropped while the broker was away)" if dropped else "")
    )
