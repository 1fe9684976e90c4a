"""Defensive reading of everything that comes out of a sandbox.

A function controls the bytes it hands back (a Python function can even patch the runtime's
own encoder), so the host checks them in order of cost: size first (before parsing or
holding a copy), then JSON syntax with the parser's own recursion guard, then nesting depth,
types and finite numbers. Every failure is the function's: :class:`ResultTooLarge` or
:class:`BadFunctionOutput`, never a host traceback.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fades.errors import BadFunctionOutput, ResultTooLarge


def _refuse_constant(name: str) -> Any:
    raise BadFunctionOutput(f"the function returned {name}; results must be finite numbers")


def size_of(data: str | bytes | bytearray) -> int:
    """Bytes of ``data`` as UTF-8 (a str is measured without a copy when it is ASCII)."""
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode("utf-8", "replace"))
    return len(data)


def check_size(data: str | bytes | bytearray, limit: int, what: str = "result") -> None:
    # a str of n characters is at least n bytes: refuse the obvious case without encoding
    if len(data) > limit or size_of(data) > limit:
        raise ResultTooLarge(limit, size_of(data) if len(data) <= 4 * limit else None, what=what)


def parse_json(
    data: str | bytes | bytearray, *, limit: int, max_depth: int, what: str = "result"
) -> Any:
    """Parse JSON from a guest: at most ``limit`` bytes, ``max_depth`` levels, finite numbers.

    Raises:
        ResultTooLarge: more than ``limit`` bytes (checked before parsing).
        BadFunctionOutput: not JSON, nested too deeply, NaN/Infinity.
    """
    check_size(data, limit, what)
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadFunctionOutput(f"the function's {what} is nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, int limits
        raise BadFunctionOutput(
            f"the function's {what} is not valid JSON: {clip(str(exc), 200)}"
        ) from None
    check_value(value, max_depth=max_depth, what=what)
    return value


def check_value(value: Any, *, max_depth: int, what: str = "result") -> None:
    """Refuse nesting deeper than ``max_depth`` and non-finite floats (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            items: Any = v.values()
        elif isinstance(v, list):
            items = v
        else:
            if isinstance(v, float) and not math.isfinite(v):
                _refuse_constant(repr(v))
            continue
        if depth >= max_depth:
            raise BadFunctionOutput(
                f"the function's {what} is nested more than {max_depth} levels deep"
            )
        for x in items:
            if isinstance(x, (dict, list)):
                stack.append((x, depth + 1))
            elif x.__class__ is float and not math.isfinite(x):
                _refuse_constant(repr(x))


def clip(text: str, limit: int, *, tail: bool = False) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (keeps the end if
    ``tail``: the useful end of a traceback)."""
    if len(text) <= limit:
        return text
    note = f" [... {len(text) - limit} characters cut]"
    return note + text[-limit:] if tail else text[:limit] + note


def typed_field(obj: Any, key: str, typ: type | tuple[type, ...], what: str) -> Any:
    """``obj[key]`` if ``obj`` is a dict and the value has type ``typ``, else the guest lied."""
    if not isinstance(obj, dict) or key not in obj:
        raise BadFunctionOutput(f"the function's {what} has no {key!r}")
    value = obj[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and bool not in _tuple(typ)):
        raise BadFunctionOutput(f"the function's {what} has {key!r} of type {type(value).__name__}")
    return value


def _tuple(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def seconds(obj: Any, key: str, what: str = "timing") -> float:
    """A finite, non-negative duration in seconds from a guest's timing report."""
    v = float(typed_field(obj, key, (int, float), what))
    if not math.isfinite(v) or v < 0 or v > 86400:
        raise BadFunctionOutput(f"the function's {what} has {key!r} = {v!r}, not a duration")
    return v
