"""Node-wide limits on what one task's input may cost the host, and how a node sets them.

These bound the work a node does for a task *before* its function runs (retrieval and
encoding happen outside the sandbox's memory cap). Defaults hold unless the node's folder has
a ``limits.yaml`` (or ``limits.json``), which environment variables override::

    # <node folder>/limits.yaml           # environment (wins over the file)
    max_data_ops: 32                      # FADES_LIMIT_MAX_DATA_OPS
    max_rows: 5000000                     # FADES_LIMIT_MAX_ROWS
    max_input_bytes: 268435456            # FADES_LIMIT_MAX_INPUT_BYTES
    retrieval_seconds: 30                 # FADES_LIMIT_RETRIEVAL_SECONDS
    max_persistent_seconds: 3600          # FADES_LIMIT_MAX_PERSISTENT_SECONDS

A task's input is also never larger than its function's memory cap (``memory_mib``), which
cannot hold more. The task file itself (size, nesting, aliases, ``params``) is bounded by the
schema in :mod:`fades.task`, the same on every node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from fades.broker.base import FetchLimits
from fades.errors import OrchestratorError

#: Names of the files in a node's folder that set its limits (the first one found is read).
LIMITS_FILES = ("limits.yaml", "limits.yml", "limits.json")
ENV_PREFIX = "FADES_LIMIT_"
_MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """What one task may make this node spend on its input.

    Attributes:
        max_data_ops: data operations in one task.
        max_rows: rows fetched for one task, all its data operations together.
        max_input_bytes: bytes of input for one task (rows x 22 bytes), also capped by the
            function's ``memory_mib``.
        retrieval_seconds: wall time of one task's retrieval (counting and fetching).
        max_persistent_seconds: how long a persistent task lives after it was accepted, at
            most (a task's own ``max_duration_s`` may only shorten it).
    """

    max_data_ops: int = 32
    max_rows: int = 5_000_000
    max_input_bytes: int = 256 * 2**20
    retrieval_seconds: float = 30.0
    max_persistent_seconds: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("max_data_ops", "max_rows", "max_input_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**53:
                raise ValueError(f"limit {name} must be an integer from 1 to 2**53, got {v!r}")
        for name, top in (("retrieval_seconds", 86_400), ("max_persistent_seconds", 30 * 86_400)):
            s = getattr(self, name)
            if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
                raise ValueError(f"limit {name} must be a finite number, got {s!r}")
            if not 0 < s <= top:
                raise ValueError(f"limit {name} must be in (0, {top}], got {s!r}")

    def fetch_limits(self, memory_mib: int | None = None) -> FetchLimits:
        """The broker limits for one task whose function has a ``memory_mib`` cap."""
        max_bytes, source = self.max_input_bytes, "max_input_bytes"
        if memory_mib is not None and memory_mib * 2**20 < max_bytes:
            max_bytes, source = memory_mib * 2**20, "memory_mib"
        return FetchLimits(
            max_ops=self.max_data_ops,
            max_rows=self.max_rows,
            max_bytes=max_bytes,
            seconds=float(self.retrieval_seconds),
            bytes_limit=source,
        )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "limits") -> NodeLimits:
        """Defaults overridden by ``raw`` (limit name to value).

        Raises:
            OrchestratorError: an unknown limit or a bad value, naming it.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise OrchestratorError(
                f"{source}: unknown limit(s) {', '.join(unknown)}; limits are {', '.join(known)}"
            )
        values: dict[str, Any] = {}
        for key, v in raw.items():
            want_int = known[key].type in (int, "int")
            try:
                if isinstance(v, bool):
                    raise ValueError
                num = float(v) if isinstance(v, str) else v
                if want_int:
                    if not isinstance(num, int | float) or not float(num).is_integer():
                        raise ValueError
                    values[key] = int(num)
                else:
                    values[key] = float(num)
            except (TypeError, ValueError, OverflowError):
                raise OrchestratorError(
                    f"{source}: limit {key} must be {'an integer' if want_int else 'a number'}, "
                    f"got {str(v)[:40]!r}"
                ) from None
        try:
            return replace(cls(), **values)
        except ValueError as exc:
            raise OrchestratorError(f"{source}: {exc}") from None

    @classmethod
    def load(
        cls, home: str | Path | None = None, env: Mapping[str, str] | None = None
    ) -> NodeLimits:
        """The limits of the node in folder ``home``: defaults, its limits file, then env."""
        raw: dict[str, Any] = {}
        source = "environment"
        if home is not None:
            for name in LIMITS_FILES:
                path = Path(home) / name
                if path.is_file():
                    raw.update(_read(path))
                    source = f"{path} / environment"
                    break
        environ = os.environ if env is None else env
        for f in fields(cls):
            value = environ.get(ENV_PREFIX + f.name.upper())
            if value is not None:
                raw[f.name] = value
        return cls.from_mapping(raw, source=source)


def _read(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise OrchestratorError(f"{path}: larger than {_MAX_FILE_BYTES} bytes")
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OrchestratorError(f"cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise OrchestratorError(f"{path} is not valid YAML/JSON: {exc}") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise OrchestratorError(f"{path}: expected a mapping of limit names to values")
    return obj
