"""The messages controller and node agents exchange (JSON, validated on receipt).

* :class:`NodeInfo`: a node's registry entry, re-put in the ``fades_nodes`` bucket on every
  heartbeat (what it offers, what data it holds, how loaded it is);
* :class:`TaskEnvelope`: a task on ``fades.task.<node>`` (message id = task id);
* :class:`fades.outcome.Outcome`: a finished or failed task on ``fades.result.<node>``
  (message id = ``<task id>.result``; the controller keeps the first one per task id);
* :class:`QueryRequest`: a remote retrieval on ``fades.node.<node>.query`` (``Bus.request``);
  the reply is :func:`encode_query_reply`: :class:`QueryMeta` and the FDS1 blob the function
  would get at the edge (:func:`decode_query_reply` splits them).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fades.errors import FabricError
from fades.task import DataOp, Selector

if TYPE_CHECKING:
    from fades.broker.base import DataSummary


class Message(BaseModel):
    """A JSON message on the fabric: ``encode()``, and ``decode()`` raising FabricError."""

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


class NodeInfo(Message):
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
    #: key ids whose signatures the node accepts (None: the node does not say)
    trusted_signers: list[str] | None = None
    #: the node's declared sensors and actuators (fades.devices.spec.registry_entries)
    devices: list[dict[str, Any]] = Field(default_factory=list)
    #: the edge site whose leaf server the node is connected to (None: on the hub itself)
    site: str | None = None

    def matching(self, op: DataOp) -> list[DataHeld]:
        """The data entries that ``op`` selects on this node (non-empty, time overlapping)."""
        match = _Match(op.select)  # the selector's sets and window, worked out once
        return [d for d in self.data if d.connector == op.connector and match(d)]

    def holds(self, op: DataOp) -> bool:
        return bool(self.matching(op))


#: grace on the newest listed reading for "last N seconds" windows (the summary lags ingest)
RELATIVE_SLACK_S = 120.0


class _Match:
    """Whether a selector selects a held data entry (non-empty, time overlapping)."""

    __slots__ = ("end", "locations", "sensor_types", "start")

    def __init__(self, sel: Selector) -> None:
        types, locs = sel.sensor_types, sel.locations
        self.sensor_types = None if types is None else frozenset(types)
        self.locations = None if locs is None else frozenset(locs)
        # The summary is refreshed every few heartbeats while sensors keep streaming, so a
        # relative window ("last N seconds") gets RELATIVE_SLACK_S of grace on the newest
        # reading.
        start, self.end = sel.time_bounds(datetime.now(UTC))
        if sel.last_seconds is not None and start is not None:
            start -= RELATIVE_SLACK_S
        self.start = start

    def __call__(self, held: DataHeld) -> bool:
        if held.rows <= 0:
            return False
        if self.sensor_types is not None and held.sensor_type not in self.sensor_types:
            return False
        if self.locations is not None and held.location not in self.locations:
            return False
        if self.start is not None and held.last_ts is not None and held.last_ts < self.start:
            return False
        end = self.end
        return not (end is not None and held.first_ts is not None and held.first_ts >= end)


class TaskEnvelope(Message):
    """A task sent to a node.

    ``digest`` pins the function: the controller resolves the task's ``function.artifact``
    once, at submit, and the node runs exactly that artifact (fetching it if needed), so an
    upload between submit and run does not change the code that runs. ``None``: not pinned
    (a sender that predates pinning, or a function installed on the node only); the node
    then resolves the name itself.
    """

    task: dict[str, Any]
    submitted_at: float
    origin: str = "controller"
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")


class QueryRequest(Message):
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


_META_LEN = struct.Struct(">I")


def encode_query_reply(blob: bytes | bytearray, meta: QueryMeta) -> bytes:
    """A query reply: 4-byte meta length, the meta as JSON, then the blob."""
    head = meta.model_dump_json().encode()
    return _META_LEN.pack(len(head)) + head + bytes(blob)


def decode_query_reply(data: bytes) -> tuple[bytes, QueryMeta]:
    """Split a query reply into (blob, meta).

    Raises:
        FabricError: the reply is not a query reply.
    """
    if len(data) < _META_LEN.size:
        raise FabricError(f"malformed query reply ({len(data)} bytes)")
    (n,) = _META_LEN.unpack_from(data)
    try:
        meta = QueryMeta.model_validate_json(data[_META_LEN.size : _META_LEN.size + n])
    except ValidationError as exc:
        raise FabricError(f"malformed query reply: {exc.errors()[0]['msg']}") from exc
    return data[_META_LEN.size + n :], meta
