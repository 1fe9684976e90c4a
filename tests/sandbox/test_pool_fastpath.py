"""The tiny-task fast path (fades.sandbox.runcall, the pool's load-then-warm): the call with
types looked up once answers as wasmtime's own, an input directory is emptied whenever it
may hold an earlier input, and a function loaded ahead keeps its own output. Real wasmtime,
the real runtime component, real worker processes.
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
from fades.sandbox.pool import InstancePool, warm_blob
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
# the module's top-level code breaks the SDK call the runtime's warm-up makes (codes()),
# which the function itself never uses
BREAKS_WARMUP = """
import fades_sdk
def _no(self, column):
    raise RuntimeError("codes() patched away")
fades_sdk.Dataset.codes = _no
def main(data, params):
    return sum(data["t"].values)
"""


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
    inst.bind(art, Limits(64), warm=warm_blob())
    with sb.open(art, Limits(64), None, inst) as s:
        res = s.invoke(_blob())
    assert res.value == 5 and "hello from the top" in res.logs


def test_a_module_that_breaks_the_warm_up_is_prepared_plain_and_its_tasks_run(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    p = InstancePool(PythonSandbox(runtime_artifact), None, min_size=2, max_size=2, max_mib=512)
    art = py("breaks", BREAKS_WARMUP, signing_key)
    try:
        for _ in range(4):
            assert p.wait_ready(1, timeout=120, usable=art.digest)
            with p.session(art, Limits(64)) as s:
                assert s.invoke(_blob()).value == 41.0
        deadline = time.monotonic() + 60
        while art.digest not in p._unbindable and time.monotonic() < deadline:
            time.sleep(0.02)
        assert art.digest in p._unbindable
        assert p.wait_ready(2, timeout=120)
        assert all(i.bound is None for i in p._ready)
        with p.session(art, Limits(64)) as s:  # and it still runs, on a plain instance
            assert s.invoke(_blob()).value == 41.0
    finally:
        p.close()
