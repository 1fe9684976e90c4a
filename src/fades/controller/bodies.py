"""Reading HTTP request bodies defensively: size, content type, JSON shape and depth.

Every limit is checked while reading, before the cost is paid: a body is read in chunks and
refused once it passes its limit; JSON is parsed only after the size check, and its nesting is
measured without recursion before anything else walks it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request

from fades.errors import BadRequest, PayloadTooLarge, TaskValidationError, UnsupportedContentType

#: largest task body (bytes): what the fabric carries in one message by default
MAX_TASK_BYTES = 1024 * 1024
#: largest artifact upload (bytes)
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
#: deepest nesting of a JSON task body (objects and arrays)
MAX_JSON_DEPTH = 64


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, refused (413) once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"{what} of {int(declared)} bytes exceeds the limit of {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes")
    return bytes(buf)


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_type(request: Request, allowed: tuple[str, ...], what: str) -> None:
    """Refuse (415) a body whose content type is set and not in ``allowed``."""
    ctype = content_type(request)
    if ctype and ctype not in allowed:
        raise UnsupportedContentType(
            f"{what} must be sent as {' or '.join(allowed)}, not {ctype!r}"
        )


def depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting no deeper than ``limit + 1``."""
    level = [value] if isinstance(value, dict | list) else []
    d = 0
    while level:  # one nesting level at a time; scalars are never visited
        d += 1
        if d > limit:
            return d
        inner: list[Any] = []
        for v in level:
            items = v.values() if isinstance(v, dict) else v
            inner += [x for x in items if isinstance(x, dict | list)]
        level = inner
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice in one object is refused (parsers disagree on which one wins)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k[:64]!r} is given twice in one object")
        out[k] = v
    return out


def parse_json_object(raw: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object from ``raw``: UTF-8, finite numbers, at most ``max_depth`` deep.

    Raises:
        TaskValidationError: not JSON, not an object, NaN/Infinity, or too deep (400).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskValidationError(
            f"{what} is not UTF-8 text (byte {exc.start})", problems=[("body", "not UTF-8")]
        ) from None
    too_deep = TaskValidationError(
        f"{what} is nested deeper than {max_depth} levels",
        problems=[("body", f"deeper than {max_depth} levels")],
    )
    try:
        value = (
            json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
            if text.strip()
            else None
        )
    except RecursionError:  # json.loads recurses once per nesting level
        raise too_deep from None
    except ValueError as exc:
        raise TaskValidationError(
            f"{what} is not valid JSON: {exc}", problems=[("body", "not JSON")]
        ) from None
    # a cheap bound first: fewer brackets than the limit cannot nest deeper than it
    if max(text.count("["), text.count("{")) > max_depth and depth(value, max_depth) > max_depth:
        raise too_deep
    if not isinstance(value, dict):
        raise TaskValidationError(
            f"{what} must be a JSON object, not {type(value).__name__}",
            problems=[("body", "not a JSON object")],
        )
    return value


def finite(value: float, name: str, low: float, high: float) -> float:
    """``value`` if it is a finite number within ``[low, high]``, else BadRequest (400)."""
    if not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return value
