"""Bounded decoding of untrusted task text: the limits every task file is held to.

A task file comes from a tenant, so nothing in it may make the host spend without bound
before the schema in :mod:`fades.task` even looks at it. :func:`decode_task_text` turns YAML
or JSON text into plain values while refusing, with a one-line
:class:`~fades.errors.TaskValidationError`:

* text over :data:`MAX_TASK_BYTES` (checked before parsing);
* nesting deeper than :data:`MAX_DEPTH` and more than :data:`MAX_ALIASES` YAML aliases
  (checked while the YAML is composed, so a deep file never reaches Python's recursion limit);
* more than :data:`MAX_NODES` values with aliases expanded (a "billion laughs" is refused
  after at most that many steps), and NaN or infinity anywhere (:func:`shape_problem`);
* a key given twice in one mapping or object (parsers keep one of them silently);
* anything else the YAML/JSON parsers reject (invalid dates, 5000-digit integers, NUL bytes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from fades.errors import TaskValidationError

#: Largest task file or text, in bytes of UTF-8.
MAX_TASK_BYTES = 1 * 2**20
#: Deepest nesting of mappings and lists in a task (``params`` included).
MAX_DEPTH = 32
#: Most values (scalars, mappings, lists) in a task, with YAML aliases expanded.
MAX_NODES = 100_000
#: Most YAML aliases (``*name``) in a task file.
MAX_ALIASES = 64


def clip(text: str, n: int = 64) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def shape_problem(obj: Any, max_depth: int, *, where: str = "") -> str | None:
    """What is wrong with the shape of ``obj`` (too deep, too many values, NaN), or None.

    Iterative, and stops at the first problem: it costs at most :data:`MAX_NODES` steps,
    whatever ``obj`` is (even self-referencing, or a YAML alias bomb).
    """
    stack: list[tuple[Any, int, str]] = [(obj, 1, where)]
    seen = 0
    while stack:
        o, depth, path = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            return f"more than {MAX_NODES:,} values (YAML aliases expanded)"
        if isinstance(o, dict | list | tuple | set | frozenset):
            if depth > max_depth:
                return f"nested more than {max_depth} levels deep (at {path or 'the top'})"
            items = o.items() if isinstance(o, dict) else enumerate(o)
            for k, v in items:
                if isinstance(v, dict | list | tuple | set | frozenset | float):
                    stack.append((v, depth + 1, clip(f"{path}.{k}" if path else str(k), 120)))
                else:
                    seen += 1
            if seen > MAX_NODES:
                return f"more than {MAX_NODES:,} values (YAML aliases expanded)"
        elif isinstance(o, float) and not math.isfinite(o):
            return f"{path or 'value'}: NaN and infinity are not allowed"
    return None


def _refused(message: str, field: str, reason: str) -> TaskValidationError:
    return TaskValidationError(f"invalid task: {message}", problems=[(field, reason)])


def refused(message: str, field: str, reason: str) -> TaskValidationError:
    """A TaskValidationError with one problem."""
    return TaskValidationError(f"invalid task: {message}", problems=[(field, reason)])


class _Refused(Exception):
    """A bound of the YAML loader was hit (raised from inside the composer)."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing deep nesting and many aliases while it composes.

    Aliases are not copied by PyYAML (they share the anchored value), so composing stays
    cheap; what they would expand to is bounded afterwards by :func:`_shape`.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.fades_depth = 0
        self.fades_aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.fades_aliases += 1
            if self.fades_aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} YAML aliases")
            return super().compose_node(parent, index)
        self.fades_depth += 1
        try:
            if self.fades_depth > MAX_DEPTH + 1:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.fades_depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """Refuse a key given twice in one mapping: YAML keeps the last silently, so a task
        could show one ``credentials:`` and run as another (merge keys ``<<`` may still be
        overridden, as YAML says)."""
        seen: set[str] = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    line = key_node.start_mark.line + 1
                    raise _Refused(f"key {clip(key_node.value)!r} is given twice (line {line})")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not allowed")


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: a key given twice in one object is
    refused (JSON parsers disagree on which one wins)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Refused(f"key {clip(k)!r} is given twice")
        out[k] = v
    return out


def decode_task_text(text: str | bytes, source: str = "task") -> Any:
    """YAML or JSON text (bytes: UTF-8) to plain values, within the bounds.

    Raises:
        TaskValidationError: naming the bound or the parse error.
    """
    text = _checked_text(text, source)
    head = text.lstrip()[:1]
    try:
        if head in ("{", "["):
            try:
                return json.loads(text, parse_constant=_no_constant, object_pairs_hook=unique_keys)
            except json.JSONDecodeError:
                pass  # flow-style YAML such as {a: 1}: the YAML loader below decides
        return yaml.load(text, Loader=_BoundedLoader)
    except _Refused as exc:
        raise refused(f"{source}: {exc}", "task", str(exc)) from None
    except RecursionError:
        msg = f"nested more than {MAX_DEPTH} levels deep"
        raise refused(f"{source}: {msg}", "task", msg) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = (
            getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
        )
        raise refused(
            f"{source} is not valid YAML/JSON: {clip(str(problem), 200)}{where}",
            "task",
            "not YAML/JSON",
        ) from None
    except Exception as exc:  # e.g. a date 2020-02-30, an integer of 5000 digits
        raise refused(
            f"{source} is not valid YAML/JSON: {type(exc).__name__}: {clip(str(exc), 200)}",
            "task",
            "not YAML/JSON",
        ) from None


def _checked_text(text: str | bytes, source: str) -> str:
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_TASK_BYTES:
            raise too_big(source, len(text))
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise refused(
                f"{source} is not UTF-8 text (byte {exc.start})", "task", "not UTF-8 text"
            ) from None
    if not isinstance(text, str):
        raise TypeError(f"a task text is str or bytes, not {type(text).__name__}")
    if len(text) > MAX_TASK_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TASK_BYTES:
        raise too_big(source, len(text.encode("utf-8", "surrogatepass")))
    return text


def too_big(source: str, size: int) -> TaskValidationError:
    reason = f"larger than {MAX_TASK_BYTES:,} bytes"
    return refused(f"{source} is {size:,} bytes, {reason}", "task", reason)


def check_json(v: Any, what: str, limit: int, why: str) -> None:
    """Refuse (``ValueError``) a value ``what`` that is not plain JSON within :data:`MAX_DEPTH`
    or is over ``limit`` bytes of compact JSON; ``why`` follows the limit in the message."""
    problem = shape_problem(v, MAX_DEPTH)
    if problem:
        raise ValueError(problem)
    try:
        text = json.dumps(v, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable ({str(exc)[:100]})") from None
    size = len(text.encode())
    if size > limit:
        raise ValueError(f"{what} are {size:,} bytes of JSON; at most {limit:,}{why}")


def read_task_file(
    path: Path, what: str = "task", error: type[TaskValidationError] = TaskValidationError
) -> bytes:
    """The first :data:`MAX_TASK_BYTES` + 1 bytes of a task (or ``what``) file.

    Raises:
        TaskValidationError: (or ``error``) the file cannot be read.
    """
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_TASK_BYTES + 1)
    except OSError as exc:
        raise error(
            f"cannot read {what} file {path}: {exc.strerror}", problems=[(what, "unreadable")]
        ) from None
