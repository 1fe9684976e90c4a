"""Transparent capture on the real Python runtime in real wasmtime: snapshot and restore of a
session, randomness reseeded after a restore, uncapturable globals named, a hostile function
harming only its own state. In-process and in worker processes."""

from __future__ import annotations

from typing import Any

import pytest
from tests.guests import python_artifact as art

from fades.broker.base import Dataset
from fades.errors import CheckpointRejected, StateNotCapturable
from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey
from fades.sandbox import HostLimits, Limits, PythonSandbox
from fades.sandbox.procs import ProcSession
from fades.sandbox.wire import encode

LIMITS = Limits(32, 5000)

COUNTER = """
import random
count = 0
seen = []
def main(data, params):
    global count
    count += 1
    seen.append(count)
    return {"count": count, "r": random.random(), "seen": len(seen)}
"""


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records([1.0], [1.5], ["temperature"], ["room1"], ["d1"])
    return encode({"t": ds})


def test_snapshot_restore_continues_the_state(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    fn = art("counter", COUNTER, signing_key)
    with sandbox.open(fn, LIMITS) as s:
        for _ in range(3):
            s.invoke(blob)
        state = s.snapshot()
    assert len(state) <= 1024, state  # a counter's state is well under 1 KB
    outs = []
    for _ in range(2):
        with sandbox.open(fn, LIMITS) as s:
            s.restore(state)
            outs.append(s.invoke(blob).value)
    assert [o["count"] for o in outs] == [4, 4] and outs[0]["seen"] == 4
    # two restores of one snapshot must not draw the same random numbers
    assert outs[0]["r"] != outs[1]["r"]


def test_lambda_global_is_named(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "pick = lambda x: x\ndef main(data, params):\n    return 1\n"
    with sandbox.open(art("lam", src, signing_key), LIMITS) as s:
        assert s.invoke(blob).value == 1
        with pytest.raises(StateNotCapturable, match="global 'pick' holds a lambda"):
            s.snapshot()
        assert s.invoke(blob).value == 1  # the session keeps serving


def test_hostile_function_corrupts_only_its_own_state(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    # it sabotages what the capture uses: its snapshot is garbage, which fails its own
    # restore cleanly; another function's state and the host are untouched
    src = """
    import base64, json
    count = 0
    def main(data, params):
        global count
        count += 1
        base64.b64encode = lambda *a, **k: b"garbage{"
        json.dumps = lambda *a, **k: "garbage{"
        return count
    """
    good = art("counter", COUNTER, signing_key)
    with sandbox.open(good, LIMITS) as s:
        s.invoke(blob)
        good_state = s.snapshot()
    bad = art("hostile", src, signing_key)
    with sandbox.open(bad, LIMITS) as s:
        s.invoke(blob)
        bad_state = s.snapshot()
    with sandbox.open(bad, LIMITS) as s, pytest.raises(CheckpointRejected, match="restored"):
        s.restore(bad_state)
    with sandbox.open(good, LIMITS) as s:
        s.restore(good_state)
        assert s.invoke(blob).value["count"] == 2


def test_snapshot_restore_in_worker_processes(
    runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    fn = art("counter", COUNTER, signing_key)
    host = HostLimits()
    s = ProcSession(host, fn, runtime_artifact, LIMITS)
    try:
        for _ in range(2):
            s.invoke(blob)
        state = s.snapshot()
    finally:
        s.close()
    s = ProcSession(host, fn, runtime_artifact, LIMITS, restore=state)
    try:
        out: Any = s.invoke(blob).value
        assert out["count"] == 3
    finally:
        s.close()
