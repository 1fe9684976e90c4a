"""Serve the HTTP API and the controller in one asyncio loop (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn

from fades.aiostop import wait_for
from fades.controller.api import create_app
from fades.controller.service import Controller
from fades.errors import ControllerError

#: seconds between the HTTP server's housekeeping ticks (its Date header, whether to stop);
#: uvicorn's own loop ticks every 0.1 s, ten wake-ups a second of an idle controller
TICK_S = 1.0


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # the caller owns SIGINT/SIGTERM; uvicorn would re-raise them after its shutdown
        yield

    def exit(self) -> None:
        """Stop serving now (not at the next tick)."""
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        # uvicorn's loop, ticking every TICK_S (each tick refreshes the Date header, as
        # uvicorn does every tenth of its ticks) and woken at once by exit()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            with contextlib.suppress(TimeoutError):
                await wait_for(self._exit.wait(), TICK_S)
            counter = (counter + 10) % 864000
            should_exit = await self.on_tick(counter)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port) to ``(host, port)``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ControllerError(f"--http {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ControllerError naming the address and why."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # inherited by accepted connections: without it a keep-alive client waits ~40 ms per
    # request (Nagle against delayed ACKs)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ControllerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(
    controller: Controller,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start ``controller``, serve its API until ``stop`` is set, then stop both.

    ``on_ready`` gets the base URL (with the real port when ``port`` is 0) once the socket
    accepts requests.
    """
    sock = bind(host, port)
    try:
        await controller.start()
    except BaseException:
        sock.close()
        raise
    try:
        app = create_app(controller)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                await serving
                raise ControllerError(f"the HTTP server on {host}:{port} stopped at start")
            await asyncio.sleep(0.01)
        real_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        if on_ready is not None:
            on_ready(f"http://{shown}:{real_port}")
        if stop is not None:
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            server.exit()
            app.state.closing = True  # open console feeds end (fades.console.live)
        await serving
    finally:
        sock.close()
        await controller.stop()
