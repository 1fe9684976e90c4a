"""``fades node``: Run this machine as an edge node agent on the fabric."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fades.errors import FadesError

node_app = typer.Typer(
    help="Run this machine as an edge node agent on the fabric.", no_args_is_help=True
)


def _labels(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected k=v, got {item!r}", param_hint="--label")
        out[key.strip()] = value.strip()
    return out


FOLDER_LOCK = "node.lock"  # flock()ed by the `fades node start` that serves the folder


def _hold_folder(folder: Path, name: str) -> int:
    """Lock the node folder for this process's life (the kernel drops the lock when it
    exits, even by SIGKILL): a second agent on one folder would resume and run the tasks
    the first holds. Returns the lock's descriptor, to keep open.

    Raises:
        NodeFolderError: another live process holds the folder; names it and its pid.
    """
    from fades.errors import NodeFolderError

    fd = os.open(folder / FOLDER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 256, 0).decode(errors="replace").split() or ["?"]
        os.close(fd)
        who = f"node {holder[1]} (pid {holder[0]})" if len(holder) > 1 else f"pid {holder[0]}"
        raise NodeFolderError(
            f"{folder} (--data) is in use by {who}; stop it, or pass another --data"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {name}\n".encode(), 0)
    return fd


@node_app.command("start")
def start(
    name: Annotated[str, typer.Option("--name", help="node name (letters, digits, _ and -)")],
    nats: Annotated[
        str | None, typer.Option("--nats", help="NATS URL (default: $FADES_NATS_URL)")
    ] = None,
    nats_creds: Annotated[
        Path | None,
        typer.Option("--nats-creds", help="NATS .creds file (default: $FADES_NATS_CREDS)"),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="node folder (default: $FADES_HOME or ~/.fades)"),
    ] = None,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", help="seconds between heartbeats", min=0.05)
    ] = 2.0,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="k=v label (repeatable)")
    ] = None,
    capacity: Annotated[
        int | None, typer.Option("--capacity", help="tasks run at once (default: node.yaml or 2)")
    ] = None,
    ingest: Annotated[
        bool, typer.Option("--ingest/--no-ingest", help="ingest MQTT sensor readings")
    ] = True,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="seconds to wait for NATS at start", min=0.1)
    ] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log more")] = False,
) -> None:
    """Register this node, serve its tasks and queries, and heartbeat until Ctrl-C."""
    from fades.cli.common import node_folder
    from fades.fabric.connect import FabricSettings
    from fades.node.agent import NodeAgent, run_agent

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    labels = _labels(label or [])
    try:  # a folder that is a file is said before the fabric is dialled
        data = node_folder(data, create=True, option="--data")
        lock = _hold_folder(data, name)  # held until this process exits
    except FadesError as exc:
        print(f"error ({exc.kind}): {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2) from None
    settings = FabricSettings.from_env(nats, str(nats_creds) if nats_creds else None)

    def ready(agent: NodeAgent) -> None:
        print(f"node {agent.name} ready", flush=True)

    try:
        run_agent(
            name,
            data,
            settings,
            heartbeat_s=heartbeat,
            labels=labels,
            capacity=capacity,
            ingest=ingest,
            on_ready=ready,
            connect_timeout=connect_timeout,
        )
    except FadesError as exc:
        print(f"error ({exc.kind}): {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2) from None
    except ValueError as exc:  # a bad option value (e.g. --capacity 0)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2) from None
    finally:
        os.close(lock)
