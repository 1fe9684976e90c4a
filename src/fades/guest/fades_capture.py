"""Transparent state capture for Python functions (runs inside the sandbox; pure stdlib).

A stateful function keeps its state in module globals. Between two invocations the runtime
encodes the globals that hold plain data into a tagged JSON text, and restores them into a
fresh instance after re-running the module (which recreates its code: functions, classes,
imports). Encoding happens here, inside the sandbox, so a hostile function can only produce
(or corrupt) its own state; the host treats the text as opaque bytes.

Captured: None, bool, int (any size), float (NaN and infinities too), complex, str, bytes,
bytearray, list, tuple, dict, set, frozenset, collections' deque, OrderedDict, Counter and
defaultdict (with a builtin type as factory), Decimal, Fraction, datetime's date, time,
datetime and timedelta. Shared references and cycles through lists, dicts, sets and the like
survive (a value reached twice is restored once). Skipped (code, re-created by re-running
the module): dunder names, modules, classes, functions defined with ``def``, builtins.
Anything else (a generator, a lambda, an open file, an instance of a class) raises
:class:`StateNotCapturable` naming the global and where inside it.

A :class:`fades_state.StepGraph` held in a global is captured as its position and ``kv``
(``["obj", "StepGraph", state]``) and restored into the graph the module re-creates.

Two encodings, told apart by their first character. The fast one (``P`` + base64) is the C
pickler restricted to the types above (anything else is refused before it is written, and
restoring names only those classes); the sandbox is the security boundary, and a pickle
comes only from the function's own sandbox. When the fast path refuses (a step graph, or
something not capturable), the tagged JSON encoder decides, and names the culprit.

About 430 lines, one module: both encodings and their decoders share the list of types,
and the runtime bundles it as one file.

Tagged format: ``{"v": 1, "g": {name: value}}`` where a value is a JSON scalar (None, bool, int,
str, finite float) or a list ``[tag, ...]``.
"""

from __future__ import annotations

import base64
import collections
import datetime
import decimal
import fractions
import io
import json
import pickle
import sys
import types
from typing import Any, NoReturn

try:  # inside the sandbox the step-graph helper is a top-level module, on the host a submodule
    import fades_state as _graph_module
except ImportError:
    from fades.guest import fades_state as _graph_module

FORMAT = 1
_SAFE = frozenset({str, bool, type(None)})  # encoded as themselves
_BIG = 2**53  # larger ints travel as strings (JSON readers may round them)
#: classes captured through their ``__fades_state__`` / ``__fades_restore__`` (top-level only)
_GRAPHS: tuple[type, ...] = (_graph_module.StepGraph,)
MAX_DEPTH = 200
_refcount = sys.getrefcount


def _sole_count() -> int:
    """What :func:`sys.getrefcount` reads for a local that holds the only reference (2, or
    less where the interpreter borrows references onto its stack)."""
    v: list[object] = []
    return _refcount(v)


_SOLE = _sole_count()
#: containers :func:`too_deep` descends into (with their subclasses: OrderedDict, Counter ...)
NESTING: tuple[type, ...] = (list, tuple, dict, set, frozenset, collections.deque)
#: types that never hold anything (a container of these only is passed without a loop)
_SCALARS = frozenset({str, int, float, bool, type(None), bytes, complex})


def too_deep(value: object, limit: int, kinds: tuple[type, ...] = NESTING) -> bool:
    """True if ``value`` nests containers of ``kinds`` more than ``limit`` levels deep.

    Iterative: the sandbox's call stack gives out near 1,000 levels of the C encoder or
    pickler, as a trap that ends the instance rather than an exception, so this runs before
    any recursive encoder. A container of scalars only is passed at C speed. A container
    already on the current path (a cycle: the encoders stop there themselves) or reached
    before at least as deep (shared data) is not walked again.
    """
    if not isinstance(value, kinds):
        return False
    best: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(value, 1, False)]
    while stack:
        v, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(v))
            continue
        if depth > limit:
            return True
        if id(v) in on_path or best.get(id(v), 0) >= depth:
            continue
        best[id(v)] = depth
        on_path.add(id(v))
        stack.append((v, depth, True))
        for part in (v.keys(), v.values()) if isinstance(v, dict) else (v,):
            if not _SCALARS.issuperset(set(map(type, part))):
                stack.extend((x, depth + 1, False) for x in part if isinstance(x, kinds))
    return False


def release(holder: list[Any]) -> None:
    """Free the values in ``holder`` (which must hold the only references to them) from the
    outside in, so that a value nested 100,000 levels deep does not exhaust the call stack
    on its way out: CPython frees a container's items from inside its own deallocation, one
    C call deeper per level. Each container is dropped while this loop still holds its
    items, so every deallocation is one level deep."""
    stack: list[Any] = holder[:]
    holder.clear()
    while stack:
        v: Any = stack.pop()
        # held elsewhere too (shared, or still in use): dropping this reference frees nothing
        if isinstance(v, NESTING) and _refcount(v) <= _SOLE:
            if isinstance(v, dict):
                stack.extend(x for x in v if isinstance(x, NESTING))
                stack.extend(x for x in v.values() if isinstance(x, NESTING))
            else:  # (no second name for v: it would keep v alive past ``del v``)
                stack.extend(x for x in v if isinstance(x, NESTING))  # type: ignore[attr-defined]
        del v


_FACTORIES = {
    t.__name__: t for t in (int, float, str, bytes, list, dict, set, tuple, frozenset, bool)
}
_CODE = (
    types.ModuleType,
    type,
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
)


class StateNotCapturable(TypeError):
    """A global of a stateful function cannot be checkpointed (the message names it)."""


class StateRestoreError(ValueError):
    """A captured state could not be decoded into the function's globals."""


def _is_code(name: str, value: object) -> bool:
    """True for what re-running the module recreates (skipped, not captured)."""
    if name.startswith("__") and name.endswith("__"):
        return True
    if isinstance(value, _CODE):
        return True
    if isinstance(value, types.FunctionType):
        return value.__name__ != "<lambda>"  # a def'd function is code; a lambda is not
    return False


class _Encoder:
    def __init__(self, limit: int, track: bool) -> None:
        self.limit = limit
        #: build the path of each value (only to name the culprit after a failure: slow)
        self.track = track
        self.memo: dict[int, int] = {}  # id(container) -> index
        self.keep: list[object] = []  # keeps encoded containers alive so ids stay unique
        self.busy: set[int] = set()  # tuples being encoded (a tuple inside itself is refused)

    def fail(self, path: str, what: str) -> NoReturn:
        raise StateNotCapturable(
            f"global {path} holds {what}, which cannot be checkpointed; a stateful function "
            f"keeps plain data in its globals (numbers, strings, bytes, lists, dicts, sets, "
            f"tuples ...)"
        )

    def ref(self, value: object) -> list[Any] | None:
        n = self.memo.get(id(value))
        if n is not None:
            return ["@", n]
        self.memo[id(value)] = len(self.memo)
        self.keep.append(value)
        return None

    def enc(self, v: Any, path: str, depth: int) -> Any:
        t = type(v)
        if t in _SAFE:
            return v
        if t is int:
            return v if -_BIG < v < _BIG else ["i", str(v)]
        if t is float:
            if v - v == 0.0:  # finite (NaN and infinities give NaN)
                return v
            return ["f", "nan" if v != v else ("inf" if v > 0 else "-inf")]
        if depth > MAX_DEPTH:
            self.fail(path, f"data nested deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if t is complex:
            return ["c", self.enc(v.real, path, d), self.enc(v.imag, path, d)]
        if t is bytes:
            return ["b", base64.b64encode(v).decode()]
        if t is decimal.Decimal:
            return ["dec", str(v)]
        if t is fractions.Fraction:
            return ["fr", str(v.numerator), str(v.denominator)]
        if t is datetime.datetime or t is datetime.date or t is datetime.time:
            if getattr(v, "tzinfo", None) is not None and v.tzinfo is not datetime.UTC:
                self.fail(path, f"a {t.__name__} with a time zone other than UTC")
            tag = {datetime.datetime: "dt", datetime.date: "da", datetime.time: "tm"}[t]
            return [tag, v.isoformat()]
        if t is datetime.timedelta:
            return ["td", v.days, v.seconds, v.microseconds]
        if t is tuple:
            if id(v) in self.busy:
                self.fail(path, "a tuple that contains itself")
            self.busy.add(id(v))
            try:
                return ["t", self.seq(v, path, d)]
            finally:
                self.busy.discard(id(v))
        if t is frozenset:
            return ["fs", self.unordered(v, path, d)]
        if t in _MUTABLE:
            seen = self.ref(v)
            if seen is not None:
                return seen
            return _MUTABLE[t](self, v, path, d)
        self.fail(path, f"a {_describe(v)}")

    def items(self, v: Any, path: str, d: int) -> list[list[Any]]:
        enc = self.enc
        if not self.track:
            return [
                [
                    k if type(k) is str else enc(k, path, d),
                    x if type(x) in _SAFE else enc(x, path, d),
                ]
                for k, x in v.items()
            ]
        return [[enc(k, f"{path} key", d), enc(x, f"{path}[{k!r:.40}]", d)] for k, x in v.items()]

    def seq(self, v: Any, path: str, d: int) -> list[Any]:
        enc = self.enc
        if not self.track:
            return [x if type(x) in _SAFE else enc(x, path, d) for x in v]
        return [enc(x, f"{path}[{i}]", d) for i, x in enumerate(v)]

    def unordered(self, v: Any, path: str, d: int) -> list[Any]:
        enc = self.enc
        return [enc(x, f"{path}{{...}}" if self.track else path, d) for x in v]


def _describe(v: object) -> str:
    t = type(v)
    if isinstance(v, types.FunctionType):
        return "lambda" if v.__name__ == "<lambda>" else "function"
    names = {
        types.GeneratorType: "generator",
        types.CoroutineType: "coroutine",
        types.AsyncGeneratorType: "async generator",
    }
    if t in names:
        return names[t]
    mod = getattr(t, "__module__", "")
    where = "" if mod in ("builtins", "fades_function", "") else f" from {mod}"
    return f"{t.__name__} object{where}"


_MUTABLE: dict[type, Any] = {
    list: lambda e, v, p, d: ["l", e.seq(v, p, d)],
    dict: lambda e, v, p, d: ["d", e.items(v, p, d)],
    set: lambda e, v, p, d: ["s", e.unordered(v, p, d)],
    bytearray: lambda e, v, p, d: ["ba", base64.b64encode(v).decode()],
    collections.deque: lambda e, v, p, d: [
        "dq",
        e.seq(v, p, d),
        v.maxlen,
    ],
    collections.OrderedDict: lambda e, v, p, d: ["od", e.items(v, p, d)],
    collections.Counter: lambda e, v, p, d: ["ct", e.items(v, p, d)],
    collections.defaultdict: lambda e, v, p, d: _defaultdict(e, v, p, d),
}


def _defaultdict(e: _Encoder, v: Any, p: str, d: int) -> list[Any]:
    f = v.default_factory
    if f is not None and _FACTORIES.get(getattr(f, "__name__", "")) is not f:
        e.fail(p, "a defaultdict whose factory is not a builtin type (int, list, set, ...)")
    return ["dd", None if f is None else f.__name__, e.items(v, p, d)]


_PICKLE_OBJECTS = frozenset(
    {
        complex,
        collections.deque,
        collections.OrderedDict,
        collections.Counter,
        collections.defaultdict,
        decimal.Decimal,
        fractions.Fraction,
        datetime.date,
        datetime.time,
        datetime.datetime,
        datetime.timedelta,
    }
)
#: classes a pickled state may name (the objects above, defaultdict factories, UTC)
_PICKLE_CLASSES = {
    (c.__module__, c.__qualname__): c
    for c in (*_PICKLE_OBJECTS, *_FACTORIES.values(), datetime.timezone)
}


class _Refuse(Exception):
    """Something the fast path cannot vouch for: let the tagged encoder decide (and name it)."""


class _Pickler(pickle.Pickler):
    """Pickles plain data only: anything else is refused (the C pickler handles list, dict,
    tuple, set, frozenset, str, bytes, bytearray, int, float, bool and None itself)."""

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t in _PICKLE_OBJECTS:
            if t is collections.defaultdict:
                f = obj.default_factory
                if f is not None and _FACTORIES.get(getattr(f, "__name__", "")) is not f:
                    raise _Refuse
            return NotImplemented
        if isinstance(obj, type) and (obj.__module__, obj.__qualname__) in _PICKLE_CLASSES:
            return NotImplemented
        if obj is datetime.UTC:
            return NotImplemented
        raise _Refuse


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        cls = _PICKLE_CLASSES.get((module, name))
        if cls is None:
            raise StateRestoreError(f"the captured state names {module}.{name:.60}")
        return cls


def _fast(values: dict[str, Any]) -> str | None:
    """The pickled form of ``values`` (about 30x faster than the tagged encoder inside the
    sandbox), or None when something in it needs the tagged encoder's judgement."""
    buf = io.BytesIO()
    try:
        _Pickler(buf, protocol=5).dump(values)
    except (_Refuse, RecursionError, pickle.PicklingError, TypeError, ValueError):
        return None
    return "P" + base64.b64encode(buf.getvalue()).decode()


def capture(namespace: dict[str, Any], limit: int) -> str:
    """The globals of ``namespace`` that hold data, as a tagged JSON text of at most
    ``limit`` characters.

    Raises:
        StateNotCapturable: a global holds something else, or the state is too large.
    """
    data = {k: v for k, v in namespace.items() if type(k) is str and not _is_code(k, v)}
    text = None
    # the pickler recurses in C: deep data goes to the tagged encoder, which names it
    if not any(type(v) in _GRAPHS for v in data.values()) and not too_deep(data, MAX_DEPTH + 1):
        text = _fast(data)
    if text is None:
        try:
            text = _capture(namespace, limit, track=False)
        except StateNotCapturable:  # once more, building paths, to name where it failed
            text = _capture(namespace, limit, track=True)
    if len(text) > limit:
        raise StateNotCapturable(
            f"the function's state is {len(text)} bytes, over the limit of {limit} bytes "
            f"(FADES_STATE_MAX_BYTES on the node)"
        )
    return text


def _capture(namespace: dict[str, Any], limit: int, *, track: bool) -> str:
    enc = _Encoder(limit, track)
    out: dict[str, Any] = {}
    for key, value in list(namespace.items()):
        if type(key) is not str or _is_code(key, value):
            continue
        if type(value) in _GRAPHS:  # a step graph: its position and kv, not its code
            out[key] = ["obj", type(value).__name__, enc.enc(value.__fades_state__(), repr(key), 1)]
            continue
        out[key] = enc.enc(value, repr(key), 0)
    return json.dumps({"v": FORMAT, "g": out}, separators=(",", ":"), allow_nan=False)


class _Decoder:
    def __init__(self) -> None:
        self.memo: list[Any] = []

    def dec(self, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        tag = v[0]
        if tag == "@":
            return self.memo[v[1]]
        if tag == "i":
            return int(v[1])
        if tag == "f":
            return float(v[1])
        if tag == "c":
            return complex(self.dec(v[1]), self.dec(v[2]))
        if tag == "b":
            return base64.b64decode(v[1])
        if tag == "dec":
            return decimal.Decimal(v[1])
        if tag == "fr":
            return fractions.Fraction(int(v[1]), int(v[2]))
        if tag == "dt":
            return datetime.datetime.fromisoformat(v[1])
        if tag == "da":
            return datetime.date.fromisoformat(v[1])
        if tag == "tm":
            return datetime.time.fromisoformat(v[1])
        if tag == "td":
            return datetime.timedelta(days=v[1], seconds=v[2], microseconds=v[3])
        if tag == "t":
            return tuple(self.dec(x) for x in v[1])
        if tag == "fs":
            return frozenset(self.dec(x) for x in v[1])
        # mutable containers: registered before their items, so cycles resolve
        if tag == "ba":
            return self.keep(bytearray(base64.b64decode(v[1])))
        if tag == "l":
            out = self.keep([])
            out.extend(self.dec(x) for x in v[1])
            return out
        if tag == "s":
            s = self.keep(set())
            s.update(self.dec(x) for x in v[1])
            return s
        if tag == "dq":
            q = self.keep(collections.deque(maxlen=v[2]))
            q.extend(self.dec(x) for x in v[1])
            return q
        if tag in ("d", "od", "ct", "dd"):
            if tag == "dd":
                factory = None if v[1] is None else _FACTORIES[v[1]]
                m: Any = self.keep(collections.defaultdict(factory))
                pairs = v[2]
            else:
                cls = {"d": dict, "od": collections.OrderedDict, "ct": collections.Counter}[tag]
                m = self.keep(cls())
                pairs = v[1]
            for k, x in pairs:
                key = self.dec(k)  # the key first: the order the encoder numbered them
                m[key] = self.dec(x)
            return m
        raise StateRestoreError(f"unknown tag {str(tag)[:20]!r} in the captured state")

    def keep(self, value: Any) -> Any:
        self.memo.append(value)
        return value


def restore(namespace: dict[str, Any], text: str | bytes) -> list[str]:
    """Put the globals captured in ``text`` back into ``namespace``; returns their names."""
    if isinstance(text, bytes):
        text = text.decode()
    if text[:1] == "P":
        try:
            found = _Unpickler(io.BytesIO(base64.b64decode(text[1:]))).load()
        except StateRestoreError:
            raise
        except Exception as exc:
            raise StateRestoreError(
                f"the captured state is malformed ({type(exc).__name__})"
            ) from None
        if not isinstance(found, dict):
            raise StateRestoreError("the captured state is not a mapping of globals")
        namespace.update(found)
        return sorted(found)
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != FORMAT:
            raise StateRestoreError(f"not a format-{FORMAT} captured state")
        dec = _Decoder()
        values: dict[str, Any] = {}
        graphs: dict[str, Any] = {}
        for k, v in doc["g"].items():
            if isinstance(v, list) and v and v[0] == "obj":
                graphs[str(k)] = (str(v[1]), dec.dec(v[2]))
            else:
                values[str(k)] = dec.dec(v)
    except StateRestoreError:
        raise
    except Exception as exc:
        raise StateRestoreError(f"the captured state is malformed ({type(exc).__name__})") from None
    for name, (kind, state) in graphs.items():
        target = namespace.get(name)
        if type(target) not in _GRAPHS or type(target).__name__ != kind:
            raise StateRestoreError(f"global {name!r} is no longer a {kind}")
        try:
            target.__fades_restore__(state)  # type: ignore[union-attr]
        except Exception as exc:
            raise StateRestoreError(f"global {name!r}: {exc}") from None
    namespace.update(values)
    return sorted(values)
