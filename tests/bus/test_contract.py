"""One contract for every Bus: the same tests against NatsBus (a real nats-server) and
MemoryBus.

Each test gets ``connect``: an async factory of connections to one fabric (one server, or one
MemoryFabric), so a test can play two parties (a node and a controller).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import pytest
from tests.bus.conftest import Connect

from fades.aiostop import wait_for
from fades.bus.base import Delivery, KvEntry
from fades.bus.memory import matches
from fades.bus.nats import NatsBus
from fades.errors import (
    AccessDenied,
    FabricConflict,
    FabricError,
    FadesError,
    NodeUnavailable,
    QueueFull,
)


def run(coro: Awaitable[Any]) -> Any:
    # generous: a loaded 2-core CI machine can take many seconds to connect and route
    return asyncio.run(wait_for(coro, 240))  # type: ignore[arg-type]


async def take(it: Any, timeout: float = 10.0) -> Any:
    return await wait_for(anext(it), timeout)


async def only_sentinels(it: Any, span: float) -> list[bytes]:
    """Take deliveries until the ``b"sentinel"`` message (published by the caller, nak'ed
    here again and again) has been delivered over at least ``span`` seconds of the bus's own
    redelivery; returns every other payload seen meanwhile (expected: none)."""
    others: list[bytes] = []
    first: float | None = None
    while True:
        d = await take(it)
        if d.data != b"sentinel":
            others.append(d.data)
            await d.ack()
            continue
        now = time.monotonic()
        first = now if first is None else first
        if now - first >= span:
            await d.ack()
            return others
        await d.nak(delay=0.2)


def test_subject_matching() -> None:
    assert matches("fades.task.>", "fades.task.n1")
    assert matches("fades.*.n1", "fades.task.n1")
    assert not matches("fades.task.>", "fades.task")
    assert not matches("fades.task.*", "fades.task.n1.x")
    assert matches("a.b", "a.b") and not matches("a.b", "a.c")


def test_publish_consume_ack_and_msg_id_dedup(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            await bus.stream("T", ["t.>"])
            await bus.stream("T", ["t.>"])  # idempotent
            await bus.publish("t.a", b"one", msg_id="m1")
            await bus.publish("t.a", b"one again", msg_id="m1")  # dropped
            await bus.publish("t.a", b"two", msg_id="m2")
            await bus.publish("t.b", b"other subject", msg_id="m3")
            it = bus.consume("T", "ca", "t.a").__aiter__()
            d1: Delivery = await take(it)
            assert (d1.subject, d1.data, d1.msg_id, d1.delivered) == ("t.a", b"one", "m1", 1)
            await d1.ack()
            d2 = await take(it)
            assert (d2.data, d2.msg_id) == (b"two", "m2")
            await d2.ack()
            await bus.publish("t.a", b"end", msg_id="m4")
            end = await take(it)  # the duplicate and t.b were not delivered before it
            assert end.data == b"end"
            await end.ack()
            await it.aclose()
            # a new consumer of the same durable starts where the old one stopped
            it = bus.consume("T", "cb", "t.b").__aiter__()
            assert (await take(it)).data == b"other subject"
            await it.aclose()
        finally:
            await bus.close()

    run(body())


def test_publish_without_a_stream_fails(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            with pytest.raises(FabricError):
                await bus.publish("nowhere.x", b"x", msg_id="a")
        finally:
            await bus.close()

    run(body())


def test_nak_and_missing_ack_redeliver_term_does_not(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            await bus.stream("R", ["r.>"])
            await bus.publish("r.x", b"payload", msg_id="r1")
            it = bus.consume("R", "cr", "r.x", ack_wait=1.0).__aiter__()
            d = await take(it)
            assert d.delivered == 1
            await d.nak()
            d = await take(it)
            assert (d.data, d.delivered) == (b"payload", 2)
            t0 = time.monotonic()  # not acked: comes back after ack_wait
            d = await take(it)
            assert d.delivered == 3 and time.monotonic() - t0 >= 0.5
            await d.in_progress()
            await d.term()
            await bus.publish("r.x", b"sentinel", msg_id="r-sentinel")
            assert await only_sentinels(it, 2.5) == []  # the termed one never came back
            await it.aclose()
            # an un-acked message survives its consumer going away
            await bus.publish("r.x", b"later", msg_id="r2")
            it = bus.consume("R", "cr", "r.x", ack_wait=1.0).__aiter__()
            assert (await take(it)).data == b"later"
            await it.aclose()
            it = bus.consume("R", "cr", "r.x", ack_wait=1.0).__aiter__()
            d = await take(it)
            assert d.data == b"later" and d.delivered >= 2
            await d.ack()
            await it.aclose()
        finally:
            await bus.close()

    run(body())


def test_kv_revisions_conflicts_delete_keys_and_watch(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            kv = await bus.kv("contract_kv")
            assert await kv.get("a") is None
            assert await kv.keys() == []
            r1 = await kv.put("a", b"1")
            e = await kv.get("a")
            assert e == KvEntry("a", b"1", r1)
            with pytest.raises(FabricConflict):
                await kv.create("a", b"x")
            r2 = await kv.update("a", b"2", r1)
            assert r2 > r1
            with pytest.raises(FabricConflict):
                await kv.update("a", b"3", r1)  # fenced: a stale revision
            rb = await kv.create("b", b"B")
            assert sorted(await kv.keys()) == ["a", "b"]
            watch = kv.watch().__aiter__()
            seen = [await take(watch), await take(watch), await take(watch)]
            assert seen[:2] == [KvEntry("a", b"2", r2), KvEntry("b", b"B", rb)]
            assert seen[2] is None  # caught up
            await kv.delete("b")
            assert await kv.get("b") is None
            assert await kv.keys() == ["a"]
            gone = await take(watch)
            assert (gone.key, gone.value) == ("b", b"")
            await kv.create("b", b"again")  # a deleted key can be created again
            back = await take(watch)
            assert (back.key, back.value) == ("b", b"again")
            await watch.aclose()
            same = await bus.kv("contract_kv")  # re-opening keeps the data
            assert (await same.get("a")) == KvEntry("a", b"2", r2)
        finally:
            await bus.close()

    run(body())


def test_object_store_put_get_names_delete(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            store = await bus.objects("contract_obj")
            assert await store.names() == []
            assert await store.get("x") is None
            big = bytes(range(256)) * 4096  # 1 MiB
            await store.put("x.0", big)
            await store.put("y", b"")
            assert await store.get("x.0") == big
            assert await store.get("y") == b""
            assert await store.names() == ["x.0", "y"]
            await store.delete("y")
            await store.delete("never")
            assert await store.names() == ["x.0"]
        finally:
            await bus.close()

    run(body())


def test_request_serve_errors_and_no_responder(connect: Connect) -> None:
    async def body() -> None:
        server, client = await connect(), await connect()
        try:

            async def echo(data: bytes) -> bytes:
                if data == b"deny":
                    raise AccessDenied("tenant t may not read that")
                if data == b"bug":
                    raise RuntimeError("boom")
                if data.startswith(b"big"):
                    return bytes(range(256)) * 8192  # 2 MiB: above one message
                return b"echo:" + data

            await server.serve("svc.echo", echo)
            assert await client.request("svc.echo", b"hi") == b"echo:hi"
            assert await client.request("svc.echo", b"") == b"echo:"
            assert await client.request("svc.echo", b"big") == bytes(range(256)) * 8192
            with pytest.raises(AccessDenied, match="may not read"):
                await client.request("svc.echo", b"deny")
            with pytest.raises(FadesError, match="boom"):
                await client.request("svc.echo", b"bug")
            assert await client.request("svc.echo", b"still") == b"echo:still"
            t0 = time.monotonic()
            with pytest.raises(NodeUnavailable):
                await client.request("svc.nobody", b"x", timeout=0.5)
            assert time.monotonic() - t0 < 5
            await server.close()  # its responders go with it
            with pytest.raises(NodeUnavailable):
                await client.request("svc.echo", b"x", timeout=0.5)
        finally:
            await client.close()
            await server.close()

    run(body())


def test_subscribe_and_send(connect: Connect) -> None:
    async def body() -> None:
        a, b = await connect(), await connect()
        try:
            got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

            async def listener(subject: str, data: bytes) -> None:
                await got.put((subject, data))

            await a.subscribe("sensors.n1.*.temp", listener)
            if isinstance(a, NatsBus):
                await a.nc.flush()
            await b.send("sensors.n1.lab.temp", b"21.5")
            await b.send("sensors.n1.lab.hum", b"40")  # not matched
            await b.send("sensors.n1.hall.temp", b"19")
            assert await wait_for(got.get(), 60) == ("sensors.n1.lab.temp", b"21.5")
            assert await wait_for(got.get(), 60) == ("sensors.n1.hall.temp", b"19")
        finally:
            await a.close()
            await b.close()

    run(body())


def test_a_closed_bus_refuses_work_and_ends_its_consumers(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        await bus.stream("C", ["c.>"])
        it = bus.consume("C", "cc", "c.x").__aiter__()
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.1)
        await bus.close()
        with pytest.raises((StopAsyncIteration, FabricError)):
            await wait_for(pending, 10)
        with pytest.raises(FabricError):
            await bus.publish("c.x", b"x")

    run(body())


async def publish_when_room(bus: Any, subject: str, data: bytes, msg_id: str) -> None:
    """Publish, retrying while a bound refuses it (an ack reaches the server a moment later)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await bus.publish(subject, data, msg_id=msg_id)
            return
        except QueueFull:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_bounded_stream_discard_new_refuses_with_queue_full(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            await bus.stream("QN", ["qn.>"], max_msgs_per_subject=2, discard="new")
            await bus.stream("QN", ["qn.>"], max_msgs_per_subject=2, discard="new")  # same
            await bus.publish("qn.a", b"1", msg_id="n1")
            await bus.publish("qn.a", b"2", msg_id="n2")
            await bus.publish("qn.b", b"other subject", msg_id="n3")  # per subject
            with pytest.raises(QueueFull, match="QN"):
                await bus.publish("qn.a", b"3", msg_id="n4")
            it = bus.consume("QN", "cq", "qn.a").__aiter__()
            d = await take(it)
            assert d.data == b"1"
            assert await bus.pending("QN", "cq") == 2  # one in flight, one waiting
            await d.ack()
            await publish_when_room(bus, "qn.a", b"3", "n5")  # room again once the ack lands
            assert [(await take(it)).data, (await take(it)).data] == [b"2", b"3"]
            assert await bus.pending("QN", "nobody") is None
            await it.aclose()
        finally:
            await bus.close()

    run(body())


def test_bounded_stream_discard_old_drops_the_oldest(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            await bus.stream("QO", ["qo.>"], max_msgs_per_subject=2, discard="old")
            for i in range(5):
                await bus.publish("qo.a", f"m{i}".encode(), msg_id=f"o{i}")
            it = bus.consume("QO", "co", "qo.a").__aiter__()
            got = []
            for _ in range(2):
                d = await take(it)
                got.append(d.data)
                await d.ack()
            assert got == [b"m3", b"m4"]
            await it.aclose()
        finally:
            await bus.close()

    run(body())


def test_bounded_stream_bytes_limit(connect: Connect) -> None:
    async def body() -> None:
        bus = await connect()
        try:
            await bus.stream("QB", ["qb.>"], max_bytes=4096, discard="new")
            await bus.publish("qb.a", b"x" * 1500, msg_id="b1")
            await bus.publish("qb.b", b"x" * 1500, msg_id="b2")
            with pytest.raises(QueueFull, match="QB"):
                await bus.publish("qb.c", b"x" * 1500, msg_id="b3")
            # the bounds can be changed on the existing stream
            await bus.stream("QB", ["qb.>"], max_bytes=1 << 20, discard="new")
            await bus.publish("qb.c", b"x" * 1500, msg_id="b4")
        finally:
            await bus.close()

    run(body())
