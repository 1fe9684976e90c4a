"""Every task ends within its time budget, whatever it does (issue 16, class 1), and the
host memory of a task is bounded (class 2): sandboxes run in worker processes that the node
kills and replaces. Real worker processes, real wasmtime, real runtime component.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import wasmtime
from tests.guests import python_artifact as py

from fades.broker.base import Dataset
from fades.errors import FunctionCrashed, MemoryLimitExceeded, SandboxError, TimeLimitExceeded
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.sandbox import HostLimits, Limits
from fades.sandbox.procs import ProcSession, WorkerPool
from fades.sandbox.wire import encode

GRACE_MS = 500
BUDGET = 300
# budget + grace, plus room for a loaded machine to notice and reap the process
LATE_S = (BUDGET + GRACE_MS) / 1000 + 3.0

HOG = "import time\ndef main(data, params):\n    b = bytearray(40 << 20)\n    time.sleep(30)\n"
SLEEP = "import time\ndef main(data, params):\n    time.sleep(1e9)\n"
SELECT = "import select\ndef main(data, params):\n    select.select([], [], [], 1e9)\n"
GOOD = "def main(data, params):\n    return sum(data['t'].values)\n"
LOOP_CORE = """
(module
  (memory (export "memory") 1)
  (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "fades_run") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
"""


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records([1.0, 2.0], [20.0, 22.0], ["temperature"] * 2, ["r1"] * 2, ["d"] * 2)
    return encode({"t": ds})


@pytest.fixture
def pool(runtime_artifact: Artifact) -> Iterator[WorkerPool]:
    p = WorkerPool(2, HostLimits(grace_ms=GRACE_MS))
    p.warm(runtime_artifact)
    yield p
    p.close()


def test_a_function_blocked_in_a_host_call_ends_at_its_budget_and_the_pool_keeps_serving(
    pool: WorkerPool, runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    before = set(pool.pids())
    for name, src in (("sleeper", SLEEP), ("selecter", SELECT)):
        t0 = time.monotonic()
        with pytest.raises(TimeLimitExceeded, match=rf"^time limit {BUDGET} ms exceeded"):
            pool.run(py(name, src, signing_key), runtime_artifact, blob, Limits(64, BUDGET))
        assert time.monotonic() - t0 < LATE_S
    good = pool.run(py("good", GOOD, signing_key), runtime_artifact, blob, Limits(64, 5000))
    assert good.value == 42.0
    assert not before & set(pool.pids())  # both killed workers were replaced


def test_two_sleepers_do_not_stop_a_capacity_2_node(
    make_node: Callable[..., Any], make_task: Callable[..., dict[str, Any]]
) -> None:
    node = make_node(functions={"sleeper": SLEEP, "good": GOOD}, capacity=2)
    orc = node.orchestrator
    sleepers = [orc.submit(make_task("sleeper", time_budget_ms=BUDGET)) for _ in range(2)]
    good = orc.submit(make_task("good"))
    rec = orc.wait(good, timeout=60)
    assert rec.status == "done", rec.error
    for tid in sleepers:
        r = orc.wait(tid, timeout=60)
        assert (r.status, r.error_kind) == ("failed", "TimeLimitExceeded")
        assert r.error is not None and f"time limit {BUDGET} ms exceeded" in r.error


def test_a_worker_killed_from_outside_fails_its_task_and_is_replaced(
    pool: WorkerPool, blob: bytearray, signing_key: SigningKey
) -> None:
    loop = create("core", "loop", bytes(wasmtime.wat2wasm(LOOP_CORE)), key=signing_key)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pool.run(loop, None, blob, Limits(4, 60_000))
        except BaseException as exc:
            errors.append(exc)

    before = set(pool.pids())
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    victim = None
    while victim is None and time.monotonic() < deadline:  # the busy worker burns CPU
        for pid in before:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "R":
                    victim = pid
        time.sleep(0.05)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], FunctionCrashed)
    assert "the sandbox process was killed by SIGKILL" in str(errors[0])
    assert victim not in pool.pids()


def test_a_worker_over_its_host_memory_is_killed(
    runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    # the guest stays within its 64 MiB, but the worker around it passes 64 + 1 MiB
    pool = WorkerPool(1, HostLimits(worker_overhead_mib=1))
    try:
        with pytest.raises(MemoryLimitExceeded, match=r"^memory limit 64 MiB exceeded") as err:
            pool.run(py("hog", HOG, signing_key), runtime_artifact, blob, Limits(64, 20_000))
        assert "65 MiB of host memory" in err.value.context["detail"]
    finally:
        pool.close()


def test_workers_are_recycled_after_n_tasks(blob: bytearray, signing_key: SigningKey) -> None:
    ok = create(
        "core",
        "ok",
        bytes(
            wasmtime.wat2wasm(
                '(module (memory (export "memory") 1)'
                ' (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))'
                ' (func (export "fades_run") (param i32 i32) (result i32) (i32.const 0)))'
            )
        ),
        key=signing_key,
    )
    pool = WorkerPool(1, HostLimits(worker_max_tasks=3))
    try:
        seen = set()
        for _ in range(7):
            assert pool.run(ok, None, blob, Limits(4, 5000)).value == {}
            deadline = time.monotonic() + 30
            while not pool.pids() and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.update(pool.pids())
        assert len(seen) >= 3
        assert len(pool.pids()) == 1  # the pool knows each live worker once
    finally:
        pool.close()


def test_a_persistent_session_runs_in_its_own_process_and_is_bounded(
    runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    counter = "n = 0\ndef main(data, params):\n    global n\n    n += 1\n    return n\n"
    host = HostLimits(grace_ms=GRACE_MS)
    with ProcSession(
        host, py("count", counter, signing_key), runtime_artifact, Limits(64, 5000)
    ) as s:
        assert [s.invoke(blob).value for _ in range(3)] == [1, 2, 3]
    s2 = ProcSession(host, py("sleeper", SLEEP, signing_key), runtime_artifact, Limits(64, BUDGET))
    t0 = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        s2.invoke(blob)
    assert time.monotonic() - t0 < LATE_S
    with pytest.raises(SandboxError, match="open a new session"):
        s2.invoke(blob)
    s2.close()


def test_a_persistent_sleeper_is_bounded_per_invocation_and_the_node_serves(
    make_node: Callable[..., Any], make_task: Callable[..., dict[str, Any]]
) -> None:
    node = make_node(functions={"sleeper": SLEEP, "good": GOOD}, capacity=1)
    orc = node.orchestrator
    task = make_task(
        "sleeper", time_budget_ms=BUDGET, mode="persistent", period_s=0.05, invocations=2
    )
    t0 = time.monotonic()
    rec = orc.run(task, timeout=60)
    assert rec.status == "done"
    assert rec.result["invocations"] == 2 and rec.result["failed"] == 2
    assert time.monotonic() - t0 < 2 * LATE_S + 10  # two bounded invocations, two restarts
    invs = orc.invocations(rec.id)
    assert all(not i["ok"] and "TimeLimitExceeded" in i["error"] for i in invs)
    assert orc.run(make_task("good"), timeout=60).status == "done"


def test_a_too_large_result_fails_its_task_by_kind_and_the_node_serves(
    make_node: Callable[..., Any], make_task: Callable[..., dict[str, Any]]
) -> None:
    big = "def main(data, params):\n    return 'x' * (9 << 20)\n"
    node = make_node(functions={"big": big, "good": GOOD}, capacity=1)
    orc = node.orchestrator
    rec = orc.run(make_task("big", memory_mib=128), timeout=60)
    assert (rec.status, rec.error_kind) == ("failed", "ResultTooLarge")
    assert rec.error is not None and "result size limit 8388608 bytes exceeded" in rec.error
    assert orc.run(make_task("good"), timeout=60).status == "done"


def test_errors_cross_from_the_worker_with_their_kind_and_attributes(
    pool: WorkerPool, runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    bomb = "def main(data, params):\n    return len(bytearray(512 << 20))\n"
    with pytest.raises(MemoryLimitExceeded, match=r"^memory limit 64 MiB exceeded$") as err:
        pool.run(py("bomb", bomb, signing_key), runtime_artifact, blob, Limits(64, 5000))
    assert err.value.limit_mib == 64 and err.value.kind == "MemoryLimitExceeded"
    boom = "def main(data, params):\n    raise KeyError('nope')\n"
    with pytest.raises(FunctionCrashed, match="the function raised KeyError") as crash:
        pool.run(py("boom", boom, signing_key), runtime_artifact, blob, Limits(64, 5000))
    assert 'File "boom.py", line 2, in main' in crash.value.context["traceback"]


def test_closing_the_pool_ends_a_task_blocked_in_a_host_call(
    runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    pool = WorkerPool(1, HostLimits())
    pool.warm(runtime_artifact)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pool.run(py("sleeper", SLEEP, signing_key), runtime_artifact, blob, Limits(64, 600_000))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)  # let it block (the test only needs it started; close() works either way)
    pool.close()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SandboxError)
    assert "shut down" in str(errors[0])
