"""The per-task call into the Python runtime, with the work that does not change per task
done once.

- :class:`RunCall` calls the runtime's ``run(source, entry, filename) -> result<string,
  string>`` export. wasmtime-py's ``Func.__call__`` asks the engine for the function's type
  and rebuilds its parameter and result converters on every call (about 50 µs, a tenth of a
  tiny task); here they are looked up once per compiled runtime and reused. The call itself
  (lowering, the guest, lifting, traps) is wasmtime's own code, unchanged.
- :func:`mark_clean` / :func:`needs_emptying` / :func:`input_written` remember which input
  directories are known to hold no ``data.fds``: a small input travels inside the call, and
  the directory's earlier input must never stay readable, but cutting an already-empty file
  on every tiny task costs a system call and a raised ``FileNotFoundError``. A directory not
  known to be clean is always emptied (the safe default).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component._enter import enter_wasm
from wasmtime.component._types import ResultType, String, Variant


class RunCall:
    """A bound call of one instance's ``run`` export with types looked up once.

    ``types``: the ``(param types, result type)`` of an earlier instance of the same
    compiled component (None: looked up now). A component export's type is fixed by the
    component, so every instance of one runtime shares it.
    """

    __slots__ = ("_func", "_params", "_result", "_strings")

    def __init__(self, func: Any, store: wasmtime.Store, types: tuple[Any, Any] | None) -> None:
        if types is None:
            fty = func.type(store)
            types = ([ty for _, ty in fty.params], fty.result)
        self._func = func
        self._params: list[Any] = list(types[0])
        self._result: Any = types[1]
        if len(self._params) != 3 or self._result is None:
            raise ValueError("the runtime's run export is not run(string, string, string)")
        res = self._result  # result<string, string>: lifted here, without its type lookups
        self._strings = (
            isinstance(res, ResultType)
            and isinstance(res.ok, String)
            and isinstance(res.err, String)
        )

    @property
    def types(self) -> tuple[Any, Any]:
        return self._params, self._result

    def __call__(self, store: wasmtime.Store, *args: str) -> Any:
        n_params = len(self._params)
        if len(args) != n_params:
            raise TypeError(f"run takes {n_params} arguments, not {len(args)}")
        params = (ffi.wasmtime_component_val_t * n_params)()
        n = 0
        try:
            for ty, val in zip(self._params, args, strict=True):
                ty.convert_to_c(store, val, ctypes.pointer(params[n]))
                n += 1
            space = ffi.wasmtime_component_val_t()
            func, ctx = ctypes.byref(self._func._func), store._context()

            def run() -> Any:
                return ffi.wasmtime_component_func_call(
                    func, ctx, params, n, ctypes.byref(space), 1
                )

            enter_wasm(run)
            if not self._strings:
                return self._result.convert_from_c(space)
            return _lift_string_result(space)
        finally:
            for i in range(n):
                ffi.wasmtime_component_val_delete(ctypes.byref(params[i]))


def _lift_string_result(c: Any) -> Variant:
    """A ``result<string, string>`` value as wasmtime-py's ``ResultType.convert_from_c`` lifts
    it (``Variant("ok" | "err", str)``, the boxed payload freed), with no type lookups."""
    if c.kind != ffi.WASMTIME_COMPONENT_RESULT.value:
        raise wasmtime.WasmtimeError("the runtime's run returned something not a result")
    tag = "ok" if c.of.result.is_ok else "err"
    ptr = c.of.result.val
    inner = ptr.contents
    if inner.kind != ffi.WASMTIME_COMPONENT_STRING.value:
        raise wasmtime.WasmtimeError("the runtime's run returned a result not of strings")
    payload = ffi.to_str(inner.of.string)
    ffi.wasm_byte_vec_delete(ctypes.byref(inner.of.string))
    inner.kind = ffi.WASMTIME_COMPONENT_BOOL
    inner.of.boolean = False
    ffi.wasmtime_component_val_delete(ptr)
    return Variant(tag, payload)


#: Input directories known to hold no input file (see the module's docstring).
_CLEAN: set[str] = set()
_CLEAN_LOCK = threading.Lock()
#: Forgetting is always safe (a directory not known clean is emptied): the set is bounded.
MAX_KNOWN_CLEAN = 1024


def needs_emptying(directory: str) -> bool:
    """Whether ``directory``'s input file may hold an earlier input."""
    return directory not in _CLEAN


def mark_clean(directory: str) -> None:
    """``directory`` holds no input file now (it was just emptied)."""
    with _CLEAN_LOCK:
        if len(_CLEAN) >= MAX_KNOWN_CLEAN:
            _CLEAN.clear()
        _CLEAN.add(directory)


def input_written(directory: str) -> None:
    """An input file is (about to be) written into ``directory``: call before writing."""
    with _CLEAN_LOCK:
        _CLEAN.discard(directory)
