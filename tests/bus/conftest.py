"""``connect``: connections to one fabric, a MemoryFabric or a real nats-server (both)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest

from fades.bus.base import Bus
from fades.bus.memory import MemoryBus, MemoryFabric
from fades.bus.nats import NatsBus

Connect = Callable[[], Awaitable[Bus]]


@pytest.fixture(params=["memory", "nats"])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    if request.param == "memory":
        fabric = MemoryFabric()

        async def memory() -> Bus:
            return MemoryBus(fabric)

        yield memory
    else:
        server = request.getfixturevalue("nats_server")

        async def nats() -> Bus:
            return await NatsBus.connect(server.url, name="contract", timeout=10)

        yield nats
