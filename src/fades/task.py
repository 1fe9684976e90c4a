"""The task schema: what a cloud service asks an edge node to do.

A task has three parts, after the seeds' metadata task wrapper:

* ``credentials``: who asks (tenant), the task id, how urgent (priority, deadline);
* ``data``: one or more data operations, each naming a connector, a selector and the name
  under which the function sees the fetched dataset;
* ``function``: which signed artifact to run, its parameters and its limits.

Tasks are read from YAML or JSON with :func:`load_task` / :func:`parse_task`. A malformed task
raises :class:`~fades.errors.TaskValidationError` naming every bad field and why, whatever the
input: a task file is untrusted, so it is bounded before it is parsed and parsed before any
value reaches the node:

* a task file is at most :data:`MAX_TASK_BYTES` of UTF-8;
* YAML may use at most :data:`MAX_ALIASES` aliases, and the document, aliases expanded, at
  most :data:`MAX_NODES` values nested at most :data:`MAX_DEPTH` deep (no "billion laughs");
* ``params`` is at most :data:`MAX_PARAMS_BYTES` of compact JSON (it travels in a NATS
  message) and may hold no NaN or infinity;
* numbers are finite and within their field's range; time windows stay within what a
  ``datetime`` can represent (``last_seconds`` at most :data:`MAX_WINDOW_SECONDS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from fades.errors import TaskValidationError
from fades.taskparts import (
    ID_RE,
    MAX_INPUT_BYTES,
    MAX_LAST,
    MAX_NAMES,
    MAX_PARAMS_BYTES,
    MAX_PERSISTENT_SECONDS,
    MAX_PROBLEMS,
    MAX_WINDOW_SECONDS,
    NAME_RE,
    Credentials,
    DataOp,
    Device,
    EveryN,
    EveryS,
    FunctionSpec,
    Selector,
    StateSpec,
    Strict,
)
from fades.tasktext import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_TASK_BYTES,
    check_json,
    clip,
    decode_task_text,
    read_task_file,
    refused,
    shape_problem,
)

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_LAST",
    "MAX_NAMES",
    "MAX_NODES",
    "MAX_PARAMS_BYTES",
    "MAX_PERSISTENT_SECONDS",
    "MAX_PROBLEMS",
    "MAX_TASK_BYTES",
    "MAX_WINDOW_SECONDS",
    "Credentials",
    "DataOp",
    "Device",
    "EveryN",
    "EveryS",
    "FunctionSpec",
    "Selector",
    "StateSpec",
    "Task",
    "load_task",
    "parse_task",
    "parse_task_text",
]


class Task(Strict):
    """A unit of offloaded work: credentials, data operations and a function."""

    credentials: Credentials
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="values carried inline with the task (JSON), seen by the function as "
        "data[name] next to the datasets; a task needs data operations, inputs or both",
    )
    data: list[DataOp] = Field(default_factory=list, validate_default=True)
    function: FunctionSpec
    device: Device | None = Field(
        default=None,
        description="the device offloading the task (lets the Nimbus placer answer "
        "'run it locally')",
    )
    when_offline: Literal["queue", "refuse"] = Field(
        default="queue",
        description="when the node that must run the task is offline: 'queue' accepts the "
        "task and it waits in the hub until the node returns; 'refuse' answers 503 at once. "
        "The default applies to nodes at an edge site (they keep working while cut off); "
        "for a node attached to the hub itself, a down node refuses unless the task says "
        "'queue' explicitly",
    )

    @field_validator("data")
    @classmethod
    def _unique_names(cls, data: list[DataOp], info: ValidationInfo) -> list[DataOp]:
        if "inputs" not in info.data:
            return data  # the inputs were refused: their own problem says why; no second one
        inputs = info.data.get("inputs")
        if not data and not inputs:
            raise ValueError(
                "a task needs at least one data operation, or inline 'inputs' to compute on"
            )
        clash = sorted({op.name for op in data} & set(inputs or {}))
        if clash:
            raise ValueError(
                f"{', '.join(repr(c) for c in clash)} is both a data operation and an input; "
                "the function sees both as data[name], so rename one"
            )
        names = [op.name for op in data]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"data operation names must be unique; repeated: {', '.join(dupes)}")
        return data

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if not NAME_RE.match(k)]
        if bad:
            raise ValueError(
                f"input name {clip(bad[0], 40)!r} must be a Python-style identifier "
                "(letters, digits, '_')"
            )
        check_json(
            v,
            "inputs",
            MAX_INPUT_BYTES,
            " travel inline with a task (put larger data on a node and select it with a data "
            "operation)",
        )
        return v

    @property
    def id(self) -> str:
        return self.credentials.task_id

    @property
    def tenant(self) -> str:
        return self.credentials.tenant

    def to_json(self) -> str:
        return self.model_dump_json()


def _location(loc: tuple[int | str, ...]) -> str:
    return clip(".".join(clip(str(p), 40) for p in loc) or "task", 120)


def parse_task(obj: Any) -> Task:
    """Validate a decoded task (a mapping) and return it.

    The mapping is held to the same bounds as task text (depth, values, NaN), and the task,
    as JSON, to :data:`MAX_TASK_BYTES`.

    Raises:
        TaskValidationError: naming each bad field and the reason.
    """
    if not isinstance(obj, dict):
        raise TaskValidationError(
            f"invalid task: expected a mapping with credentials, data and function, "
            f"got {type(obj).__name__}",
            problems=[("task", "not a mapping")],
        )
    problem = shape_problem(obj, MAX_DEPTH)
    if problem:
        raise refused(problem, "task", problem)
    try:
        task = Task.model_validate(obj)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [
            (_location(e["loc"]), clip(e["msg"].removeprefix("Value error, "), 200))
            for e in errors[:MAX_PROBLEMS]
        ]
        detail = "; ".join(f"{f}: {m}" for f, m in problems)
        if len(errors) > MAX_PROBLEMS:
            detail += f"; and {len(errors) - MAX_PROBLEMS} more problems"
        creds = obj.get("credentials")
        task_id = creds.get("task_id") if isinstance(creds, dict) else None
        raise TaskValidationError(
            f"invalid task: {detail}",
            problems=problems,
            task_id=task_id if isinstance(task_id, str) and ID_RE.match(task_id) else None,
        ) from None
    size = len(task.to_json().encode())
    if size > MAX_TASK_BYTES:  # e.g. a mapping from an HTTP body: it travels as one message
        reason = f"larger than {MAX_TASK_BYTES:,} bytes as JSON"
        raise refused(f"the task is {size:,} bytes as JSON, {reason}", "task", reason)
    return task


def parse_task_text(text: str | bytes, *, source: str = "task") -> Task:
    """Parse a task from YAML or JSON text (JSON is valid YAML); bytes must be UTF-8.

    Raises:
        TaskValidationError: for anything that is not a valid task within the bounds of
            :mod:`fades.tasktext`.
    """
    return parse_task(decode_task_text(text, source))


def load_task(path: str | Path) -> Task:
    """Read and validate a task file (YAML or JSON, at most :data:`MAX_TASK_BYTES`)."""
    p = Path(path)
    data = read_task_file(p)
    if len(data) > MAX_TASK_BYTES:
        reason = f"larger than {MAX_TASK_BYTES:,} bytes"
        raise refused(f"{p} is {reason}", "task", reason)
    try:
        return parse_task_text(data, source=str(p))
    except TaskValidationError as exc:
        msg = str(exc)
        if str(p) in msg or not msg.startswith("invalid task: "):
            raise
        # name the file: with several files on one command line, which one is wrong
        raise TaskValidationError(
            f"invalid task file {p}: {msg.removeprefix('invalid task: ')}",
            problems=exc.problems,
            **exc.context,
        ) from None
