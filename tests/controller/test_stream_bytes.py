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


def test_a_catch_up_query_never_sorts_the_tenants_outcome_texts(tmp_path: Any) -> None:
    """Each catch-up query used to sort every outcome text of the tenant (the (tenant,
    task_id) index, then a temporary b-tree for ``ORDER BY rowid``): O(all outcomes) per
    query, 54 s for 150 outcomes of 0.9 MB in 4 MiB steps. Now only event ids are ordered."""
    from fades.controller.store import ControllerStore
    from fades.outcome import Outcome

    store = ControllerStore(tmp_path / "c.db")
    for i in range(20):
        out = Outcome(task_id=f"t{i}", tenant="a", node="n", status="done", result="x" * 1000)
        store.add_outcome(out)
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    try:
        rows = store.outcomes_since("a", 3, None, 500, 4000)
        by_id = store.outcomes_since("a", 0, ["t1", "t5"], 500, None)
    finally:
        store._db.set_trace_callback(None)
    assert [r[1] for r in rows] == ["t3", "t4", "t5", "t6"]  # the 4th reaches 4,000 bytes
    assert [r[1] for r in by_id] == ["t1", "t5"]
    for sql in seen:
        if "outcome " in sql.replace("outcomes", "") and sql.lstrip().upper().startswith("SELECT"):
            plan = " ".join(str(r) for r in store._db.execute("EXPLAIN QUERY PLAN " + sql))
            assert "TEMP B-TREE" not in plan, (sql, plan)
    store.close()


def test_a_catch_up_walks_only_the_tenants_own_newer_outcomes(tmp_path: Any) -> None:
    """The ids query searches the (tenant) index from ``after``: another tenant's rows are
    not walked (with 300k of them, a catch-up took 0.3 s per query holding the store)."""
    from fades.controller.store import ControllerStore
    from fades.outcome import Outcome

    store = ControllerStore(tmp_path / "c.db")
    for i in range(30):
        tenant = "a" if i % 10 == 0 else "b"
        store.add_outcome(Outcome(task_id=f"t{i}", tenant=tenant, node="n", status="done"))
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    try:
        rows = store.outcomes_since("a", 0, None, 500, None)
    finally:
        store._db.set_trace_callback(None)
    assert [r[1] for r in rows] == ["t0", "t10", "t20"]
    ids_query = next(s for s in seen if s.lstrip().upper().startswith("SELECT ROWID"))
    plan = " ".join(str(r) for r in store._db.execute("EXPLAIN QUERY PLAN " + ids_query))
    assert "(tenant=? AND rowid>?)" in plan, plan
    store.close()
