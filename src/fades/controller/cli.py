"""``fades controller``: Run the controller (registry, repository, HTTP API)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fades.errors import FadesError

controller_app = typer.Typer(
    help="Run the controller (registry, repository, HTTP API).", no_args_is_help=True
)


@controller_app.command("start")
def start(
    nats: Annotated[
        str | None, typer.Option(help="NATS URL (default: $FADES_NATS_URL or localhost)")
    ] = None,
    nats_creds: Annotated[
        Path | None, typer.Option(help="NATS .creds file (default: $FADES_NATS_CREDS)")
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="controller folder (default: $FADES_HOME or ~/.fades)"),
    ] = None,
    http: Annotated[str, typer.Option(help="HOST:PORT to serve the API on")] = "127.0.0.1:8080",
    tokens: Annotated[
        Path | None, typer.Option(help="tokens file (default: HOME/tokens.yaml, made if absent)")
    ] = None,
    down_after: Annotated[
        float, typer.Option(help="seconds without a heartbeat before a node is marked down")
    ] = 10.0,
    placer: Annotated[
        str,
        typer.Option(help="how tasks are placed: locality (least loaded data holder) or nimbus"),
    ] = "locality",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve the HTTP API, watch the node registry, dispatch tasks and collect results.

    Prints 'controller ready http://HOST:PORT' once serving; stops on SIGINT or SIGTERM.
    A port already in use is refused before the folder is touched (no tokens.yaml made).
    """
    from fades.cli.common import node_folder
    from fades.controller.auth import Tokens, create_tokens_file
    from fades.controller.server import bind, parse_listen, serve
    from fades.controller.service import Controller
    from fades.fabric.connect import FabricSettings
    from fades.placers import PLACERS

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    if placer not in PLACERS:
        print(
            f"error: --placer {placer!r}: expected one of {', '.join(PLACERS)}",
            file=sys.stderr,
            flush=True,
        )
        raise typer.Exit(2)
    try:
        host, port = parse_listen(http)
        _check_port(bind, host, port, http)  # before anything is written in the folder
        h = node_folder(home, create=True, what="controller")
        path = tokens or h / "tokens.yaml"
        if tokens is None and not path.exists():
            create_tokens_file(path)
            print(f"created {path} with a token for tenant 'facilities'", flush=True)
        controller = Controller(
            h,
            nats=FabricSettings.from_env(nats, str(nats_creds) if nats_creds else None),
            tokens=Tokens.load(path),
            down_after=down_after,
            placer=placer,
        )

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await serve(
                controller,
                host,
                port,
                on_ready=lambda url: print(f"controller ready {url}", flush=True),
                stop=stop,
            )

        from fades.loops import runner

        runner()(main())
    except FadesError as exc:
        print(f"error ({exc.kind}): {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2) from None


def _check_port(bind: Callable[[str, int], socket.socket], host: str, port: int, http: str) -> None:
    """Refuse, naming the address, when ``--http`` cannot be listened on: bind it, let go."""
    from fades.errors import ControllerError

    try:
        bind(host, port).close()
    except ControllerError as exc:
        raise ControllerError(
            f"{exc}; stop what uses it, or pass another --http than {http} (port 0: any free port)"
        ) from None
