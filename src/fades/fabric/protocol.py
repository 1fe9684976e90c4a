"""The messages controller and node agents exchange (JSON, validated on receipt).

* :class:`NodeInfo`: a node's registry entry, re-put in the ``fades_nodes`` bucket on every
  heartbeat (what it offers, what data it holds, how loaded it is);
* :class:`TaskEnvelope`: a task on ``fades.task.<node>`` (message id = task id);
* :class:`ResultMessage`: a finished or failed task on ``fades.result.<node>``
  (message id = ``<task id>.result``; the controller keeps the first one per task id);
* :class:`QueryRequest`: a remote retrieval on ``fades.node.<node>.query``; the reply is the
  FDS1 blob the function would get at the edge, sent with :func:`fades.fabric.transfer.send_chunks`
  and :class:`QueryMeta` on its last part.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fades.errors import FabricError
from fades.task import DataOp, Selector

if TYPE_CHECKING:
    from fades.broker.base import DataSummary
    from fades.node.taskstore import TaskRecord


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> Any:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise FabricError(
                f"malformed {cls.__name__} message: {exc.errors()[0]['msg']}"
            ) from exc


class DataHeld(BaseModel):
    """One (connector, location, sensor type) a node holds."""

    connector: str
    location: str
    sensor_type: str
    unit: str = ""
    rows: int = 0
    first_ts: float | None = None
    last_ts: float | None = None

    @classmethod
    def from_broker(cls, described: dict[str, list[DataSummary]]) -> list[DataHeld]:
        """Flatten :meth:`DataBroker.describe` (summaries per connector name)."""
        return [
            cls(
                connector=connector,
                location=s.location,
                sensor_type=s.sensor_type,
                unit=s.unit,
                rows=s.rows,
                first_ts=s.first_ts,
                last_ts=s.last_ts,
            )
            for connector, summaries in described.items()
            for s in summaries
        ]


class NodeLoad(BaseModel):
    running: int = 0
    queued: int = 0
    capacity: int = 1

    @property
    def score(self) -> float:
        """Work per worker: 0 is idle, 1 is every worker busy, above 1 means a queue."""
        return (self.running + self.queued) / max(1, self.capacity)


class NodeInfo(_Msg):
    """A node's registry entry."""

    name: str
    version: str = ""
    arch: str = ""
    cores: int = 1
    memory_mib: int = 0
    runtimes: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    data: list[DataHeld] = Field(default_factory=list)
    load: NodeLoad = Field(default_factory=NodeLoad)
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    heartbeat_s: float = 2.0
    seq: int = 0
    stopping: bool = False
    stats: dict[str, Any] = Field(default_factory=dict)

    def matching(self, op: DataOp) -> list[DataHeld]:
        """The data entries that ``op`` selects on this node (non-empty, time overlapping)."""
        return [d for d in self.data if d.connector == op.connector and _selects(op.select, d)]

    def holds(self, op: DataOp) -> bool:
        return bool(self.matching(op))


#: grace on the newest listed reading for "last N seconds" windows (the summary lags ingest)
RELATIVE_SLACK_S = 120.0


def _selects(sel: Selector, held: DataHeld) -> bool:
    if held.rows <= 0:
        return False
    if sel.sensor_types is not None and held.sensor_type not in sel.sensor_types:
        return False
    if sel.locations is not None and held.location not in sel.locations:
        return False
    # The summary is refreshed every few heartbeats while sensors keep streaming, so a
    # relative window ("last N seconds") gets RELATIVE_SLACK_S of grace on the newest reading.
    start, end = sel.time_bounds(datetime.now(UTC))
    if sel.last_seconds is not None and start is not None:
        start -= RELATIVE_SLACK_S
    if start is not None and held.last_ts is not None and held.last_ts < start:
        return False
    return not (end is not None and held.first_ts is not None and held.first_ts >= end)


class TaskEnvelope(_Msg):
    """A task sent to a node."""

    task: dict[str, Any]
    submitted_at: float
    origin: str = "controller"
    #: the artifact digest pinned at submit (the node runs exactly this one)
    digest: str | None = None


class ResultMessage(_Msg):
    """What a node reports when a task ends."""

    task_id: str
    tenant: str
    node: str
    status: Literal["done", "failed"]
    result: Any = None
    error_kind: str | None = None
    error: str | None = None
    timing: dict[str, float] = Field(default_factory=dict)
    bytes_read: int = 0
    bytes_returned: int = 0
    accepted_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_record(cls, rec: TaskRecord, node: str) -> ResultMessage:
        """The result message for a node's finished (or failed) task record."""
        return cls(
            task_id=rec.id,
            tenant=rec.tenant,
            node=node,
            status="done" if rec.status == "done" else "failed",
            result=rec.result,
            error_kind=rec.error_kind,
            error=rec.error,
            timing=rec.timing,
            bytes_read=rec.bytes_read or 0,
            bytes_returned=rec.bytes_returned or 0,
            accepted_at=rec.accepted_at,
            finished_at=rec.finished_at,
        )


class QueryRequest(_Msg):
    """Ask a node's broker for the FDS1 blob of a task's data operations."""

    tenant: str
    data: list[DataOp]
    params: dict[str, Any] = Field(default_factory=dict)


class QueryMeta(BaseModel):
    """Rides on the last part of a query reply."""

    rows: int
    bytes_read: int
    blob_bytes: int
    retrieval_s: float
    encode_s: float


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
