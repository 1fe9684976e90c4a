"""What the controller answers (also the HTTP API's response schemas)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fades.outcome import Outcome

#: where a client asks a task to run: at a node, or in the cloud (the controller)
Where = Literal["edge", "cloud"]
#: where a task was placed: also ``device``, when the placer answered "run it locally"
Site = Literal["edge", "cloud", "device"]
#: ``local``: placed on the device; the client runs it, nothing runs in the cluster
Status = Literal["accepted", "dispatched", "done", "failed", "local"]
FINAL: frozenset[str] = frozenset({"done", "failed", "local"})


class SubmitReceipt(BaseModel):
    """A task the controller has durably recorded."""

    task_id: str
    node: str = Field(description="the node, 'cloud', or the device for where=device")
    where: Site
    status: Status = Field(default="accepted", description="'local': run it on the device yourself")
    placement: str = Field(description="why this node was chosen")
    queued: str | None = Field(
        default=None,
        description="set when the node is offline and the task waits in the hub for it "
        "(the task's when_offline: queue)",
    )


class TaskInfo(Outcome):
    """A task as the API serves it: an :class:`~fades.outcome.Outcome` (empty until the task
    ends) plus what only the controller knows of it.

    ``node`` is where the controller placed it (for a cloud run: the node its data came
    from, with ``where: cloud``); ``digest`` is the artifact pinned at submit, which is the
    one that ran. ``Outcome.model_validate`` of a finished task's JSON gives its outcome.
    """

    status: Status  # type: ignore[assignment]  # a task may not have ended yet
    where: Site
    placement: str = Field("", description="why this node was chosen")
    decision: dict[str, Any] | None = Field(
        None,
        description="the placer's explanation: candidates with predicted latency, energy "
        "and score, rejected sites and why",
    )
    submitted_at: float
    latency_s: float | None = Field(None, description="submit -> outcome stored (seconds)")
    bytes_uplink: int | None = Field(
        default=None,
        description="bytes the node sent upstream: the outcome message at the edge, "
        "the raw data blob for a cloud run",
    )

    @property
    def done(self) -> bool:
        return self.status in FINAL


class NodeView(BaseModel):
    """A registry entry as the controller sees it."""

    name: str
    up: bool
    down_reason: str | None = None
    heartbeat_age_s: float
    load: dict[str, float | int]
    data: list[dict[str, Any]]
    labels: dict[str, str]
    runtimes: list[str]
    arch: str
    cores: int
    memory_mib: int
    version: str = ""
    seq: int = 0
    stats: dict[str, Any] = Field(default_factory=dict)


class FunctionInfo(BaseModel):
    """An artifact held in the function repository."""

    digest: str
    name: str
    kind: str
    abi: str
    size: int
    parts: int
    signer: str | None
    uploaded_at: float
    warnings: list[str] = Field(
        default_factory=list, description="e.g. nodes that do not trust the signer"
    )


class CancelReceipt(BaseModel):
    """What a cancel request did."""

    task_id: str
    node: str
    status: Status = Field(description="the task's status at the controller after the request")
    detail: str = Field(description="what happened, in words")
