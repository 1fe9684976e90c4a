"""Python functions in the sandbox: results, and hostile functions stopped with a clear reason.

Everything runs on the real Python runtime component in real wasmtime.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from tests.guests import python_artifact

from fades.broker.base import Dataset
from fades.errors import (
    ArtifactError,
    BadFunctionOutput,
    FunctionCrashed,
    MemoryLimitExceeded,
    SandboxError,
    SandboxViolation,
    TimeLimitExceeded,
)
from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey
from fades.sandbox import MIN_MEMORY_MIB, Limits, PythonSandbox
from fades.sandbox.wire import encode

MEM = 32  # MiB: above the runtime's floor, small enough for bombs to hit quickly
BUDGET = 300  # ms

SUM = """
def main(data, params):
    t = data["t"]
    return {"sum": sum(t.values), "n": len(t), "rooms": t.labels["location"], "p": params}
"""

HOSTILE: dict[str, tuple[str, type[SandboxError], str]] = {
    "memory_bomb": (
        """
        def main(data, params):
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        """,
        MemoryLimitExceeded,
        rf"^memory limit {MEM} MiB exceeded$",
    ),
    "one_huge_allocation": (
        """
        def main(data, params):
            return len(bytearray(512 << 20))
        """,
        MemoryLimitExceeded,
        rf"^memory limit {MEM} MiB exceeded$",
    ),
    "infinite_loop": (
        """
        def main(data, params):
            while True:
                pass
        """,
        TimeLimitExceeded,
        rf"^time limit {BUDGET} ms exceeded; the function was interrupted$",
    ),
    "reads_a_file": (
        """
        def main(data, params):
            with open("/etc/passwd") as f:
                return f.read()
        """,
        SandboxViolation,
        r"tried to use the file system .*/etc/passwd.*sandboxes are granted no file system",
    ),
    "writes_a_file": (
        """
        def main(data, params):
            with open("/tmp/fades-escape", "w") as f:
                f.write("x")
        """,
        SandboxViolation,
        r"tried to use the file system .*sandboxes are granted no file system",
    ),
    "writes_its_input": (
        """
        def main(data, params):
            with open("/input/data.fds", "wb") as f:
                f.write(b"x")
        """,
        SandboxViolation,
        r"tried to use the file system",
    ),
    "opens_a_socket": (
        """
        def main(data, params):
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("93.184.216.34", 80))
            return "connected"
        """,
        SandboxViolation,
        r"tried to use the network .*socket.*sandboxes are granted no network access",
    ),
}


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records(
        [1.0, 2.0, 3.0], [1.5, 2.5, 3.0], ["temperature"] * 3, ["room1", "room2", "room1"],
        ["d1", "d2", "d1"],
    )  # fmt: skip
    return encode({"t": ds}, {"k": "v"})


def run(sandbox: PythonSandbox, art: Artifact, blob: bytearray, **limits: int) -> Any:
    return sandbox.run(art, blob, Limits(limits.get("mem", MEM), limits.get("ms", BUDGET)))


def test_a_python_function_gets_its_data_and_params(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    res = run(sandbox, python_artifact("sum", SUM, signing_key), blob)
    assert res.value == {"sum": 7.0, "n": 3, "rooms": ["room1", "room2"], "p": {"k": "v"}}
    assert res.bytes_in == len(blob)
    assert res.bytes_out > 0
    assert set(res.timing) == {"start", "transfer", "compute", "result"}
    assert all(v >= 0 for v in res.timing.values())


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_python_function_fails_with_its_own_error_and_the_next_runs(
    name: str, sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    source, cls, message = HOSTILE[name]
    with pytest.raises(SandboxError) as err:
        run(sandbox, python_artifact(name, source, signing_key), blob)
    assert type(err.value) is cls, f"{type(err.value).__name__}: {err.value}"
    assert err.value.kind == cls.__name__
    assert err.match(message)
    # the same sandbox runner still serves the next function
    assert run(sandbox, python_artifact("sum", SUM, signing_key), blob).value["sum"] == 7.0


def test_an_exception_in_the_function_is_reported_as_a_crash_with_its_traceback(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = 'def main(data, params):\n    raise ValueError("no good " + str(len(data["t"])))\n'
    with pytest.raises(FunctionCrashed, match=r"the function raised ValueError: no good 3") as err:
        run(sandbox, python_artifact("bad", src, signing_key), blob)
    assert "ValueError" in err.value.context["traceback"]


def test_an_unserialisable_result_is_bad_output(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "def main(data, params):\n    return {1, 2}\n"
    with pytest.raises(BadFunctionOutput, match="return value is not JSON: result: set"):
        run(sandbox, python_artifact("setres", src, signing_key), blob)


def test_the_function_sees_no_host_environment(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = """
    import os, sys
    def main(data, params):
        seen = {p: os.path.exists(p) for p in ("/etc/passwd", "/tmp", "/home", "/input")}
        return {"env": dict(os.environ), "argv": sys.argv[1:], "seen": seen}
    """
    res = run(sandbox, python_artifact("env", src, signing_key), blob)
    assert res.value["env"] == {}
    assert res.value["argv"] == []
    # only its own read-only input directory is visible (a small input, as here, travels in
    # the call itself rather than as /input/data.fds)
    assert res.value["seen"] == {
        "/etc/passwd": False,
        "/tmp": False,
        "/home": False,
        "/input": True,
    }


def test_printed_output_is_captured_as_logs(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = 'def main(data, params):\n    print("hello from the sandbox")\n    return 1\n'
    res = run(sandbox, python_artifact("hello", src, signing_key), blob)
    assert res.value == 1
    assert "hello from the sandbox" in res.logs


def test_each_ephemeral_run_gets_a_fresh_instance(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = """
    COUNT = 0
    def main(data, params):
        global COUNT
        COUNT += 1
        return COUNT
    """
    art = python_artifact("counter", src, signing_key)
    assert [run(sandbox, art, blob).value for _ in range(3)] == [1, 1, 1]


def test_a_session_keeps_module_globals_between_invocations(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = """
    COUNT = 0
    def main(data, params):
        global COUNT
        COUNT += 1
        return COUNT
    """
    with sandbox.open(python_artifact("counter", src, signing_key), Limits(MEM, BUDGET)) as s:
        assert [s.invoke(blob).value for _ in range(3)] == [1, 2, 3]
        assert s.invocations == 3


def test_the_time_budget_applies_to_each_invocation_of_a_session(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = """
    import time
    def main(data, params):
        end = time.monotonic() + 0.15
        while time.monotonic() < end:
            pass
        return 1
    """
    with sandbox.open(python_artifact("slowish", src, signing_key), Limits(MEM, 400)) as s:
        # 3 x 150 ms > 400 ms in total, yet each call is within its own budget
        assert [s.invoke(blob).value for _ in range(3)] == [1, 1, 1]


def test_a_memory_cap_below_the_runtime_floor_is_refused(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    with pytest.raises(MemoryLimitExceeded, match=f"memory limit {MIN_MEMORY_MIB - 8} MiB"):
        run(sandbox, python_artifact("sum", SUM, signing_key), blob, mem=MIN_MEMORY_MIB - 8)


# --- through the orchestrator -------------------------------------------------------------------
def test_hostile_python_tasks_fail_with_their_reason_and_the_node_keeps_serving(
    make_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
    signing_key: SigningKey,
) -> None:
    names = ["memory_bomb", "infinite_loop", "reads_a_file", "opens_a_socket"]
    # `fades fn build` refuses a socket import; a signed artifact made without it must still be
    # stopped by the sandbox itself.
    built = [n for n in names if n != "opens_a_socket"]
    node = make_node(
        functions={"ok": SUM, **{n: textwrap.dedent(HOSTILE[n][0]) for n in built}}, capacity=1
    )
    node.functions.add(python_artifact("opens_a_socket", HOSTILE["opens_a_socket"][0], signing_key))
    orc = node.orchestrator
    for name in names:
        _, cls, message = HOSTILE[name]
        rec = orc.run(make_task(name, memory_mib=MEM, time_budget_ms=BUDGET), timeout=60)
        assert rec.status == "failed", rec
        assert rec.error_kind == cls.__name__
        assert rec.error is not None
        assert re.search(message, rec.error), rec.error
        assert rec.finished_at is not None and "total" in rec.timing
        after = orc.run(make_task("ok", memory_mib=MEM, time_budget_ms=5000), timeout=60)
        assert after.status == "done", after
        assert after.result["n"] > 0


def test_a_python_task_below_the_memory_floor_is_refused_at_submit(
    make_node: Callable[..., Any], make_task: Callable[..., dict[str, Any]]
) -> None:
    node = make_node(functions={"ok": SUM}, autostart=False)
    with pytest.raises(
        ArtifactError, match=f"Python functions need memory_mib >= {MIN_MEMORY_MIB}"
    ):
        node.orchestrator.submit(make_task("ok", memory_mib=8))
    assert node.orchestrator.store.list() == []


def test_a_node_without_the_runtime_refuses_python_tasks(
    make_node: Callable[..., Any], make_task: Callable[..., dict[str, Any]]
) -> None:
    node = make_node(functions={"ok": SUM}, runtime=False, autostart=False)
    with pytest.raises(ArtifactError, match="holds no Python runtime"):
        node.orchestrator.submit(make_task("ok", memory_mib=MEM))
