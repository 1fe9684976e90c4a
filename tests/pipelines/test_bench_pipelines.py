"""The pipeline benchmark's harness on real node agents, and the two defects it found: two
pipelines with the same run ids lost each other's stage events, and every task re-read and
re-verified the 20 MB Python runtime."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from fades.aiostop import wait_for
from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey
from fades.functions.store import FunctionStore

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_pipelines as bp  # noqa: E402


def test_two_pipelines_with_the_same_run_ids_each_deliver_their_finales_and_hops(
    tmp_path: Path, signing_key: SigningKey, runtime_artifact: Artifact
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "relay.py").write_text(bp.RELAY_SRC)
    relay = bp.build_python(tmp_path / "src" / "relay.py", key=signing_key)

    async def main() -> None:
        bed = await bp.Bed(tmp_path, ["n1", "n2"], signing_key).start(runtime_artifact, relay)
        try:
            far = bp.make_plan("far", bp.topologies()["P1"], bp.SMALL)
            near = bp.make_plan("near", [("a", "n1", []), ("b", "n1", ["a"])], 1000)
            t_far = await bp.sequential(bed, far, 3, warm=1)
            t_near = await bp.sequential(bed, near, 3, warm=1)  # the same run ids r00000..
            assert len(t_far) == len(t_near) == 3 and all(t > 0 for t in t_far + t_near)
            cross, local = bp.hops(bed, far)
            assert len(cross) == 2 * 4 and not local  # b and c each come from the other node
            cross, local = bp.hops(bed, near)
            assert len(local) == 4 and not cross  # handed over in process
            done = [e for e in bed.events if e.pipeline == "near" and e.stage == "b"]
            assert {e.run for e in done} == {f"r{i:05d}" for i in range(4)}
            parts = bp.breakdown(bed, far)
            assert set(parts) == {"hop", "queue", "start", "compute", "rest"}
        finally:
            await bed.stop()

    asyncio.run(wait_for(main(), 300))


def test_the_native_baseline_runs_the_same_functions_in_order() -> None:
    times = bp.native_baseline(bp.topologies()["P4"], 1000, 2)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_a_task_does_not_reread_the_runtime_once_its_sandbox_is_live(
    prepare_home: Any, open_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = prepare_home("n", functions={"f": "def main(data, params):\n    return 1\n"})
    node = open_node(home, capacity=1)
    runtime = node.functions.runtime()
    task = {
        "credentials": {"tenant": "t"},
        "function": {"artifact": "f", "memory_mib": 64},
        "inputs": {"x": 1},
    }
    assert node.orchestrator.run(dict(task), 120).status == "done"
    reads: list[str] = []
    get = FunctionStore.get

    def counting(self: FunctionStore, ref: str) -> Artifact:
        reads.append(ref)
        return get(self, ref)

    monkeypatch.setattr(FunctionStore, "get", counting)
    for _ in range(3):
        assert node.orchestrator.run(dict(task), 120).status == "done"
    assert runtime.digest not in reads  # the live sandbox's runtime is reused
