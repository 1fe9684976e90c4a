"""The intrusion detector (examples/functions/ids.py) over the labelled traffic generator:
the generator is deterministic and labelled; the detector finds every attack kind with no
false alarm natively and in the real sandbox (the same alerts); and, the point, a detector
moved in the middle of a slow port scan (checkpoint and restore through the node's
StateKeeper over the SQLite checkpoint store) still sees the scan, while one restarted fresh
misses it, and the node it left is fenced out."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fades.errors import Fenced, FunctionCrashed
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.guest import fades_sdk
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.base import Session
from fades.sandbox.wire import encode
from fades.state.keeper import StateKeeper
from fades.state.local import LocalCheckpoints
from fades.task import StateSpec
from fades.testbed.traffic import (
    ATTACK_KINDS,
    BENIGN,
    T0,
    Packet,
    Traffic,
    generate,
    score,
    to_dataset,
)

IDS = Path(__file__).resolve().parents[2] / "examples" / "functions" / "ids.py"
LIMITS = Limits(64, 20_000)


def native_detector() -> ModuleType:
    """A fresh copy of the detector's module on the host (its own globals)."""
    spec = importlib.util.spec_from_file_location("ids_native", IDS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def blobs(traffic: Traffic, seconds: float = 1.0) -> list[bytearray]:
    return [encode({"packets": to_dataset(b)}) for b in traffic.batches(seconds)]


def run_native(mod: ModuleType, inputs: list[bytearray]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for blob in inputs:
        data, params = fades_sdk.decode(blob)
        out += mod.main(data, params)["alerts"]
    return out


def run_session(session: Session, inputs: list[bytearray]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for blob in inputs:
        out += session.invoke(blob).value["alerts"]
    return out


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(7)


@pytest.fixture(scope="module")
def ids_fn(signing_key: SigningKey) -> Artifact:
    return create("python", "ids", IDS.read_bytes(), key=signing_key)


@pytest.fixture
def session(sandbox: PythonSandbox, ids_fn: Artifact) -> Iterator[Session]:
    with sandbox.open(ids_fn, LIMITS) as s:
        yield s


def test_generator_is_deterministic_and_labelled(traffic: Traffic) -> None:
    again = generate(7)
    assert again.packets == traffic.packets and again.attacks == traffic.attacks
    assert generate(8).packets != traffic.packets
    labels = {p.label for p in traffic.packets}
    assert labels == {BENIGN, *ATTACK_KINDS}
    assert sorted(a.kind for a in traffic.attacks) == sorted(ATTACK_KINDS)
    for a in traffic.attacks:  # an attack's packets run between its source and its target
        mine = [p for p in traffic.packets if p.label == a.kind]
        assert {(p.src, p.dst) for p in mine} <= {(a.src, a.dst), (a.dst, a.src)}
        assert a.start <= mine[0].ts and mine[-1].ts <= a.end + 1.0
    assert all(p.src.startswith("10.0.") for p in traffic.packets if p.label == BENIGN)
    slow = next(a for a in traffic.attacks if a.kind == "slow_scan")
    probes = [p.ts for p in traffic.packets if p.label == "slow_scan" and p.src == slow.src]
    assert slow.end - slow.start >= 240  # minutes, one probe every few seconds
    assert min(b - a for a, b in itertools.pairwise(probes)) >= 4.9
    assert sum(len(b) for b in traffic.batches(1.0)) == len(traffic.packets)
    with pytest.raises(ValueError, match="unknown attack kind"):
        generate(1, attacks=["ping_of_death"])
    with pytest.raises(ValueError, match="too short for the slow scan"):
        generate(1, duration_s=60)


def test_native_detector_finds_every_attack_kind(traffic: Traffic) -> None:
    alerts = run_native(native_detector(), blobs(traffic))
    result = score(traffic, alerts)
    missed = [k for k, r in result.items() if r["detected"] != r["attacks"]]
    false = {k: r["false_positives"] for k, r in result.items() if r["false_positives"]}
    assert not missed and not false, (missed, false, alerts)
    # a fresh detector on benign traffic alone raises nothing
    quiet = generate(3, attacks=[], duration_s=120)
    assert run_native(native_detector(), blobs(quiet)) == []


def test_sandboxed_detector_raises_the_same_alerts(
    traffic: Traffic, session: Session, sandbox: PythonSandbox, ids_fn: Artifact
) -> None:
    inputs = blobs(traffic)
    alerts = run_session(session, inputs)
    assert alerts == run_native(native_detector(), inputs)
    assert all(r["detected"] == r["attacks"] for r in score(traffic, alerts).values())
    # a bad input is refused with a clear error, and the detector keeps serving
    with pytest.raises(FunctionCrashed, match="the detector reads a dataset named 'packets'"):
        session.invoke(encode({}, inputs={}))
    with sandbox.open(ids_fn, LIMITS) as s:
        assert s.invoke(inputs[0]).value["packets"] > 0


def _split_slow_scan() -> tuple[Traffic, str, list[bytearray], list[bytearray]]:
    """A trace with only the slow scan, cut into batches before and after its middle."""
    traffic = generate(11, attacks=["slow_scan"])
    (scan,) = traffic.attacks
    middle = (scan.start + scan.end) / 2
    inputs = [(b[0].ts, encode({"packets": to_dataset(b)})) for b in traffic.batches(1.0)]
    before = [blob for ts, blob in inputs if ts < middle]
    after = [blob for ts, blob in inputs if ts >= middle]
    return traffic, scan.src, before, after


def test_a_moved_detector_still_sees_the_slow_scan_a_fresh_one_misses_it(
    tmp_path: Path, sandbox: PythonSandbox, ids_fn: Artifact
) -> None:
    traffic, attacker, before, after = _split_slow_scan()
    store = LocalCheckpoints(tmp_path / "state.db", b"k" * 32)
    spec = StateSpec(checkpoint="every")
    # node a runs the detector up to the middle of the scan, checkpointing as it goes
    on_a = StateKeeper(store, "ids-task", "node-a", ids_fn.digest, spec)
    assert on_a.start() is None
    with sandbox.open(ids_fn, LIMITS) as s:
        early = run_session(s, before)
        on_a.save(s, len(before))
        # the move: node b claims the task, loads the checkpoint and restores it
        on_b = StateKeeper(store, "ids-task", "node-b", ids_fn.digest, spec)
        ckpt = on_b.start()
        assert ckpt is not None and ckpt.seq == len(before) and ckpt.node == "node-a"
        with pytest.raises(Fenced):  # node a, come back, cannot write over the new owner
            on_a.save(s, len(before) + 1)
    assert not [a for a in early if a["src"] == attacker]  # not seen yet: half the scan
    with sandbox.open(ids_fn, LIMITS) as moved:
        moved.restore(ckpt.state)
        moved_alerts = run_session(moved, after)
    with sandbox.open(ids_fn, LIMITS) as fresh:
        fresh_alerts = run_session(fresh, after)
    assert [(a["kind"], a["src"]) for a in moved_alerts] == [("slow_scan", attacker)]
    assert fresh_alerts == []
    assert score(traffic, early + moved_alerts)["slow_scan"]["detected"] == 1
    assert score(traffic, fresh_alerts)["slow_scan"]["detected"] == 0
    store.close()


def test_the_state_stays_bounded_under_a_spoofed_flood() -> None:
    from fades.guest import fades_capture
    from fades.state.seal import MAX_STATE_BYTES

    def src(i: int) -> str:
        return f"172.{16 + i // 65536}.{i // 256 % 256}.{i % 256}"

    flood = [
        Packet(T0 + i / 20_000, src(i), "10.0.0.1", 1024 + i % 60_000, 80, proto, flags, "x")
        for i in range(60_000)
        for proto, flags in [("tcp", "S") if i % 2 else ("udp", "")]
    ]
    mod = native_detector()
    run_native(
        mod, [encode({"packets": to_dataset(flood[i : i + 20_000])}) for i in (0, 20_000, 40_000)]
    )
    size = len(fades_capture.capture(vars(mod), MAX_STATE_BYTES))
    assert size < MAX_STATE_BYTES // 2, size
    # and it still works: a scan afterwards is found
    scan = generate(2, attacks=["syn_scan"], duration_s=60, start=T0 + 10)
    alerts = run_native(mod, blobs(scan))
    assert [(a["kind"], a["src"]) for a in alerts] == [("syn_scan", scan.attacks[0].src)]
