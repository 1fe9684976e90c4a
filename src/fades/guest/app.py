"""Guest side of the fades Python runtime component (runs inside the sandbox only).

Everything the runtime needs to build its reply (the JSON encoder, the clock, the traceback
formatter, the input reader) is bound here, at import, before any function's code runs: a
function that patches ``json``, ``time`` or ``traceback`` changes what it sees, not what the
runtime hands back. The host still trusts nothing in the reply (fades.sandbox.output).
"""

import json
import json.encoder
import os
import time
import traceback

import fades_sdk
import wit_world
from componentize_py_types import Err

# Bound before user code runs (a function can rebind module attributes, not these names).
_clock = time.perf_counter
_format_exception = traceback.format_exception
_fstat = os.fstat
_open = open
_decode = fades_sdk.decode
_type = type
_str = str
_len = len
_isinstance = isinstance
_make_encoder = json.encoder.c_make_encoder
_escape = json.encoder.encode_basestring
_RecursionError = RecursionError

MAX_MESSAGE = 4096
MAX_TRACEBACK = 16384


def _no_default(o: object) -> object:
    raise TypeError(f"Object of type {_type(o).__name__} is not JSON serializable")


def _encode(value: object) -> str:
    """json.dumps(value, allow_nan=False, ensure_ascii=False) from pieces bound at import."""
    if _make_encoder is None:  # pragma: no cover - CPython always has the C encoder
        return json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode(value)
    # the C encoder formats floats itself and refuses NaN/Infinity (allow_nan=False)
    enc = _make_encoder({}, _no_default, _escape, None, ":", ",", False, False, False)
    return "".join(enc(value, 0))


def _clip(text: str, limit: int, tail: bool = False) -> str:
    if _len(text) <= limit:
        return text
    return ("..." + text[-limit:]) if tail else (text[:limit] + "...")


def _error(exc: BaseException) -> Err[str]:
    try:
        tb = "".join(_format_exception(exc)[-6:])
    except BaseException:  # a hostile exception can break its own formatting
        tb = ""
    try:
        message = _str(exc)
    except BaseException:
        message = "<unprintable exception>"
    report = {
        "type": _clip(_type(exc).__name__, 100),
        "message": _clip(message, MAX_MESSAGE),
        "traceback": _clip(tb, MAX_TRACEBACK, tail=True),
    }
    return Err(_encode(report))


INPUT = "/input/data.fds"
_LOADED: dict[tuple[str, str], object] = {}


def _read_input() -> bytearray:
    # One read into a preallocated buffer: several GB/s, against ~1 GB/s for stdin streams.
    with _open(INPUT, "rb", buffering=0) as f:
        size = _fstat(f.fileno()).st_size
        buf = bytearray(size)
        view, pos = memoryview(buf), 0
        while pos < size:
            n = f.readinto(view[pos:])
            if not n:
                raise OSError(f"input ended after {pos} of {size} bytes")
            pos += n
    return buf


class WitWorld(wit_world.WitWorld):
    def run(self, source: str, entry: str) -> str:
        t0 = _clock()
        try:
            blob = _read_input()
            t1 = _clock()
            datasets, params = _decode(blob)
            fn = _LOADED.get((source, entry))
            if fn is None:
                namespace: dict[str, object] = {"__name__": "fades_function"}
                exec(compile(source, "<function>", "exec"), namespace)
                fn = namespace.get(entry)
                if not callable(fn):
                    raise NameError(f"the function source defines no callable {entry!r}")
                # A persistent function's instance lives on between invocations, and so do its
                # module globals: that is where it keeps state.
                _LOADED[(source, entry)] = fn
            t2 = _clock()
            result = fn(datasets, params)
            t3 = _clock()
            out = _encode({"result": result})
        except _RecursionError as exc:
            raise _error(ValueError(f"the result is nested too deeply to encode ({exc})")) from None
        except BaseException as exc:
            raise _error(exc) from None
        t4 = _clock()
        timing = {"read": t1 - t0, "load": t2 - t1, "compute": t3 - t2, "encode": t4 - t3}
        return out[:-1] + ', "timing": ' + _encode(timing) + "}"
