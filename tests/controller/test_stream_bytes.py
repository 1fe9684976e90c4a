"""The result stream holds and writes bounded bytes, whatever the size of the outcomes: a
client that never reads pins at most a few MiB of the controller's memory, not a catch-up of
500 outcomes of up to 1 MiB each."""

from __future__ import annotations

from typing import Any

import fades.controller.stream as stream
from fades.controller.stream import Event, StreamHub, Subscriber
from fades.functions.keys import SigningKey

from .test_stream import finish, setup


def test_a_catch_up_of_big_outcomes_is_written_in_bounded_pieces(
    bed: Any, make_task: Any, signing_key: SigningKey
) -> None:
    setup(bed, signing_key)
    big = 300_000
    with bed.client() as c:
        ids = [r["task_id"] for r in c.submit_many([make_task("f") for _ in range(30)])]
        for tid in ids:
            finish(bed, tid, "x" * big)
        assert all(c.wait(t, timeout=60)["status"] == "done" for t in ids)
    assert bed.controller is not None
    hub = StreamHub(bed.controller)
    sizes: list[int] = []
    text: list[str] = []

    async def read() -> None:
        async for piece in hub.events("facilities", task_ids=ids, since=0):
            sizes.append(len(piece))
            text.append(piece)

    bed.run(read())
    body = "".join(text)
    assert body.count("event: outcome") == len(ids) and "event: end" in body
    # 30 outcomes of 300 KB (9 MB) went out in pieces of about CHUNK_BYTES, not one piece
    assert max(sizes) <= (1 << 20) + big + 1000, sizes  # CHUNK_BYTES: 1 MiB
    rows = bed.controller.store.outcomes_since("facilities", 0, ids, 500, 1_000_000)
    assert 1 <= len(rows) <= 4  # the row that reaches a million bytes is the last one
    with bed.client() as c:  # a client over HTTP still gets every one
        assert sorted(o["task_id"] for o in c.results(ids, since=0, timeout=60)) == sorted(ids)


def test_a_stream_buffer_is_bounded_by_bytes() -> None:
    sub = Subscriber("t", None, buffer=1000)
    ev = Event(1, "a", "x" * 1_000_000)
    for i in range(100):
        sub.offer(Event(i + 1, f"t{i}", ev.json))
    assert sub.behind
    assert sub.queued_bytes <= stream.STREAM_BUFFER_BYTES + 1_000_000
    sub.take()
    assert sub.queued_bytes == (len(sub.queue)) * 1_000_000
