"""What the controller and the nodes' pipeline engines exchange for pipelines.

Everything rides on the Bus (JetStream), so it survives a restart of any process::

    KV  fades_plans                  <pipeline> -> Plan (the deployment: spec + which node runs
                                     which stage instance); nodes watch it, the controller
                                     updates it by compare-and-set (failover bumps ``version``)
    stream FADES_B_<pipeline>        one stream per pipeline, in the hub, or in the site's own
                                     JetStream domain when every stage is planned at one
                                     site (``Plan.domain``, :mod:`.sites`), subjects
        fades.bundle.<pipeline>.<stage>.<instance>
                                     bundles waiting for one stage instance; bounded by the
                                     spec's queue (max_msgs_per_subject = max_runs, max_bytes),
                                     discard new (when_full: refuse) or old (drop-oldest)
    durable consumer  b-<stage>-<instance>   on that subject; whichever node the plan assigns
                                     the instance pulls from it, so a substitute node carries
                                     on from the bundles the dead node left unacked
    stream FADES_PEVENTS  fades.pevent.<pipeline>
                                     stage events from the nodes (started, done, failed,
                                     skipped, dropped); a finale's ``done`` carries its result
    OBJ fades_bundles                bundle values over :data:`INLINE_MAX` bytes, by identity

Identity and de-duplication: a bundle's message id is
``<run>:<from_stage>:<producer>:<stage>:<instance>`` (:meth:`Bundle.msg_id`, unique within the
pipeline's own stream), so a stage that executes
twice after a failure publishes the same ids and JetStream drops the second copy within its
duplicate window; an event's id is ``<pipeline>:<run>:<stage>:<instance>:<status>`` (the events
stream is shared by every pipeline). The controller records a finale's result once per
(pipeline, run, stage, instance).

A stage instance is named by the node it was planned for when the stage is scattered (one
instance per data holder), else :data:`SINGLE`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, Field

from fades.bus.base import Bus
from fades.fabric.protocol import Message

PLANS_BUCKET = "fades_plans"
BUNDLE_OBJECTS = "fades_bundles"
EVENTS_STREAM = "FADES_PEVENTS"
#: the instance name of a stage that is not scattered
SINGLE = "_"
#: the producer name of a run's trigger (on-demand runs started by the controller)
TRIGGER = "_trigger"
#: bundle values larger than this (bytes of JSON) go through the object store
INLINE_MAX = 256 * 2**10

StageStatus = Literal["started", "done", "failed", "skipped", "dropped"]
AssignmentMode = Literal["run", "skip", "wait"]
PlanState = Literal["active", "cancelled", "finished"]


def bundle_stream(pipeline: str) -> str:
    return f"FADES_B_{pipeline}"


def bundle_subject(pipeline: str, stage: str, instance: str = SINGLE) -> str:
    return f"fades.bundle.{pipeline}.{stage}.{instance}"


def bundle_durable(stage: str, instance: str = SINGLE) -> str:
    return f"b-{stage}-{instance}"


def events_subject(pipeline: str) -> str:
    return f"fades.pevent.{pipeline}"


def stage_task_id(pipeline: str, run: str, stage: str, instance: str) -> str:
    """The node-local task id of one stage execution: stable, so a redelivered bundle finds
    the execution that already ran instead of running it again (at most 64 characters)."""
    raw = f"{pipeline}.{run}.{stage}.{instance}"
    if len(raw) <= 64:
        return raw
    return f"p.{hashlib.sha256(raw.encode()).hexdigest()[:40]}"


class Assignment(BaseModel):
    """One stage instance on one node."""

    stage: str
    instance: str = SINGLE
    node: str
    #: run: the node runs the stage; skip: the node passes ``Skipped`` downstream instead;
    #: wait: nobody consumes its bundles until the node returns (they wait, durable)
    mode: AssignmentMode = "run"
    #: why the planner chose this node (shown by ``fades pipeline plan``)
    reason: str = ""
    #: the node the stage was planned on before a failover moved it (mode skip); it goes
    #: back there, in mode run, when that node is up again
    home: str | None = None


class Plan(Message):
    """A pipeline's deployment, as stored in :data:`PLANS_BUCKET` under the pipeline name."""

    pipeline: str
    tenant: str
    #: bumped on every re-plan (failover); engines act on the newest they have seen
    version: int = 1
    state: PlanState = "active"
    #: the validated spec (``PipelineSpec.to_dict()``)
    spec: dict[str, Any]
    assignments: list[Assignment]
    submitted_at: float
    #: epoch seconds after which no new run starts (None: no end)
    ends_at: float | None = None
    #: the JetStream domain holding the bundle stream: the site every stage instance is
    #: planned at (it keeps running while the site's uplink is down), or None: the hub
    domain: str | None = None

    def instances(self, stage: str) -> list[Assignment]:
        return [a for a in self.assignments if a.stage == stage]

    def on_node(self, node: str) -> list[Assignment]:
        return [a for a in self.assignments if a.node == node]


class Bundle(Message):
    """A stage's output on its way to one instance of a downstream stage."""

    pipeline: str
    plan_version: int
    run: str
    #: the stage this bundle is for, and the instance of it
    stage: str
    instance: str = SINGLE
    #: the stage that produced it (:data:`TRIGGER` for a run's start) and its instance
    from_stage: str
    producer: str
    #: the JSON value (None when ``object`` is set or the producer was skipped)
    value: Any = None
    #: name in :data:`BUNDLE_OBJECTS` holding the value when it is over :data:`INLINE_MAX`
    object: str | None = None
    #: set when the producer did not run (guard false, failover skip, gather timeout)
    skipped: str | None = None
    bytes: int = 0
    priority: int = 5
    run_started_at: float
    sent_at: float

    def msg_id(self) -> str:
        return f"{self.run}:{self.from_stage}:{self.producer}:{self.stage}:{self.instance}"


class StageEvent(Message):
    """What happened to one stage instance in one run (stream :data:`EVENTS_STREAM`)."""

    pipeline: str
    run: str
    stage: str
    instance: str = SINGLE
    node: str
    status: StageStatus
    role: Literal["start", "midsection", "finale"] = "midsection"
    #: seconds: queue (waiting for a worker), start, compute, hop (bundle in flight), total
    timing: dict[str, float] = Field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    #: a finale's result (done), or None
    result: Any = None
    error_kind: str | None = None
    error: str | None = None
    run_started_at: float = 0.0
    at: float

    def msg_id(self) -> str:
        # one events stream holds every pipeline: the pipeline is part of the identity
        return f"{self.pipeline}:{self.run}:{self.stage}:{self.instance}:{self.status}"


async def ensure_events_stream(bus: Bus) -> None:
    """The stage-events stream (idempotent; the controller and every engine call it)."""
    await bus.stream(EVENTS_STREAM, ["fades.pevent.>"])
