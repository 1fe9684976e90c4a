"""What a Python function sees in the sandbox: the standard library, its own traceback and
print output when it fails, and where in its return value JSON fails.

Real runtime component, real wasmtime.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from tests.guests import python_artifact as _artifact

from fades.broker.base import Dataset
from fades.errors import BadFunctionOutput, FunctionCrashed, TimeLimitExceeded
from fades.functions.keys import SigningKey
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.wire import encode

APP = Path(__file__).resolve().parents[2] / "src" / "fades" / "guest" / "app.py"


def _guest_stdlib() -> tuple[str, ...]:
    """app.STDLIB, read from the source (app.py imports guest-only modules)."""
    for node in ast.parse(APP.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "STDLIB":
            return tuple(ast.literal_eval(node.value))  # type: ignore[arg-type]
    raise AssertionError("app.py defines no STDLIB")


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records([1.0, 2.0], [1.5, 2.5], ["temperature"] * 2, ["r1", "r2"], ["d1"] * 2)
    return encode({"t": ds}, {})


LIMITS = Limits(64, 5000)


def test_guest_stdlib_is_the_build_checks_list() -> None:
    modules = pytest.importorskip("fades.functions.modules")
    assert set(_guest_stdlib()) == set(modules.AVAILABLE) - {modules.SDK}


def test_every_listed_module_imports_inside_the_sandbox(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    names = _guest_stdlib()
    assert {"statistics", "datetime", "heapq", "decimal", "fractions", "csv", "zoneinfo"} <= set(
        names
    )
    src = f"""
    import importlib
    def main(data, params):
        failed = {{}}
        for name in {names!r}:
            try:
                importlib.import_module(name)
            except BaseException as exc:
                failed[name] = repr(exc)
        import statistics, datetime
        return {{"failed": failed, "mean": statistics.mean([1, 2, 3]),
                "year": datetime.date(2024, 5, 1).year}}
    """
    res = sandbox.run(_artifact("stdlib", src, signing_key), blob, LIMITS)
    assert res.value == {"failed": {}, "mean": 2, "year": 2024}


def test_a_failing_function_reports_its_own_frames_lines_and_prints(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = """
    def main(data, params):
        print("looking up nope")
        return {}["nope"]
    """
    with pytest.raises(FunctionCrashed, match="KeyError: 'nope'") as info:
        sandbox.run(_artifact("minmaxmean", src, signing_key), blob, LIMITS)
    tb = info.value.context["traceback"]
    assert re.search(r'File "minmaxmean\.py", line 3, in main', tb), tb
    assert "app.py" not in tb and "<function>" not in tb
    assert tb.startswith("Traceback") and tb.rstrip().endswith("KeyError: 'nope'")
    assert info.value.context["logs"] == "looking up nope\n"


def test_a_deeper_failure_names_each_of_the_functions_frames(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = """
    import statistics
    def helper(xs):
        return statistics.mean(xs)
    def main(data, params):
        return helper([])
    """
    with pytest.raises(FunctionCrashed, match="StatisticsError") as info:
        sandbox.run(_artifact("avg", src, signing_key), blob, LIMITS)
    tb = info.value.context["traceback"]
    assert 'File "avg.py", line 5, in main' in tb and 'File "avg.py", line 3, in helper' in tb


def test_a_syntax_error_names_the_file_and_line_and_no_runtime_frame(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "def main(data, params):\n    x = 1\n    return x +\n"
    with pytest.raises(FunctionCrashed, match="SyntaxError") as info:
        sandbox.run(_artifact("broken", src, signing_key), blob, LIMITS)
    tb = info.value.context["traceback"]
    assert 'File "broken.py", line 3' in tb and "app.py" not in tb, tb


def test_print_output_comes_with_a_time_limit_too(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "def main(data, params):\n    print('started')\n    while True:\n        pass\n"
    with pytest.raises(TimeLimitExceeded) as info:
        sandbox.run(_artifact("spin", src, signing_key), blob, Limits(64, 300))
    assert info.value.context["logs"] == "started\n"


NOT_JSON = {
    "set": ('{"rooms": [1, 2, {3}]}', r'result\["rooms"\]\[2\]: set is not JSON'),
    "bytes": ('{"raw": b"x"}', r'result\["raw"\]: bytes is not JSON'),
    "nan": ('[1.0, float("nan")]', r"result\[1\]: nan is not JSON \(NaN and Infinity"),
    "object": ("{'o': [object()]}", r'result\["o"\]\[0\]: object is not JSON'),
    "key": ("{(1, 2): 3}", r"result: key \(1, 2\) \(tuple\) is not a JSON key"),
    "top": ("{1, 2}", r"^the function's return value is not JSON: result: set is not JSON$"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_a_return_value_json_cannot_encode_says_where(
    case: str, sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    expr, pattern = NOT_JSON[case]
    src = f"""
    def main(data, params):
        return {expr}
    """
    with pytest.raises(BadFunctionOutput, match=pattern) as info:
        sandbox.run(_artifact("ret", src, signing_key), blob, LIMITS)
    assert "return value is not JSON" in str(info.value)
    assert "raised TypeError" not in str(info.value)
    # the sandbox serves the next function afterwards
    ok = sandbox.run(
        _artifact("ok", "def main(data, params):\n    return 1\n", signing_key), blob, LIMITS
    )
    assert ok.value == 1
