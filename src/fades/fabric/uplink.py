"""A site's uplink: a small TCP relay between a site's leaf server and the hub, one you can cut.

``python -m fades.fabric.uplink LISTEN TARGET`` accepts connections on ``LISTEN``
(``host:port``) and pipes each one to ``TARGET`` (``host:port``, or several separated by
commas: the first that answers). A site's leaf server points its ``leafnodes`` remote at
``LISTEN``, so the relay process *is* the site's link to the hub: stopping it (SIGTERM or
SIGKILL) drops the link at once, and starting it again on the same port restores it (the
leaf server reconnects by itself, about once a second). The relay ends by itself when the
process that started it is gone (checked every second), so a killed test or benchmark does
not leave a site's link running.

:class:`Uplink` runs the relay as a child process for :class:`fades.fabric.leaf.EmbeddedLeaf`
and for tests (``cut()`` / ``restore()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

from fades.aiostop import wait_for
from fades.errors import FabricError
from fades.fabric.server import free_port, port_open

#: bytes read per chunk when piping
_CHUNK = 64 * 1024
#: how often the relay checks that the process that started it is still there
_PARENT_CHECK_S = 1.0


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, not {text!r}")
    return host.strip("[]"), int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(listen: str, targets: list[str]) -> None:
    host, port = _hostport(listen)
    dests = [_hostport(t) for t in targets]

    async def _client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for th, tp in dests:
            try:
                up_r, up_w = await wait_for(asyncio.open_connection(th, tp), 5.0)
                break
            except (OSError, TimeoutError):
                continue
        else:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))

    server = await asyncio.start_server(_client, host, port, reuse_address=True)
    print(f"uplink {listen} -> {','.join(targets)} ready", flush=True)
    parent = os.getppid()
    async with server:
        # a relay whose starter died (a killed test or benchmark) ends too
        while os.getppid() == parent:
            await asyncio.sleep(_PARENT_CHECK_S)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m fades.fabric.uplink LISTEN TARGET[,TARGET...]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args[0], args[1].split(",")))
    return 0


class Uplink:
    """The relay as a child process: ``start()``, ``cut()`` (kill it), ``restore()``.

    Args:
        target: the hub's leafnode address(es), ``host:port`` or ``nats-leaf://host:port``,
            comma-separated.
        port: the relay's listen port on 127.0.0.1 (a free one if None; kept across cuts).
    """

    def __init__(self, target: str, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.targets = [t.split("://", 1)[-1] for t in target.split(",") if t.strip()]
        if not self.targets:
            raise ValueError("an uplink needs at least one target host:port")
        for t in self.targets:
            _hostport(t)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        #: monotonic time of the last cut (None while up)
        self.cut_at: float | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> Uplink:
        if self.up:
            return self
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fades.fabric.uplink", self.address, ",".join(self.targets)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise FabricError(
                    f"uplink relay on {self.address} exited with {self.proc.returncode} "
                    "(port taken?)"
                )
            if time.monotonic() > deadline:
                self.cut()
                raise FabricError(f"uplink relay did not open {self.address} in {timeout} s")
            time.sleep(0.02)
        self.cut_at = None
        return self

    def cut(self) -> None:
        """Kill the relay: the leaf loses the hub at once (every piped connection drops)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self.cut_at is None:
            self.cut_at = time.monotonic()

    def restore(self, timeout: float = 15.0) -> Uplink:
        """Start the relay again on the same port."""
        return self.start(timeout)

    stop = cut


if __name__ == "__main__":
    raise SystemExit(main())
