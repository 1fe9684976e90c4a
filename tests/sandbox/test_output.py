"""The host trusts nothing that comes out of a sandbox (issue 16, class 4, and result bounds).

Python functions forge the runtime's reply (by patching what they can reach), core modules
hand the host bad result buffers or exports that break the ABI. Each case is the function's
failure with its kind, and the next function runs. Real wasmtime, real runtime component.
"""

from __future__ import annotations

from typing import Any

import pytest
import wasmtime
from tests.guests import python_artifact as py

from fades.broker.base import Dataset
from fades.errors import BadFunctionOutput, FunctionCrashed, ResultTooLarge, SandboxError
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.sandbox import CoreSandbox, HostLimits, Limits, PythonSandbox
from fades.sandbox.output import parse_json
from fades.sandbox.wire import encode

HOST = HostLimits(mode="inprocess")
MEM, BUDGET = 64, 5000

# A function that replaces the runtime's own encoder: the reply becomes
# ``result[:-1] + ', "timing": ' + timing + "}"`` with the two forged strings.
FORGE = """
import sys
def main(data, params):
    sys.modules["app"]._encode = lambda v: ({timing}) if "read" in v else ({result})
    return 1
"""
OK_TIMING = '\'{"read": 0, "load": 0, "compute": 0, "encode": 0}\''

FORGED: dict[str, tuple[str, str, type[SandboxError], str]] = {
    "not_json": ("'this is not json'", OK_TIMING, BadFunctionOutput, "reply is not valid JSON"),
    "deep": ("'[' * 200000", "']' * 200000", BadFunctionOutput, "nested"),
    "deep_result": (
        "'{\"result\": ' + '[' * 500 + ']' * 500 + '}'",
        OK_TIMING,
        BadFunctionOutput,
        "nested more than",
    ),
    "nan": ("'{\"result\": NaN}'", OK_TIMING, BadFunctionOutput, "returned NaN"),
    "infinity": ("'{\"result\": 1e999}'", OK_TIMING, BadFunctionOutput, "returned inf"),
    "timing_type": (
        "'{\"result\": 1}'",
        '\'{"read": "soon", "load": 0, "compute": 0, "encode": 0}\'',
        BadFunctionOutput,
        "'read' of type str",
    ),
    "timing_negative": (
        "'{\"result\": 1}'",
        '\'{"read": -1, "load": 0, "compute": 0, "encode": 0}\'',
        BadFunctionOutput,
        "not a duration",
    ),
    "timing_missing": ("'{\"result\": 1}'", "'{}'", BadFunctionOutput, "timing has no 'read'"),
    "huge": (
        "'{\"result\": \"' + 'x' * (9 << 20) + '\"}'",
        OK_TIMING,
        ResultTooLarge,
        "^result size limit 8388608 bytes exceeded",
    ),
}


@pytest.fixture(scope="module")
def blob() -> bytearray:
    ds = Dataset.from_records([1.0, 2.0], [20.0, 22.0], ["temperature"] * 2, ["r1"] * 2, ["d"] * 2)
    return encode({"t": ds})


@pytest.fixture(scope="module")
def sandbox(runtime_artifact: Artifact) -> PythonSandbox:
    return PythonSandbox(runtime_artifact, HOST)


def run_py(sandbox: PythonSandbox, art: Artifact, blob: bytearray, mem: int = MEM) -> Any:
    return sandbox.run(art, blob, Limits(mem, BUDGET))


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_python_reply_is_the_functions_failure(
    case: str, sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    result, timing, kind, text = FORGED[case]
    art = py(case, FORGE.format(result=result, timing=timing), signing_key)
    with pytest.raises(kind, match=text):
        run_py(sandbox, art, blob, mem=128)
    good = py("good", "def main(data, params):\n    return sum(data['t'].values)\n", signing_key)
    assert run_py(sandbox, good, blob).value == 42.0


def test_patching_json_time_and_traceback_does_not_change_the_runtimes_reply(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = """
    import json, time, traceback
    def main(data, params):
        json.dumps = lambda *a, **k: "forged"
        json.JSONEncoder.encode = lambda *a, **k: "forged"
        time.perf_counter = lambda: float("nan")
        traceback.format_exception = lambda *a, **k: ["forged"]
        return {"mean": 21.0}
    """
    res = run_py(sandbox, py("patcher", src, signing_key), blob)
    assert res.value == {"mean": 21.0}
    assert all(v >= 0 for v in res.timing.values())


def test_a_huge_result_fails_with_result_too_large_before_the_host_parses_it(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "def main(data, params):\n    return [0] * 5_000_000\n"  # 10 MB of JSON
    with pytest.raises(ResultTooLarge, match=r"^result size limit 8388608 bytes exceeded"):
        run_py(sandbox, py("big", src, signing_key), blob, mem=128)


def test_a_50_mb_exception_message_is_cut_to_the_bound(
    sandbox: PythonSandbox, blob: bytearray, signing_key: SigningKey
) -> None:
    src = "def main(data, params):\n    raise ValueError('x' * (50 << 20))\n"
    with pytest.raises(FunctionCrashed) as err:
        run_py(sandbox, py("loud", src, signing_key), blob, mem=256)
    assert len(str(err.value)) < HOST.max_error_chars + 200
    assert len(err.value.context.get("traceback", "")) <= HOST.max_traceback_chars + 100


def test_a_nan_result_is_refused() -> None:
    with pytest.raises(BadFunctionOutput, match="NaN"):
        parse_json('{"a": [1, NaN]}', limit=100, max_depth=10)
    with pytest.raises(BadFunctionOutput, match="nested more than 3 levels"):
        parse_json("[[[[1]]]]", limit=100, max_depth=3)
    with pytest.raises(ResultTooLarge):
        parse_json("[" + "1," * 100 + "1]", limit=100, max_depth=3)
    with pytest.raises(BadFunctionOutput, match="not valid JSON"):
        parse_json("1" * 5000, limit=10_000, max_depth=3)  # past Python's int digit limit


# --- core modules -------------------------------------------------------------------------------
ALLOC = """
  (global $heap (mut i32) (i32.const 65536))
  (func (export "fades_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
"""


def json_module(text: str, length: int | None = None) -> str:
    n = len(text.encode()) if length is None else length
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f"""
(module
  (import "fades" "result_json" (func $json (param i32 i32)))
  (memory (export "memory") 4)
  (data (i32.const 16) "{escaped}")
  {ALLOC}
  (func (export "fades_run") (param i32 i32) (result i32)
    (call $json (i32.const 16) (i32.const {n}))
    (i32.const 0)))
"""


F64_NAN = """
(module
  (import "fades" "result_f64" (func $f64 (param i32 i32 f64)))
  (memory (export "memory") 2)
  (data (i32.const 16) "mean")
""" + ALLOC + """
  (func (export "fades_run") (param i32 i32) (result i32)
    (call $f64 (i32.const 16) (i32.const 4) (f64.div (f64.const 0) (f64.const 0)))
    (i32.const 0)))
"""  # fmt: skip

MEMORY_IS_A_GLOBAL = """
(module
  (global (export "memory") i32 (i32.const 0))
  (memory 1)
""" + ALLOC + """
  (func (export "fades_run") (param i32 i32) (result i32) (i32.const 0)))
"""  # fmt: skip

ALLOC_WRONG_TYPE = """
(module
  (memory (export "memory") 2)
  (func (export "fades_alloc") (param i64) (result i64) (i64.const 64))
  (func (export "fades_run") (param i32 i32) (result i32) (i32.const 0)))
"""

NO_RUN = '(module (memory (export "memory") 1) ' + ALLOC + ")"

TABLE_GROW = """
(module
  (memory (export "memory") 2)
  (table $t 1 funcref)
""" + ALLOC + """
  (func (export "fades_run") (param i32 i32) (result i32)
    (if (i32.eq (table.grow $t (ref.null func) (i32.const 200000000)) (i32.const -1))
      (then (return (i32.const 3))))
    (i32.const 0)))
"""  # fmt: skip

CORE_CASES: dict[str, tuple[str, type[SandboxError], str]] = {
    "invalid_json": (json_module("{not json"), BadFunctionOutput, "result_json is not valid JSON"),
    "nan_json": (json_module('{"m": NaN}'), BadFunctionOutput, "returned NaN"),
    "deep_json": (json_module("[" * 5000 + "]" * 5000), BadFunctionOutput, "nested"),
    "huge_json_length": (json_module("{}", length=200 << 20), ResultTooLarge, "result size limit"),
    "nan_f64": (F64_NAN, BadFunctionOutput, "'mean' is nan; results must be finite"),
    "memory_is_a_global": (MEMORY_IS_A_GLOBAL, BadFunctionOutput, "'memory' is a global, not"),
    "alloc_wrong_type": (ALLOC_WRONG_TYPE, BadFunctionOutput, "'fades_alloc' has the wrong"),
    "no_run": (NO_RUN, BadFunctionOutput, "'fades_run' is not a function"),
    "table_grow": (TABLE_GROW, FunctionCrashed, "returned error status 3"),
}


@pytest.mark.parametrize("case", sorted(CORE_CASES))
def test_a_core_module_cannot_hand_the_host_garbage(
    case: str, blob: bytearray, signing_key: SigningKey
) -> None:
    wat, kind, text = CORE_CASES[case]
    # signed as an attacker could, without the build-time ABI check
    art = create("core", case, bytes(wasmtime.wat2wasm(wat)), key=signing_key)
    with pytest.raises(kind, match=text):
        CoreSandbox(HOST).run(art, blob, Limits(16, 2000))
    good = create("core", "ok", bytes(wasmtime.wat2wasm(json_module('{"ok": 1}'))), key=signing_key)
    assert CoreSandbox(HOST).run(good, blob, Limits(16, 2000)).value == {"ok": 1}


def test_node_wide_limits_come_from_the_environment() -> None:
    env = {"FADES_SANDBOX_MAX_RESULT_BYTES": "1024", "FADES_SANDBOX_MODE": "inprocess"}
    host = HostLimits.from_env(env)
    assert (host.max_result_bytes, host.mode, host.grace_ms) == (1024, "inprocess", 500)
    with pytest.raises(ValueError, match="FADES_SANDBOX_GRACE_MS must be an integer"):
        HostLimits.from_env({"FADES_SANDBOX_GRACE_MS": "soon"})
    with pytest.raises(ValueError, match="sandbox limit max_result_bytes must be at least 1"):
        HostLimits(max_result_bytes=0)
    wasm = bytes(wasmtime.wat2wasm(json_module('{"a": "' + "x" * 2000 + '"}')))
    core = create("core", "j", wasm, key=None)
    with pytest.raises(ResultTooLarge, match="result size limit 1024 bytes exceeded"):
        CoreSandbox(host).run(core, encode({}), Limits(16, 2000))
