"""A stateful task's start rides out a fabric that does not answer: the keeper claims its
lease and loads its checkpoint again until the nats-server is back, instead of failing the
task (seen in the chaos run: "the stateful task cannot start: KV ... TimeoutError")."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from tests.state.conftest import LoopThread, kv_store

from fades.bus.nats import NatsBus
from fades.state import keeper as keeper_mod
from fades.state.base import Checkpoint
from fades.state.keeper import StateKeeper
from fades.task import StateSpec


def _wait(pred: Any, timeout: float, what: str) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.1)):
        if pred():
            return
        done.wait(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_start_waits_for_the_fabric_and_then_restores(
    nats_server: Any, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    bus = loop_thread.run(NatsBus.connect(nats_server.url, name="keeper", timeout=30))
    try:
        store = kv_store(loop_thread, bus)
        lease = store.claim("t1", "edge1")
        store.save(lease, Checkpoint("t1", "sha256:x", "edge1", 7, b"state", 0.0))
        nats_server.stop()
        spec = StateSpec.model_validate({"checkpoint": "every"})
        k = StateKeeper(store, "t1", "edge2", "sha256:x", spec)
        got: list[Any] = []
        caplog.set_level(logging.WARNING, logger="fades.state")
        th = threading.Thread(target=lambda: got.append(k.start()), daemon=True)
        th.start()
        _wait(
            lambda: any("trying again" in r.getMessage() for r in caplog.records),
            120,
            "the keeper retrying while the server is down",
        )
        assert not got, "start returned while the fabric was down"
        nats_server.start(timeout=120.0)
        th.join(keeper_mod.START_RETRY_S)
        assert got and got[0] is not None and got[0].seq == 7 and k.state == b"state"
        assert k.lease is not None and store.owner("t1") == ("edge2", k.lease.token)
    finally:
        loop_thread.run(bus.close())


def test_start_gives_up_when_asked_to_stop(nats_server: Any, loop_thread: LoopThread) -> None:
    from fades.errors import FabricError

    bus = loop_thread.run(NatsBus.connect(nats_server.url, name="keeper", timeout=30))
    try:
        store = kv_store(loop_thread, bus)
        nats_server.stop()
        spec = StateSpec.model_validate({"checkpoint": "every"})
        k = StateKeeper(store, "t2", "edge1", "sha256:x", spec)
        with pytest.raises(FabricError):
            k.start(stop=lambda: True)  # a node shutting down does not wait 180 s
    finally:
        nats_server.start(timeout=120.0)
        loop_thread.run(bus.close())
