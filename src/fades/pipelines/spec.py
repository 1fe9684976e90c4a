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
it, every other stage is a *midsection*.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fades.task import Credentials, DataOp, FunctionSpec

__all__ = [
    "MAX_STAGES",
    "Gather",
    "PipelineSpec",
    "QueueSpec",
    "Role",
    "RunSpec",
    "StageSpec",
]

#: Most stages in one pipeline.
MAX_STAGES = 64
#: A pipeline or stage name: one NATS subject token and a readable id.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

Role = Literal["start", "midsection", "finale"]
Failover = Literal["substitute", "skip", "wait"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gather(_Strict):
    """How a stage with several inputs (fan-in, or after a scattered stage) waits for them."""

    #: None: wait for every input; otherwise run with those that arrived within this many
    #: seconds of the first one (the missing ones are passed as ``Skipped``)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)


class StageSpec(_Strict):
    """One function in the graph."""

    name: str
    function: FunctionSpec
    data: list[DataOp] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
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


class RunSpec(_Strict):
    """When runs start and when the pipeline ends."""

    mode: Literal["on-demand", "automatic"] = "on-demand"
    #: on-demand: how many runs one submit starts
    runs: int = Field(default=1, ge=1, le=10_000)
    #: automatic: start a run every N seconds ...
    every_s: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)
    #: ... or whenever a reading arrives on a sensor subject matching this NATS pattern
    on_reading: str | None = None
    #: the pipeline ends at this time, or this long after it was submitted
    until: datetime | None = None
    for_s: float | None = Field(default=None, gt=0, le=366 * 86_400, allow_inf_nan=False)
    #: a run not finished this long after it started fails with the reason
    run_deadline_s: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)


class QueueSpec(_Strict):
    """The bound on bundles waiting for each stage, and what happens when it is reached."""

    max_runs: int = Field(default=1000, ge=1, le=1_000_000)
    max_bytes: int = Field(default=64 * 2**20, ge=1024, le=2**34)
    when_full: Literal["refuse", "drop-oldest"] = "refuse"


class PipelineSpec(_Strict):
    """A validated pipeline."""

    name: str
    credentials: Credentials
    stages: list[StageSpec] = Field(min_length=1, max_length=MAX_STAGES)
    run: RunSpec = Field(default_factory=RunSpec)
    queue: QueueSpec = Field(default_factory=QueueSpec)

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
        if not self.stage(name).after:
            return "start"
        return "finale" if not self.downstream(name) else "midsection"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)
