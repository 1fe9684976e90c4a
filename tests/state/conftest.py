"""Fixtures for stateful functions: checkpoint stores over SQLite, the in-memory bus and a
real nats-server (the KV store bridged from a background event loop, as in the agent)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fades.state.kv import KvCheckpoints
from fades.state.local import LocalCheckpoints

KEY = b"k" * 32


class LoopThread:
    """An event loop running in a daemon thread (what the node agent's loop is to its workers)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def drain() -> None:  # tasks left behind (a client's reader) end here, not
            # in a finalizer on a closed loop during some later garbage collection
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in left:
                t.cancel()
            await asyncio.gather(*left, return_exceptions=True)

        try:
            self.run(drain(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


def kv_store(lt: LoopThread, bus: Any, key: bytes = KEY) -> KvCheckpoints:
    async def _open() -> KvCheckpoints:
        return await KvCheckpoints.open(bus, key)

    return lt.run(_open())  # type: ignore[no-any-return]


@pytest.fixture(params=["local", "kv-memory", "kv-nats"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """Two handles on one checkpoint store (two nodes' views of it)."""
    if request.param == "local":
        a = LocalCheckpoints(tmp_path / "state.db", KEY)
        b = LocalCheckpoints(tmp_path / "state.db", KEY)
        yield a, b
        a.close()
        b.close()
        return
    lt = LoopThread()
    buses: list[Any] = []
    try:
        if request.param == "kv-memory":
            from fades.bus.memory import MemoryBus, MemoryFabric

            fabric = MemoryFabric()
            buses = [MemoryBus(fabric), MemoryBus(fabric)]
        else:
            from fades.bus.nats import NatsBus

            server = request.getfixturevalue("nats_server")
            for name in ("a", "b"):
                buses.append(lt.run(NatsBus.connect(server.url, name=f"state-{name}", timeout=30)))
        yield kv_store(lt, buses[0]), kv_store(lt, buses[1])
    finally:
        for bus in buses:
            lt.run(bus.close())
        lt.stop()
