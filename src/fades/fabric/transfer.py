"""Request/reply over NATS, including replies too big for one message.

:class:`fades.bus.nats.NatsBus` sends small replies as one message and larger ones (the
cloud path pulls a node's readings) as a flow-controlled chunked reply: the sender publishes
parts of ``chunk`` bytes to the requester's inbox and keeps at most ``window`` parts
unacknowledged. On a capped uplink this
keeps the sender's outbound buffer small, so its heartbeats are not stuck behind megabytes of
data, and no message exceeds the server's ``max_payload``.

Errors travel as one message with a ``Fades-Error`` header (the error's kind); the requester
raises the same :class:`~fades.errors.FadesError` subclass with the remote message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from fades import errors
from fades.aiostop import wait_for
from fades.errors import FabricError, FadesError, NodeUnavailable

H_SEQ = "Fades-Seq"
H_LAST = "Fades-Last"
H_ERROR = "Fades-Error"

CHUNK = 64 * 1024
WINDOW = 4


def raise_remote(msg: Msg) -> None:
    """Raise the error carried by ``msg``, if it carries one."""
    headers = msg.headers or {}
    kind = headers.get(H_ERROR)
    if kind:
        raise errors.error_class(kind)(msg.data.decode(errors="replace"))


async def reply_error(nc: NATS, reply: str, exc: Exception) -> None:
    kind = exc.kind if isinstance(exc, FadesError) else type(exc).__name__
    await nc.publish(reply, str(exc).encode(), headers={H_ERROR: kind})


async def send_chunks(
    nc: NATS,
    reply: str,
    data: bytes | bytearray | memoryview,
    meta: dict[str, Any],
    *,
    chunk: int = CHUNK,
    window: int = WINDOW,
    idle_timeout: float = 60.0,
) -> None:
    """Send ``data`` to ``reply`` in acknowledged parts, then ``meta`` as the closing part."""
    view = memoryview(data).cast("B")
    parts = -(-len(view) // chunk)
    acks: asyncio.Queue[None] = asyncio.Queue()

    async def _on_ack(_: Msg) -> None:
        acks.put_nowait(None)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=_on_ack)
    try:
        outstanding = 0
        # data parts, then one closing message whose payload is ``meta`` (never empty)
        for i in range(parts + 1):
            while outstanding >= window:
                try:
                    await wait_for(acks.get(), idle_timeout)
                except TimeoutError:
                    raise FabricError(
                        f"receiver stopped acknowledging after part {i} of {parts}"
                    ) from None
                outstanding -= 1
            if i < parts:
                body = bytes(view[i * chunk : (i + 1) * chunk])
                headers = {H_SEQ: str(i)}
            else:
                body = json.dumps(meta, separators=(",", ":")).encode()
                headers = {H_SEQ: str(i), H_LAST: "1"}
            await nc.publish(reply, body, reply=inbox, headers=headers)
            outstanding += 1
        await nc.flush()
    finally:
        await sub.unsubscribe()


async def request_chunks(
    nc: NATS,
    subject: str,
    request: Any,
    *,
    timeout: float = 10.0,
    idle_timeout: float = 60.0,
    progress: Callable[[int], None] | None = None,
    what: str = "request",
) -> tuple[bytes, dict[str, Any]]:
    """Ask ``subject`` and collect a chunked reply: returns (data, meta).

    ``request`` is sent as is if it is bytes, else as JSON. A plain reply (no part header)
    is the whole answer, with empty meta. ``timeout`` bounds the wait for the first part;
    ``idle_timeout`` the gap between parts.
    """
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def _on_part(msg: Msg) -> None:
        queue.put_nowait(msg)

    sub = await nc.subscribe(inbox, cb=_on_part)
    buf = bytearray()
    expected = 0
    try:
        await nc.publish(subject, body, reply=inbox)
        wait = timeout
        t0 = time.monotonic()
        while True:
            try:
                msg = await wait_for(queue.get(), wait)
            except TimeoutError:
                where = "no answer" if expected == 0 else f"stalled after {len(buf)} bytes"
                raise NodeUnavailable(
                    f"{what}: {where} on {subject} ({time.monotonic() - t0:.1f} s)"
                ) from None
            raise_remote(msg)
            headers = msg.headers or {}
            if headers.get("Status") == "503":
                # no subscriber (yet): a node may be reconnecting; ask again until timeout
                if expected == 0 and time.monotonic() - t0 + 0.05 < timeout:
                    await asyncio.sleep(0.05)
                    await nc.publish(subject, body, reply=inbox)
                    continue
                raise NodeUnavailable(f"{what}: nobody serves {subject}")
            if expected == 0 and H_SEQ not in headers:
                return msg.data, {}  # a plain (small) reply
            seq = int(headers.get(H_SEQ, "-1"))
            if seq != expected:
                raise FabricError(f"{what}: part {seq} arrived, expected part {expected}")
            expected += 1
            if headers.get(H_LAST):
                return bytes(buf), json.loads(msg.data or b"{}")
            buf += msg.data
            if progress is not None:
                progress(len(buf))
            if msg.reply:
                await nc.publish(msg.reply, b"")
            wait = idle_timeout
    finally:
        await sub.unsubscribe()
