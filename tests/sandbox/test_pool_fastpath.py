"""The tiny-task fast path (fades.sandbox.runcall) and lean preparation under load: the call
with types looked up once answers as wasmtime's own, an input directory is emptied whenever
it may hold an earlier input, a function loaded ahead keeps its own output, and a busy pool
prepares without the warm-up. Real wasmtime, the real runtime component, real worker
processes.
"""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from fades.broker.base import Dataset
from fades.errors import MemoryLimitExceeded
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.sandbox import HostLimits, Limits, PythonSandbox
from fades.sandbox.base import write_input
from fades.sandbox.pool import BUSY_WINDOW_S, LEAN_BUSY_FRACTION, InstancePool, warm_blob
from fades.sandbox.procs import WorkerPool
from fades.sandbox.python import MIN_MEMORY_MIB, RuntimeInstance
from fades.sandbox.runcall import needs_emptying
from fades.sandbox.wire import encode

SIZE = """
import os
def main(data, params):
    return {"file": os.stat("/input/data.fds").st_size if os.path.exists("/input/data.fds")
            else -1, "v": params.get("v")}
"""
PRINTS = "print('hello from the top')\ndef main(data, params):\n    return 5\n"


def py(name: str, source: str, key: SigningKey) -> Artifact:
    return create("python", name, textwrap.dedent(source).lstrip().encode(), key=key)


def _blob(n: int = 2, v: int = 7) -> bytearray:
    ds = Dataset.from_records(
        [float(i) for i in range(n)], [20.0 + i for i in range(n)],
        ["temperature"] * n, ["r1"] * n, ["d"] * n,
    )  # fmt: skip
    return encode({"t": ds}, {"v": v})


def test_the_run_call_answers_exactly_as_wasmtimes_own(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    sb = PythonSandbox(runtime_artifact)
    art = py("prints", PRINTS, signing_key)
    inst = RuntimeInstance(sb, None, 64 << 20)
    try:
        assert sb.run_types is not None  # looked up once, on the first instance
        store, src = inst.store, art.payload.decode()
        assert store is not None
        func = inst.run._func  # wasmtime-py's Func, called its own way for comparison
        for entry in ("\0load\0main", "\0load\0nothere"):
            mine, theirs = inst.run(store, src, entry, "p.py"), func(store, src, entry, "p.py")
            assert (mine.tag, mine.payload) == (theirs.tag, theirs.payload)
        assert inst.run(store, src, "\0load\0nothere", "p.py").tag == "err"
        with pytest.raises(TypeError, match="3 arguments"):
            inst.run(store, src, "\0load\0main")
    finally:
        inst.close()


def test_an_input_a_run_failed_before_reading_is_never_shown_to_the_next_task(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    """The node writes a large input into the worker's scratch, and the task fails before
    its instance reads it: the next small task (its input inside the call) finds no file."""
    art = py("size", SIZE, signing_key)
    pool = WorkerPool(1, HostLimits())
    try:
        assert pool.run(art, runtime_artifact, _blob(), Limits(64)).value["file"] in (-1, 0)
        big = _blob(20_000)
        with pytest.raises(MemoryLimitExceeded):  # refused before any instance runs
            pool.run(art, runtime_artifact, big, Limits(MIN_MEMORY_MIB - 1))
        assert pool.run(art, runtime_artifact, _blob(v=8), Limits(64)).value == {
            "file": 0, "v": 8,
        }  # fmt: skip
    finally:
        pool.close()


def test_a_directory_is_emptied_once_and_again_after_any_write(
    runtime_artifact: Artifact, signing_key: SigningKey, tmp_path: os.PathLike[str]
) -> None:
    sb, art = PythonSandbox(runtime_artifact), py("size", SIZE, signing_key)
    d = str(tmp_path)
    write_input(os.path.join(d, "data.fds"), b"x" * 100)  # an earlier input, not known
    assert needs_emptying(d)
    with sb.open(art, Limits(64), d) as s:
        assert s.invoke(_blob()).value["file"] == 0
    assert not needs_emptying(d)
    with sb.open(art, Limits(64), d) as s:  # the caller writes the input file itself
        write_input(os.path.join(d, "data.fds"), bytes(_blob(v=9)))
        assert s.invoke(None).value == {"file": len(_blob(v=9)), "v": 9}
    assert needs_emptying(d)
    with sb.open(art, Limits(64), d) as s:
        assert s.invoke(_blob(v=10)).value == {"file": 0, "v": 10}


def test_a_loaded_ahead_function_keeps_what_its_module_printed(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    sb, art = PythonSandbox(runtime_artifact), py("prints", PRINTS, signing_key)
    inst = RuntimeInstance(sb, None, MIN_MEMORY_MIB << 20, warm=warm_blob())
    inst.bind(art, Limits(64))
    with sb.open(art, Limits(64), None, inst) as s:
        res = s.invoke(_blob())
    assert res.value == 5 and "hello from the top" in res.logs


def test_a_busy_process_prepares_lean_instances_and_an_idle_one_warms_them(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    p = InstancePool(PythonSandbox(runtime_artifact), None, min_size=1, max_size=1, max_mib=512)
    art = py("size", SIZE, signing_key)
    try:
        assert p.wait_ready(1, timeout=120)
        assert p.stats()["lean"] == 0  # an idle process: warmed up
        inst = p.take()
        assert inst is not None
        inst.close()
        with p.busy():  # tasks kept the process busy for most of the last second
            time.sleep(0.8 * BUSY_WINDOW_S)
        assert p.busy_fraction() > LEAN_BUSY_FRACTION
        assert p.wait_ready(1, timeout=120)
        assert p.stats()["lean"] == 1
        with p.session(art, Limits(64)) as s:  # a lean instance runs its task as any other
            assert s.pooled and s.invoke(_blob(v=3)).value["v"] == 3
    finally:
        p.close()


def test_a_task_gets_its_own_memory_cap_whatever_the_instance_was_loaded_under(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    sb = PythonSandbox(runtime_artifact)
    art = py("big", "def main(data, params):\n    return len(bytearray(40 << 20))\n", signing_key)
    inst = RuntimeInstance(sb, None, MIN_MEMORY_MIB << 20)
    inst.bind(art, Limits(128))  # loaded ahead under a larger task's cap
    with sb.open(art, Limits(32), None, inst) as s, pytest.raises(MemoryLimitExceeded):
        s.invoke(_blob())
    again = RuntimeInstance(sb, None, MIN_MEMORY_MIB << 20)
    again.bind(art, Limits(128))
    with sb.open(art, Limits(128), None, again) as s:  # the same cap: kept as it is
        assert s.invoke(_blob()).value == 40 << 20
