"""Pre-warmed fresh Python instances (fades.sandbox.pool): every task still gets an instance
nothing ran in before, under its own memory cap and time budget. Real wasmtime, the real
runtime component, real worker processes.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fades.broker.base import Dataset
from fades.errors import MemoryLimitExceeded, TimeLimitExceeded
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.node import NodeConfig
from fades.sandbox import HostLimits, Limits, PythonSandbox
from fades.sandbox.pool import InstancePool, host_limits
from fades.sandbox.procs import Worker, WorkerPool
from fades.sandbox.wire import encode

SET_GLOBALS = """
import json
seen = None
def main(data, params):
    global seen
    before = seen
    seen = params["v"]
    json.fades_leak = params["v"]
    return before
"""
READ_GLOBALS = """
import json
def main(data, params):
    return {"names": sorted(k for k in globals() if not k.startswith("__")),
            "leak": getattr(json, "fades_leak", None)}
"""
BOMB = "def main(data, params):\n    b = bytearray(200 << 20)\n    return len(b)\n"
BIG_OK = "def main(data, params):\n    b = bytearray(40 << 20)\n    return len(b)\n"
LOOP = "def main(data, params):\n    while True:\n        pass\n"
GOOD = "def main(data, params):\n    return sum(data['t'].values)\n"


def py(name: str, source: str, key: SigningKey) -> Artifact:
    return create("python", name, textwrap.dedent(source).lstrip().encode(), key=key)


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records([1.0, 2.0], [20.0, 22.0], ["temperature"] * 2, ["r1"] * 2, ["d"] * 2)
    return encode({"t": ds}, {"v": 7})


@pytest.fixture
def ipool(runtime_artifact: Artifact) -> Iterator[InstancePool]:
    p = InstancePool(PythonSandbox(runtime_artifact), None, min_size=2, max_size=2, max_mib=512)
    assert p.wait_ready(2, timeout=120)
    yield p
    p.close()


def _run(p: InstancePool, art: Artifact, blob: bytearray, limits: Limits) -> object:
    assert p.wait_ready(1, timeout=120)
    with p.session(art, limits) as s:
        assert s.pooled
        return s.invoke(blob).value


def test_globals_of_one_task_are_not_seen_by_the_next(
    ipool: InstancePool, blob: bytearray, signing_key: SigningKey
) -> None:
    setter = py("setter", SET_GLOBALS, signing_key)
    assert _run(ipool, setter, blob, Limits(64)) is None
    assert _run(ipool, setter, blob, Limits(64)) is None  # not 7: a fresh instance
    seen = _run(ipool, py("reader", READ_GLOBALS, signing_key), blob, Limits(64))
    # nor the warm-up's: only the function's own names, no attribute left on json
    assert seen == {"names": ["json", "main"], "leak": None}
    assert ipool.stats()["hits"] == 3
    # the used instances are destroyed off the request path, none kept
    deadline = time.monotonic() + 60
    while ipool._used and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ipool._used


def test_a_memory_bomb_in_a_pooled_instance_fails_with_its_own_cap(
    ipool: InstancePool, runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    bomb = py("bomb", BOMB, signing_key)
    with pytest.raises(MemoryLimitExceeded) as pooled:
        _run(ipool, bomb, blob, Limits(48))
    # the same error as in an instance made for the task
    with pytest.raises(MemoryLimitExceeded) as fresh:
        PythonSandbox(runtime_artifact).run(bomb, blob, Limits(48))
    assert str(pooled.value) == str(fresh.value)
    assert pooled.value.context.get("limit_mib", 48) == 48
    # the pool prepared it under 16 MiB; the task's own 64 MiB cap applies once taken
    assert _run(ipool, py("big", BIG_OK, signing_key), blob, Limits(64)) == 40 << 20
    assert _run(ipool, py("good", GOOD, signing_key), blob, Limits(64)) == 42.0


def test_an_infinite_loop_in_a_pooled_instance_hits_its_own_budget(
    ipool: InstancePool, blob: bytearray, signing_key: SigningKey
) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match="300 ms"):
        _run(ipool, py("loop", LOOP, signing_key), blob, Limits(64, 300))
    assert time.monotonic() - t0 < 30
    assert _run(ipool, py("good", GOOD, signing_key), blob, Limits(64)) == 42.0


def test_the_pool_grows_on_misses_shrinks_when_quiet_and_keeps_its_memory_cap(
    runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    sb = PythonSandbox(runtime_artifact)
    p = InstancePool(sb, None, min_size=0, max_size=3, max_mib=512, shrink_s=0.5)
    try:
        good = py("good", GOOD, signing_key)
        with p.session(good, Limits(64)) as s:  # nothing ready: a miss, a new instance
            assert not s.pooled
            assert s.invoke(blob).value == 42.0
        assert p.stats()["misses"] == 1 and p.target == 1
        assert p.wait_ready(1, timeout=120)  # demand seen: one prepared
        deadline = time.monotonic() + 60
        while p.stats()["ready"] and time.monotonic() < deadline:  # quiet: back to min 0
            time.sleep(0.05)
        assert p.stats()["ready"] == 0 and p.target == 0
        assert p.instance_bytes > 0
    finally:
        p.close()
    # a memory cap below one instance's size keeps the pool empty
    tight = InstancePool(sb, None, min_size=2, max_size=2, max_mib=0)
    try:
        assert tight.cap() == 0 and not tight.wait_ready(1, timeout=0.5)
        with tight.session(py("good", GOOD, signing_key), Limits(64)) as s:
            assert s.invoke(blob).value == 42.0
    finally:
        tight.close()


def _worker_ready(w: Worker, n: int = 1) -> dict[str, int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats: dict[str, int] = w.call(("stats",)) or {}
        if stats.get("ready", 0) >= n:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"the worker's pool did not fill: {w.call(('stats',))}")


def test_worker_processes_run_tasks_on_pooled_instances(
    runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    host = HostLimits(py_pool_min=2, py_pool_max=2)
    pool = WorkerPool(1, host)
    try:
        pool.warm(runtime_artifact)
        (worker,) = pool._all
        assert _worker_ready(worker, 2)["ready"] == 2
        bomb, loop = py("bomb", BOMB, signing_key), py("loop", LOOP, signing_key)
        good = py("good", GOOD, signing_key)
        with pytest.raises(MemoryLimitExceeded):
            pool.run(bomb, runtime_artifact, blob, Limits(48))
        _worker_ready(worker)
        with pytest.raises(TimeLimitExceeded, match="300 ms"):
            pool.run(loop, runtime_artifact, blob, Limits(64, 300))
        hits = _worker_ready(worker)["hits"]
        assert pool.run(good, runtime_artifact, blob, Limits(64)).value == 42.0
        stats = worker.call(("stats",))
        assert hits >= 2 and stats["hits"] == hits + 1  # each ran on a prepared instance
        assert pool.pids() == [worker.pid]  # the same worker survived both failures
    finally:
        pool.close()


def test_pool_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="py_pool_min"):
        HostLimits(py_pool_min=3, py_pool_max=2)
    assert (
        HostLimits.from_env(
            {"FADES_SANDBOX_PY_POOL_MAX": "0", "FADES_SANDBOX_PY_POOL_MIN": "0"}
        ).py_pool_max
        == 0
    )


def test_node_yaml_sets_the_pool_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "node.yaml").write_text("python_pool: {min: 0, max: 2, max_mib: 32}\n")
    conf = NodeConfig.load(tmp_path / "node.yaml")
    host = host_limits(conf.python_pool, environ={})
    assert (host.py_pool_min, host.py_pool_max, host.py_pool_max_mib) == (0, 2, 32)
    host = host_limits(conf.python_pool, environ={"FADES_SANDBOX_PY_POOL_MAX": "3"})
    assert host.py_pool_max == 3
    assert host_limits(None, environ={}).py_pool_max == 4  # the default
    with pytest.raises(ValueError, match="unknown setting 'size'"):
        host_limits({"size": 2}, environ={})
    with pytest.raises(ValueError, match=r"python_pool\.max must be an integer >= 0"):
        host_limits({"max": -1}, environ={})
