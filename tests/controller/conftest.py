"""A test bed for the controller: one background event loop that hosts the controller (with
its HTTP API on a real loopback socket) and fake nodes, driven from synchronous tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fades.client import FadesClient
from fades.controller import Controller
from fades.controller.server import serve
from fades.fabric import EmbeddedNats
from fades.functions.keys import SigningKey, public_pem

from .fakenode import FakeNode

T = TypeVar("T")

FACILITIES = "token-facilities-0123"
VISITOR = "token-visitor-0123456"
TOKENS = {FACILITIES: "facilities", VISITOR: "visitor"}


class Bed:
    """Controller + fake nodes in a loop thread; the test talks HTTP to the controller."""

    def __init__(self, nats: EmbeddedNats, root: Path, key: SigningKey) -> None:
        self.nats = nats
        self.root = root
        self.key = key
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.controller: Controller | None = None
        self.url = ""
        self.nodes: list[FakeNode] = []
        self._stop: asyncio.Event | None = None
        self._serving: Any = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def controller_home(self) -> Path:
        home = self.root / "controller"
        (home / "trusted").mkdir(parents=True, exist_ok=True)
        (home / "trusted" / f"{self.key.id}.pub").write_bytes(public_pem(self.key.public))
        return home

    def start_controller(self, down_after: float = 10.0, **kwargs: Any) -> Controller:
        """Start a controller on the bed's home and serve its API on a free port."""
        ctl = Controller(
            self.controller_home(),
            nats=self.nats.url,
            tokens=TOKENS,
            down_after=down_after,
            cloud_capacity=1,
            **kwargs,
        )
        ready: asyncio.Future[str] = self.loop.create_future()

        async def go() -> None:
            self._stop = asyncio.Event()
            self._serving = asyncio.ensure_future(
                serve(ctl, "127.0.0.1", 0, on_ready=ready.set_result, stop=self._stop)
            )
            done, _ = await asyncio.wait(
                {self._serving, asyncio.ensure_future(asyncio.shield(ready))},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self._serving in done:
                await self._serving  # it failed at start: raise why

        self.run(go())
        self.url = ready.result()
        self.controller = ctl
        return ctl

    def stop_controller(self) -> None:
        if self.controller is None:
            return

        async def go() -> None:
            assert self._stop is not None
            self._stop.set()
            await self._serving

        self.run(go())
        self.controller = None

    def node(self, name: str, **kwargs: Any) -> FakeNode:
        node = FakeNode(self.nats.url, name, **kwargs)
        self.run(node.start())
        self.nodes.append(node)
        return node

    def client(self, token: str = FACILITIES) -> FadesClient:
        return FadesClient(self.url, token, timeout=20.0)

    def close(self) -> None:
        try:
            self.stop_controller()
            for n in self.nodes:
                self.run(n.stop(clean=False))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def bed(nats_server: EmbeddedNats, tmp_path: Path, signing_key: SigningKey) -> Iterator[Bed]:
    b = Bed(nats_server, tmp_path, signing_key)
    try:
        yield b
    finally:
        b.close()
