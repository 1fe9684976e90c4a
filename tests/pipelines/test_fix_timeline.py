"""Run timelines (when each stage ended, bytes in and out) and a guard that cannot be
evaluated, through the controller with real node agents, sandboxes and nats-server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.pipelines.test_engine import FUNCS

from controller.conftest import Bed  # type: ignore[import-not-found]
from controller.test_api import artifact_of  # type: ignore[import-not-found]
from fades.fabric import EmbeddedNats
from fades.functions.keys import SigningKey

from .test_service import up

POLICY = {"tenants": {"facilities": {"locations": "*", "sensor_types": "*"}}}
DATA = [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}]


@pytest.fixture
def tl_bed(nats_server: EmbeddedNats, tmp_path: Path, signing_key: SigningKey) -> Iterator[Bed]:
    b = Bed(nats_server, tmp_path, signing_key)
    try:
        yield b
    finally:
        b.close()


def spec(when_c: str) -> dict[str, Any]:
    """a (reads data, n1) -> b (n1: in process) -> c (n1, guarded) and d (n2: a hop)."""

    def st(name: str, fn: str, after: list[str], node: str, **kw: Any) -> dict[str, Any]:
        f = {"artifact": fn, "memory_mib": 32, "time_budget_ms": 20000}
        return {"name": name, "function": f, "after": after, "node": node} | kw

    return {
        "name": "tl",
        "credentials": {"tenant": "facilities", "priority": 6},
        "run": {"mode": "on-demand", "runs": 1},
        "stages": [
            st("a", "fa", [], "n1", data=DATA),
            st("b", "fb", ["a"], "n1"),
            st("c", "fc", ["b"], "n1", when=when_c),
            st("d", "fc", ["b"], "n2"),
        ],
    }


def size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def test_timelines_and_a_guard_that_cannot_be_evaluated(
    tl_bed: Bed, prepare_home: Callable[..., Path]
) -> None:
    bed = tl_bed
    homes = {
        "n1": prepare_home("n1", functions=FUNCS, policy=POLICY),
        "n2": prepare_home("n2", functions=FUNCS, policy=POLICY, readings=False),
    }
    bed.start_controller()
    for n, home in homes.items():
        bed.agent(n, home)
    up(bed, "n1", "n2")
    with bed.client() as c:
        for fn in FUNCS:
            c.upload(artifact_of(homes["n1"], fn))

        # c's guard is false: c is skipped at once while b still sends its bundle to n2
        (r1,) = c.submit_pipeline(spec("v > 100"))["runs"]
        tl = c.pipeline_run("tl", r1, wait=60)
        assert tl["status"] == "done", tl
        ev = {s["stage"]: s for s in tl["stages"]}
        assert ev["c"]["status"] == "skipped" and ev["d"]["status"] == "done", ev
        # when each stage ended: downstream after upstream
        assert ev["a"]["at"] <= ev["b"]["at"] <= ev["c"]["at"], ev
        assert ev["b"]["at"] <= ev["d"]["at"], ev
        # bytes: a read sensor data; a handed its result to b in process; the finale's
        # result leaves in its event
        assert ev["a"]["bytes_in"] > 0, ev["a"]
        assert ev["a"]["bytes_out"] == size({"v": 1, "run": r1}) == ev["b"]["bytes_in"]
        assert ev["b"]["bytes_out"] >= 2 * size({"v": 2, "node": "n1"}), ev["b"]
        assert ev["d"]["bytes_out"] == size({"v": 20, "run": r1}), ev["d"]

        # a guard that cannot be evaluated (a string compared with a number) fails its stage,
        # and so the run, with one message naming the stage, the guard once, and why
        (r2,) = c.submit_pipeline(spec("node > 3"), replace=True)["runs"]
        tl = c.pipeline_run("tl", r2, wait=60)
        assert tl["status"] == "failed", tl
        reason = tl["reason"]
        want = "stage c failed on n1: GuardFailed: guard 'node > 3' could not be evaluated: "
        assert reason.startswith(want + "TypeError: '>' not supported"), reason
        assert reason.count("node > 3") == 1 and "\n" not in reason, reason
        (c_ev,) = [s for s in tl["stages"] if s["stage"] == "c"]
        assert c_ev["status"] == "failed" and c_ev["error_kind"] == "GuardFailed"

        # the cluster keeps serving: a good guard after the bad one
        (r3,) = c.submit_pipeline(spec("v > 0"), replace=True)["runs"]
        tl = c.pipeline_run("tl", r3, wait=60)
        assert tl["status"] == "done", tl
        assert tl["results"]["c"] == {"v": 20, "run": r3}
