"""The pipeline spec: stages chained into a graph, how runs start and end, how queues bound.

A pipeline is read from YAML or JSON (:func:`load_pipeline` / :func:`parse_pipeline`) with the
same bounds as a task file (size, depth, aliases) and validated so that every bad field is
named, with the stage it belongs to::

    name: black-ice
    credentials: {tenant: roads, priority: 8}
    run:
      mode: automatic            # or on-demand (runs when asked, `runs` times)
      every_s: 10                # or on_reading: "sensors.*.road.surface_temp"
      for_s: 3600                # or until: 2026-12-01T06:00:00Z
      run_deadline_s: 5          # a run not finished by then fails with the reason
    queue: {max_runs: 100, max_bytes: 8388608, when_full: drop-oldest}   # or refuse
    stages:
      - name: detect
        function: {artifact: ice-detect, memory_mib: 32, time_budget_ms: 500}
        data: [{name: road, select: {sensor_type: [surface_temp, dew_point], last_seconds: 60}}]
        scatter: true            # one instance on every node that holds matching data
      - name: fuse
        after: [detect]
        function: {artifact: ice-fuse}
        gather: {timeout_s: 2}   # fan-in: wait for all inputs, or those in by the timeout
      - name: warn
        after: [fuse]
        when: "ice == true"      # guarded branch: runs only when the condition holds
        function: {artifact: ice-broadcast}
        failover: skip           # substitute (default) | skip | wait

Roles follow from the graph: a *start* stage has no ``after``, a *finale* has no stage after
it, every other stage is a *midsection*; a stage connected to no other is refused, so each
stage has exactly one role.

:func:`parse_pipeline` raises :class:`~fades.errors.PipelineValidationError` whose problems
name ``stages.<stage name>.<field>`` inside a stage. Field rules live on the models below;
rules across stages (unknown ``after``, cycles, gather, guards on a fan-in) in
:mod:`fades.pipelines.checks`. Bounds: the text bounds of :mod:`fades.tasktext`, at most
:data:`MAX_STAGES` stages and :data:`MAX_PIPELINE_BYTES` of JSON.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fades.devices.actuate import Actuate, actuate_problems
from fades.errors import PipelineValidationError, TaskValidationError
from fades.pipelines.checks import graph_problems, subject_problem, topo_order
from fades.pipelines.guard import compile_guard
from fades.pipelines.runspec import QueueSpec, RunSpec
from fades.task import Credentials, DataOp, FunctionSpec
from fades.taskparts import Strict
from fades.tasktext import MAX_DEPTH, clip, decode_task_text, read_task_file, shape_problem

__all__ = [
    "MAX_PIPELINE_BYTES",
    "MAX_STAGES",
    "NAME_RE",
    "Gather",
    "PipelineSpec",
    "QueueSpec",
    "Role",
    "RunSpec",
    "StageSpec",
    "load_pipeline",
    "parse_pipeline",
    "parse_pipeline_text",
]

#: Most stages in one pipeline.
MAX_STAGES = 64
#: Largest pipeline, in bytes of compact JSON (it travels inside its plan, one NATS message).
MAX_PIPELINE_BYTES = 512 * 2**10
#: Most problems listed in a PipelineValidationError (the count of the rest is given).
MAX_PROBLEMS = 20
#: A pipeline or stage name: one NATS subject token and a readable id.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_NODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: subjects a stage may not publish on: the fabric's own, the server's, reply inboxes, and the
#: subjects of sensors and actuators (a stage publishing there would forge readings into a
#: node's store, or command a device without the tenant check and the audit)
_RESERVED_PREFIXES = ("fades.", "$", "_INBOX.", "sensors.", "actuators.")

Role = Literal["start", "midsection", "finale"]
Failover = Literal["substitute", "skip", "wait"]


def _name_ok(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(
            "must be 1-32 characters of lowercase letters, digits, '_' or '-', starting with "
            "a letter or digit"
        )
    return v


class Gather(Strict):
    """How a stage with several inputs (fan-in, or after a scattered stage) waits for them."""

    #: None: wait for every input; otherwise run with those that arrived within this many
    #: seconds of the first one (the missing ones are passed as ``Skipped``)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)


class StageSpec(Strict):
    """One function in the graph."""

    name: str
    function: FunctionSpec
    data: list[DataOp] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list, max_length=MAX_STAGES)
    #: a guard on the stage's inputs (see :mod:`fades.pipelines.guard`); None: always runs
    when: str | None = None
    #: run one instance on every node that holds this stage's data (needs ``data``)
    scatter: bool = False
    gather: Gather = Field(default_factory=Gather)
    failover: Failover = "substitute"
    #: pin the stage to this node (the planner then only checks it can serve the stage)
    node: str | None = None
    #: also publish each result of this stage, as JSON, on this NATS subject (an MQTT client
    #: sees it on the topic with ``/`` for ``.``), e.g. ``warnings.road1`` for vehicles
    publish: str | None = None
    #: a finale whose result commands this actuator (fades.devices.actuate)
    actuate: Actuate | None = None

    _name = field_validator("name")(_name_ok)

    @field_validator("function")
    @classmethod
    def _ephemeral(cls, v: FunctionSpec) -> FunctionSpec:
        if v.mode != "ephemeral":
            raise ValueError(
                "a pipeline stage runs once per run (mode 'ephemeral'); mode 'persistent' is "
                "for tasks: use run.mode 'automatic' to run the pipeline repeatedly"
            )
        return v

    @field_validator("data")
    @classmethod
    def _unique_ops(cls, v: list[DataOp]) -> list[DataOp]:
        names = [op.name for op in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"data operation names must be unique; repeated: {', '.join(dupes)}")
        return v

    @field_validator("after")
    @classmethod
    def _after(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("name") in v:
            raise ValueError(f"stage {info.data['name']!r} cannot come after itself")
        dupes = sorted({n for n in v if v.count(n) > 1})
        if dupes:
            raise ValueError(f"repeated: {', '.join(dupes)}")
        return v

    @field_validator("when")
    @classmethod
    def _guard(cls, v: str | None) -> str | None:
        if v is not None:
            compile_guard(v)  # ValueError names the problem and the column
        return v

    @field_validator("scatter")
    @classmethod
    def _scatter(cls, v: bool, info: ValidationInfo) -> bool:
        if v and not info.data.get("data", True):
            raise ValueError(
                "a scattered stage runs on every node that holds its data, so it needs 'data'"
            )
        return v

    @field_validator("node")
    @classmethod
    def _node(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and not _NODE_RE.match(v):
            raise ValueError("must be a node name: 1-64 letters, digits, '_' or '-'")
        if v is not None and info.data.get("scatter"):
            raise ValueError("a scattered stage runs on every holder of its data; do not pin it")
        return v

    @field_validator("publish")
    @classmethod
    def _publish(cls, v: str | None) -> str | None:
        if v is None:
            return v
        problem = subject_problem(v, wildcards=False)
        if problem:
            raise ValueError(f"not a NATS subject: {problem}")
        if v.startswith(_RESERVED_PREFIXES):
            raise ValueError(
                f"subjects starting with {', '.join(repr(p) for p in _RESERVED_PREFIXES)} "
                "are reserved"
            )
        return v


class PipelineSpec(Strict):
    """A validated pipeline."""

    name: str
    credentials: Credentials
    stages: list[StageSpec] = Field(min_length=1, max_length=MAX_STAGES)
    run: RunSpec = Field(default_factory=RunSpec)
    queue: QueueSpec = Field(default_factory=QueueSpec)

    _name = field_validator("name")(_name_ok)

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> PipelineSpec:
        problems = graph_problems(self.stages) + actuate_problems(self.stages)
        if problems:
            sink = (info.context or {}).get("fades_problems")
            if isinstance(sink, list):  # parse_pipeline: report each with its field
                sink.extend(problems)
            else:
                raise ValueError("; ".join(f"{f}: {m}" for f, m in problems))
        return self

    @property
    def tenant(self) -> str:
        return self.credentials.tenant

    @property
    def priority(self) -> int:
        return self.credentials.priority

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def downstream(self, name: str) -> list[str]:
        """The stages that come directly after ``name``."""
        return [s.name for s in self.stages if name in s.after]

    def role(self, name: str) -> Role:
        """The stage's role for display; a pipeline of one stage shows it as ``start``, and
        it is both (:meth:`is_start`, :meth:`is_finale`)."""
        if not self.stage(name).after:
            return "start"
        return "finale" if not self.downstream(name) else "midsection"

    def is_start(self, name: str) -> bool:
        """A run's trigger goes to this stage (it comes after no stage)."""
        return not self.stage(name).after

    def is_finale(self, name: str) -> bool:
        """This stage's result is a run's result (no stage comes after it)."""
        return not self.downstream(name)

    def roles(self) -> dict[str, Role]:
        """Every stage's role, in spec order."""
        return {s.name: self.role(s.name) for s in self.stages}

    def topo_order(self) -> list[str]:
        """The stages, each after all of its upstreams (ties in spec order)."""
        order = topo_order([(s.name, s.after) for s in self.stages])
        assert order is not None  # validated: no cycle
        return order

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)


def _field(loc: tuple[int | str, ...], obj: Any) -> str:
    """A pydantic error location, with stage and data-op indexes replaced by their names."""
    parts = [str(p) for p in loc]
    stages = obj.get("stages") if isinstance(obj, dict) else None
    if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
        raw = stages[loc[1]] if isinstance(stages, list) and loc[1] < len(stages) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        parts[1] = name if isinstance(name, str) and NAME_RE.match(name) else f"#{loc[1] + 1}"
        if len(loc) >= 4 and loc[2] == "data" and isinstance(loc[3], int) and raw:
            ops = raw.get("data")
            op = ops[loc[3]] if isinstance(ops, list) and loc[3] < len(ops) else None
            opname = op.get("name") if isinstance(op, dict) else None
            if isinstance(opname, str) and re.fullmatch(r"[A-Za-z_]\w{0,63}", opname):
                parts[3] = opname
    return clip(".".join(clip(p, 40) for p in parts) or "pipeline", 160)


def _invalid(problems: list[tuple[str, str]], total: int, name: Any) -> PipelineValidationError:
    detail = "; ".join(f"{f}: {m}" for f, m in problems)
    if total > len(problems):
        detail += f"; and {total - len(problems)} more problems"
    ctx = {"pipeline": name} if isinstance(name, str) and NAME_RE.match(name) else {}
    return PipelineValidationError(f"invalid pipeline: {detail}", problems=problems, **ctx)


def parse_pipeline(obj: Any) -> PipelineSpec:
    """Validate a decoded pipeline (a mapping) and return it.

    Raises:
        PipelineValidationError: naming each bad field (``stages.<stage>.<field>``) and why.
    """
    problem = shape_problem(obj, MAX_DEPTH)
    if problem:
        name = obj.get("name") if isinstance(obj, dict) else None
        raise _invalid([("pipeline", problem)], 1, name)
    if not isinstance(obj, dict):
        raise _invalid(
            [
                (
                    "pipeline",
                    f"expected a mapping with name, credentials and stages, got "
                    f"{type(obj).__name__}",
                )
            ],
            1,
            None,
        )
    found: list[tuple[str, str]] = []
    try:
        spec = PipelineSpec.model_validate(obj, context={"fades_problems": found})
    except ValidationError as exc:
        errors = exc.errors()
        problems = [
            (_field(e["loc"], obj), clip(e["msg"].removeprefix("Value error, "), 200))
            for e in errors[:MAX_PROBLEMS]
        ]
        raise _invalid(problems, len(errors), obj.get("name")) from None
    if found:
        raise _invalid(found[:MAX_PROBLEMS], len(found), spec.name)
    size = len(spec.model_dump_json().encode())
    if size > MAX_PIPELINE_BYTES:
        reason = f"{size:,} bytes as JSON; at most {MAX_PIPELINE_BYTES:,} (it travels in its plan)"
        raise _invalid([("pipeline", reason)], 1, spec.name)
    return spec


def parse_pipeline_text(text: str | bytes, *, source: str = "pipeline") -> PipelineSpec:
    """Parse a pipeline from YAML or JSON text, within the bounds of task text
    (:mod:`fades.tasktext`: size, depth, aliases).

    Raises:
        PipelineValidationError: anything that is not a valid pipeline within the bounds.
    """
    try:
        obj = decode_task_text(text, source)
    except TaskValidationError as exc:
        msg = str(exc).removeprefix("invalid task: ")
        problems = [("pipeline" if f == "task" else f, r) for f, r in exc.problems]
        raise PipelineValidationError(f"invalid pipeline: {msg}", problems=problems) from None
    return parse_pipeline(obj)


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read and validate a pipeline file (YAML or JSON)."""
    p = Path(path)
    data = read_task_file(p, "pipeline", PipelineValidationError)
    return parse_pipeline_text(data, source=str(p))
