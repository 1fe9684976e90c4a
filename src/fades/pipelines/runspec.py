"""When a pipeline's runs start and when it ends (:class:`RunSpec`), and how its stages'
queues are bounded (:class:`QueueSpec`): the ``run:`` and ``queue:`` parts of a pipeline spec
(:mod:`fades.pipelines.spec` re-exports both).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fades.pipelines.checks import subject_problem
from fades.pipelines.readings import pattern_problem
from fades.taskparts import Strict

#: shortest ``every_s``: a timer's runs are at most 10 a second (a period of a nanosecond made a
#: node's trigger loop spin, its float ticks no longer apart than the period)
MIN_EVERY_S = 0.1


class RunSpec(Strict):
    """When runs start and when the pipeline ends."""

    mode: Literal["on-demand", "automatic"] = "on-demand"
    #: on-demand: how many runs one submit starts
    runs: int = Field(default=1, ge=1, le=10_000)
    #: automatic: start a run every N seconds ...
    every_s: float | None = Field(default=None, ge=MIN_EVERY_S, le=86_400, allow_inf_nan=False)
    #: ... or whenever a reading arrives on a sensor subject matching this NATS pattern
    on_reading: str | None = None
    #: the pipeline ends at this time, or this long after it was submitted
    until: datetime | None = None
    for_s: float | None = Field(default=None, gt=0, le=366 * 86_400, allow_inf_nan=False)
    #: a run not finished this long after it started fails with the reason
    run_deadline_s: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)

    @field_validator("on_reading")
    @classmethod
    def _on_reading(cls, v: str | None) -> str | None:
        if v is None:
            return v
        problem = subject_problem(v, wildcards=True)
        if problem:
            raise ValueError(f"not a NATS subject pattern: {problem}")
        if not v.startswith("sensors."):
            raise ValueError(
                "must be a sensor subject starting with 'sensors.' "
                "(e.g. 'sensors.*.road.surface_temp')"
            )
        never = pattern_problem(v)
        if never:
            raise ValueError(never)
        return v

    @field_validator("until")
    @classmethod
    def _until(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        if not datetime(1970, 1, 2, tzinfo=UTC) <= v <= datetime(9000, 1, 1, tzinfo=UTC):
            raise ValueError("must be a time between 1970-01-02 and 9000-01-01")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        if self.mode == "automatic":
            if (self.every_s is None) == (self.on_reading is None):
                raise ValueError(
                    "an automatic pipeline needs exactly one of 'every_s' (runs on a timer) "
                    "and 'on_reading' (runs on each matching sensor reading)"
                )
            if self.runs != 1:
                raise ValueError("'runs' applies only to mode 'on-demand'")
        elif self.every_s is not None or self.on_reading is not None:
            raise ValueError(
                "'every_s' and 'on_reading' apply only to mode 'automatic' "
                "(an on-demand pipeline runs when asked)"
            )
        if self.until is not None and self.for_s is not None:
            raise ValueError("give 'until' (a time) or 'for_s' (a duration), not both")
        return self


class QueueSpec(Strict):
    """The bound on bundles waiting for each stage, and what happens when it is reached."""

    max_runs: int = Field(default=1000, ge=1, le=1_000_000)
    max_bytes: int = Field(default=64 * 2**20, ge=1024, le=2**34)
    when_full: Literal["refuse", "drop-oldest"] = "refuse"
