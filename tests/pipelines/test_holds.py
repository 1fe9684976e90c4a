"""Holds: a stage's input bundle is acked only once everything it caused is durable.

A stage hands its result to a downstream stage on the same node in process; the
downstream's hold keeps the upstream's input un-acked. If the downstream fails to make its
work durable (its event publish timed out while a NATS server died), the input must go
back to the stream (nak), even when the upstream finishes its own work after that: a chaos
run lost a pipeline run because the upstream's later success acked the input."""

from __future__ import annotations

import asyncio

from fades.pipelines.collect import Arrival, Collector, Gathering, Hold
from fades.pipelines.protocol import Bundle


class Recorded:
    """A delivery that records how it was settled."""

    msg_id = "b-1"
    data = b""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.calls.append("nak")

    async def term(self) -> None:
        self.calls.append("term")

    async def in_progress(self) -> None:
        self.calls.append("in_progress")


def test_a_failed_hand_over_is_not_overruled_by_the_upstream_finishing_later() -> None:
    async def go() -> list[str]:
        d = Recorded()
        upstream = Hold([d])  # type: ignore[list-item]
        handed = Hold([], parents=[upstream])  # the finale, handed over in process
        await handed.release(ok=False)  # its event was not stored
        assert d.calls == []  # the upstream is still working
        await upstream.release(ok=True)  # the upstream's own event was stored
        return d.calls

    assert asyncio.run(go()) == ["nak"]


def test_everything_durable_acks_once_and_runs_the_after_ack() -> None:
    async def go() -> tuple[list[str], int]:
        d = Recorded()
        forgotten: list[int] = []

        async def forget() -> None:
            forgotten.append(1)

        upstream = Hold([d], after_ack=forget)  # type: ignore[list-item]
        handed = Hold([], parents=[upstream])
        await upstream.release(ok=True)
        await handed.release(ok=True)
        await handed.release(ok=True)  # a second release changes nothing
        return d.calls, len(forgotten)

    assert asyncio.run(go()) == (["ack"], 1)


def test_the_upstream_failing_first_naks_even_if_the_hand_over_succeeds() -> None:
    async def go() -> list[str]:
        d = Recorded()
        upstream = Hold([d])  # type: ignore[list-item]
        handed = Hold([], parents=[upstream])
        await upstream.release(ok=False)
        await handed.release(ok=True)
        return d.calls

    assert asyncio.run(go()) == ["nak"]


def _arrival() -> Arrival:
    b = Bundle(pipeline="p", plan_version=1, run="r1", stage="b", from_stage="a",
               producer="_", run_started_at=0.0, sent_at=0.0)  # fmt: skip
    return Arrival(b, 1, 0.0)


def test_an_input_back_after_a_failed_hand_over_runs_its_stage_again() -> None:
    """b ran and handed its result in process to the finale, whose fetch failed: b's input
    is nak'ed and comes back. It must run b again (which hands over again), not be acked as a
    duplicate of a finished stage: that lost two runs of a chaos run."""

    async def go() -> tuple[list[str], list[str], list[str]]:
        fired: list[Gathering] = []
        col = Collector(fired.append)
        key = ("p", "r1", "b", "_")
        want = {("a", "_")}
        first, again, dup = Recorded(), Recorded(), Recorded()
        await col.arrive(key, want, None, _arrival(), Hold([first]))
        g = fired[-1]
        child = Hold([], parents=g.holds, on_fail=lambda: col.redo(key))  # the hand-over
        col.finished(key)  # b's own work is durable
        for h in g.holds:
            await h.release(True)
        await child.release(False)  # the finale failed
        assert first.calls == ["nak"]
        await col.arrive(key, want, None, _arrival(), Hold([again]))
        assert len(fired) == 2, "the returned input did not run b again"
        col.finished(key)
        for h in fired[-1].holds:
            await h.release(True)
        # a plain duplicate of a finished stage is still acked without running it
        await col.arrive(key, want, None, _arrival(), Hold([dup]))
        assert len(fired) == 2
        return first.calls, again.calls, dup.calls

    assert asyncio.run(go()) == (["nak"], ["ack"], ["ack"])
