"""``fades demo`` and ``fades up``: the guided demo and a local cluster on this machine.

:func:`run_up` keeps a :class:`~fades.cluster.LocalCluster` running until Ctrl-C, SIGTERM
or ``--duration``, printing how to use it and a status line every 10 s.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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
    hub: Annotated[
        int,
        typer.Option(
            help="NATS servers in the hub: 1, or 3 or 5 for a cluster that keeps 3 copies "
            "of every stream, bucket and object store"
        ),
    ] = 1,
    devices: Annotated[
        bool, typer.Option(help="simulate a shop floor: fans, conveyors, warning lights")
    ] = True,
    sites: Annotated[
        bool,
        typer.Option(
            help="give each node its own site: a leaf NATS server with its own JetStream "
            "and MQTT, so the node keeps working while its uplink to the hub is cut"
        ),
    ] = True,
    controllers: Annotated[
        int,
        typer.Option(
            min=1, max=9, help="controller processes serving the same API (each its own port)"
        ),
    ] = 1,
) -> None:
    """A local cluster: embedded NATS, the controller and N node agents. Ctrl-C stops it all."""
    if hub not in (1, 3, 5):
        raise typer.BadParameter(f"a hub has 1, 3 or 5 NATS servers, not {hub}", param_hint="--hub")
    if not days > 0:  # (also refuses NaN)
        raise typer.BadParameter(f"must be more than 0 days, not {days:g}", param_hint="--days")
    if duration is not None and not duration > 0:
        raise typer.BadParameter(
            f"must be more than 0 seconds, not {duration:g} (leave it out to run until Ctrl-C)",
            param_hint="--duration",
        )
    home = home or Path(".fades") / "up"
    refuse_a_running_cluster(home)
    run_up(
        home,
        hub=hub,
        nodes=nodes,
        controllers=controllers,
        duration=duration,
        sensors=sensors,
        days=days,
        devices=devices,
        sites=sites,
        say=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
    )


CLUSTER_LOCK = ".fades-lock"  # fades.cluster.LOCK, named here to spare its imports


def refuse_a_running_cluster(home: Path) -> None:
    """Refuse at once, before the seconds of imports a cluster needs, a folder whose
    cluster is running (the cluster checks again when it takes the lock).

    Raises:
        ClusterInUse: a live process holds the folder's lock; names its pid.
    """
    import fcntl
    import os

    from fades.errors import ClusterInUse

    try:
        fd = os.open(home / CLUSTER_LOCK, os.O_RDONLY)
    except OSError:  # no cluster ever ran here (or not a folder: the cluster says so)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        raise ClusterInUse(
            f"{home} is in use by a running cluster (pid {holder}); stop it "
            "(Ctrl-C) or choose another folder with --home"
        ) from None
    finally:
        os.close(fd)


def run_up(
    home: Path,
    *,
    nodes: int,
    duration: float | None,
    sensors: bool,
    days: float,
    say: Callable[[str], None],
    hub: int = 1,
    devices: bool = True,
    sites: bool = False,
    controllers: int = 1,
) -> None:
    """``fades up``: start a local cluster, print how to use it, stop it all on Ctrl-C."""
    stop = threading.Event()
    starting = [True]  # while the cluster starts, Ctrl-C interrupts the start at once

    def _handler(signum: int, _frame: Any) -> None:
        stop.set()
        if starting[0]:
            starting[0] = False  # a second Ctrl-C does not interrupt the stop below
            raise KeyboardInterrupt

    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    from fades.cluster import LocalCluster

    cluster = LocalCluster(
        home,
        nodes=nodes,
        sensors=sensors,
        days=days,
        say=say,
        hub=hub,
        devices=devices,
        sites=sites,
        controllers=controllers,
    )
    try:
        cluster.prepare()  # refuses a folder another cluster is running from
    except BaseException:
        for s, h in old.items():
            signal.signal(s, h)
        raise
    try:
        cluster.start()
        starting[0] = False
        say("")
        for i, url in enumerate(cluster.urls, 1):
            name = "controller" if len(cluster.urls) == 1 else f"controller{i}"
            say(f"{name:<12} {url}   (docs {url}/docs)")
        say(f"console      {cluster.url}/   (sign in with a token below; docs/console.md)")
        say(f"token        {cluster.token}   (tenant facilities)")
        say(f"token        {cluster.visitor_token}   (tenant visitor: temperature only)")
        for server in cluster.hub.servers:
            mqtt = f"   MQTT {server.host}:{server.mqtt_port}" if server.mqtt_port else ""
            say(f"NATS {server.name:<7} {server.address}{mqtt}")
        if hub > 1:
            say(f"hub          {hub} servers, {cluster.hub.replicas} copies of every stream")
        if hub > 1 or cluster.nats_token:
            say(f"FADES_NATS_URL={cluster.hub.address}")
        if cluster.nats_token:
            say(
                f"FADES_NATS_TOKEN=$(cat {cluster.home / 'nats.token'})   (NATS and MQTT "
                "require it; MQTT takes it as the password)"
            )
        for name in cluster.names:
            say(f"node {name:<7} {', '.join(cluster.rooms(name))}   {cluster.node_home(name)}")
        for name, leaf in cluster.sites.items():
            say(
                f"site {name:<7} NATS {leaf.server.address}   MQTT 127.0.0.1:{leaf.mqtt_port}   "
                f"uplink {leaf.uplink.address}"
            )
        if cluster.sites:
            first = next(iter(cluster.sites.values()))
            say(f"cut a site's uplink: touch {first.dir / UPLINK_CUT}; restore: rm it")
        say("")
        say(
            "try:  export FADES_CONTROLLER="
            + ",".join(cluster.urls)
            + " FADES_TOKEN="
            + cluster.token
        )
        say("      fades task submit examples/tasks/mean_core.yaml --wait")
        if devices:
            say("      fades devices list --kind actuator")
            say(f"      fades devices command {cluster.names[0]}/fan-room1 on")
        say("stop: Ctrl-C" + (f" (or wait {duration:g} s)" if duration else ""))
        t_end = None if duration is None else time.monotonic() + duration
        restarts: dict[str, tuple[float, float]] = {}  # node -> (when, next backoff)
        next_status = time.monotonic() + 2.0
        last_status = ""
        while not stop.is_set():
            if t_end is not None and time.monotonic() >= t_end:
                break
            stop.wait(0.2)
            _supervise(cluster, restarts, say)
            if time.monotonic() >= next_status:  # print only what changed
                next_status = time.monotonic() + 2.0
                try:
                    listed = cluster.client().nodes()
                    down = sorted(n["name"] for n in listed if not n["up"])
                    line = f"status: {len(listed) - len(down)}/{len(listed)} nodes up" + (
                        f" (down: {', '.join(down)})" if down else ""
                    )
                except Exception as exc:  # status is best effort; stopping is not
                    line = f"status: controller did not answer ({type(exc).__name__})"
                if line != last_status:
                    say(line)
                    last_status = line
    finally:
        starting[0] = False
        say("stopping sensors, nodes, controller and NATS ...")
        cluster.stop()
        for s, h in old.items():
            signal.signal(s, h)
        say("stopped")


MAX_BACKOFF = 30.0
UPLINK_CUT = "uplink-cut"  # in a site's folder: while this file exists, its uplink is cut


def _follow_uplink_flags(cluster: Any, say: Callable[[str], None]) -> None:
    """Cut a site's uplink while ``sites/<site>/uplink-cut`` exists; restore it when removed.

    This is how a user of ``fades up`` takes a site offline by hand (docs/sites.md): the
    relay stays ``fades up``'s own child, so Ctrl-C still stops everything.
    """
    for name, leaf in cluster.sites.items():
        flagged = (leaf.dir / UPLINK_CUT).exists()
        if flagged and leaf.uplink_up:
            cluster.cut_uplink(name)
            say(f"site {name}: uplink cut (remove {leaf.dir / UPLINK_CUT} to restore it)")
        elif not flagged and not leaf.uplink_up:
            try:
                cluster.restore_uplink(name)
            except Exception as exc:  # a port taken: say so, try again next round
                say(f"site {name}: uplink not restored: {exc}")
            else:
                say(f"site {name}: uplink restored")


def _supervise(
    cluster: Any, restarts: dict[str, tuple[float, float]], say: Callable[[str], None]
) -> None:
    """Restart a node that exited, with backoff 1 s, 2 s, 4 s ... at most 30 s, and so a
    controller when there are several (the others serve meanwhile); any other process that
    exits (NATS, a single controller, the sensors) still stops the cluster."""
    now = time.monotonic()
    n_ctl = getattr(cluster, "n_controllers", 1)
    controllers = [f"controller{i}" for i in range(1, n_ctl + 1)] if n_ctl > 1 else []
    supervised = list(cluster.names) + controllers
    for name in supervised:
        what = name if name in controllers else f"node {name}"
        proc = cluster.procs.get(name)
        if proc is not None and proc.poll() is None:
            continue
        if proc is not None:  # just exited: schedule a restart
            cluster.procs.pop(name, None)
            _, backoff = restarts.get(name, (0.0, 1.0))
            restarts[name] = (now + backoff, min(backoff * 2, MAX_BACKOFF))
            say(f"{what} exited with {proc.returncode}; restarting in {backoff:g} s")
        elif name in restarts and now >= restarts[name][0]:
            restarts[name] = (float("inf"), restarts[name][1])
            say(f"{what}: restarting")
            if name in controllers:
                cluster.start_controller(int(name.removeprefix("controller")))
            else:
                cluster.start_node(name)
    _follow_uplink_flags(cluster, say)
    others = {k: v for k, v in cluster.procs.items() if k not in supervised}
    saved, cluster.procs = cluster.procs, others
    try:
        cluster._check_alive()
    finally:
        cluster.procs = saved
