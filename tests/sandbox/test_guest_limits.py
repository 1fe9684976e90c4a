"""The runtime's own limits on what a Python function hands back, met with a one-line error
instead of a trap: a result or a stateful function's globals nested 100,000 levels deep
(the C encoder and the pickler would exhaust the sandbox's call stack), and an integer too
long for Python to write as text. Each time the sandbox serves the next function.

Real runtime component, real wasmtime.
"""

from __future__ import annotations

import collections

import pytest
from tests.guests import python_artifact as art

from fades.broker.base import Dataset
from fades.errors import BadFunctionOutput, StateNotCapturable
from fades.functions.keys import SigningKey
from fades.guest import fades_capture
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.pyerrors import GUEST_MAX_DEPTH
from fades.sandbox.wire import encode

LIMITS = Limits(64, 20000)

NEST = """
def nest(n, leaf=None):
    v = [] if leaf is None else leaf
    for _ in range(n):
        v = [v]
    return v
"""


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records([1.0], [1.5], ["temperature"], ["room1"], ["d1"])
    return encode({"t": ds}, {})


def _good(sandbox: PythonSandbox, blob: bytearray, key: SigningKey) -> None:
    """The next function is served as before."""
    src = "def main(data, params):\n    return {'rows': len(data['t'])}\n"
    assert sandbox.run(art("good", src, key), blob, LIMITS).value == {"rows": 1}


def test_the_host_and_the_runtime_agree_on_the_depth_limit() -> None:
    assert GUEST_MAX_DEPTH == fades_capture.MAX_DEPTH


def test_too_deep_walks_iteratively_and_once_over_shared_data() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert fades_capture.too_deep(deep, 200)
    assert not fades_capture.too_deep([[1]], 2) and fades_capture.too_deep([[[1]]], 2)
    assert not fades_capture.too_deep({"a": (1, {2, 3})}, 3)
    assert fades_capture.too_deep({"a": [collections.deque([{"b": 1}])]}, 3)
    assert fades_capture.too_deep({(((1,),),): 1}, 3)  # keys count too
    loop: list[object] = []
    loop.append([loop])  # a cycle is not depth: the encoders stop at it themselves
    assert not fades_capture.too_deep(loop, 200)
    assert fades_capture.too_deep([loop, deep], 200)
    shared: list[object] = []
    for _ in range(150):  # 2**150 paths, 150 containers: walked once each
        shared = [shared, shared]
    assert not fades_capture.too_deep(shared, 200)


def test_a_result_100000_levels_deep_is_refused_naming_the_limit(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    # the refused value is freed by the runtime from the outside in: CPython's own free
    # would recurse once per level and exhaust the stack too
    src = NEST + "def main(data, params):\n    return {'x': nest(100_000)}\n"
    with sandbox.open(art("deep", src, signing_key), LIMITS) as s:
        for _ in range(2):  # a session keeps serving
            with pytest.raises(
                BadFunctionOutput, match=r"result is nested more than 100 levels deep$"
            ):
                s.invoke(blob)
    _good(sandbox, blob, signing_key)


def test_a_result_of_tuples_and_dicts_just_past_the_runtime_limit_is_refused_in_the_guest(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    # 1,500 levels: the encoder got through 1,000 (the host refused those); not this
    src = """
    def main(data, params):
        v = 1
        for i in range(1500):
            v = (v,) if i % 2 else {"k": v}
        return v
    """
    with pytest.raises(BadFunctionOutput, match=r"nested more than 100 levels deep"):
        sandbox.run(art("deep2", src, signing_key), blob, LIMITS)
    _good(sandbox, blob, signing_key)


def test_a_deep_result_with_much_shared_data_is_refused_without_walking_every_path(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    # 150 levels of [v, v] hold 2**150 paths; walked path by path (no memory of what was
    # seen at which depth) the explanation ran into the time budget instead of naming depth
    src = """
    def main(data, params):
        shared = []
        for _ in range(150):
            shared = [shared, shared]
        deep = []
        for _ in range(300):
            deep = [deep]
        return [deep, shared]
    """
    with pytest.raises(BadFunctionOutput, match=r"nested more than 100 levels deep"):
        sandbox.run(art("shared", src, signing_key), blob, LIMITS)
    _good(sandbox, blob, signing_key)


def test_a_result_that_contains_itself_is_named_as_such(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "def main(data, params):\n    v = {'a': []}\n    v['a'].append(v)\n    return v\n"
    with pytest.raises(BadFunctionOutput, match="a container that contains itself"):
        sandbox.run(art("loop", src, signing_key), blob, LIMITS)


def test_a_result_150_levels_deep_is_refused_by_the_host_naming_its_limit(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    # within the runtime's limit: encoded, then refused by the host's own check of the reply
    # (which counts the reply's wrapper as one more level)
    src = NEST + "def main(data, params):\n    return nest(150)\n"
    with pytest.raises(BadFunctionOutput, match=r"nested more than 10[01] levels deep$"):
        sandbox.run(art("d150", src, signing_key), blob, LIMITS)


def test_a_huge_integer_says_why_it_is_not_json(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "def main(data, params):\n    return {'n': [1, 10 ** 5000]}\n"
    with pytest.raises(BadFunctionOutput) as info:
        sandbox.run(art("big", src, signing_key), blob, LIMITS)
    msg = str(info.value)
    assert "\n" not in msg
    assert 'result["n"][1]: an integer of more than 4300 digits' in msg
    assert "int to text" in msg and "set_int_max_str_digits" in msg
    # within the limit it is fine
    ok = "def main(data, params):\n    return 10 ** 4000\n"
    assert sandbox.run(art("big2", ok, signing_key), blob, LIMITS).value == 10**4000
    _good(sandbox, blob, signing_key)


def test_deep_state_is_not_capturable_and_the_session_keeps_serving(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = (
        NEST
        + """
STATE = None
def main(data, params):
    global STATE
    if STATE is None:  # (replacing it would free it: the function's own deep free)
        STATE = {"q": nest(params.get("n", 100_000))}
    return len(data["t"])
"""
    )
    fn = art("deepstate", src, signing_key)
    with sandbox.open(fn, LIMITS) as s:
        assert s.invoke(blob).value == 1
        with pytest.raises(
            StateNotCapturable, match=r"global 'STATE'.* data nested deeper than 200 levels"
        ):
            s.snapshot()
        assert s.invoke(blob).value == 1  # the instance is not poisoned by a trap
    # 150 levels is within the limit: captured and restored
    with sandbox.open(fn, LIMITS) as s:
        s.invoke(encode({"t": Dataset.from_records([1.0], [1.0], ["t"], ["r"], ["d"])}, {"n": 150}))
        state = s.snapshot()
    with sandbox.open(fn, LIMITS) as s:
        s.restore(state)
        assert s.invoke(blob).value == 1
    _good(sandbox, blob, signing_key)
