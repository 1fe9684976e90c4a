"""The task schema: what a cloud service asks an edge node to do.

A task has three parts, after the seeds' metadata task wrapper:

* ``credentials``: who asks (tenant), the task id, how urgent (priority, deadline);
* ``data``: one or more data operations, each naming a connector, a selector and the name
  under which the function sees the fetched dataset;
* ``function``: which signed artifact to run, its parameters and its limits.

Tasks are read from YAML or JSON with :func:`load_task` / :func:`parse_task`. A malformed task
raises :class:`~fades.errors.TaskValidationError` naming every bad field and why.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fades.errors import TaskValidationError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

StrOrList = str | list[str] | None


def _as_list(v: StrOrList) -> list[str] | None:
    if v is None:
        return None
    return [v] if isinstance(v, str) else list(v)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(_Strict):
    """Who is asking and how urgent it is."""

    task_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    tenant: str
    priority: int = Field(default=5, ge=0, le=9, description="0 lowest, 9 most urgent")
    deadline: datetime | None = Field(
        default=None, description="absolute time by which the result is wanted (UTC if naive)"
    )

    @field_validator("task_id", "tenant")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("deadline")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v


class Selector(_Strict):
    """Which readings a data operation selects. Unset fields select everything."""

    sensor_type: StrOrList = None
    location: StrOrList = None
    device: StrOrList = None
    since: datetime | None = None
    until: datetime | None = None
    last_seconds: float | None = Field(
        default=None, gt=0, description="only readings from the last N seconds"
    )
    last: int | None = Field(default=None, gt=0, description="only the newest N readings")

    @field_validator("sensor_type", "location", "device")
    @classmethod
    def _non_empty(cls, v: StrOrList) -> StrOrList:
        if v is not None and (v == [] or any(not s for s in _as_list(v) or [])):
            raise ValueError("must be a non-empty name or a non-empty list of names")
        return v

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v

    @model_validator(mode="after")
    def _window(self) -> Selector:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("'since' must be earlier than 'until'")
        return self

    @property
    def sensor_types(self) -> list[str] | None:
        return _as_list(self.sensor_type)

    @property
    def locations(self) -> list[str] | None:
        return _as_list(self.location)

    @property
    def devices(self) -> list[str] | None:
        return _as_list(self.device)

    def time_bounds(self, now: datetime | None = None) -> tuple[float | None, float | None]:
        """The selected time window as epoch seconds ``(start, end)``; ``None`` is open."""
        start = self.since.timestamp() if self.since else None
        end = self.until.timestamp() if self.until else None
        if self.last_seconds is not None:
            now = now or datetime.now(UTC)
            rel = (now - timedelta(seconds=self.last_seconds)).timestamp()
            start = rel if start is None else max(start, rel)
        return start, end


class DataOp(_Strict):
    """One data retrieval operation: fetch with ``connector`` what ``select`` selects."""

    name: str = Field(description="the name under which the function sees this dataset")
    connector: str = "sqlite"
    select: Selector = Field(default_factory=Selector)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be a Python-style identifier (letters, digits, '_')")
        return v


class FunctionSpec(_Strict):
    """Which function to run on the data, with what parameters and limits."""

    artifact: str = Field(description="'sha256:<digest>' or the name of a function on the node")
    params: dict[str, Any] = Field(default_factory=dict)
    memory_mib: int = Field(default=64, ge=1, le=4096)
    time_budget_ms: int = Field(default=5000, ge=1, le=3_600_000)
    mode: Literal["ephemeral", "persistent"] = "ephemeral"
    period_s: float | None = Field(default=None, gt=0)
    invocations: int | None = Field(
        default=None, gt=0, description="persistent only: stop after this many invocations"
    )

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, v: str) -> str:
        if v.startswith("sha256:"):
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
                raise ValueError("a digest reference must be 'sha256:' and 64 hex digits")
        elif not _ID.match(v):
            raise ValueError("must be 'sha256:<digest>' or a function name")
        return v

    @field_validator("params")
    @classmethod
    def _jsonable(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(v)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"parameters must be JSON-serialisable ({exc})") from None
        return v

    @model_validator(mode="after")
    def _persistent(self) -> FunctionSpec:
        if self.mode == "persistent" and self.period_s is None:
            raise ValueError("a persistent function needs 'period_s'")
        if self.mode == "ephemeral" and (self.period_s is not None or self.invocations):
            raise ValueError("'period_s' and 'invocations' apply only to mode 'persistent'")
        return self


class Task(_Strict):
    """A unit of offloaded work: credentials, data operations and a function."""

    credentials: Credentials
    data: list[DataOp] = Field(min_length=1)
    function: FunctionSpec

    @field_validator("data")
    @classmethod
    def _unique_names(cls, data: list[DataOp]) -> list[DataOp]:
        names = [op.name for op in data]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"data operation names must be unique; repeated: {', '.join(dupes)}")
        return data

    @property
    def id(self) -> str:
        return self.credentials.task_id

    @property
    def tenant(self) -> str:
        return self.credentials.tenant

    def to_json(self) -> str:
        return self.model_dump_json()


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "task"


def parse_task(obj: Any) -> Task:
    """Validate a decoded task (a mapping) and return it.

    Raises:
        TaskValidationError: naming each bad field and the reason.
    """
    if not isinstance(obj, dict):
        raise TaskValidationError(
            f"invalid task: expected a mapping with credentials, data and function, "
            f"got {type(obj).__name__}",
            problems=[("task", "not a mapping")],
        )
    try:
        return Task.model_validate(obj)
    except ValidationError as exc:
        problems = [
            (_location(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()
        ]
        detail = "; ".join(f"{f}: {m}" for f, m in problems)
        task_id = (
            obj.get("credentials", {}).get("task_id")
            if isinstance(obj.get("credentials"), dict)
            else None
        )
        raise TaskValidationError(
            f"invalid task: {detail}", problems=problems, task_id=task_id
        ) from None


def parse_task_text(text: str, *, source: str = "task") -> Task:
    """Parse a task from YAML or JSON text (JSON is valid YAML)."""
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise TaskValidationError(
            f"invalid task: {source} is not valid YAML/JSON: {problem}{where}",
            problems=[("task", "not YAML/JSON")],
        ) from None
    return parse_task(obj)


def load_task(path: str | Path) -> Task:
    """Read and validate a task file (YAML or JSON)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskValidationError(
            f"cannot read task file {p}: {exc.strerror}", problems=[("task", "unreadable")]
        ) from None
    return parse_task_text(text, source=str(p))
