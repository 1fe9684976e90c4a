"""How the Python runtime's failures become the node's errors: a wasmtime trap (time or
memory limit, a crash) and the guest's own error report (a JSON object the runtime builds;
the function controls it, so every field is checked and clipped).
"""

from __future__ import annotations

import wasmtime

from fades.errors import (
    BadFunctionOutput,
    FunctionCrashed,
    MemoryLimitExceeded,
    SandboxError,
    SandboxViolation,
    TimeLimitExceeded,
)
from fades.sandbox.base import HostLimits, Limits
from fades.sandbox.output import clip, parse_json, typed_field

#: the runtime refuses a result nested deeper than this before encoding it (its
#: fades_capture.MAX_DEPTH; a test keeps the two equal)
GUEST_MAX_DEPTH = 200
_NETWORK_MODULES = {"socket", "_socket", "ssl", "_ssl", "select", "selectors", "asyncio"}


def translate_trap(exc: wasmtime.WasmtimeError | wasmtime.Trap, limits: Limits) -> SandboxError:
    text = str(exc)
    if "interrupt" in text:
        return TimeLimitExceeded(limits.time_budget_ms)
    if "exceeds memory limits" in text:
        return MemoryLimitExceeded(limits.memory_mib)
    trap = next((ln.strip() for ln in text.splitlines() if "wasm trap" in ln), "")
    if "abort" in text:
        # CPython aborts (rather than raising MemoryError) when an allocation fails inside
        # the interpreter itself; a Python function cannot otherwise call abort().
        return MemoryLimitExceeded(limits.memory_mib, detail="the interpreter aborted")
    return FunctionCrashed(f"the sandbox trapped: {trap or text.splitlines()[0]}")


def translate_guest_error(
    payload: str, limits: Limits, logs: str, host: HostLimits
) -> SandboxError:
    bound = host.max_error_chars + host.max_traceback_chars + 4096
    err = parse_json(payload, limit=bound, max_depth=2, what="error report")
    kind = clip(typed_field(err, "type", str, "error report"), 100)
    message = clip(typed_field(err, "message", str, "error report"), host.max_error_chars)
    tb = clip(
        typed_field(err, "traceback", str, "error report"), host.max_traceback_chars, tail=True
    )
    log = logs or None
    if kind in ("StateNotCapturable", "StateRestoreError"):  # answers to state requests
        err = FunctionCrashed(f"{kind}: {message}", guest_message=message)
        err.guest_kind = kind  # type: ignore[attr-defined]
        return err
    if kind == "ResultNotJSON":
        return BadFunctionOutput(
            f"the function's return value is not JSON: {message}", traceback=tb, logs=log
        )
    if kind == "ResultTooDeep":  # refused in the guest before its encoder ran out of stack
        depth = min(host.max_result_depth, GUEST_MAX_DEPTH)
        return BadFunctionOutput(
            f"the function's result is nested more than {depth} levels deep", logs=log
        )
    if kind == "MemoryError":
        return MemoryLimitExceeded(limits.memory_mib, traceback=tb, logs=log)
    if kind == "ModuleNotFoundError" and any(f"'{m}'" in message for m in _NETWORK_MODULES):
        return SandboxViolation(
            f"the function tried to use the network ({kind}: {message}); "
            "sandboxes are granted no network access",
            traceback=tb,
            logs=log,
        )
    if kind in {"FileNotFoundError", "PermissionError", "OSError", "NotADirectoryError"}:
        return SandboxViolation(
            f"the function tried to use the file system ({kind}: {message}); "
            "sandboxes are granted no file system",
            traceback=tb,
            logs=log,
        )
    detail = f"{kind}: {message}" if message else kind
    return FunctionCrashed(f"the function raised {detail}", traceback=tb, logs=log)
