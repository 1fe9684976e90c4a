"""Guard expressions: the condition under which a stage of a pipeline runs (``ice == true``).

A guard is untrusted text from a pipeline spec. It is parsed with :mod:`ast` and checked
against a strict whitelist, then evaluated by a small interpreter over that tree; nothing is
ever handed to ``eval``. What a guard may contain:

* literals: numbers, strings, ``true``/``false``/``null`` (and ``True``/``False``/``None``),
  lists and tuples;
* names: an upstream stage's value; when the stage has exactly one upstream whose value is a
  mapping, that mapping's keys are names too (``ice == true`` after a stage returning
  ``{"ice": true}``);
* ``a.b`` and ``a["b"]`` read a mapping's key, ``a[0]`` a list's item;
* ``and or not``, comparisons (``== != < <= > >= in not in is is not``), ``x if c else y``,
  ``+ - * / // % **`` (``%`` on numbers only);
* calls of ``len abs min max any all round`` only, with positional arguments.

Bounds: at most :data:`MAX_GUARD_CHARS` characters and :data:`MAX_GUARD_DEPTH` levels of
nesting; an integer result of more than :data:`MAX_INT_BITS` bits, or a repeated string or
list longer than :data:`MAX_SEQ_LEN`, is an evaluation error (so ``9**9**9`` or
``"a" * 10**9`` cannot exhaust the host).
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_GUARD_CHARS", "MAX_GUARD_DEPTH", "Guard", "compile_guard"]

#: Longest guard, in characters.
MAX_GUARD_CHARS = 500
#: Deepest nesting of a guard's syntax tree.
MAX_GUARD_DEPTH = 32
#: Largest integer a guard may compute, in bits.
MAX_INT_BITS = 4096
#: Longest string or list a guard may build by repetition or concatenation.
MAX_SEQ_LEN = 100_000
#: How many compiled guards are kept for reuse.
GUARD_CACHE = 256
#: ``round(x, n)``: largest ``|n|``.
MAX_ROUND_DIGITS = 100

_CONSTANTS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


def _round(x: Any, n: Any = None) -> Any:
    if n is None:
        return round(x)
    if not isinstance(n, int) or isinstance(n, bool) or abs(n) > MAX_ROUND_DIGITS:
        raise ValueError(f"round(): digits must be an integer within +-{MAX_ROUND_DIGITS}")
    return round(x, n)


_FUNCS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "any": any,
    "all": all,
    "round": _round,
}


def _checked_int(v: Any) -> Any:
    if isinstance(v, int) and v.bit_length() > MAX_INT_BITS:
        raise ValueError(f"a number larger than {MAX_INT_BITS} bits")
    if isinstance(v, str | list | tuple) and len(v) > MAX_SEQ_LEN:
        raise ValueError(f"a string or list longer than {MAX_SEQ_LEN:,}")
    return v


def _pow(a: Any, b: Any) -> Any:
    big = isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1
    if big and (abs(a).bit_length() - 1) * b > MAX_INT_BITS:
        raise ValueError(f"a number larger than {MAX_INT_BITS} bits")
    return operator.pow(a, b)


def _mul(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        repeated = isinstance(seq, str | list | tuple) and isinstance(n, int) and n > 0
        if repeated and len(seq) * n > MAX_SEQ_LEN:
            raise ValueError(f"a string or list longer than {MAX_SEQ_LEN:,}")
    return operator.mul(a, b)


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str | bytes):  # "%999999999d" % 1 would allocate a gigabyte
        raise ValueError("'%' formatting of strings is not allowed")
    return operator.mod(a, b)


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}

_WHAT = {
    ast.Call: "a call",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.NamedExpr: "an assignment (:=)",
    ast.JoinedStr: "an f-string",
    ast.Starred: "a starred expression",
    ast.Slice: "a slice",
    ast.Set: "a set",
    ast.Dict: "a mapping literal",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class _Refused(Exception):
    def __init__(self, node: ast.AST | None, why: str) -> None:
        super().__init__(why)
        self.col = getattr(node, "col_offset", None)
        self.why = why


def _check(node: ast.AST, depth: int, names: set[str]) -> None:
    """Refuse anything outside the whitelist (raises :class:`_Refused`)."""
    if depth > MAX_GUARD_DEPTH:
        raise _Refused(node, f"nested more than {MAX_GUARD_DEPTH} levels deep")
    d = depth + 1
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool | type(None)) or isinstance(
            node.value, complex
        ):
            raise _Refused(node, f"the literal {type(node.value).__name__} is not allowed")
        return
    if isinstance(node, ast.Name):
        if node.id.startswith("__"):
            raise _Refused(node, f"the name {node.id!r} is not allowed")
        if node.id not in _CONSTANTS and node.id not in _FUNCS:
            names.add(node.id)
        elif node.id in _FUNCS:
            raise _Refused(node, f"{node.id!r} is a function; call it, as in {node.id}(x)")
        return
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise _Refused(node, f"the attribute {node.attr!r} is not allowed")
        _check(node.value, d, names)
        return
    if isinstance(node, ast.Subscript):
        _check(node.value, d, names)
        _check(node.slice, d, names)
        return
    if isinstance(node, ast.Call):
        fn = node.func
        if not isinstance(fn, ast.Name) or fn.id not in _FUNCS:
            what = fn.id if isinstance(fn, ast.Name) else ast.unparse(fn)[:40]
            raise _Refused(
                node, f"calling {what!r} is not allowed (only {', '.join(sorted(_FUNCS))})"
            )
        if node.keywords:
            raise _Refused(node, f"{fn.id}() takes positional arguments only")
        for a in node.args:
            _check(a, d, names)
        return
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, d, names)
        return
    if isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise _Refused(node, "the operator '~' is not allowed")
        _check(node.operand, d, names)
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise _Refused(node, f"the operator {type(node.op).__name__} is not allowed")
        _check(node.left, d, names)
        _check(node.right, d, names)
        return
    if isinstance(node, ast.Compare):
        _check(node.left, d, names)
        for c in node.comparators:
            _check(c, d, names)
        return
    if isinstance(node, ast.IfExp):
        for part in (node.test, node.body, node.orelse):
            _check(part, d, names)
        return
    if isinstance(node, ast.List | ast.Tuple):
        for e in node.elts:
            _check(e, d, names)
        return
    what = _WHAT.get(type(node), type(node).__name__)
    raise _Refused(node, f"{what} is not allowed in a guard")


@dataclass(frozen=True, slots=True)
class Guard:
    """A compiled guard: :meth:`evaluate` it on a stage's inputs."""

    source: str
    #: the names the guard reads (stage names or keys of the single upstream's value)
    names: frozenset[str]
    _tree: ast.Expression = field(repr=False, compare=False)

    def evaluate(self, inputs: Mapping[str, Any]) -> bool:
        """Whether the stage runs, given ``{upstream stage name: its value}``.

        Raises:
            ValueError: the guard cannot be evaluated on these inputs (a missing name, a
                type error, a bound); the message names the problem.
        """
        scope: dict[str, Any] = {}
        if len(inputs) == 1:
            (only,) = inputs.values()
            if isinstance(only, Mapping):
                scope.update({k: v for k, v in only.items() if isinstance(k, str)})
        scope.update(inputs)
        try:
            return bool(_Eval(scope, inputs).eval(self._tree.body))
        except ValueError as exc:
            raise ValueError(f"guard {self.source!r}: {exc}") from None
        except (TypeError, ZeroDivisionError, OverflowError, IndexError, KeyError) as exc:
            msg = str(exc) or type(exc).__name__
            raise ValueError(f"guard {self.source!r}: {type(exc).__name__}: {msg}") from None
        except RecursionError:
            raise ValueError(f"guard {self.source!r}: a value nested too deeply") from None


class _Eval:
    def __init__(self, scope: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
        self.scope = scope
        self.inputs = inputs

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            if node.id in self.scope:
                return self.scope[node.id]
            have = ", ".join(sorted(self.inputs)) or "none"
            raise ValueError(f"no input or field named {node.id!r} (inputs: {have})")
        if isinstance(node, ast.Attribute):
            return self.key(self.eval(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            return self.key(self.eval(node.value), self.eval(node.slice))
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            value: Any = None
            for v in node.values:
                value = self.eval(v)
                if bool(value) != is_and:
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            return _checked_int(_UNARY[type(node.op)](self.eval(node.operand)))
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            return _checked_int(_BINOPS[type(node.op)](left, right))
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self.eval(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, ast.List):
            return [self.eval(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.eval(e) for e in node.elts)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            args = [self.eval(a) for a in node.args]
            return _checked_int(_FUNCS[node.func.id](*args))
        raise ValueError(f"{type(node).__name__} is not allowed")  # refused at compile time

    @staticmethod
    def key(obj: Any, key: Any) -> Any:
        if isinstance(obj, Mapping):
            if key not in obj:
                raise ValueError(f"no field {key!r} (fields: {', '.join(map(str, obj))[:200]})")
            return obj[key]
        if isinstance(obj, list | tuple | str) and isinstance(key, int):
            if not isinstance(key, bool) and -len(obj) <= key < len(obj):
                return obj[key]
            raise ValueError(f"index {key!r} out of range (length {len(obj)})")
        raise ValueError(f"cannot read {key!r} of a {type(obj).__name__}")


def _constant(node: ast.AST) -> bool:
    return all(
        not isinstance(n, ast.Name) or n.id in _CONSTANTS or n.id in _FUNCS for n in ast.walk(node)
    )


def _fold(node: ast.AST) -> None:
    """Evaluate the outermost constant arithmetic and calls now, so ``9**9**9`` or ``1/0``
    is refused when the spec is read rather than at every run."""
    if isinstance(node, ast.BinOp | ast.Call | ast.UnaryOp) and _constant(node):
        try:
            _Eval({}, {}).eval(node)
        except ValueError as exc:
            raise _Refused(node, str(exc)) from None
        except (TypeError, ZeroDivisionError, OverflowError, IndexError, KeyError) as exc:
            raise _Refused(node, f"{type(exc).__name__}: {exc}") from None
        return
    for child in ast.iter_child_nodes(node):
        _fold(child)


def compile_guard(expr: str) -> Guard:
    """Parse and check a guard (the last :data:`GUARD_CACHE` compiled guards are reused:
    an engine may compile a stage's guard on every run).

    Raises:
        ValueError: a syntax error or anything not allowed, naming it and the column (1-based).
        TypeError: ``expr`` is not a string.
    """
    if not isinstance(expr, str):
        raise TypeError(f"a guard is a string, not {type(expr).__name__}")
    return _compile(expr)


@functools.lru_cache(maxsize=GUARD_CACHE)
def _compile(expr: str) -> Guard:
    if not expr.strip():
        raise ValueError("a guard is empty")
    if len(expr) > MAX_GUARD_CHARS:
        raise ValueError(f"a guard is at most {MAX_GUARD_CHARS} characters, got {len(expr)}")
    body = expr.strip()
    lead = len(expr) - len(expr.lstrip())
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        line = exc.lineno or 1
        col = exc.offset or 0
        where = (
            f"at column {col + lead}"
            if line == 1 and 0 < col <= len(body)
            else "at the end"
            if line == 1
            else f"on line {line}"
        )
        raise ValueError(f"guard syntax error {where}: {exc.msg}") from None
    except ValueError:  # a NUL character
        raise ValueError("guard syntax error: a NUL character") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"guard nested more than {MAX_GUARD_DEPTH} levels deep") from None
    names: set[str] = set()
    try:
        _check(tree.body, 1, names)
        _fold(tree.body)
    except _Refused as exc:
        at = f" at column {exc.col + 1 + lead}" if exc.col is not None else ""
        raise ValueError(f"guard refused{at}: {exc.why}") from None
    except RecursionError:
        raise ValueError(f"guard nested more than {MAX_GUARD_DEPTH} levels deep") from None
    return Guard(expr, frozenset(names), tree)
