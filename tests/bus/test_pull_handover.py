"""A pull consumer hands a lone message over as soon as it arrives, and still takes a backlog
in batches (real nats-server).

nats-py's ``fetch(n)`` that got its first message can wait up to its timeout for the other
``n - 1``; so :meth:`NatsBus.consume` pulls one message, then as many as the consumer reports
pending behind it (at most ``batch``) in one pull."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fades.aiostop import wait_for
from fades.bus.nats import NatsBus
from fades.fabric.connect import FabricSettings


def test_a_lone_message_is_pulled_alone_and_a_backlog_in_batches(nats_server: Any) -> None:
    async def scenario() -> None:
        pub = await NatsBus.connect(FabricSettings(url=nats_server.url), name="pub")
        sub = await NatsBus.connect(FabricSettings(url=nats_server.url), name="sub")
        asked: list[int] = []
        real = sub.js.pull_subscribe

        async def spied(*args: Any, **kwargs: Any) -> Any:
            psub = await real(*args, **kwargs)
            fetch = psub.fetch

            async def counted(batch: int = 1, timeout: float | None = 5) -> Any:
                asked.append(batch)
                return await fetch(batch, timeout=timeout)

            psub.fetch = counted
            return psub

        sub.js.pull_subscribe = spied  # type: ignore[method-assign]
        try:
            await pub.stream("WQ", ["wq.>"])
            for i in range(40):  # a backlog before anyone pulls
                await pub.publish("wq.a", b"x", msg_id=f"b{i}")
            got: asyncio.Queue[float] = asyncio.Queue()

            async def read() -> None:
                async for d in sub.consume("WQ", "c", "wq.>", batch=16):
                    await d.ack()
                    got.put_nowait(time.monotonic())

            reader = asyncio.create_task(read())
            for _ in range(40):
                await wait_for(got.get(), 30)
            pulls_for_backlog = len(asked)
            assert max(asked) == 16 and pulls_for_backlog <= 6, asked  # 1, then 16, 16, 7
            # a lone message: asked for alone, so nothing waits for a batch to fill
            await asyncio.sleep(0.2)
            before = len(asked)
            await pub.publish("wq.a", b"y", msg_id="lone")
            await wait_for(got.get(), 30)
            assert asked[before:] and all(n == 1 for n in asked[before:]), asked
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        finally:
            await pub.close()
            await sub.close()

    asyncio.run(scenario())
