"""Guest side of the fades Python runtime component (runs inside the sandbox only).

Everything the runtime needs to build its reply (the JSON encoder, the clock, the traceback
formatter, the input reader) is bound here, at import, before any function's code runs: a
function that patches ``json``, ``time`` or ``traceback`` changes what it sees, not what the
runtime hands back. The host still trusts nothing in the reply (fades.sandbox.output).
"""

import binascii
import io
import json
import json.encoder
import os
import time
import traceback

import fades_capture
import fades_sdk
import wit_world
from componentize_py_types import Err

# Bound before user code runs (a function can rebind module attributes, not these names).
_clock = time.perf_counter
_format_exception = traceback.format_exception
_fstat = os.fstat
_open = open
_decode = fades_sdk.decode
_decode_lazy = fades_sdk.decode_lazy
_ColumnReader = fades_sdk.ColumnReader
_Dataset = fades_sdk.Dataset
_weakref = __import__("weakref").ref
_BytesIO = io.BytesIO
_load_columns = fades_sdk.Dataset.load
_close_reader = fades_sdk.ColumnReader.close
_type = type
_str = str
_len = len
_isinstance = isinstance
_make_encoder = json.encoder.c_make_encoder
_escape = json.encoder.encode_basestring
_RecursionError = RecursionError
_capture = fades_capture.capture
_restore = fades_capture.restore
_release = fades_capture.release
_referents = __import__("gc").get_referents
_compress = __import__("itertools").compress
_map = map
_set = set
_list = list
_zip = zip
_id = id
_issubclass = issubclass
_max_digits = __import__("sys").get_int_max_str_digits
_urandom = os.urandom
_a2b_base64 = binascii.a2b_base64

#: The standard library a function may import, and the step-graph helper fades_state: equal
#: to fades.functions.modules.AVAILABLE (less fades_sdk; a test keeps them equal).
#: componentize-py bundles only the modules that are imported while the runtime is built, so
#: each is imported here, at build time, and lives in the runtime's pre-initialized snapshot.
STDLIB: tuple[str, ...] = (
    "__future__",
    "abc",
    "array",
    "base64",
    "binascii",
    "bisect",
    "builtins",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "collections.abc",
    "colorsys",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fades_state",
    "fnmatch",
    "fractions",
    "functools",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "importlib",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "logging",
    "math",
    "numbers",
    "operator",
    "pprint",
    "random",
    "re",
    "reprlib",
    "secrets",
    "shlex",
    "statistics",
    "string",
    "struct",
    "sys",
    "textwrap",
    "time",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "zlib",
    "zoneinfo",
)
for _name in STDLIB:
    __import__(_name)

import random  # noqa: E402  (bound after the standard library is imported above)

_reseed = random.seed

MAX_MESSAGE = 4096
MAX_TRACEBACK = 16384
#: a result nested deeper is refused before encoding (the C encoder would exhaust the
#: sandbox's call stack near 1,000 levels: a trap, not an exception); the host's own limit
#: on results (HostLimits.max_result_depth) is lower still
MAX_DEPTH = fades_capture.MAX_DEPTH
_JSON_NESTING = (dict, list, tuple)
_JSON_TYPES = frozenset(_JSON_NESTING)


def _too_deep(value: object) -> bool:
    """True if ``value`` nests dicts, lists and tuples more than :data:`MAX_DEPTH` levels.

    One level at a time, each in a few C calls over all of the level's items (the
    collector's list of what the level's containers refer to, filtered by type, shared
    containers counted once where a level grows): a Python loop per container costs more
    than encoding. A
    cycle never ends, so it counts as too deep (:func:`_deep_problem` then names it).
    """
    if not _isinstance(value, _JSON_NESTING):
        return False
    level: list[object] = [value]
    for _ in range(MAX_DEPTH):
        refs = _referents(*level)
        type_of = _list(_map(_type, refs))
        types = _set(type_of)
        kinds = _JSON_TYPES
        others = types - kinds
        if others:  # a subclass of dict or list nests as deep (few types: a short loop)
            kinds = kinds | {t for t in others if _issubclass(t, _JSON_NESTING)}
        if types.isdisjoint(kinds):
            return False
        below = _list(_compress(refs, _map(kinds.__contains__, type_of)))
        if _len(below) > _len(level) and _len(below) > 64:  # shared ones must not multiply
            below = _list(dict(_zip(_map(_id, below), below)).values())
        level = below
    return True


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


def _user_tb(exc: BaseException, filename: str) -> object:
    """The traceback from the first frame in the function's own file: the runtime's frames are
    dropped (a SyntaxError in the source has none, and still names its file and line)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return tb


def _error(exc: BaseException, filename: str = "") -> Err[str]:
    try:
        exc.__traceback__ = _user_tb(exc, filename)  # type: ignore[assignment]
        tb = "".join(_format_exception(exc))
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


class ResultNotJSON(ValueError):
    """The function's return value (not its code) cannot be encoded as JSON."""


class ResultTooDeep(ValueError):
    """The function's return value nests more than :data:`MAX_DEPTH` levels deep."""


def _deep_problem(value: object) -> BaseException:
    """Why ``value`` (known to be too deep) is refused: a container inside itself (named as
    such), else the depth. Depth-first with the containers on the current path; stops at the
    first level past the limit."""
    on_path: set[int] = set()
    # the deepest level each container was entered at: one met again no deeper is not walked
    # again (shared containers would make the walk exponential)
    deepest: dict[int, int] = {}
    stack: list[tuple[object, int, bool]] = [(value, 0, False)]
    while stack:
        v, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(v))
            continue
        if id(v) in on_path:
            return ResultNotJSON("result: a container that contains itself is not JSON")
        if depth >= MAX_DEPTH:
            break
        if deepest.get(id(v), -1) >= depth:
            continue
        deepest[id(v)] = depth
        on_path.add(id(v))
        stack.append((v, depth, True))
        items = v.values() if _isinstance(v, dict) else v  # type: ignore[attr-defined]
        stack.extend((x, depth + 1, False) for x in items if _isinstance(x, _JSON_NESTING))  # type: ignore[attr-defined]
    return ResultTooDeep(f"result: nested more than {MAX_DEPTH} levels deep")


def _bad_path(value: object) -> str:
    """Where in ``value`` JSON fails: ``result["rooms"][2]: set is not JSON``."""
    stack: list[tuple[str, object]] = [("result", value)]
    seen: set[int] = set()
    while stack:
        path, v = stack.pop()
        t = _type(v)
        if _isinstance(v, int) and not _isinstance(v, bool):
            try:
                _str(v)
            except ValueError:
                return (
                    f"{path}: an integer of more than {_max_digits()} digits cannot be written "
                    f"as JSON (Python's limit on converting an int to text, "
                    f"sys.set_int_max_str_digits)"
                )
            continue
        if v is None or _isinstance(v, (bool, str)):
            continue
        if _isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                return f"{path}: {v!r} is not JSON (NaN and Infinity are not allowed)"
            continue
        if id(v) in seen:
            return f"{path}: a container that contains itself is not JSON"
        if t is dict:
            seen.add(id(v))
            items = list(v.items())  # type: ignore[attr-defined]
            for k, _ in items:
                if _type(k) not in (str, int, float, bool) and k is not None:
                    return f"{path}: key {k!r:.60} ({_type(k).__name__}) is not a JSON key"
            for k, x in reversed(items):
                key = _escape(k) if _isinstance(k, str) else _str(k)
                stack.append((f"{path}[{_clip(key, 60)}]", x))
        elif t is list or t is tuple:
            seen.add(id(v))
            pairs = list(enumerate(v))  # type: ignore[call-overload]
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(pairs))
        else:
            return f"{path}: {t.__name__} is not JSON"
    return "result: is not JSON"


INPUT = "/input/data.fds"
#: each loaded function and its module namespace (a persistent instance keeps them)
_LOADED: dict[tuple[str, str], tuple[object, dict[str, object]]] = {}


def _read_input() -> bytes:
    # readall() fills one buffer sized from fstat without zeroing it first: one pass over
    # the fresh linear memory rather than two (a zeroed bytearray, then readinto). WASI
    # hands over at most 64 KiB per read call whatever the buffer's size.
    with _open(INPUT, "rb", buffering=0) as f:
        size = _fstat(f.fileno()).st_size
        blob = f.readall()
    if _len(blob) != size:
        raise OSError(f"input ended after {_len(blob)} of {size} bytes")
    return blob


def _load(source: str, entry: str, filename: str) -> tuple[object, dict[str, object]]:
    loaded = _LOADED.get((source, entry))
    if loaded is None:
        namespace: dict[str, object] = {"__name__": "fades_function"}
        exec(compile(source, filename, "exec"), namespace)
        fn = namespace.get(entry)
        if not callable(fn):
            raise NameError(f"the function source defines no callable {entry!r}")
        # A persistent function's instance lives on between invocations, and so do its
        # module globals: that is where it keeps state.
        loaded = _LOADED[(source, entry)] = (fn, namespace)
    return loaded


_WARM_SOURCE = (
    "def warm(datasets, params):\n"
    "    return [d.values[-1] + d.codes('device')[0] for d in datasets.values() if len(d)]\n"
)


def _warm(blob_b64: str) -> str:
    """The host's warm-up of a pooled instance before any function is given to it
    (``\0warm\0`` with a small FDS1 blob, base64, as the source): the whole invocation path
    runs once (decode, compile, call, encode, a file lookup) so the first real invocation
    does not pay for its first-time page faults. Nothing is kept: the warm-up function
    lives in a throwaway namespace, never in ``_LOADED``."""
    try:
        with _open("/input/.fades-warm", "rb"):
            pass
    except OSError:
        pass
    # the blob goes through the same lazy column reader as a task's input file
    warm_reader = _ColumnReader(_BytesIO(_a2b_base64(blob_b64)), _clock)
    datasets, params = _decode_lazy(warm_reader)
    namespace: dict[str, object] = {"__name__": "fades_warm"}
    exec(compile(_WARM_SOURCE, "fades_warm.py", "exec"), namespace)
    fn = namespace["warm"]
    out = _encode({"result": fn(datasets, params), "timing": {"read": _clock()}})  # type: ignore[operator]
    del namespace, fn, datasets, params
    _close_reader(warm_reader)
    return out[:0]


def _state_op(source: str, control: str, filename: str) -> str:
    """The host's state requests, passed as an entry starting with NUL (never a valid entry):
    ``\0snapshot\0ENTRY\0LIMIT`` returns the captured globals (fades_capture);
    ``\0warm\0`` warms a pooled instance up (:func:`_warm`);
    ``\0load\0ENTRY`` loads the function's module into a pooled instance kept for it;
    ``\0restore\0ENTRY`` loads the module, puts back the globals captured in the input
    file and reseeds ``random`` from the host's entropy (two restores of one snapshot must
    not draw the same numbers)."""
    parts = control[1:].split("\0")
    op, entry = parts[0], parts[1]
    if op == "warm":
        return _warm(source)
    if op == "load":  # a pooled instance bound to one function ahead of its task
        _load(source, entry, filename)
        return ""
    if op == "snapshot":
        return _capture(_load(source, entry, filename)[1], int(parts[2]))
    if op == "restore":
        text = bytes(_read_input()).decode()
        _restore(_load(source, entry, filename)[1], text)
        _reseed(_urandom(32))
        return ""
    raise ValueError(f"unknown state request {op!r}")


def _open_input() -> object:
    """The input file, buffered: a column is read with one buffered ``read`` (which loops
    over WASI's 64 KiB reads straight into the column's new ``bytes``)."""
    return _open(INPUT, "rb", buffering=INPUT_BUFFER)


#: the buffered reader's own buffer (the tail of each column goes through it)
INPUT_BUFFER = 65536


def _seal(reader: object, kept: list[object]) -> None:
    """End of an invocation: the datasets the function kept (a persistent function's
    globals) read their remaining columns now, while this input is still there; then the
    input is closed. A dataset the function broke stays as it is (a later read of one of
    its columns raises ValueError in the function, not in the runtime)."""
    for ref in kept:
        ds = ref()  # type: ignore[operator]
        if ds is not None:
            try:  # noqa: SIM105 (contextlib is the function's to patch; not used here)
                _load_columns(ds)
            except BaseException:
                pass
    _close_reader(reader)


class WitWorld(wit_world.WitWorld):
    def run(self, source: str, entry: str, filename: str) -> str:
        inline = None
        if entry[:1] == "\0":
            if entry[:8] != "\0inline\0":
                try:
                    return _state_op(source, entry, filename)
                except BaseException as exc:
                    raise _error(exc, filename) from None
            # ``\0inline\0ENTRY\0BASE64``: a small input passed in the call itself rather
            # than as /input/data.fds (each WASI file call costs more than the decode)
            entry, _, inline = entry[8:].partition("\0")
        t0 = _clock()
        reader = datasets = params = report = None
        kept: list[object] = []
        lazy = 0.0
        try:
            src = _open_input() if inline is None else _BytesIO(_a2b_base64(inline))
            reader = _ColumnReader(src, _clock)
            datasets, params = _decode_lazy(reader)
            kept = [_weakref(d) for d in datasets.values() if _isinstance(d, _Dataset)]
            t1 = _clock()
            fn = _load(source, entry, filename)[0]
            t2 = _clock()
            read0 = reader.spent
            result = fn(datasets, params)
            t3 = _clock()
            lazy = reader.spent - read0  # columns read while the function ran
        except BaseException as exc:
            report = _error(exc, filename)
        # the runtime's own references go first: what is still alive, the function kept
        datasets = params = fn = None
        t_seal = _clock()
        if reader is not None:
            _seal(reader, kept)
        if report is not None:
            raise report from None
        sealed = _clock() - t_seal
        if _too_deep(result):
            problem = _deep_problem(result)
            holder, result = [result], None
            _release(holder)  # freed from the outside in: a deep value's own free recurses
            raise _error(problem) from None
        try:
            out = _encode({"result": result})
        except _RecursionError as exc:
            deep = ResultNotJSON(f"result: nested too deeply to encode ({exc})")
            raise _error(deep) from None
        except (TypeError, ValueError):
            try:
                where = _bad_path(result)
            except BaseException as exc:  # a hostile object can break the walk
                where = f"result: cannot be inspected ({_type(exc).__name__})"
            raise _error(ResultNotJSON(where)) from None
        except BaseException as exc:
            raise _error(exc, filename) from None
        t4 = _clock()
        timing = {
            "read": t1 - t0 + lazy + sealed,
            "load": t2 - t1,
            "compute": t3 - t2 - lazy,
            "encode": t4 - t3 - sealed,
        }
        return out[:-1] + ', "timing": ' + _encode(timing) + "}"
